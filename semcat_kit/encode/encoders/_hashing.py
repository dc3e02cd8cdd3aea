"""A model-free text encoder from the content hash of each title: for tests, smoke runs and benchmarks."""
from __future__ import annotations

import numpy as np

from ._base import Encoder

__all__ = ["HashingTextEncoder", "factory"]


class HashingTextEncoder(Encoder):
    """A deterministic ``dim``-d text "encoder" with no model: ~free to run, offline, no download.

    The vector of a title is built from its 16-byte content key (BLAKE2b,
    :func:`semcat_kit.encode.store.content_keys`, the key the embedding store uses): with ``k`` the key's
    bytes minus 127.5 (never zero), ``v = [k, reversed(k)]`` repeated and cut to ``dim`` values,
    then L2-normalised. Equal titles get equal vectors, different titles (almost surely) different
    ones; the vectors carry no meaning, so a head trained on them learns nothing about products.
    What it is for: exercising everything around an encoder (``semcat encode``, the store, cache
    hits, streaming, failures, many processes) in tests and benchmarks in milliseconds.

    Load it as ``sk.encoders.load("hash-text:<dim>")`` (default 32), or ``text_encoder:
    hash-text:32`` in a ``semcat`` config. Its ``fingerprint`` depends on ``dim`` only, so a store
    filled by one run is hit by the next. Subclasses (a test counting calls or sleeping to be
    killed mid-run) override ``_embed_texts`` and call ``super()._embed_texts``.

    Parameters
    ----------
    dim : int
        Vector width, >= 1.
    device : str
        Accepted for the registry's signature; everything runs on the CPU in NumPy.
    """

    image_dim = None

    def __init__(self, dim: int = 32, device: str = "auto"):
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"HashingTextEncoder: dim must be an integer >= 1, got {dim!r}")
        self.text_dim = int(dim)
        self.name = f"hash-text:{self.text_dim}"
        self.fingerprint = f"hash-text:{self.text_dim}:v1"

    def _embed_texts(self, texts):
        from ..store import content_keys

        k = content_keys(texts).astype(np.float32) - 127.5          # (n, 16), no zero entry
        v = np.concatenate([k, k[:, ::-1]], axis=1)                  # (n, 32)
        v = np.tile(v, (1, -(-self.text_dim // v.shape[1])))[:, :self.text_dim]
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def factory(arg: str = "", device: str = "auto", **kwargs) -> HashingTextEncoder:
    """``load("hash-text")`` (32-d) / ``load("hash-text:<dim>")``."""
    if kwargs:
        raise TypeError(f"hash-text takes no options, got {sorted(kwargs)}")
    try:
        dim = int(arg) if arg else 32
    except ValueError:
        raise ValueError(f"hash-text:<dim>: the width must be an integer, got {arg!r} "
                         "(e.g. sk.encoders.load('hash-text:32'))") from None
    return HashingTextEncoder(dim, device=device)
