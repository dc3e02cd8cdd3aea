"""Choose the EfficientNet-Lite0 input resolution for 60x80 Myntra photos by measurement.

For each resolution: images/s of ``encode_images`` (decode + letterbox + forward, median of
interleaved repeats on the same 128 photos) and two quality proxies of the frozen features on a fixed
sample of Myntra items: 5-fold cross-validated accuracy of articleType with logistic regression
and with 10-nearest-neighbour (cosine) voting. Prints a Markdown table (used in
docs/image_resolution.md).

Usage: python scripts/measure_image_resolution.py [--n 2000] [--res 64 96 128 160 224]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import semcat_kit as sk

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "myntra-fashion"


def sample_catalog(n: int, min_per_class: int = 30, seed: int = 0) -> pd.DataFrame:
    styles = sk.datasets.read_csv(DATA / "styles.csv", id_col="id", repair_col="productDisplayName")
    styles = styles[[(DATA / "images" / f"{i}.jpg").exists() for i in styles["id"]]]
    counts = styles["articleType"].value_counts()
    styles = styles[styles["articleType"].isin(counts[counts >= min_per_class].index)]
    df = styles.sample(n=n, random_state=seed)
    return pd.DataFrame({"item_id": df["id"].astype(str), "title": df["productDisplayName"].fillna(""),
                         "image_path": [str(DATA / "images" / f"{i}.jpg") for i in df["id"]],
                         "label": df["articleType"]}).reset_index(drop=True)


def quality(x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    lr = cross_val_score(LogisticRegression(max_iter=300, C=1.0), x, y, cv=cv).mean()
    knn = cross_val_score(KNeighborsClassifier(10, metric="cosine"), x, y, cv=cv).mean()
    return float(lr), float(knn)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--res", type=int, nargs="+", default=[64, 96, 128, 160, 224])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "semcat_resolution_cache"))
    args = ap.parse_args()
    cat = sample_catalog(args.n)
    y = cat["label"].to_numpy()
    print(f"{len(cat)} items, {len(set(y))} articleTypes", flush=True)
    encs = {r: sk.encoders.load(f"efficientnet-lite0@{r}", device="cpu") for r in args.res}
    paths = cat["image_path"].iloc[:128].tolist()
    times: dict[int, list[float]] = {r: [] for r in args.res}
    for enc in encs.values():
        enc.encode_images(paths[:32], batch_size=32)  # warm-up
    for _ in range(args.repeats):  # interleaved, so load from other processes hits every resolution alike
        for r, enc in encs.items():
            t = time.perf_counter()
            enc.encode_images(paths, batch_size=64)
            times[r].append(time.perf_counter() - t)
    rows = []
    for r, enc in encs.items():
        emb = sk.encode_catalog(cat, image_encoder=enc, cache_dir=args.cache, batch_size=64, progress=False)
        ok = emb.image_mask
        lr, knn = quality(emb.image[ok], y[ok])
        rows.append({"resolution": r, "images_per_s": round(len(paths) / float(np.median(times[r])), 1),
                     "logreg_cv_acc": round(lr, 4), "knn10_cv_acc": round(knn, 4),
                     "times_s": [round(t, 2) for t in times[r]]})
        print(rows[-1], flush=True)
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
