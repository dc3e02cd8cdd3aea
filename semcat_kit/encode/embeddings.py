"""``Embeddings``: per-item vectors and masks that training consumes, saved and loaded.

``Embeddings`` holds arrays in memory for small sets (``save("x.npz")``) or memory-mapped
``.npy`` files in a folder for large ones (``save("folder")``, ``encode_catalog(out="folder")``):
then ``take`` copies only the rows it selects (a slice is a view) and the vectors stay in the
OS page cache instead of private memory. A text / image column may also be a
:class:`~semcat_kit.encode.store.StoreRows` view on the embedding store.

Encoding a catalog into one: :mod:`semcat_kit.encode.encode`.
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._core.io import atomic_dir, atomic_path, open_npy_for_writing
from .._core.contracts import compact_ids, id_hashes
from .store import StoreRows

__all__ = ["Embeddings", "FORMAT_VERSION", "FAILURE_COLUMNS", "empty_failures"]

FORMAT_VERSION = 1
FAILURE_COLUMNS = ["item_id", "modality", "reason"]


def empty_failures() -> pd.DataFrame:
    """An empty failures table (``item_id, modality, reason``)."""
    return pd.DataFrame({c: pd.Series(dtype=str) for c in FAILURE_COLUMNS})


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
    failures: pd.DataFrame = field(default_factory=empty_failures)
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
            self.failures = empty_failures()
        missing = set(FAILURE_COLUMNS) - set(self.failures.columns)
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
        from .._core.contracts import check_unique_ids

        check_unique_ids(self.item_ids, where="align(): this Embeddings")
        pos = pd.Index(self.item_ids)
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
                self.write_folder_files(tmp)
            return path
        arrays = {
            "format_version": np.array(FORMAT_VERSION),
            "item_ids": self.item_ids.astype(str),
            "text_mask": self.text_mask, "image_mask": self.image_mask,
            "failures": np.array(self.failures[FAILURE_COLUMNS].astype(str).to_json(orient="records")),
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

    def write_folder_files(self, folder: Path, arrays_written: bool = False) -> None:
        import pyarrow as pa
        import pyarrow.feather as feather

        dims = {}
        for name in ("text", "image"):
            a = getattr(self, name)
            dims[name] = None if a is None else int(a.shape[1])
            if a is not None and not arrays_written:
                if isinstance(a, StoreRows):   # block by block: private memory bounded by a block
                    mm = open_npy_for_writing(folder / f"{name}.npy", a.shape)   # space reserved: no SIGBUS
                    for s, rows in a.blocks():
                        mm[s:s + len(rows)] = rows
                    mm.flush()
                    del mm
                else:
                    np.save(folder / f"{name}.npy", a)
        feather.write_feather(pa.table({"item_id": pa.array(np.asarray(self.item_ids), pa.string()),   # no list
                                        "text_mask": self.text_mask, "image_mask": self.image_mask}),
                              str(folder / "items.arrow"), compression="uncompressed")
        fails = self.failures[FAILURE_COLUMNS].astype(str).reset_index(drop=True)
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
        fails = fails.astype(str) if len(fails) else empty_failures()
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
                fails = pd.DataFrame(json.loads(str(arrays["failures"])), columns=FAILURE_COLUMNS)
                meta = json.loads(str(arrays["meta"]))
            except (zipfile.BadZipFile, KeyError, OSError, EOFError, json.JSONDecodeError) as e:
                raise ValueError(f"{path} is a damaged embeddings file ({type(e).__name__}: {e}); re-create it "
                                 "with encode_catalog(...).save (the cache makes it quick)") from e
            return cls(arrays["item_ids"], arrays.get("text"), arrays.get("image"), arrays["text_mask"],
                       arrays["image_mask"], fails.astype(str) if len(fails) else empty_failures(), meta)


