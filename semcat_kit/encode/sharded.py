"""Encoding a catalog across the ``torchrun`` ranks: each rank encodes its share into the shared
store, and every rank gets a view of the whole catalog (:func:`encode_distributed`).
"""
from __future__ import annotations

import hashlib
import os

import numpy as np
import pandas as pd

from .._core.memory import bound_heap
from .encoders import Encoder
from ..datasets.images import DEFAULT_MAX_PIXELS

from .columns import check_catalog
from .batches import encoder_meta
from .embeddings import FAILURE_COLUMNS, Embeddings, empty_failures
from .encode import fill_store, open_stores, store_view

__all__ = ["encode_distributed"]

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
                       store_dtype: str | None = None, store_writer: str | None = None) -> Embeddings:
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
    ids = check_catalog(catalog, text_encoder, image_encoder)   # whole catalog: columns, unique ids (no hashing)
    catalog = catalog.reset_index(drop=True)
    n = len(ids)
    rank, world = distributed.rank(), distributed.world_size()
    stats: dict = {}
    stores = open_stores(cache_dir, text_encoder, image_encoder, stats, store_dtype,
                          store_writer if store_writer is not None else f"r{rank}", True)
    share = catalog.iloc[rank::world]
    frames = (share.iloc[a:a + chunk_size] for a in range(0, len(share), chunk_size))
    fill = fill_store(frames, text_encoder, image_encoder, stores, stats, cache_dir, batch_size=batch_size,
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
        views[m] = store_view(st, keys, mask, ids, m, lost)
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
    fails = pd.DataFrame([failures[i] for i in order], columns=FAILURE_COLUMNS) if failures else empty_failures()
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
    meta = {"text_encoder": encoder_meta(text_encoder, "text"), "image_encoder": encoder_meta(image_encoder, "image"), "stats": out}
    return Embeddings(ids, views["text"], views["image"], masks["text"], masks["image"], fails, meta)
