"""Shared inputs of test_export / test_predictor / test_cli: a fixed sample of the bundled tutorial
catalog encoded with the real offline encoders ("minilm" titles, "efficientnet-lite0" images), and
small heads trained on it with sk.train.

The embedding cache lives in pytest's cache folder (``.pytest_cache/d/semcat_export_emb``), so the
three test files (and later runs) encode each title/image once; the cache is keyed by encoder
fingerprint and content, so a stale entry cannot be served.
"""
from __future__ import annotations

import functools

import numpy as np

import semcat_kit as sk
from semcat_kit.datasets import sample_catalog
from semcat_kit.learn.training import TrainConfig, train

N_ITEMS = 240          # sampled tutorial products
SEED = 0
FAST = dict(epochs=3, batch_size=64, proj_dim=64, hidden=128, lr=3e-3, device="cpu", early_stopping=None)


@functools.lru_cache(maxsize=None)
def catalog():
    """The full tutorial catalog (3,000 products, 170 leaves)."""
    return sk.datasets.load_fashion_tutorial()


@functools.lru_cache(maxsize=None)
def taxonomy():
    return sk.Taxonomy.from_paths(catalog()["label"])


def sample(n: int = N_ITEMS, seed: int = SEED):
    """The same products ``semcat train`` picks with ``sample: n`` and ``seed``."""
    return sample_catalog(catalog(), n, seed)


@functools.lru_cache(maxsize=None)
def encoders():
    return sk.encoders.load("minilm", device="cpu"), sk.encoders.load("efficientnet-lite0", device="cpu")


def embed(df, cache_dir, images: bool = True):
    te, ie = encoders()
    return sk.encode_catalog(df, text_encoder=te, image_encoder=ie if images else None, cache_dir=cache_dir,
                             progress=False)


def train_head(emb, labels, **cfg):
    return train(emb, np.asarray(labels), taxonomy=taxonomy(), config=TrainConfig(**{**FAST, **cfg}),
                 progress=False)
