"""Encoding a catalog into an ``Embeddings`` table, streaming into an on-disk embedding store.

``encode_catalog(catalog, text_encoder=..., image_encoder=..., cache_dir=...)`` embeds titles and
images chunk by chunk, reusing vectors of the store (:mod:`semcat_kit.encode.store`) keyed by (encoder
fingerprint, hash of the title text / image bytes): re-running encodes nothing, adding 100
products encodes those 100, a killed run resumes after the last chunk written, and a different
encoder never sees another encoder's vectors. Images are read once, in the DataLoader workers:
the bytes are hashed, looked up, and decoded only when missing. Unusable items (empty title;
missing, 0-byte, corrupt or oversized image) get a zero vector, a mask of 0 and a row in
``Embeddings.failures``; they never stop the run.

``Embeddings`` holds arrays in memory for small sets (``save("x.npz")``) or memory-mapped
``.npy`` files in a folder for large ones (``save("folder")``, ``encode_catalog(out="folder")``):
then ``take`` copies only the rows it selects (a slice is a view) and the vectors stay in the
OS page cache instead of private memory.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .._core.io import atomic_dir, atomic_path
from .._core.memory import bound_heap, release_freed_memory
from .._core.contracts import compact_ids, duplicated_ids, id_hashes
from .store import KEY_BYTES, StoreRows, VectorStore, _write_probe, as_keys, content_key, content_keys
from .encoders import Encoder
from ..datasets.images import DEFAULT_MAX_PIXELS, ImageError, image_digest, load_image, read_image_bytes

__all__ = ["Embeddings", "encode_catalog", "encode_into_store", "encode_distributed", "StoreFill", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_FAILURE_COLUMNS = ["item_id", "modality", "reason"]


def _empty_failures() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=str) for c in _FAILURE_COLUMNS})


def _ids_in(which, ids) -> np.ndarray:
    """bool per id of ``which`` (few: the failures): whether it is among ``ids`` (many: a catalog).

    By 64-bit hashes (8 bytes an id of ``ids``, no Python string per id), then the hash matches
    compared exactly (a hash collision is never taken for a match).
    """
    which = compact_ids(which)
    if not len(which) or not len(ids):
        return np.zeros(len(which), dtype=bool)
    hw, hi = id_hashes(which), id_hashes(ids)
    cand = np.isin(hw, hi)
    if cand.any():
        ids = np.asarray(ids)
        order = np.argsort(hi, kind="stable")
        hs = hi[order]
        js = np.flatnonzero(cand)
        lo, up = np.searchsorted(hs, hw[js], "left"), np.searchsorted(hs, hw[js], "right")
        ok = ids[order[lo]] == which[js]              # the first id with that hash (vectorised)
        for k in np.flatnonzero(~ok & (up - lo > 1)):   # a hash shared by several ids: rare
            ok[k] = bool((ids[order[lo[k]:up[k]]] == which[js[k]]).any())
        cand[js] = ok
    return cand


@dataclass
class Embeddings:
    """Per-item embeddings that training consumes.

    Attributes
    ----------
    item_ids : numpy.ndarray of str, (N,)
    text : float32 (N, dt) or None
        An array, a memory-mapped ``.npy`` (``Embeddings.load(folder)``) or a
        :class:`~semcat_kit.encode.store.StoreRows` view on the embedding store (``encode_catalog`` at
        scale): then nothing is read until rows are used (``take`` gives another view,
        ``np.asarray(emb.text)`` materialises).
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
        self.item_ids = compact_ids(self.item_ids)       # '<U' array: no Python str per id, no copy
        n = len(self.item_ids)
        if self.item_ids.ndim != 1:
            raise ValueError(f"item_ids must be 1-D, got shape {self.item_ids.shape}")
        for name in ("text", "image"):
            m = getattr(self, name)
            if m is not None:
                if not (isinstance(m, StoreRows) or (isinstance(m, np.ndarray) and m.dtype == np.float32)):
                    m = np.asarray(m, dtype=np.float32)  # a float32 np.memmap / store view stays one (lazy)
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
        """Rows by integer positions, a boolean mask or a slice (failures follow the rows kept).

        Only the selected rows are copied; a slice shares memory with this table (with a
        memory-mapped table, nothing is read until used); on a store view (``StoreRows``) the
        result is another view: positions only, no vector is read.
        """
        if isinstance(idx, slice):
            return self._subset(idx, self.item_ids[idx])
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
        return self._subset(idx, self.item_ids[idx])

    def _subset(self, idx, ids) -> "Embeddings":
        fails = self.failures
        if len(fails):
            fails = fails[_ids_in(fails["item_id"].astype(str).to_numpy(), ids)].reset_index(drop=True)
        def sel(x):
            if x is None:
                return None
            return x.take(idx) if isinstance(x, StoreRows) else x[idx]   # a view stays a view

        return Embeddings(ids, sel(self.text), sel(self.image), self.text_mask[idx],
                          self.image_mask[idx], fails.copy(), json.loads(json.dumps(self.meta)))

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
        """Write atomically. Returns the path.

        ``*.npz``: one file (format version included), for small sets. Any other path: a folder
        readable without semcat_kit: ``text.npy`` / ``image.npy`` (float32 ``(N, d)``, memory-mapped
        by :meth:`load`), ``items.arrow`` (Arrow IPC / Feather: ``item_id, text_mask,
        image_mask``), ``failures.arrow`` (``item_id, modality, reason``) and ``embeddings.json``
        (format version, sizes, encoder meta).
        """
        path = Path(path).expanduser()
        if path.suffix != ".npz":
            with atomic_dir(path) as tmp:
                self._write_folder_files(tmp)
            return path
        arrays = {
            "format_version": np.array(FORMAT_VERSION),
            "item_ids": self.item_ids.astype(str),
            "text_mask": self.text_mask, "image_mask": self.image_mask,
            "failures": np.array(self.failures[_FAILURE_COLUMNS].astype(str).to_json(orient="records")),
            "meta": np.array(json.dumps(self.meta)),
        }
        if self.text is not None:
            arrays["text"] = np.asarray(self.text)       # a store view is materialised here (small sets)
        if self.image is not None:
            arrays["image"] = np.asarray(self.image)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        return path

    def _write_folder_files(self, folder: Path, arrays_written: bool = False) -> None:
        import pyarrow as pa
        import pyarrow.feather as feather

        dims = {}
        for name in ("text", "image"):
            a = getattr(self, name)
            dims[name] = None if a is None else int(a.shape[1])
            if a is not None and not arrays_written:
                if isinstance(a, StoreRows):   # block by block: private memory bounded by a block
                    mm = np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=np.float32, shape=a.shape)
                    for s, rows in a.blocks():
                        mm[s:s + len(rows)] = rows
                    mm.flush()
                    del mm
                else:
                    np.save(folder / f"{name}.npy", a)
        feather.write_feather(pa.table({"item_id": pa.array(np.asarray(self.item_ids), pa.string()),   # no list
                                        "text_mask": self.text_mask, "image_mask": self.image_mask}),
                              str(folder / "items.arrow"), compression="uncompressed")
        fails = self.failures[_FAILURE_COLUMNS].astype(str).reset_index(drop=True)
        feather.write_feather(pa.Table.from_pandas(fails, preserve_index=False), str(folder / "failures.arrow"),
                              compression="uncompressed")
        info = {"format": "semcat-embeddings", "format_version": FORMAT_VERSION, "n": len(self),
                "text_dim": dims["text"], "image_dim": dims["image"], "meta": self.meta}
        (folder / "embeddings.json").write_text(json.dumps(info, indent=1, default=str), encoding="utf-8")

    @classmethod
    def _load_folder(cls, path: Path) -> "Embeddings":
        import pyarrow.feather as feather

        try:
            info = json.loads((path / "embeddings.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"{path} is a folder but not an Embeddings folder (no embeddings.json)") from None
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}/embeddings.json is unreadable ({e}); re-create it with Embeddings.save") from e
        if info.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path} has embeddings format {info.get('format_version')}; this semcat_kit reads "
                             f"{FORMAT_VERSION}. Re-encode the catalog (the cache makes it quick)")
        try:
            items = feather.read_table(str(path / "items.arrow"), memory_map=True)
            fails = feather.read_table(str(path / "failures.arrow")).to_pandas()
            arrays = {}
            for name in ("text", "image"):
                if info.get(f"{name}_dim") is not None:
                    a = np.load(path / f"{name}.npy", mmap_mode="r")
                    if a.shape != (info["n"], info[f"{name}_dim"]) or a.dtype != np.float32:
                        raise ValueError(f"{name}.npy is {a.dtype} {a.shape}, expected float32 "
                                         f"({info['n']}, {info[f'{name}_dim']})")
                    arrays[name] = a
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"{path} is a damaged embeddings folder ({type(e).__name__}: {e}); re-create it "
                             "with encode_catalog(..., out=...) (the cache makes it quick)") from e
        fails = fails.astype(str) if len(fails) else _empty_failures()
        return cls(items.column("item_id").to_numpy(zero_copy_only=False), arrays.get("text"), arrays.get("image"),
                   items.column("text_mask").to_numpy(zero_copy_only=False),
                   items.column("image_mask").to_numpy(zero_copy_only=False), fails, info.get("meta") or {})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Embeddings":
        """Read a file or folder written by ``save`` (a folder's vectors are memory-mapped, read-only)."""
        path = Path(path).expanduser()
        if path.is_dir():
            return cls._load_folder(path)
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
def _read_image_bytes(path) -> tuple[bytes | None, str | None]:
    """The file's bytes, read once (hashed and decoded from the same bytes), or a failure reason.

    Goes through ``images.read_image_bytes``: a FIFO, a device, a folder or an oversized file is
    refused before anything is read.
    """
    if path is None or (isinstance(path, float) and np.isnan(path)) or (isinstance(path, str) and not path.strip()):
        return None, "no image path"
    try:
        return read_image_bytes(path), None
    except ImageError as e:
        return None, e.reason


