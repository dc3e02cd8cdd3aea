"""Write docs/label_noise.md: how well the project's label-issue hints and cleanlab find labels that
were flipped on purpose, on the same cross-validated probabilities.

For each catalog (the bundled tutorial; the Amazon toys catalog in shared data) and each kind of
noise (uniform: any other class; nearest: a class at the smallest taxonomy distance, i.e. the
mistake a person filing products makes), 10% of the labels are flipped (seeded), out-of-sample
probabilities come from 5-fold cross-validation of ``sk.SemcatClassifier`` on MiniLM title
embeddings (its ``"auto"`` budget decided by the data), and both finders are scored on the flipped rows: precision
(share of the flags that are flips), recall (share of the flips flagged), F1.

    python scripts/label_noise_table.py [--out docs/label_noise.md] [--rate 0.1] [--cv 5]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import semcat_kit as sk  # noqa: E402
from semcat_kit.judge.label_noise import detection_scores, inject_label_noise  # noqa: E402

SHARED = Path(os.environ.get("SEMCAT_SHARED_DATA", ROOT.parent / "shared" / "data"))


def catalogs(toys_classes: int, toys_per_class: int):
    tut = sk.datasets.load_fashion_tutorial()
    tut = tut[tut["label"].notna()][["item_id", "title", "label"]].reset_index(drop=True)
    yield "tutorial (Myntra fashion)", tut
    toys = SHARED / "amazon-uk-toys" / "products.csv"
    if toys.is_file():
        import warnings

        with warnings.catch_warnings():        # the loader's report of unlabelled rows: they are dropped here
            warnings.simplefilter("ignore")
            df = sk.load_catalog(toys, id="uniq_id", title="product_name", path_col="amazon_category_and_sub_category")
        df = df[df["label"].notna()]
        top = df["label"].value_counts().index[:toys_classes]
        df = df[df["label"].isin(top)].groupby("label").head(toys_per_class).reset_index(drop=True)
        yield f"Amazon toys ({toys_classes} largest categories)", df[["item_id", "title", "label"]]
    else:
        print(f"skipping the toys catalog: {toys} not found", file=sys.stderr)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "label_noise.md"))
    ap.add_argument("--rate", type=float, default=0.1)
    ap.add_argument("--cv", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default=str(ROOT / "work" / "label_noise_cache"), help="embedding cache "
                    "(default work/label_noise_cache, git-ignored)")
    ap.add_argument("--toys-classes", type=int, default=40)
    ap.add_argument("--toys-per-class", type=int, default=60)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    t_start = time.time()
    enc = sk.encoders.load("minilm", device=args.device)
    rows = []
    sizes = []
    for name, cat in catalogs(args.toys_classes, args.toys_per_class):
        emb = sk.encode_catalog(cat, text_encoder=enc, cache_dir=args.cache_dir, progress=True)
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tax = sk.Taxonomy.from_paths(cat["label"])
        y = tax.index_of(cat["label"])
        sizes.append((name, len(cat), tax.n_classes))
        for kind in ("uniform", "nearest"):
            y_noisy, flipped = inject_label_noise(y, tax.n_classes, args.rate, kind=kind, taxonomy=tax, seed=args.seed)
            t0 = time.time()
            est = sk.SemcatClassifier(taxonomy=tax, device=args.device)
            issues = sk.see.label_issues(X=emb, y=y_noisy, cv=args.cv, estimator=est, cleanlab=True,
                                                random_state=args.seed, progress=True)
            probs = issues.attrs["probs"]
            acc = float((probs.argmax(1) == y_noisy).mean())
            for method, flags in (("semcat_kit label_issues", issues["is_issue"]),
                                  ("cleanlab find_label_issues", issues["cleanlab_issue"])):
                s = detection_scores(flags, flipped)
                rows.append({"catalog": name, "noise": kind, "finder": method, **s,
                             "oos_top1_on_noisy_labels": acc})
                print(f"{name} / {kind} / {method}: {s}", flush=True)
            print(f"  ({time.time() - t0:.0f} s)", flush=True)
    table = pd.DataFrame(rows)
    lines = ["# Finding flipped labels: semcat_kit's hints and cleanlab, side by side", "",
             f"Written by `scripts/label_noise_table.py` (`python scripts/label_noise_table.py`); do not edit by hand.",
             "",
             f"Setup: {int(args.rate * 100)}% of the labels of each catalog flipped (seed {args.seed}); "
             f"out-of-sample probabilities from {args.cv}-fold cross-validation of `sk.SemcatClassifier` "
             "(default budget, decided by the data) on MiniLM title embeddings (`sk.see.label_issues(X=emb, y=noisy, "
             f"cv={args.cv}, cleanlab=True)`); both finders read the same probabilities. "
             "*uniform*: a flip goes to any other class; *nearest*: to a class at the smallest taxonomy (LCA) "
             "distance, the mistake a person filing products makes. Precision: share of the flags that are "
             "flips; recall: share of the flips flagged. The catalogs' own labels carry some noise too, so a "
             "flag on an unflipped row is not always wrong.", "",
             "| catalog | items | classes |", "| --- | ---: | ---: |",
             *[f"| {n} | {k:,} | {c} |" for n, k, c in sizes], "",
             "| catalog | noise | finder | flagged | flipped | found | precision | recall | F1 | CV top-1 |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in table.to_dict("records"):
        lines.append(f"| {r['catalog']} | {r['noise']} | {r['finder']} | {r['flagged']} | {r['flipped']} | "
                     f"{r['found']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | "
                     f"{r['oos_top1_on_noisy_labels']:.3f} |")
    lines += ["", "semcat_kit's rule (`sk.see.label_issues`): an item labelled g is flagged when "
              "p(g|x) is below the mean p(g|x) of the items labelled g, another class reaches its own such "
              "threshold, and g is not the top prediction (self-confidence, Northcutt et al. 2021). cleanlab: "
              "`cleanlab.filter.find_label_issues(labels, pred_probs)` with its defaults "
              "(`filter_by='prune_by_noise_rate'`).", "",
              f"Run time: {time.time() - t_start:.0f} s on this machine (load average "
              f"{os.getloadavg()[0]:.1f}: shared; not a benchmark).", ""]
    Path(args.out).write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
