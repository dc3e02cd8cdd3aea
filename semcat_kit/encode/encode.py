"""Encoding a catalog into an ``Embeddings`` table, streaming into an on-disk embedding store.

``encode_catalog(catalog, text_encoder=..., image_encoder=..., cache_dir=...)`` embeds titles and
images chunk by chunk, reusing vectors of the store (:mod:`semcat_kit.encode.store`) keyed by (encoder
fingerprint, hash of the title text / image bytes): re-running encodes nothing, adding 100
products encodes those 100, a killed run resumes after the last chunk written, and a different
encoder never sees another encoder's vectors. Images are read once, in the DataLoader workers:
the bytes are hashed, looked up, and decoded only when missing. Unusable items (empty title;
missing, 0-byte, corrupt or oversized image) get a zero vector, a mask of 0 and a row in
``Embeddings.failures``; they never stop the run.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .._core.contracts import check_unique_ids
from .._core.io import atomic_dir, open_npy_for_writing
from .._core.memory import bound_heap, release_freed_memory
from .store import KEY_BYTES, VectorStore, writable_problem
from .encoders import Encoder
from ..datasets.images import DEFAULT_MAX_PIXELS

from .batches import encode_image_column, encode_text_column, encoder_meta
from .columns import ArrowColumn, FileCatalog, check_catalog
from .embeddings import FAILURE_COLUMNS, Embeddings, empty_failures

__all__ = ["encode_catalog", "encode_into_store", "StoreFill", "open_stores", "fill_store", "close_stats",
           "store_view"]

def _named_image_problems(fails: pd.DataFrame, report) -> pd.DataFrame:
    """Failures of products whose image cell the catalog loader left empty because the file named there
    cannot be used: the loader's words (``image file missing: <path>``, :func:`semcat_kit.datasets.images.image_problem`)
    instead of ``no image path``, which is kept for cells that name no file."""
    from ..datasets.images import NO_IMAGE_PATH

    if report is None or not len(report) or not len(fails):
        return fails
    named = report[(report["column"] == "image_path") & report["problem"].astype(str).str.startswith("image file")]
    if not len(named):
        return fails
    problem = dict(zip(named["item_id"].astype(str), named["problem"]))
    hit = (fails["modality"] == "image") & (fails["reason"] == NO_IMAGE_PATH) & fails["item_id"].astype(str).isin(problem)
    if hit.any():
        fails = fails.copy()
        fails.loc[hit, "reason"] = fails.loc[hit, "item_id"].astype(str).map(problem)
    return fails


def store_view(store: VectorStore, keys: np.ndarray, mask: np.ndarray, ids, modality: str, failures: list):
    """The rows' vectors as a view on the store; a row whose vector went missing is reported, not zeroed silently."""
    v = store.locate(keys, valid=mask, keep_index=False)   # one-off: index peak is one shard's
    lost = np.flatnonzero(mask & ~v.found)
    for i in lost:   # another process removed a shard between the write and now: rare, reported
        failures.append((ids[i], modality, f"vector missing from the store {store.root}; encode again"))
    mask[lost] = False
    return v


def open_stores(cache_dir, text_encoder, image_encoder, stats: dict, store_dtype, store_writer, keep_unwritten,
                 stacklevel: int = 3) -> dict:
    """The encoders' stores under ``cache_dir``, opened (and checked) before any encoding starts;
    a folder that cannot be written is warned about once and named in ``stats``."""
    stores: dict[str, VectorStore | None] = {"text": None, "image": None}
    if cache_dir is None:
        return stores
    cache_dir = Path(cache_dir).expanduser()
    problem = writable_problem(cache_dir)
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


def close_stats(stores: dict, stats: dict, cache_dir) -> None:
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
                      store_dtype: str | None = None, store_writer: str | None = None,
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
        store without hashing the rows again (:func:`semcat_kit.encode.sharded.encode_distributed`).

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
        f = FileCatalog(catalog).file
        missing = [c for c in need if c not in f.columns]
        if missing:
            raise KeyError(f"catalog {f.path} lacks column(s) {missing}; build it with sk.datasets.load_catalog or "
                           "rename your columns to item_id / title / image_path")
        frames = (df for df, _ in f.chunks(chunk_size, need))
    else:
        frames = iter(catalog)
    stats: dict = {}
    stores = open_stores(cache_dir, text_encoder, image_encoder, stats, store_dtype, store_writer, False)
    return fill_store(frames, text_encoder, image_encoder, stores, stats, cache_dir, batch_size=batch_size,
                       num_workers=num_workers, progress=progress, max_pixels=max_pixels, chunk_size=chunk_size,
                       total=total, check_ids=check_ids, keep_keys=keep_keys)