def _image_key(path) -> tuple[bytes | None, str | None]:
    """Content key of an image file (streamed hash, same checks), or a failure reason."""
    if path is None or (isinstance(path, float) and np.isnan(path)) or (isinstance(path, str) and not path.strip()):
        return None, "no image path"
    try:
        return image_digest(path, digest_size=KEY_BYTES), None
    except ImageError as e:
        return None, e.reason


class _ImageBatches(torch.utils.data.Dataset):
    """Batch ``b`` of the catalog's images, prepared in a DataLoader worker.

    Each file is read once; its bytes are hashed (the cache key), looked up in the store
    (vectorised, per batch) and decoded only when missing, once per distinct content.
    """

    def __init__(self, paths: list, batch_size: int, transform, max_pixels, store: VectorStore | None, dim: int):
        self.paths, self.bs, self.transform, self.max_pixels = paths, batch_size, transform, max_pixels
        self.store, self.dim = store, dim

    def __len__(self):
        return (len(self.paths) + self.bs - 1) // self.bs

    def __getitem__(self, b):
        rows, datas, fails = [], [], []
        for i in range(b * self.bs, min(len(self.paths), (b + 1) * self.bs)):
            data, err = _read_image_bytes(self.paths[i])
            if err is None:
                rows.append(i)
                datas.append(data)
            else:
                fails.append((i, err))
        keys = as_keys([content_key(d) for d in datas])
        ukeys, first, inv = np.unique(keys, axis=0, return_index=True, return_inverse=True) if len(keys) else \
            (keys, np.zeros(0, np.int64), np.zeros(0, np.int64))
        if self.store is not None:
            found, vecs = self.store.get(ukeys)
        else:
            found, vecs = np.zeros(len(ukeys), bool), np.zeros((len(ukeys), self.dim), np.float32)
        xs, x_u, bad_u = [], [], []
        for u in np.flatnonzero(~found):
            try:
                xs.append(self.transform(load_image(datas[first[u]], max_pixels=self.max_pixels)))
                x_u.append(int(u))
            except ImageError as e:
                bad_u.append((int(u), e.reason))
            except Exception as e:  # noqa: BLE001 - a failing transform must not end a long run
                bad_u.append((int(u), f"preprocessing failed ({type(e).__name__}: {e})"))
        return {"rows": np.asarray(rows, dtype=np.int64), "inv": np.asarray(inv, dtype=np.int64).reshape(-1),
                "ukeys": ukeys, "found": found, "hits": vecs[found], "x": torch.stack(xs) if xs else None,
                "x_u": np.asarray(x_u, dtype=np.int64), "bad_u": bad_u, "fails": fails}


def _identity(batch):
    return batch


