"""encode_catalog vs a plain loop over the same encoders on the same 1,000 tutorial items.

Plain loop (the baseline): per batch of 64, PIL-open the images and call
``image_encoder.encode_images`` and ``text_encoder.encode_texts``; no cache. ``encode_catalog``
cold (empty cache folder each repeat) must keep >= 0.95x the plain loop's throughput; warm
(everything cached) should be >= 20x. Repeats are interleaved, medians reported.

Usage: python bench/bench_encode.py [--n 1000] [--repeats 2] [--warm-repeats 5]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

import semcat_kit as sk

MYNTRA = Path(__file__).resolve().parents[2] / "shared" / "data" / "myntra-fashion"


def catalog(n: int) -> tuple[pd.DataFrame, str]:
    try:
        cat = sk.datasets.load_fashion_tutorial()
        cat = cat[cat["image_path"].notna()].head(n).reset_index(drop=True)
        if len(cat) >= n:
            return cat, "tutorial catalog"
    except (AttributeError, FileNotFoundError):
        pass
    styles = sk.datasets.read_csv(MYNTRA / "styles.csv", id_col="id", repair_col="productDisplayName")
    styles = styles.sample(n=n, random_state=0)
    return pd.DataFrame({"item_id": styles["id"].astype(str), "title": styles["productDisplayName"].fillna(""),
                         "image_path": [str(MYNTRA / "images" / f"{i}.jpg") for i in styles["id"]],
                         "label": styles["articleType"]}).reset_index(drop=True), "Myntra sample (seed 0)"


def plain_loop(cat, text_enc, image_enc, batch=64):
    titles, paths = cat["title"].tolist(), cat["image_path"].tolist()
    out_t, out_i = [], []
    for s in range(0, len(cat), batch):
        imgs = [Image.open(p).convert("RGB") for p in paths[s:s + batch]]
        out_i.append(image_enc.encode_images(imgs, batch_size=batch))
        out_t.append(text_enc.encode_texts([t if t else " " for t in titles[s:s + batch]], batch_size=batch))
    return np.concatenate(out_t), np.concatenate(out_i)


def timed(f):
    t = time.perf_counter()
    r = f()
    return time.perf_counter() - t, r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--warm-repeats", type=int, default=5)
    args = ap.parse_args()
    cat, source = catalog(args.n)
    text_enc = sk.encoders.load("minilm", device="cpu")
    image_enc = sk.encoders.load("efficientnet-lite0", device="cpu")
    print(f"{len(cat)} items from the {source}; encoders {text_enc.name} + {image_enc.name}")
    plain_loop(cat.head(64), text_enc, image_enc)  # warm-up both code paths
    sk.encode_catalog(cat.head(64), text_enc, image_enc, progress=False)

    plain_t, cold_t = [], []
    root = Path(tempfile.mkdtemp(prefix="bench_encode_"))
    try:
        for r in range(args.repeats):  # interleaved so machine load hits both alike
            dt, (pt, pi) = timed(lambda: plain_loop(cat, text_enc, image_enc))
            plain_t.append(dt)
            cache = root / f"cold{r}"
            dt, emb = timed(lambda: sk.encode_catalog(cat, text_enc, image_enc, cache_dir=cache, progress=False))
            cold_t.append(dt)
        ok = emb.image_mask
        same = np.abs(emb.image[ok] - pi[ok]).max()
        warm_t = []
        for _ in range(args.warm_repeats):
            dt, warm = timed(lambda: sk.encode_catalog(cat, text_enc, image_enc, cache_dir=cache, progress=False))
            warm_t.append(dt)
        assert warm.meta["stats"]["image_encoded"] == 0 and warm.meta["stats"]["text_encoded"] == 0
        shard_bytes = sum(p.stat().st_size for p in cache.rglob("shard-*.arrow"))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    n = len(cat)
    plain, cold, hot = (float(np.median(x)) for x in (plain_t, cold_t, warm_t))
    print(f"plain loop        : {n / plain:8.1f} items/s  (median {plain:.2f} s; runs {[round(x, 2) for x in plain_t]})")
    print(f"encode_catalog cold: {n / cold:8.1f} items/s  (median {cold:.2f} s; runs {[round(x, 2) for x in cold_t]})")
    print(f"encode_catalog warm: {n / hot:8.1f} items/s  (median {hot:.3f} s; runs {[round(x, 3) for x in warm_t]})")
    print(f"cache on disk: {shard_bytes / 1e6:.1f} MB for {n} items; max |encode_catalog - plain| = {same:.2e}")
    print(f"ratio: {plain / cold:.2f}x  cold encode_catalog vs plain loop throughput (target >= 0.95x)")
    print(f"ratio: {plain / hot:.2f}x  warm (cached) encode_catalog vs plain loop throughput (target >= 20x)")


if __name__ == "__main__":
    main()
