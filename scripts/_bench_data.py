"""The catalogs that issue-12 measurements run on, as (name, embeddings, labels, taxonomy, split).

* ``tutorial``: the bundled fashion tutorial catalog, minilm text + efficientnet-lite0 images;
* ``toys``: the Amazon UK toys catalog (text only, minilm), unlabelled rows dropped (reported);
* ``myntra``: the full Myntra catalog (minilm + efficientnet-lite0; long to encode on a CPU).

Embeddings are encoded once through the content-addressed cache under ``work/cache`` (or the folder
in ``$SEMCAT_BENCH_CACHE``, e.g. the store a notebook run already filled) and saved as
``work/emb/<name>.npz``; the encode stats (items encoded vs read from the cache) are printed. The split is ``sk.split(labels, val=0.1, test=0.2, seed=0)``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SEMCAT_SHARED_DATA", ROOT.parent / "shared" / "data"))
WORK = ROOT / "work"
CATALOGS = ("tutorial", "toys", "myntra")


def _catalog(name: str):
    import semcat_kit as sk

    if name == "tutorial":
        return sk.load_fashion_tutorial(), ("minilm", "efficientnet-lite0"), " > "
    if name == "toys":
        raw = sk.datasets.read_csv(DATA / "amazon-uk-toys" / "products.csv", id_col="uniq_id",
                                   repair_col="product_name")
        unlabelled = raw["amazon_category_and_sub_category"].isna()
        if unlabelled.any():
            print(f"toys: {int(unlabelled.sum())} unlabelled rows left out of training/evaluation", file=sys.stderr)
        cat = sk.load_catalog(raw[~unlabelled], id="uniq_id", title="product_name",
                              path_col="amazon_category_and_sub_category")
        return cat, ("minilm", None), " > "
    if name == "myntra":
        return sk.load_fashion(DATA / "myntra-fashion"), ("minilm", "efficientnet-lite0"), " > "
    raise ValueError(f"unknown catalog {name!r}; choose from {CATALOGS}")


def load(name: str, split_seed: int = 0):
    """``(embeddings, labels (class indices), taxonomy, split)`` of a benchmark catalog."""
    import semcat_kit as sk

    cat, (text, image), sep = _catalog(name)
    path = WORK / "emb" / f"{name}.npz"
    if path.exists():
        emb = sk.Embeddings.load(path).align(cat)
    else:
        cache = Path(os.environ.get("SEMCAT_BENCH_CACHE", WORK / "cache"))
        emb = sk.encode_catalog(cat, text_encoder=sk.encoders.load(text),
                                image_encoder=sk.encoders.load(image) if image else None,
                                cache_dir=cache)
        print(f"{name}: encoded via {cache}: {emb.meta.get('stats')}", file=sys.stderr, flush=True)
        emb.save(path)
    # every stray path merged into its majority parent (143 tutorial classes), as the documented results used
    tax = sk.Taxonomy.from_paths(cat["label"], sep=sep, on_conflict="majority")
    y = np.asarray(tax.index_of(cat["label"]))
    sp = sk.split(cat["label"].to_numpy(), val=0.1, test=0.2, seed=split_seed)
    return emb, y, tax, sp


def pairs(emb, y, sp):
    """``(train, val, test)`` pairs ``(embeddings, labels)`` of a split."""
    return tuple((emb.take(sp[k]), y[sp[k]]) for k in ("train", "val", "test"))


def name_neighbors(tax, k: int = 20):
    """Semantic neighbours from the class-path texts encoded with minilm."""
    import semcat_kit as sk

    enc = sk.encoders.load("minilm")
    return sk.similarity.label_neighbors(enc.encode_texts(sk.similarity.class_texts(tax)), k=k)