@contextlib.contextmanager
def _flush_on_exit(store: VectorStore | None):
    """Write whatever was computed to the store even if the run is interrupted."""
    try:
        yield
    finally:
        if store is not None:
            store.flush()


def _default_workers(encoder: Encoder) -> int:
    if encoder.device.type == "cuda":
        return min(4, max(1, (os.cpu_count() or 2) - 1))
    return 0  # on CPU the model already uses every core; decoding small photos inline is faster


def _meta(enc: Encoder | None, modality: str) -> dict | None:
    if enc is None:
        return None
    return {"name": enc.name, "fingerprint": enc.fingerprint,
            "dim": int(enc.text_dim if modality == "text" else enc.image_dim)}


class _FileCatalog:
    """A catalog file (``item_id``, ``title``, ``image_path``) read column by column in chunks: never
    held whole. Read by the package's one chunked reader, :class:`semcat_kit.datasets.readers.CatalogFile`
    (CSV/TSV with malformed lines repaired and reported, Parquet, Arrow/Feather; every column as
    text, so ``00123`` stays ``00123``)."""

    def __init__(self, path):
        from ..datasets import CatalogFile

        self.file = CatalogFile(path, what="catalog file", id_col="item_id", repair_col="title")
        self.path, self.kind, self.columns = self.file.path, self.file.kind, self.file.columns

    def chunks(self, column: str, size: int):
        """``pyarrow`` string arrays of ``size`` rows (the last may be shorter) of one column, in order."""
        for t, _ in self.file.chunks(size, [column], arrow=True):
            if t.num_rows:
                yield t.column(0).combine_chunks()

    def column(self, column: str):
        """The whole column as one compact ``pyarrow`` string array (offsets + bytes; no Python objects)."""
        import pyarrow as pa

        parts = list(self.chunks(column, 65536))
        return pa.concat_arrays(parts) if parts else pa.array([], pa.string())


class _ArrowColumn:
    """Random access to a compact ``pyarrow`` string column (image paths): ``col[i]`` -> str or None."""

    def __init__(self, arr):
        self.arr = arr

    def __len__(self) -> int:
        return len(self.arr)

    def __getitem__(self, i):
        return self.arr[int(i)].as_py()


def _column_chunks(catalog, column: str, size: int):
    """Lists of ``size`` values of a catalog column (DataFrame or :class:`_FileCatalog`), in order."""
    if isinstance(catalog, _FileCatalog):
        for arr in catalog.chunks(column, size):
            yield arr.to_pylist()
    else:
        col = catalog[column]
        for a in range(0, len(col), size):
            yield col.iloc[a:a + size].tolist()


def _catalog_ids(catalog, chunk_size: int) -> np.ndarray:
    """The ``item_id`` column as one compact ``<U`` array (read in chunks from a file)."""
    if not isinstance(catalog, _FileCatalog):
        col = catalog["item_id"]
        if col.isna().any():
            rows = np.flatnonzero(col.isna().to_numpy())[:10].tolist()
            raise ValueError(f"catalog has missing item_id at rows {rows}; every item needs an id")
        return compact_ids(col.astype(str).to_numpy())
    import pyarrow as pa

    parts, a = [], 0
    for arr in catalog.chunks("item_id", max(chunk_size, 65536)):
        if arr.null_count:
            rows = (a + np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[:10]).tolist()
            raise ValueError(f"catalog {catalog.path} has missing item_id at rows {rows}; every item needs an id")
        parts.append(compact_ids(arr.cast(pa.string())))
        a += len(arr)
    return np.concatenate(parts) if parts else np.array([], dtype=str)


def _check_catalog(catalog, text_encoder, image_encoder, chunk_size: int = 65536) -> np.ndarray:
    if not isinstance(catalog, (pd.DataFrame, _FileCatalog)):
        raise TypeError(f"encode_catalog expects a DataFrame (item_id, title, image_path) or the path of a Parquet/"
                        f"Arrow/CSV file, got {type(catalog).__name__}")
    if text_encoder is None and image_encoder is None:
        raise ValueError("encode_catalog needs text_encoder and/or image_encoder, e.g. "
                         "sk.encoders.load('minilm') and sk.encoders.load('efficientnet-lite0')")
    need = ["item_id"] + (["title"] if text_encoder is not None else []) + \
        (["image_path"] if image_encoder is not None else [])
    missing = [c for c in need if c not in catalog.columns]
    if missing:
        where = f" {catalog.path}" if isinstance(catalog, _FileCatalog) else ""
        raise KeyError(f"catalog{where} lacks column(s) {missing}; build it with sk.datasets.load_catalog or rename "
                       "your columns to item_id / title / image_path")
    if text_encoder is not None and "text" not in text_encoder.modalities:
        raise ValueError(f"text_encoder {text_encoder.name!r} cannot encode text")
    if image_encoder is not None and "image" not in image_encoder.modalities:
        raise ValueError(f"image_encoder {image_encoder.name!r} cannot encode images")
    ids = _catalog_ids(catalog, chunk_size)
    dup = duplicated_ids(ids)          # vectorised (64-bit hashes, exact check of shared hashes)
    if len(dup):
        raise ValueError(f"catalog has {len(dup)} duplicated item_id(s), e.g. {dup[:10].tolist()}; ids must be unique")
    return ids


