"""Encoding a catalog into an ``Embeddings`` table, with an on-disk cache.

``encode_catalog(catalog, text_encoder=..., image_encoder=..., cache_dir=...)`` embeds titles and
images in batches (images decoded in DataLoader workers), reusing cached vectors keyed by
(encoder fingerprint, hash of the title text / image bytes): re-running encodes nothing, adding
100 products encodes those 100, and a different encoder never sees another encoder's vectors.
Unusable items (empty title; missing, 0-byte, corrupt or oversized image) get a zero vector, a
mask of 0 and a row in ``Embeddings.failures``; they never stop the run.
"""
from __future__ import annotations

import contextlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ._io import atomic_path
from ._vector_cache import KEY_BYTES, VectorCache, content_key
from .encoders import Encoder
from .images import DEFAULT_MAX_PIXELS, ImageError, image_digest, load_image

__all__ = ["Embeddings", "encode_catalog", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_FAILURE_COLUMNS = ["item_id", "modality", "reason"]


def _empty_failures() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=str) for c in _FAILURE_COLUMNS})


@dataclass
class Embeddings:
    """Per-item embeddings that training consumes.

    Attributes
    ----------
    item_ids : numpy.ndarray of str, (N,)
    text : float32 (N, dt) or None
    image : float32 (N, di) or None
    text_mask, image_mask : bool (N,)
        False where the modality is unusable (its row is zeros) or no encoder was given.
    failures : DataFrame ``item_id, modality, reason``
    meta : dict ``{"text_encoder": {"name", "fingerprint", "dim"} | None, "image_encoder": ... }``
    """

    item_ids: np.ndarray
    text: np.ndarray | None
    image: np.ndarray | None
    text_mask: np.ndarray
    image_mask: np.ndarray
    failures: pd.DataFrame = field(default_factory=_empty_failures)
    meta: dict = field(default_factory=lambda: {"text_encoder": None, "image_encoder": None})

    def __post_init__(self):
        self.item_ids = np.asarray(self.item_ids).astype(str)
        n = len(self.item_ids)
        if self.item_ids.ndim != 1:
            raise ValueError(f"item_ids must be 1-D, got shape {self.item_ids.shape}")
        for name in ("text", "image"):
            m = getattr(self, name)
            if m is not None:
                m = np.asarray(m, dtype=np.float32)
                if m.ndim != 2 or m.shape[0] != n:
                    raise ValueError(f"Embeddings.{name} must be (N={n}, d), got {m.shape}")
                setattr(self, name, m)
            mask = np.asarray(getattr(self, f"{name}_mask"), dtype=bool)
            if mask.shape != (n,):
                raise ValueError(f"Embeddings.{name}_mask must be ({n},), got {mask.shape}")
            if m is None and mask.any():
                raise ValueError(f"Embeddings.{name}_mask has True entries but {name} is None")
            setattr(self, f"{name}_mask", mask)
        if self.failures is None:
            self.failures = _empty_failures()
        missing = set(_FAILURE_COLUMNS) - set(self.failures.columns)
        if missing:
            raise ValueError(f"Embeddings.failures lacks columns {sorted(missing)}")

    def __len__(self) -> int:
        return len(self.item_ids)

    def __repr__(self) -> str:
        def d(m):
            return None if m is None else m.shape[1]
        return (f"Embeddings(n={len(self)}, text_dim={d(self.text)}, image_dim={d(self.image)}, "
                f"text_ok={int(self.text_mask.sum())}, image_ok={int(self.image_mask.sum())}, "
                f"failures={len(self.failures)})")

    # ---------------------------------------------------------------------- selection
    def take(self, idx) -> "Embeddings":
        """Rows by integer positions, a boolean mask or a slice (failures follow the rows kept)."""
        if isinstance(idx, slice):
            idx = np.arange(len(self))[idx]
        idx = np.asarray(idx)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise IndexError(f"boolean mask of shape {idx.shape} does not match {len(self)} items")
            idx = np.flatnonzero(idx)
        elif idx.size == 0:
            idx = idx.astype(np.int64)
        elif not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"take() needs integer positions, a boolean mask or a slice, got dtype {idx.dtype}; "
                            "to select by item id use align()")
        if idx.size and (idx.max() >= len(self) or idx.min() < -len(self)):
            raise IndexError(f"take(): positions out of range for {len(self)} items")
        ids = self.item_ids[idx]
        fails = self.failures[self.failures["item_id"].astype(str).isin(set(ids.tolist()))].reset_index(drop=True)
        return Embeddings(ids, None if self.text is None else self.text[idx],
                          None if self.image is None else self.image[idx], self.text_mask[idx],
                          self.image_mask[idx], fails, json.loads(json.dumps(self.meta)))

    def align(self, catalog_or_ids) -> "Embeddings":
        """Reorder (and subset) to a catalog's ``item_id`` column or a sequence of ids.

        Raises ``KeyError`` naming the ids that have no embedding.
        """
        if isinstance(catalog_or_ids, pd.DataFrame):
            if "item_id" not in catalog_or_ids.columns:
                raise KeyError("align(): the DataFrame has no 'item_id' column")
            ids = catalog_or_ids["item_id"]
        else:
            ids = catalog_or_ids
        ids = np.asarray(list(ids)).astype(str)
        pos = pd.Index(self.item_ids)
        if not pos.is_unique:
            raise ValueError("align(): this Embeddings has duplicate item ids")
        where = pos.get_indexer(ids)
        if (where < 0).any():
            missing = ids[where < 0]
            raise KeyError(f"align(): {len(missing)} item id(s) have no embedding, e.g. "
                           f"{missing[:10].tolist()}; encode them first (encode_catalog on the new rows)")
        return self.take(where)

    # --------------------------------------------------------------------------- disk
    def save(self, path: str | os.PathLike) -> Path:
        """Write to one ``.npz`` file atomically (format version included). Returns the path."""
        path = Path(path).expanduser()
        arrays = {
            "format_version": np.array(FORMAT_VERSION),
            "item_ids": self.item_ids.astype(str),
            "text_mask": self.text_mask, "image_mask": self.image_mask,
            "failures": np.array(self.failures[_FAILURE_COLUMNS].astype(str).to_json(orient="records")),
            "meta": np.array(json.dumps(self.meta)),
        }
        if self.text is not None:
            arrays["text"] = self.text
        if self.image is not None:
            arrays["image"] = self.image
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Embeddings":
        """Read a file written by ``save``."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"no embeddings file at {path}")
        fh = open(path, "rb")  # our own handle: np.load leaks the one it opens when the file is not a zip
        try:
            z = np.load(fh, allow_pickle=False)
        except Exception as e:
            fh.close()
            raise ValueError(f"{path} is not a readable embeddings .npz ({e}); re-create it with Embeddings.save") from e
        with fh, z:
            if "format_version" not in z.files:
                raise ValueError(f"{path} is not an Embeddings file (no format_version)")
            try:
                v = int(z["format_version"])
                if v != FORMAT_VERSION:
                    raise ValueError(f"{path} has embeddings format {v}; this semcat_kit reads {FORMAT_VERSION}. "
                                     "Re-encode the catalog (the cache makes it quick)")
                arrays = {k: z[k] for k in ("item_ids", "text_mask", "image_mask", "failures", "meta")}
                arrays.update({k: z[k] for k in ("text", "image") if k in z.files})
                fails = pd.DataFrame(json.loads(str(arrays["failures"])), columns=_FAILURE_COLUMNS)
                meta = json.loads(str(arrays["meta"]))
            except (zipfile.BadZipFile, KeyError, OSError, EOFError, json.JSONDecodeError) as e:
                raise ValueError(f"{path} is a damaged embeddings file ({type(e).__name__}: {e}); re-create it "
                                 "with encode_catalog(...).save (the cache makes it quick)") from e
            return cls(arrays["item_ids"], arrays.get("text"), arrays.get("image"), arrays["text_mask"],
                       arrays["image_mask"], fails.astype(str) if len(fails) else _empty_failures(), meta)


# ------------------------------------------------------------------------------ encoding
class _ImageDataset(torch.utils.data.Dataset):
    """Decodes and preprocesses images (runs in DataLoader workers)."""

    def __init__(self, sources: list, transform, max_pixels):
        self.sources, self.transform, self.max_pixels = sources, transform, max_pixels

    def __len__(self):
        return len(self.sources)

    def __getitem__(self, i):
        try:
            img = load_image(self.sources[i], max_pixels=self.max_pixels)
            return i, self.transform(img), None
        except ImageError as e:
            return i, None, e.reason
        except Exception as e:  # noqa: BLE001 - a failing transform must not end a long run
            return i, None, f"preprocessing failed ({type(e).__name__}: {e})"


def _collate(batch):
    ok = [(i, x) for i, x, err in batch if err is None]
    bad = [(i, err) for i, x, err in batch if err is not None]
    idx = [i for i, _ in ok]
    x = torch.stack([x for _, x in ok]) if ok else None
    return idx, x, bad


@contextlib.contextmanager
def _flush_on_exit(cache: VectorCache | None):
    """Write whatever was computed to the cache even if the run is interrupted."""
    try:
        yield
    finally:
        if cache is not None:
            cache.flush()


def _default_workers(encoder: Encoder) -> int:
    if encoder.device.type == "cuda":
        return min(4, max(1, (os.cpu_count() or 2) - 1))
    return 0  # on CPU the model already uses every core; decoding small photos inline is faster


def _meta(enc: Encoder | None, modality: str) -> dict | None:
    if enc is None:
        return None
    return {"name": enc.name, "fingerprint": enc.fingerprint,
            "dim": int(enc.text_dim if modality == "text" else enc.image_dim)}


def _check_catalog(catalog: pd.DataFrame, text_encoder, image_encoder) -> np.ndarray:
    if not isinstance(catalog, pd.DataFrame):
        raise TypeError(f"encode_catalog expects a DataFrame (item_id, title, image_path), got {type(catalog).__name__}")
    if text_encoder is None and image_encoder is None:
        raise ValueError("encode_catalog needs text_encoder and/or image_encoder, e.g. "
                         "sk.encoders.load('minilm') and sk.encoders.load('efficientnet-lite0')")
    need = ["item_id"] + (["title"] if text_encoder is not None else []) + \
        (["image_path"] if image_encoder is not None else [])
    missing = [c for c in need if c not in catalog.columns]
    if missing:
        raise KeyError(f"catalog lacks column(s) {missing}; build it with sk.datasets.load_catalog or rename "
                       "your columns to item_id / title / image_path")
    if text_encoder is not None and "text" not in text_encoder.modalities:
        raise ValueError(f"text_encoder {text_encoder.name!r} cannot encode text")
    if image_encoder is not None and "image" not in image_encoder.modalities:
        raise ValueError(f"image_encoder {image_encoder.name!r} cannot encode images")
    if catalog["item_id"].isna().any():
        rows = catalog.index[catalog["item_id"].isna()].tolist()[:10]
        raise ValueError(f"catalog has missing item_id at rows {rows}; every item needs an id")
    ids = catalog["item_id"].astype(str).to_numpy()
    dup = pd.Series(ids)[pd.Series(ids).duplicated()].unique()
    if len(dup):
        raise ValueError(f"catalog has {len(dup)} duplicated item_id(s), e.g. {dup[:10].tolist()}; ids must be unique")
    return ids


def _encode_texts(catalog, ids, enc: Encoder, cache, batch_size, progress, failures):
    from tqdm.auto import tqdm

    n = len(ids)
    out = np.zeros((n, enc.text_dim), dtype=np.float32)
    mask = np.zeros(n, dtype=bool)
    rows, keys = [], []
    for i, t in enumerate(catalog["title"].tolist()):
        if t is None or (isinstance(t, float) and np.isnan(t)):
            failures.append((ids[i], "text", "missing title"))
            continue
        if not isinstance(t, str):
            t = str(t)
        if not t.strip():
            failures.append((ids[i], "text", "empty title"))
            continue
        rows.append((i, t))
        keys.append(content_key(t))
    found, vecs = (cache.get(keys) if cache is not None
                   else (np.zeros(len(keys), bool), np.zeros((len(keys), enc.text_dim), np.float32)))
    todo: dict[bytes, tuple[str, list[int]]] = {}
    for j, ((i, t), k) in enumerate(zip(rows, keys)):
        if found[j]:
            out[i], mask[i] = vecs[j], True
        else:
            todo.setdefault(k, (t, []))[1].append(i)
    items = list(todo.items())
    with _flush_on_exit(cache), tqdm(total=len(items), desc=f"encoding titles ({enc.name})", unit="title",
                                     disable=not progress or not items) as bar:
        for s in range(0, len(items), batch_size):
            chunk = items[s:s + batch_size]
            v = enc.encode_texts([t for _, (t, _) in chunk], batch_size=batch_size)
            for (k, (_, idx)), row in zip(chunk, v):
                out[idx], mask[idx] = row, True
            if cache is not None:
                cache.put([k for k, _ in chunk], v)
                if cache.pending >= 8192:
                    cache.flush()
            bar.update(len(chunk))
    return out, mask, len(items)


def _image_key(path) -> tuple[bytes | None, str | None]:
    if path is None or (isinstance(path, float) and np.isnan(path)) or (isinstance(path, str) and not path.strip()):
        return None, "no image path"
    try:   # checked to be a regular file of bounded size, then hashed in chunks (images.image_digest)
        return image_digest(path, digest_size=KEY_BYTES), None
    except ImageError as e:
        return None, e.reason


def _encode_images(catalog, ids, enc: Encoder, cache, batch_size, num_workers, progress, max_pixels, failures):
    from tqdm.auto import tqdm

    n = len(ids)
    out = np.zeros((n, enc.image_dim), dtype=np.float32)
    mask = np.zeros(n, dtype=bool)
    rows, keys = [], []
    paths = catalog["image_path"].tolist()
    for i, p in enumerate(tqdm(paths, desc="hashing images", unit="img", disable=not progress or n < 5000)):
        k, err = _image_key(p)
        if err is not None:
            failures.append((ids[i], "image", err if p is None or err == "no image path" else f"{err}: {p}"))
            continue
        rows.append(i)
        keys.append(k)
    found, vecs = (cache.get(keys) if cache is not None
                   else (np.zeros(len(keys), bool), np.zeros((len(keys), enc.image_dim), np.float32)))
    todo: dict[bytes, list[int]] = {}
    for j, (i, k) in enumerate(zip(rows, keys)):
        if found[j]:
            out[i], mask[i] = vecs[j], True
        else:
            todo.setdefault(k, []).append(i)
    items = list(todo.items())
    if items:
        ds = _ImageDataset([str(paths[idx[0]]) for _, idx in items], enc.image_transform, max_pixels)
        workers = _default_workers(enc) if num_workers is None else int(num_workers)
        dl = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         collate_fn=_collate, pin_memory=enc.device.type == "cuda",
                                         persistent_workers=False)
        with _flush_on_exit(cache), tqdm(total=len(items), desc=f"encoding images ({enc.name})", unit="img",
                                         disable=not progress) as bar:
            for idx, x, bad in dl:
                for j, reason in bad:
                    k, rows_j = items[j]
                    for i in rows_j:
                        failures.append((ids[i], "image", f"{reason}: {paths[i]}"))
                if idx:
                    v = enc.embed_image_batch(x)
                    for j, row in zip(idx, v):
                        out[items[j][1]] = row
                        mask[items[j][1]] = True
                    if cache is not None:
                        cache.put([items[j][0] for j in idx], v)
                        if cache.pending >= 8192:
                            cache.flush()
                bar.update(len(idx) + len(bad))
    return out, mask, len(items)


def encode_catalog(catalog: pd.DataFrame, text_encoder: Encoder | None = None, image_encoder: Encoder | None = None,
                   cache_dir: str | os.PathLike | None = None, batch_size: int = 64, num_workers: int | None = None,
                   progress: bool = True, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Embeddings:
    """Embed a catalog's titles and images, reusing an on-disk cache.

    Parameters
    ----------
    catalog : DataFrame
        Columns ``item_id`` and ``title`` (for text) / ``image_path`` (for images).
    text_encoder, image_encoder : Encoder, optional
        E.g. ``sk.encoders.load("minilm")``, ``sk.encoders.load("efficientnet-lite0")``.
    cache_dir : path, optional
        Cache folder (created if needed); None disables caching.
    batch_size : int
    num_workers : int, optional
        DataLoader workers decoding images; None = 0 on CPU, up to 4 with CUDA.
    progress : bool
        ``tqdm`` progress bars.
    max_pixels : int or None
        Decompression-bomb guard, see ``semcat_kit.images.load_image``.

    Returns
    -------
    Embeddings
        Rows in catalog order; ``failures`` lists every unusable title/image with a reason;
        ``meta["stats"]`` counts items encoded vs taken from the cache.
    """
    ids = _check_catalog(catalog, text_encoder, image_encoder)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    catalog = catalog.reset_index(drop=True)
    failures: list[tuple[str, str, str]] = []
    n = len(ids)
    text = image = None
    text_mask = np.zeros(n, dtype=bool)
    image_mask = np.zeros(n, dtype=bool)
    stats = {}
    if text_encoder is not None:
        cache = VectorCache(cache_dir, text_encoder.fingerprint, "text", text_encoder.text_dim) if cache_dir else None
        text, text_mask, computed = _encode_texts(catalog, ids, text_encoder, cache, batch_size, progress, failures)
        stats["text_encoded"] = computed
        stats["text_cache_corrupt"] = list(cache.corrupt) if cache is not None else []
    if image_encoder is not None:
        cache = VectorCache(cache_dir, image_encoder.fingerprint, "image", image_encoder.image_dim) if cache_dir else None
        image, image_mask, computed = _encode_images(catalog, ids, image_encoder, cache, batch_size, num_workers,
                                                     progress, max_pixels, failures)
        stats["image_encoded"] = computed
        stats["image_cache_corrupt"] = list(cache.corrupt) if cache is not None else []
    fails = pd.DataFrame(failures, columns=_FAILURE_COLUMNS) if failures else _empty_failures()
    meta = {"text_encoder": _meta(text_encoder, "text"), "image_encoder": _meta(image_encoder, "image"),
            "stats": stats}
    return Embeddings(ids, text, image, text_mask, image_mask, fails, meta)
