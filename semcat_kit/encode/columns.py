"""The catalog columns the encoders read: a DataFrame, or a catalog file read column by column in
chunks (never held whole), with the checks every encoding entry point makes first.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .._core.contracts import check_unique_ids, compact_ids

__all__ = ["FileCatalog", "ArrowColumn", "column_chunks", "check_catalog"]

class FileCatalog:
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


class ArrowColumn:
    """Random access to a compact ``pyarrow`` string column (image paths): ``col[i]`` -> str or None."""

    def __init__(self, arr):
        self.arr = arr

    def __len__(self) -> int:
        return len(self.arr)

    def __getitem__(self, i):
        return self.arr[int(i)].as_py()


def column_chunks(catalog, column: str, size: int):
    """Lists of ``size`` values of a catalog column (DataFrame or :class:`FileCatalog`), in order."""
    if isinstance(catalog, FileCatalog):
        for arr in catalog.chunks(column, size):
            yield arr.to_pylist()
    else:
        col = catalog[column]
        for a in range(0, len(col), size):
            yield col.iloc[a:a + size].tolist()


def _catalog_ids(catalog, chunk_size: int) -> np.ndarray:
    """The ``item_id`` column as one compact ``<U`` array (read in chunks from a file)."""
    if not isinstance(catalog, FileCatalog):
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


def check_catalog(catalog, text_encoder, image_encoder, chunk_size: int = 65536) -> np.ndarray:
    if not isinstance(catalog, (pd.DataFrame, FileCatalog)):
        raise TypeError(f"encode_catalog expects a DataFrame (item_id, title, image_path) or the path of a Parquet/"
                        f"Arrow/CSV file, got {type(catalog).__name__}")
    if text_encoder is None and image_encoder is None:
        raise ValueError("encode_catalog needs text_encoder and/or image_encoder, e.g. "
                         "sk.encoders.load('minilm') and sk.encoders.load('efficientnet-lite0')")
    need = ["item_id"] + (["title"] if text_encoder is not None else []) + \
        (["image_path"] if image_encoder is not None else [])
    missing = [c for c in need if c not in catalog.columns]
    if missing:
        where = f" {catalog.path}" if isinstance(catalog, FileCatalog) else ""
        raise KeyError(f"catalog{where} lacks column(s) {missing}; build it with sk.datasets.load_catalog or rename "
                       "your columns to item_id / title / image_path")
    if text_encoder is not None and "text" not in text_encoder.modalities:
        raise ValueError(f"text_encoder {text_encoder.name!r} cannot encode text")
    if image_encoder is not None and "image" not in image_encoder.modalities:
        raise ValueError(f"image_encoder {image_encoder.name!r} cannot encode images")
    ids = _catalog_ids(catalog, chunk_size)
    return check_unique_ids(ids, where="catalog")   # vectorised (64-bit hashes, exact check of shared hashes)