def _encode_texts(titles, ids, enc: Encoder, store, out, mask, batch_size, chunk_size, progress, failures,
                  row_keys=None, counts: dict | None = None):
    """Titles chunk by chunk: hash, look up (vectorised), encode the misses once per distinct text, store.

    ``out`` None (a view on the store is returned): hits are only located, never read, and each
    row's key goes to ``row_keys``. ``counts["hashed"]`` (if given) counts the titles hashed.
    """
    from tqdm.auto import tqdm

    n, computed = len(ids), 0
    chunks = _column_chunks(titles, "title", chunk_size) if not isinstance(titles, list) else \
        (titles[a:a + chunk_size] for a in range(0, len(titles), chunk_size))
    with _flush_on_exit(store), tqdm(total=n, desc=f"encoding titles ({enc.name})", unit="title",
                                     disable=not progress or n == 0) as bar:
        for c0, chunk in zip(range(0, n, chunk_size), chunks):
            rows, texts = [], []
            for i in range(c0, min(n, c0 + chunk_size)):
                t = chunk[i - c0]
                if t is None or (isinstance(t, float) and np.isnan(t)):
                    failures.append((ids[i], "text", "missing title"))
                    continue
                if not isinstance(t, str):
                    t = str(t)
                if not t.strip():
                    failures.append((ids[i], "text", "empty title"))
                    continue
                rows.append(i)
                texts.append(t)
            if rows:
                rows = np.asarray(rows, dtype=np.int64)
                keys = content_keys(texts)
                if counts is not None:
                    counts["hashed"] += len(texts)
                ukeys, first, inv = np.unique(keys, axis=0, return_index=True, return_inverse=True)
                inv = inv.reshape(-1)
                if store is not None and out is None:
                    found, uvec = store.contains(ukeys), None
                elif store is not None:
                    found, uvec = store.get(ukeys)
                else:
                    found, uvec = np.zeros(len(ukeys), bool), np.zeros((len(ukeys), enc.text_dim), np.float32)
                miss = np.flatnonzero(~found)
                try:
                    for s in range(0, len(miss), batch_size):
                        u = miss[s:s + batch_size]
                        v = enc.encode_texts([texts[first[j]] for j in u], batch_size=batch_size)
                        if uvec is not None:
                            uvec[u] = v
                        found[u] = True
                        computed += len(u)
                        if store is not None:
                            store.put(ukeys[u], v)
                finally:  # an interrupted chunk still delivers (and stores) what it finished
                    ok = found[inv]
                    if out is not None:
                        out[rows[ok]] = uvec[inv[ok]]
                    if row_keys is not None:
                        row_keys[rows[ok]] = ukeys[inv[ok]]
                    mask[rows[ok]] = True
            if store is not None:
                store.flush()
            bar.update(min(n, c0 + chunk_size) - c0)
    return computed


def _encode_images(paths: list, ids, enc: Encoder, store, out, mask, batch_size, chunk_size, num_workers, progress,
                   max_pixels, failures, row_keys=None, counts: dict | None = None):
    """Images batch by batch; reading, hashing, lookup and decoding happen in the DataLoader workers.

    ``counts["hashed"]`` (if given) counts the image files read and hashed.
    """
    from tqdm.auto import tqdm

    n, computed = len(paths), 0
    if n == 0:
        return 0
    ds = _ImageBatches(paths, batch_size, enc.image_transform, max_pixels, store, enc.image_dim)
    workers = _default_workers(enc) if num_workers is None else int(num_workers)
    dl = torch.utils.data.DataLoader(ds, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_identity,
                                     pin_memory=enc.device.type == "cuda", persistent_workers=False)
    with _flush_on_exit(store), tqdm(total=n, desc=f"encoding images ({enc.name})", unit="img",
                                     disable=not progress) as bar:
        for b in dl:
            for i, reason in b["fails"]:
                failures.append((ids[i], "image", reason if reason == "no image path" else f"{reason}: {paths[i]}"))
            rows, inv, ukeys = b["rows"], b["inv"], b["ukeys"]
            if counts is not None:
                counts["hashed"] += len(rows)      # the files read and hashed (in the worker)
            ok_u = np.asarray(b["found"], dtype=bool).copy()
            uvec = np.zeros((len(ukeys), enc.image_dim), dtype=np.float32)
            uvec[ok_u] = b["hits"]
            if b["x"] is not None:
                x_u = b["x_u"]
                if store is not None:  # content seen earlier in this run (another batch) is not embedded twice
                    f2, v2 = store.get(ukeys[x_u])
                else:
                    f2, v2 = np.zeros(len(x_u), bool), None
                if f2.any():
                    uvec[x_u[f2]] = v2[f2]
                need = ~f2
                if need.any():
                    v = enc.embed_image_batch(b["x"][torch.from_numpy(need)] if not need.all() else b["x"])
                    uvec[x_u[need]] = v
                    computed += int(need.sum())
                    if store is not None:
                        store.put(ukeys[x_u[need]], v)
                ok_u[x_u] = True
            for u, reason in b["bad_u"]:
                for i in rows[inv == u]:
                    failures.append((ids[i], "image", f"{reason}: {paths[i]}"))
            ok = ok_u[inv]
            if out is not None:
                out[rows[ok]] = uvec[inv[ok]]
            if row_keys is not None:
                row_keys[rows[ok]] = ukeys[inv[ok]]
            mask[rows[ok]] = True
            if store is not None and store.pending >= chunk_size:
                store.flush()
            bar.update(len(rows) + len(b["fails"]))
    return computed


def _view(store: VectorStore, keys: np.ndarray, mask: np.ndarray, ids, modality: str, failures: list):
    """The rows' vectors as a view on the store; a row whose vector went missing is reported, not zeroed silently."""
    v = store.locate(keys, valid=mask, keep_index=False)   # one-off: index peak is one shard's
    lost = np.flatnonzero(mask & ~v.found)
    for i in lost:   # another process removed a shard between the write and now: rare, reported
        failures.append((ids[i], modality, f"vector missing from the store {store.root}; encode again"))
    mask[lost] = False
    return v


