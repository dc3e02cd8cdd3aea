"""Which hedging rule? The probability threshold against Deng et al.'s information gain, measured.

On real catalogs (Myntra: 154 classes at depth 3; the Amazon UK toys: uneven depth 2-5), a
TF-IDF + LogisticRegression head is fitted on a third of the labelled products; the other products
are split at random into calibration (``--n-cal``) and test parts ``--splits`` times. For every split,
rule and target precision, the threshold is calibrated with RCPS (delta 0.1) on the calibration part
and the test part is hedged at it. Prints the mean over splits of the test leaf coverage, mean depth,
mean bits, realised precision, and the share of splits whose realised precision reaches the target.

    python scripts/measure_hedging_rule.py [--splits 20] [--n-cal 3000] [--catalogs myntra toys]

The result is recorded in docs/hedging.md and in the docstring of semcat_kit/judge/hedging.py.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("SEMCAT_SHARED_DATA", ROOT.parent / "shared" / "data"))


def catalog(name: str):
    """``(titles, labels)`` of a labelled real catalog."""
    import semcat_kit as sk

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "myntra":
            cat = sk.datasets.load_fashion(DATA / "myntra-fashion")
        elif name == "toys":
            raw = sk.datasets.read_csv(DATA / "amazon-uk-toys" / "products.csv", id_col="uniq_id",
                                       repair_col="product_name")
            raw = raw[raw["amazon_category_and_sub_category"].notna()]
            cat = sk.load_catalog(raw, id="uniq_id", title="product_name", path_col="amazon_category_and_sub_category")
        else:
            raise SystemExit(f"unknown catalog {name!r}: choose myntra or toys")
    cat = cat[cat["label"].notna()].reset_index(drop=True)
    return cat["title"].fillna("").astype(str).to_numpy(), cat["label"].to_numpy()


def lr_probs(titles, labels, seed: int = 0, train_share: float = 1 / 3):
    """Taxonomy, held-out probabilities and classes of a TF-IDF + LogisticRegression head."""
    import semcat_kit as sk
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tax = sk.Taxonomy.from_paths(labels, on_conflict="majority")
    y = np.asarray(tax.index_of(labels))
    X = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit_transform(titles)
    perm = np.random.default_rng(seed).permutation(len(y))
    tr, rest = perm[: int(len(y) * train_share)], perm[int(len(y) * train_share):]
    lr = LogisticRegression(C=5, max_iter=100, tol=1e-3).fit(X[tr], y[tr])
    P = np.zeros((len(rest), tax.n_classes))
    P[:, lr.classes_] = lr.predict_proba(X[rest])
    return tax, P, y[rest]


def measure(tax, P, y, splits: int, n_cal: int, precisions=(0.95, 0.98, 0.99), delta: float = 0.1) -> pd.DataFrame:
    from semcat_kit.judge import hedging as H

    rows = []
    rng = np.random.default_rng(1)
    for s in range(splits):
        perm = rng.permutation(len(y))
        cal, te = perm[:n_cal], perm[n_cal:]
        for rule in H.RULES:
            c = H.calibrate_hedging(P[cal], y[cal], tax, precisions, rule=rule, delta=delta)
            for q in precisions:
                h = c.predict(P[te], tax, q)
                prec = float(h.correct(y[te]).mean())
                rows.append({"rule": rule, "precision": q, "split": s, "leaf_coverage": float(h.is_leaf.mean()),
                             "mean_depth": float(h.depth.mean()), "mean_bits": float(h.bits.mean()),
                             "realised_precision": prec, "reached": prec >= q})
    df = pd.DataFrame(rows)
    return df.groupby(["precision", "rule"])[["leaf_coverage", "mean_depth", "mean_bits", "realised_precision",
                                              "reached"]].mean()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalogs", nargs="+", default=["myntra", "toys"])
    ap.add_argument("--splits", type=int, default=20)
    ap.add_argument("--n-cal", type=int, default=3000)
    args = ap.parse_args(argv)
    for name in args.catalogs:
        titles, labels = catalog(name)
        tax, P, y = lr_probs(titles, labels)
        print(f"\n## {name}: {tax.n_classes} classes, {len(y)} held-out products "
              f"(top-1 {(P.argmax(1) == y).mean():.3f}); {args.splits} splits, n_cal = {args.n_cal}, RCPS delta 0.1")
        print(measure(tax, P, y, args.splits, min(args.n_cal, len(y) // 2)).round(4).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
