"""Build the bundled tutorial catalog semcat_kit/data/fashion_tutorial/ from the full Myntra catalog.

    python scripts/make_tutorial_subset.py [SOURCE_DIR] [--out DIR] [--n 3000] [--seed 0]

SOURCE_DIR is a Kaggle "Fashion Product Images" folder (styles.csv + images/), by default
/work/shared/data/myntra-fashion (or $SEMCAT_SHARED_DATA/myntra-fashion).

Selection (deterministic for a given source, n and seed):
  * every leaf category (every distinct masterCategory > subCategory > articleType path, so the
    label-noise rows that make taxonomy conflicts are included) gets a quota
        q(n_leaf) = n_leaf                                   if n_leaf <= tiny (kept whole)
                  = min(n_leaf, max(1, round(s * sqrt(n_leaf))))   otherwise,
    with the scale s found by bisection so that the total is about --n;
  * within a leaf, items are drawn uniformly without replacement by a numpy Generator seeded with
    --seed, leaves visited in sorted order, ids sorted first;
  * images are copied as the original JPEG bytes; styles.csv keeps the original columns and text
    (rows in source order); MANIFEST.json records the parameters and what was included (rows
    with a missing title / image that fell in are listed, not dropped).
The output is written atomically (a temp folder swapped in) and must stay under --max-mb.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from semcat_kit._core.io import atomic_dir  # noqa: E402
from semcat_kit.datasets import FASHION_PATH_COLUMNS, load_fashion, read_csv  # noqa: E402

DEFAULT_SOURCE = Path(os.environ.get("SEMCAT_SHARED_DATA", "/work/shared/data")) / "myntra-fashion"
DEFAULT_OUT = ROOT / "semcat_kit" / "data" / "fashion_tutorial"


def leaf_quotas(sizes: pd.Series, n_target: int, tiny: int = 4) -> pd.Series:
    """Per-leaf quota ``q = min(n, max(1, round(s*sqrt(n))))`` (``q = n`` for ``n <= tiny``),
    with ``s`` chosen by bisection so that ``sum(q)`` is as close to ``n_target`` as possible."""
    sizes = sizes.astype(np.int64)
    if n_target >= sizes.sum():
        return sizes.copy()
    root = np.sqrt(sizes.to_numpy(dtype=float))

    def q(s: float) -> np.ndarray:
        out = np.minimum(sizes.to_numpy(), np.maximum(1, np.round(s * root).astype(np.int64)))
        return np.where(sizes.to_numpy() <= tiny, sizes.to_numpy(), out)

    lo, hi = 0.0, float(sizes.max())
    for _ in range(100):
        mid = (lo + hi) / 2
        if q(mid).sum() < n_target:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda s: abs(int(q(s).sum()) - n_target))
    return pd.Series(q(best), index=sizes.index, name="quota")


def select_subset(catalog: pd.DataFrame, n_target: int = 3000, seed: int = 0, tiny: int = 4) -> list[str]:
    """Item ids of the tutorial subset of ``catalog`` (a :func:`load_fashion` DataFrame)."""
    sizes = catalog.groupby("label").size().sort_index()
    quotas = leaf_quotas(sizes, n_target, tiny)
    rng = np.random.default_rng(seed)
    ids_by_leaf = catalog.groupby("label")["item_id"].apply(lambda s: sorted(s, key=_id_key))
    chosen: list[str] = []
    for leaf in sizes.index:
        ids = ids_by_leaf[leaf]
        k = int(quotas[leaf])
        pick = rng.choice(len(ids), size=k, replace=False) if k < len(ids) else np.arange(len(ids))
        chosen.extend(ids[i] for i in sorted(pick))
    return chosen


def _id_key(x: str):
    return (0, int(x), x) if x.isdigit() else (1, 0, x)


def build(source: Path, out: Path, n_target: int = 3000, seed: int = 0, tiny: int = 4,
          max_mb: float = 15.0) -> dict:
    """Write the subset of ``source`` to ``out`` (atomically) and return the manifest."""
    catalog = load_fashion(source)
    chosen = select_subset(catalog, n_target, seed, tiny)
    chosen_set = set(chosen)
    raw = read_csv(source / "styles.csv", id_col="id", repair_col="productDisplayName", dtype=str,
                   keep_default_na=False)
    raw_ids = raw["id"].str.strip()
    sub = raw[raw_ids.isin(chosen_set)]
    if len(sub) != len(chosen):
        raise RuntimeError(f"selected {len(chosen)} ids but found {len(sub)} rows in {source / 'styles.csv'}")
    cat = catalog.set_index("item_id").loc[sub["id"].str.strip()]
    images = cat["image_path"].dropna()
    nbytes = int(sum(Path(p).stat().st_size for p in images))
    rep = catalog.attrs["report"]
    rep_in = rep[rep["item_id"].isin(chosen_set)]
    manifest = {
        "source": str(source),
        "n_target": n_target, "seed": seed, "tiny": tiny,
        "rule": "per leaf (masterCategory > subCategory > articleType): q = n if n <= tiny else "
                "min(n, max(1, round(s * sqrt(n)))), s by bisection to total ~ n_target",
        "n_items": len(sub), "n_leaves": int(cat["label"].nunique()),
        "n_leaves_source": int(catalog["label"].nunique()), "n_images": len(images),
        "image_bytes": nbytes,
        "included_problems": rep_in.to_dict("records"),
    }
    csv_bytes = sub.to_csv(index=False, lineterminator="\n").encode("utf-8")
    total = nbytes + len(csv_bytes)
    if total > max_mb * 1e6:
        raise RuntimeError(f"subset would be {total / 1e6:.1f} MB > {max_mb} MB; lower --n")
    with atomic_dir(out) as tmp:
        (tmp / "images").mkdir()
        for iid, p in tqdm(images.items(), total=len(images), desc="copying images", unit="img"):
            shutil.copyfile(p, tmp / "images" / Path(p).name)
        (tmp / "styles.csv").write_bytes(csv_bytes)
        (tmp / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n",
                                           encoding="utf-8")
    return manifest


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", type=int, default=4, help="leaves with at most this many items are kept whole")
    ap.add_argument("--max-mb", type=float, default=15.0)
    a = ap.parse_args(argv)
    m = build(a.source, a.out, a.n, a.seed, a.tiny, a.max_mb)
    print(f"wrote {a.out}: {m['n_items']} items, {m['n_leaves']}/{m['n_leaves_source']} leaves, "
          f"{m['n_images']} images ({m['image_bytes'] / 1e6:.2f} MB), "
          f"{len(m['included_problems'])} reported problems included")


if __name__ == "__main__":
    main()