def _probe_cache(cache_dir: Path) -> str | None:
    """None when ``cache_dir`` can be written, else why not (checked before any encoding)."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        _write_probe(cache_dir)
        return None
    except OSError as e:
        return f"{type(e).__name__}: {e.strerror or e}"


def _open_stores(cache_dir, text_encoder, image_encoder, stats: dict, store_dtype, store_writer, keep_unwritten,
                 stacklevel: int = 3) -> dict:
    """The encoders' stores under ``cache_dir``, opened (and checked) before any encoding starts;
    a folder that cannot be written is warned about once and named in ``stats``."""
    stores: dict[str, VectorStore | None] = {"text": None, "image": None}
    if cache_dir is None:
        return stores
    cache_dir = Path(cache_dir).expanduser()
    problem = _probe_cache(cache_dir)
    stats["cache_write_error"] = problem
    if problem is not None:
        warnings.warn(f"embedding cache folder {cache_dir} cannot be written ({problem}); vectors will be "
                      "computed and returned but not cached. Fix its permissions or give another cache_dir",
                      RuntimeWarning, stacklevel=stacklevel)
    for m, enc in (("text", text_encoder), ("image", image_encoder)):
        if enc is not None:
            dim = enc.text_dim if m == "text" else enc.image_dim
            stores[m] = VectorStore.for_encoder(cache_dir, enc.fingerprint, m, dim, dtype=store_dtype,
                                                writer=store_writer, warn=problem is None,
                                                keep_unwritten=keep_unwritten)
    return stores


def _close_stats(stores: dict, stats: dict, cache_dir) -> None:
    errors = [s.write_error for s in stores.values() if s is not None and s.write_error]
    if cache_dir is not None:
        stats["cache_write_error"] = stats["cache_write_error"] or (errors[0] if errors else None)
        stats["cached"] = stats["cache_write_error"] is None


@dataclass
class StoreFill:
    """What :func:`encode_into_store` did.

    Attributes
    ----------
    n : int
        Products read.
    stats : dict
        As ``Embeddings.meta["stats"]``: ``text_encoded`` / ``image_encoded`` (computed; the rest came
        from the store), ``*_cache_corrupt``, ``cache_write_error``, ``cached``.
    failures : DataFrame ``item_id, modality, reason``
        Every unusable title / image, as in ``Embeddings.failures``.
    text_keys, image_keys : uint8 (n, 16) or None
        With ``keep_keys=True``: each row's content key (the store key of its title / image bytes;
        zeros where unusable), in the order the rows were read. None otherwise.
    text_mask, image_mask : bool (n,) or None
        With ``keep_keys=True``: whether the row's title / image is usable (its vector is stored).
    failure_rows : int64 (len(failures),) or None
        With ``keep_keys=True``: the row (0..n-1, order read) of each failure.
    """

    n: int
    stats: dict
    failures: pd.DataFrame
    text_keys: np.ndarray | None = None
    text_mask: np.ndarray | None = None
    image_keys: np.ndarray | None = None
    image_mask: np.ndarray | None = None
    failure_rows: np.ndarray | None = None


def encode_into_store(catalog, text_encoder: Encoder | None = None, image_encoder: Encoder | None = None, *,
                      cache_dir: str | os.PathLike, batch_size: int = 64, num_workers: int | None = None,
                      progress: bool = True, max_pixels: int | None = DEFAULT_MAX_PIXELS, chunk_size: int = 8192,
                      store_dtype: str = "float32", store_writer: str | None = None,
                      total: int | None = None, check_ids: bool = True, keep_keys: bool = False) -> StoreFill:
    """Fill the embedding store with a catalog's vectors, chunk by chunk, and return no vectors.

    What ``encode_catalog(..., cache_dir=...)`` writes to the store, without the ``(N, d)`` result:
    private memory is bounded by one chunk, the store's bucket tables (4-8 bytes a stored key) and
    the failures (the duplicate-id check across chunks, :class:`semcat_kit._core.contracts.SeenIds`,
    keeps its hashes in memory-mapped files beyond 2^18 ids). ``semcat encode`` runs it on each
    rank's share. A killed run resumes: vectors are keyed by content, written after every chunk.

    Parameters
    ----------
    catalog : DataFrame, path, or iterable of DataFrames
        Columns ``item_id`` and ``title`` / ``image_path`` (as :func:`encode_catalog`). A path to a
        Parquet / Arrow / CSV file is read ``chunk_size`` rows at a time
        (:class:`semcat_kit.datasets.readers.CatalogFile`); an iterable (a generator of chunks) is consumed
        once, frame by frame.
    text_encoder, image_encoder, batch_size, num_workers, max_pixels, store_dtype, store_writer
        As :func:`encode_catalog`.
    cache_dir : path
        The store folder (required).
    progress : bool
        One ``tqdm`` bar over the products.
    chunk_size : int
        Rows per chunk read from a DataFrame or a file, and items between two store writes.
    total : int, optional
        Number of products, for the progress bar of an iterable.
    check_ids : bool
        Refuse an id seen in an earlier chunk (:class:`~semcat_kit._core.contracts.SeenIds`). False when the chunks were checked
        already (:func:`semcat_kit.datasets.mapping.load_catalog_chunks` does); ids repeated within a
        chunk are always refused.
    keep_keys : bool
        Also return each row's content keys and usable masks per modality
        (``StoreFill.text_keys`` / ``text_mask`` / ``image_keys`` / ``image_mask``: 17 bytes a row
        and modality) and the row of each failure (``failure_rows``): enough to build a view on the
        store without hashing the rows again (:func:`encode_distributed`).

    Returns
    -------
    StoreFill
        ``n``, ``stats`` (also ``text_hashed`` / ``image_hashed``: titles hashed, image files read
        and hashed by this call) and ``failures``; the keys with ``keep_keys``.
    """
    if cache_dir is None:
        raise ValueError("encode_into_store needs a cache_dir: the store it fills")
    bound_heap()          # chunk temporaries mapped on their own: memory stays flat (see _memory)
    if batch_size < 1 or chunk_size < 1:
        raise ValueError(f"batch_size and chunk_size must be >= 1, got {batch_size}, {chunk_size}")
    if text_encoder is None and image_encoder is None:
        raise ValueError("encode_into_store needs text_encoder and/or image_encoder, e.g. "
                         "sk.encoders.load('minilm') and sk.encoders.load('efficientnet-lite0')")
    need = ["item_id"] + (["title"] if text_encoder is not None else []) + \
        (["image_path"] if image_encoder is not None else [])
    if isinstance(catalog, pd.DataFrame):
        total = len(catalog) if total is None else total
        frames = (catalog.iloc[a:a + chunk_size] for a in range(0, len(catalog), chunk_size))
    elif isinstance(catalog, (str, os.PathLike)):
        f = _FileCatalog(catalog).file
        missing = [c for c in need if c not in f.columns]
        if missing:
            raise KeyError(f"catalog {f.path} lacks column(s) {missing}; build it with sk.datasets.load_catalog or "
                           "rename your columns to item_id / title / image_path")
        frames = (df for df, _ in f.chunks(chunk_size, need))
    else:
        frames = iter(catalog)
    stats: dict = {}
    stores = _open_stores(cache_dir, text_encoder, image_encoder, stats, store_dtype, store_writer, False)
    return _fill_store(frames, text_encoder, image_encoder, stores, stats, cache_dir, batch_size=batch_size,
                       num_workers=num_workers, progress=progress, max_pixels=max_pixels, chunk_size=chunk_size,
                       total=total, check_ids=check_ids, keep_keys=keep_keys)


def _fill_store(frames, text_encoder, image_encoder, stores: dict, stats: dict, cache_dir, *, batch_size, num_workers,
                progress, max_pixels, chunk_size, total, check_ids, keep_keys) -> StoreFill:
    """:func:`encode_into_store` on DataFrame chunks, into stores already opened (:func:`_open_stores`)."""
    from tqdm.auto import tqdm

    from .._core.seen_ids import SeenIds

    failures: list[tuple[str, str, str]] = []
    fail_rows: list[np.ndarray] = []
    kept: dict[str, tuple[list, list]] = {"text": ([], []), "image": ([], [])}
    seen = SeenIds()
    n, computed, hashed = 0, {"text": 0, "image": 0}, {"text": 0, "image": 0}
    with tqdm(total=total, desc="encoding into the store", unit="item", disable=not progress) as bar:
        for df in frames:
            df = df.reset_index(drop=True)
            if not len(df):
                continue
            ids = _check_catalog(df, text_encoder, image_encoder)   # columns, missing / repeated ids in the chunk
            again = seen.add(ids) if check_ids else ids[:0]
            if len(again):
                raise ValueError(f"catalog has duplicated item_id(s), e.g. {list(dict.fromkeys(again.tolist()))[:10]} "
                                 f"(seen in an earlier chunk); ids must be unique")
            before = len(failures)
            for m, enc in (("text", text_encoder), ("image", image_encoder)):
                if enc is None:
                    continue
                mask = np.zeros(len(df), dtype=bool)
                keys = np.zeros((len(df), KEY_BYTES), dtype=np.uint8) if keep_keys else None
                counts = {"hashed": 0}
                if m == "text":
                    computed[m] += _encode_texts(df, ids, enc, stores[m], None, mask, batch_size, chunk_size, False,
                                                 failures, row_keys=keys, counts=counts)
                else:
                    computed[m] += _encode_images(df["image_path"].tolist(), ids, enc, stores[m], None, mask,
                                                  batch_size, chunk_size, num_workers, False, max_pixels, failures,
                                                  row_keys=keys, counts=counts)
                hashed[m] += counts["hashed"]
                if keep_keys:
                    kept[m][0].append(keys)
                    kept[m][1].append(mask)
            if keep_keys and len(failures) > before:    # each failure's row: its id among the chunk's (bounded)
                where = pd.Index(ids).get_indexer([f[0] for f in failures[before:]])
                fail_rows.append(n + where.astype(np.int64))
            n += len(df)
            bar.update(len(df))
            del df
            release_freed_memory()       # the chunk's strings: back to the OS, not kept by malloc (see _memory)
    for m, enc in (("text", text_encoder), ("image", image_encoder)):
        if enc is not None:
            stats[f"{m}_encoded"] = computed[m]
            stats[f"{m}_hashed"] = hashed[m]
            stats[f"{m}_cache_corrupt"] = list(stores[m].corrupt) if stores[m] is not None else []
    _close_stats(stores, stats, cache_dir)
    fails = pd.DataFrame(failures, columns=_FAILURE_COLUMNS) if failures else _empty_failures()
    fill = StoreFill(n, stats, fails)
    if keep_keys:
        for m, enc in (("text", text_encoder), ("image", image_encoder)):
            if enc is not None:
                keys, masks = kept[m]
                setattr(fill, f"{m}_keys", np.concatenate(keys) if keys else np.zeros((0, KEY_BYTES), np.uint8))
                setattr(fill, f"{m}_mask", np.concatenate(masks) if masks else np.zeros(0, bool))
        fill.failure_rows = np.concatenate(fail_rows) if fail_rows else np.zeros(0, np.int64)
    return fill


def encode_catalog(catalog: pd.DataFrame, text_encoder: Encoder | None = None, image_encoder: Encoder | None = None,
                   cache_dir: str | os.PathLike | None = None, batch_size: int = 64, num_workers: int | None = None,
                   progress: bool = True, max_pixels: int | None = DEFAULT_MAX_PIXELS, out: str | os.PathLike | None = None,
                   chunk_size: int = 8192, store_dtype: str = "float32", store_writer: str | None = None,
                   view: bool | None = None) -> Embeddings:
    """Embed a catalog's titles and images, reusing (and filling) an on-disk embedding store.

    Parameters
    ----------
    catalog : DataFrame or path
        Columns ``item_id`` and ``title`` (for text) / ``image_path`` (for images). A path to a
        Parquet (``.parquet``), Arrow/Feather (``.arrow``, ``.feather``) or CSV (``.csv``, ``.tsv``)
        file is read in record batches, one column at a time: the titles are never all in memory,
        the ids are kept as one compact ``<U`` array, the image paths as one pyarrow string array.
    text_encoder, image_encoder : Encoder, optional
        E.g. ``sk.encoders.load("minilm")``, ``sk.encoders.load("efficientnet-lite0")``.
    cache_dir : path, optional
        Store folder (see :mod:`semcat_kit.encode.store`; created if needed); None disables caching.
        A folder that cannot be written is reported once, before encoding, and the run goes on
        uncached; a write that fails later (disk full) is reported and loses nothing returned.
    batch_size : int
    num_workers : int, optional
        DataLoader workers reading, hashing and decoding images; None = 0 on CPU, up to 4 with CUDA.
    progress : bool
        ``tqdm`` progress bars.
    max_pixels : int or None
        Decompression-bomb guard, see ``semcat_kit.datasets.images.load_image``.
    out : path, optional
        Write the result to this folder (``.npy`` memory maps, see :meth:`Embeddings.save`) while
        encoding, and return a memory-mapped view of it: private memory is bounded by the chunk,
        not by the catalog size. Without it the result is held in memory.
    chunk_size : int
        Items between two writes to the store: a killed run loses at most one chunk and a re-run
        resumes after the last chunk written.
    store_dtype : {"float32", "float16"}
        Precision of newly written store shards (see :mod:`semcat_kit.encode.store`).
    store_writer : str, optional
        Tag in the store's shard file names (``semcat encode`` uses the rank).
    view : bool, optional
        Return ``text`` / ``image`` as :class:`~semcat_kit.encode.store.StoreRows` views on the store
        (positions only: no ``(N, d)`` array is built; training, prediction and ``take`` read rows
        when they need them; ``np.asarray(emb.text)`` materialises). Needs ``cache_dir``; not with
        ``out``. Default: when ``cache_dir`` is given, ``out`` is not, and the vectors would take
        more than :data:`semcat_kit._core.contracts.LAZY_ELEMENTS` floats (800 MB) in memory. Vectors the
        store cannot write (disk full) are kept in memory and still found by the view.

    Returns
    -------
    Embeddings
        Rows in catalog order; ``failures`` lists every unusable title/image with a reason;
        ``meta["stats"]`` counts items encoded vs taken from the cache and names cache problems.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    bound_heap()          # chunk temporaries mapped on their own: memory stays flat (see _memory)
    if isinstance(catalog, (str, os.PathLike)):
        catalog = _FileCatalog(catalog)           # read in record batches, column by column
    ids = _check_catalog(catalog, text_encoder, image_encoder)
    if isinstance(catalog, pd.DataFrame):
        catalog = catalog.reset_index(drop=True)
    failures: list[tuple[str, str, str]] = []
    n = len(ids)
    stats: dict = {}
    if view and cache_dir is None:
        raise ValueError("encode_catalog(view=True) needs a cache_dir: the view reads its vectors from the store")
    if view and out is not None:
        raise ValueError("encode_catalog: give either out= (a folder of .npy files) or view=True (a view on the "
                         "store), not both")
    if view is None:
        from .._core.contracts import LAZY_ELEMENTS

        dims = (text_encoder.text_dim if text_encoder is not None else 0) + \
            (image_encoder.image_dim if image_encoder is not None else 0)
        view = cache_dir is not None and out is None and n * dims > LAZY_ELEMENTS
    view = bool(view)
    stores = _open_stores(cache_dir, text_encoder, image_encoder, stats, store_dtype, store_writer, view)

    def run(target: Path | None) -> Embeddings:
        def alloc(name, dim):
            if view:
                return None
            if target is None:
                return np.zeros((n, dim), dtype=np.float32)
            return np.lib.format.open_memmap(target / f"{name}.npy", mode="w+", dtype=np.float32, shape=(n, dim))

        text = image = None
        text_mask = np.zeros(n, dtype=bool)
        image_mask = np.zeros(n, dtype=bool)
        if text_encoder is not None:
            text, st = alloc("text", text_encoder.text_dim), stores["text"]
            keys = np.zeros((n, KEY_BYTES), dtype=np.uint8) if view else None
            stats["text_encoded"] = _encode_texts(catalog, ids, text_encoder, st, text, text_mask,
                                                  batch_size, chunk_size, progress, failures, row_keys=keys)
            stats["text_cache_corrupt"] = list(st.corrupt) if st is not None else []
            if view:
                text = _view(st, keys, text_mask, ids, "text", failures)
        if image_encoder is not None:
            image, st = alloc("image", image_encoder.image_dim), stores["image"]
            keys = np.zeros((n, KEY_BYTES), dtype=np.uint8) if view else None
            paths = _ArrowColumn(catalog.column("image_path")) if isinstance(catalog, _FileCatalog) else \
                catalog["image_path"].tolist()
            stats["image_encoded"] = _encode_images(paths, ids, image_encoder, st, image,
                                                    image_mask, batch_size, chunk_size, num_workers, progress,
                                                    max_pixels, failures, row_keys=keys)
            stats["image_cache_corrupt"] = list(st.corrupt) if st is not None else []
            if view:
                image = _view(st, keys, image_mask, ids, "image", failures)
        _close_stats(stores, stats, cache_dir)
        fails = pd.DataFrame(failures, columns=_FAILURE_COLUMNS) if failures else _empty_failures()
        stats["view"] = view
        meta = {"text_encoder": _meta(text_encoder, "text"), "image_encoder": _meta(image_encoder, "image"),
                "stats": stats}
        emb = Embeddings(ids, text, image, text_mask, image_mask, fails, meta)
        if target is not None:
            for a in (text, image):
                if a is not None:
                    a.flush()
            emb._write_folder_files(target, arrays_written=True)
        return emb

    if out is None:
        return run(None)
    out = Path(out).expanduser()
    with atomic_dir(out) as tmp:
        run(tmp)
    return Embeddings.load(out)