def fill_store(frames, text_encoder, image_encoder, stores: dict, stats: dict, cache_dir, *, batch_size, num_workers,
                progress, max_pixels, chunk_size, total, check_ids, keep_keys) -> StoreFill:
    """:func:`encode_into_store` on DataFrame chunks, into stores already opened (:func:`open_stores`)."""
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
            ids = check_catalog(df, text_encoder, image_encoder)   # columns, missing / repeated ids in the chunk
            if check_ids:
                check_unique_ids(ids, where="catalog", seen=seen, row0=n)
            before = len(failures)
            for m, enc in (("text", text_encoder), ("image", image_encoder)):
                if enc is None:
                    continue
                mask = np.zeros(len(df), dtype=bool)
                keys = np.zeros((len(df), KEY_BYTES), dtype=np.uint8) if keep_keys else None
                counts = {"hashed": 0}
                if m == "text":
                    computed[m] += encode_text_column(df, ids, enc, stores[m], None, mask, batch_size, chunk_size, False,
                                                 failures, row_keys=keys, counts=counts)
                else:
                    computed[m] += encode_image_column(df["image_path"].tolist(), ids, enc, stores[m], None, mask,
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
    close_stats(stores, stats, cache_dir)
    fails = pd.DataFrame(failures, columns=FAILURE_COLUMNS) if failures else empty_failures()
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
                   chunk_size: int = 8192, store_dtype: str | None = None, store_writer: str | None = None,
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
    store_dtype : {"float32", "float16"}, optional
        Precision of newly written store shards (see :mod:`semcat_kit.encode.store`); default the
        store's own (float32 for a new store). A store written as float16 is read as it is.
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
        catalog = FileCatalog(catalog)           # read in record batches, column by column
    ids = check_catalog(catalog, text_encoder, image_encoder)
    loader_report = catalog.attrs.get("report") if isinstance(catalog, pd.DataFrame) else None
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
    stores = open_stores(cache_dir, text_encoder, image_encoder, stats, store_dtype, store_writer, view)

    def run(target: Path | None) -> Embeddings:
        def alloc(name, dim):
            if view:
                return None
            if target is None:
                return np.zeros((n, dim), dtype=np.float32)
            return open_npy_for_writing(target / f"{name}.npy", (n, dim))   # space reserved: no SIGBUS

        text = image = None
        text_mask = np.zeros(n, dtype=bool)
        image_mask = np.zeros(n, dtype=bool)
        if text_encoder is not None:
            text, st = alloc("text", text_encoder.text_dim), stores["text"]
            keys = np.zeros((n, KEY_BYTES), dtype=np.uint8) if view else None
            stats["text_encoded"] = encode_text_column(catalog, ids, text_encoder, st, text, text_mask,
                                                  batch_size, chunk_size, progress, failures, row_keys=keys)
            stats["text_cache_corrupt"] = list(st.corrupt) if st is not None else []
            if view:
                text = store_view(st, keys, text_mask, ids, "text", failures)
        if image_encoder is not None:
            image, st = alloc("image", image_encoder.image_dim), stores["image"]
            keys = np.zeros((n, KEY_BYTES), dtype=np.uint8) if view else None
            paths = ArrowColumn(catalog.column("image_path")) if isinstance(catalog, FileCatalog) else \
                catalog["image_path"].tolist()
            stats["image_encoded"] = encode_image_column(paths, ids, image_encoder, st, image,
                                                    image_mask, batch_size, chunk_size, num_workers, progress,
                                                    max_pixels, failures, row_keys=keys)
            stats["image_cache_corrupt"] = list(st.corrupt) if st is not None else []
            if view:
                image = store_view(st, keys, image_mask, ids, "image", failures)
        close_stats(stores, stats, cache_dir)
        fails = pd.DataFrame(failures, columns=FAILURE_COLUMNS) if failures else empty_failures()
        if image_encoder is not None:
            fails = _named_image_problems(fails, loader_report)
        stats["view"] = view
        meta = {"text_encoder": encoder_meta(text_encoder, "text"), "image_encoder": encoder_meta(image_encoder, "image"),
                "stats": stats}
        emb = Embeddings(ids, text, image, text_mask, image_mask, fails, meta)
        if target is not None:
            for a in (text, image):
                if a is not None:
                    a.flush()
            emb.write_folder_files(target, arrays_written=True)
        return emb

    if out is None:
        return run(None)
    out = Path(out).expanduser()
    with atomic_dir(out) as tmp:
        run(tmp)
    return Embeddings.load(out)