def _ids_digest(ids: np.ndarray) -> str:
    """SHA-256 of the ids' 64-bit hashes in order (the catalog's identity across ranks; in blocks)."""
    from .._core.contracts import id_hashes

    h = hashlib.sha256()
    for a in range(0, len(ids), 1 << 18):
        h.update(id_hashes(ids[a:a + (1 << 18)]).tobytes())
    return h.hexdigest()


def encode_distributed(catalog: pd.DataFrame, text_encoder: Encoder | None = None,
                       image_encoder: Encoder | None = None, *, cache_dir: str | os.PathLike, batch_size: int = 64,
                       num_workers: int | None = None, progress: bool = True,
                       max_pixels: int | None = DEFAULT_MAX_PIXELS, chunk_size: int = 8192,
                       store_dtype: str = "float32", store_writer: str | None = None) -> Embeddings:
    """Encode a catalog across the ``torchrun`` ranks and give every rank a view of all of it.

    Rank ``r`` of ``world`` (:mod:`semcat_kit._core.distributed`; one process is rank 0 of 1) reads,
    hashes and, where the store lacks them, encodes only its share, rows ``r::world``
    (:func:`encode_into_store` with ``keep_keys=True``). The ranks then exchange each row's content
    keys and usable masks (17 bytes a row and modality, gathered as tensors) and their failures,
    put them back in catalog order (share ``r`` holds rows ``r::world``), and each rank locates the
    whole catalog's vectors in the shared store (``VectorStore.locate``): no rank reads or hashes
    another rank's titles or image files.

    With one process the result equals ``encode_catalog(catalog, ..., cache_dir=cache_dir,
    view=True)``: the same vectors, masks and failures.

    Parameters
    ----------
    catalog : DataFrame
        Columns ``item_id`` and ``title`` / ``image_path``; the same table on every rank.
    text_encoder, image_encoder, batch_size, num_workers, max_pixels, chunk_size, store_dtype
        As :func:`encode_catalog`.
    cache_dir : path
        The store every rank writes and reads (a folder shared by all ranks, e.g. on one machine or
        a shared file system). Under several processes it must be writable: the ranks exchange
        vectors through it (a store that cannot be written raises ``RuntimeError``).
    progress : bool
        A ``tqdm`` bar on rank 0 over its share.
    store_writer : str, optional
        Tag in the names of the shards written; default ``r<rank>``.

    Returns
    -------
    Embeddings
        Rows in catalog order, ``text`` / ``image`` as :class:`~semcat_kit.encode.store.StoreRows` views;
        ``failures`` ordered by modality (text first) then catalog row. ``meta["stats"]``: as
        :func:`encode_catalog` with ``view=True`` (``text_encoded`` / ``image_encoded`` summed over
        the ranks), plus ``world``, and per rank (lists indexed by rank) ``n_by_rank`` (products in
        its share), ``text_encoded_by_rank`` / ``image_encoded_by_rank`` and ``text_hashed_by_rank``
        / ``image_hashed_by_rank`` (titles, image files it read and hashed: its share only).
    """
    from .._core import distributed

    if cache_dir is None:
        raise ValueError("encode_distributed needs a cache_dir: the store the ranks share their vectors through")
    if isinstance(catalog, (str, os.PathLike)):
        raise TypeError("encode_distributed takes the catalog as a DataFrame (the same on every rank); for a "
                        "catalog file use `semcat encode` (streams it per rank) or load it first")
    if batch_size < 1 or chunk_size < 1:
        raise ValueError(f"batch_size and chunk_size must be >= 1, got {batch_size}, {chunk_size}")
    bound_heap()
    ids = _check_catalog(catalog, text_encoder, image_encoder)   # whole catalog: columns, unique ids (no hashing)
    catalog = catalog.reset_index(drop=True)
    n = len(ids)
    rank, world = distributed.rank(), distributed.world_size()
    stats: dict = {}
    stores = _open_stores(cache_dir, text_encoder, image_encoder, stats, store_dtype,
                          store_writer if store_writer is not None else f"r{rank}", True)
    share = catalog.iloc[rank::world]
    frames = (share.iloc[a:a + chunk_size] for a in range(0, len(share), chunk_size))
    fill = _fill_store(frames, text_encoder, image_encoder, stores, stats, cache_dir, batch_size=batch_size,
                       num_workers=num_workers, progress=progress and rank == 0, max_pixels=max_pixels,
                       chunk_size=chunk_size, total=len(share), check_ids=False, keep_keys=True)
    del share, frames
    # every rank's counts and failures (small, pickled), each failure at its catalog row
    rows = rank + world * fill.failure_rows
    per = distributed.all_gather_object({"n": fill.n, "stats": fill.stats, "rows": rows.tolist(), "catalog": n,
                                         "ids": _ids_digest(ids) if world > 1 else "",
                                         "failures": list(fill.failures.itertuples(index=False, name=None))})
    sizes = [p["catalog"] for p in per]
    if len(set(sizes)) > 1:     # checked by every rank alike: all raise, none waits for the others
        raise RuntimeError(f"the ranks hold catalogs of {sizes} rows: load the catalog identically on every rank")
    if len({p["ids"] for p in per}) > 1:   # same length, other ids or another order: rows would get others' vectors
        raise RuntimeError("the ranks hold catalogs with different item_id sequences (another order or other "
                           "products): load the catalog identically on every rank (same file, same row order; "
                           "shuffle with a fixed seed)")
    errors = [(r, p["stats"].get("cache_write_error")) for r, p in enumerate(per) if p["stats"].get("cache_write_error")]
    if world > 1 and errors:
        r, e = errors[0]
        raise RuntimeError(f"rank {r} could not write the embedding store {cache_dir} ({e}); the ranks share their "
                           "vectors through it: give a cache folder every rank can write")
    failures: list[tuple[str, str, str]] = []
    fail_rows: list[int] = []
    for p in per:
        failures.extend(tuple(f) for f in p["failures"])
        fail_rows.extend(p["rows"])
    modal = {"text": 0, "image": 1}
    views, masks = {"text": None, "image": None}, {"text": np.zeros(n, bool), "image": np.zeros(n, bool)}
    for m, enc in (("text", text_encoder), ("image", image_encoder)):
        if enc is None:
            continue
        # the shares' rows back into catalog order (share r holds rows r::world), as tensors
        keys = distributed.all_gather_rows(getattr(fill, f"{m}_keys"), interleave=True)
        mask = masks[m] = distributed.all_gather_rows(getattr(fill, f"{m}_mask"), interleave=True).copy()
        setattr(fill, f"{m}_keys", None)
        st = stores[m]
        st.refresh()                                      # the shards the other ranks wrote
        lost: list = []
        before = mask.copy()
        views[m] = _view(st, keys, mask, ids, m, lost)
        failures.extend(lost)
        fail_rows.extend(np.flatnonzero(before & ~mask).tolist())
        del keys, before
        if world > 1:   # a vector another rank wrote is not in this rank's store: the folder is not shared
            missing = distributed.all_gather_object(len(lost))
            if any(missing):
                raise RuntimeError(
                    f"{m} vectors written by other ranks are missing from the store {cache_dir} on rank(s) "
                    f"{[r for r, k in enumerate(missing) if k]} ({max(missing)} rows): every rank must see the same "
                    "store (with --nnodes, a cache folder on a file system shared by all machines)")
    order = sorted(range(len(failures)), key=lambda i: (modal.get(failures[i][1], 2), fail_rows[i]))
    fails = pd.DataFrame([failures[i] for i in order], columns=_FAILURE_COLUMNS) if failures else _empty_failures()
    out: dict = {}
    for m, enc in (("text", text_encoder), ("image", image_encoder)):
        if enc is not None:
            out[f"{m}_encoded"] = int(sum(p["stats"][f"{m}_encoded"] for p in per))
            out[f"{m}_cache_corrupt"] = sorted({c for p in per for c in p["stats"][f"{m}_cache_corrupt"]})
    out["cache_write_error"] = errors[0][1] if errors else None
    out["cached"] = all(p["stats"].get("cached", False) for p in per)
    out["view"] = True
    out["world"] = world
    out["n_by_rank"] = [int(p["n"]) for p in per]
    for m, enc in (("text", text_encoder), ("image", image_encoder)):
        if enc is not None:
            out[f"{m}_encoded_by_rank"] = [int(p["stats"][f"{m}_encoded"]) for p in per]
            out[f"{m}_hashed_by_rank"] = [int(p["stats"][f"{m}_hashed"]) for p in per]
    meta = {"text_encoder": _meta(text_encoder, "text"), "image_encoder": _meta(image_encoder, "image"), "stats": out}
    return Embeddings(ids, views["text"], views["image"], masks["text"], masks["image"], fails, meta)
