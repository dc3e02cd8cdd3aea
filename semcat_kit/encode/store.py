"""Out-of-core store of embedding vectors keyed by content hash (one per encoder and modality).

Layout (readable without semcat_kit)::

    <cache_dir>/<sha256(fingerprint)[:24]>/encoder.json        {"fingerprint": ...}
    <cache_dir>/<sha256(fingerprint)[:24]>/<modality>/manifest.json
    <cache_dir>/<sha256(fingerprint)[:24]>/<modality>/shard-<writer>-<sha256 of the file[:32]>.arrow

Each shard is a plain, uncompressed **Arrow IPC file** with two columns:

========  ===================================================  =============================
column    Arrow type                                           meaning
========  ===================================================  =============================
key       ``fixed_size_binary(16)``                            BLAKE2b-128 of the title's UTF-8
                                                               bytes / of the image file bytes
vector    ``fixed_size_list<float32>[dim]`` (or ``float16``)   the L2-normalised embedding
========  ===================================================  =============================

Rows are sorted by key (bytewise) across the whole file; a file may hold several record batches.
``pyarrow.ipc.open_file(path).read_all()`` and ``pandas.read_feather(path)`` read it as is, in
either precision (pandas gives one numpy array per row, float32 or float16). DuckDB reads a float32
store through ``pyarrow.dataset.dataset(shard_files, format="ipc")`` queried with ``duckdb.sql``;
it cannot read float16 Arrow data ("Unsupported Internal Arrow Type e"), so for a float16 store
cast the vectors on read by giving the dataset a float32 schema::

    pyarrow.dataset.dataset(shard_files, format="ipc", schema=pa.schema(
        [("key", pa.binary(16)), ("vector", pa.list_(pa.float32(), dim))]))

(:func:`arrow_dataset` / :meth:`VectorStore.dataset` build it; it works for either precision).
Each reader is tested on both precisions. Any other Arrow IPC reader (Polars, Spark's Arrow
sources) sees the same schema. A store records its precision in ``manifest.json`` and every
command (``semcat encode / train / predict / tune``, ``encode_catalog``) reads it as it is (one
precision per store). ``manifest.json`` lists every live shard with its row count, byte size and
SHA-256 of the file.

Why Arrow IPC and not Parquet: an uncompressed IPC file is memory-mapped with
``pa.memory_map`` and its buffers are used in place (zero copy, pages belong to the OS page
cache, not to the process), while Parquet must be decoded into private memory first.
``bench/bench_store.py`` measures both (open + lookup time, private memory, file size).

Why float32 by default: ``bench/bench_store.py --n 1000000`` (200k x 384 part) measures
float16 at half the size (157 vs 310 MB) but per-batch reads of a training pass at half the
speed (0.71 vs 0.36 s for 195 batches of 1,024 rows, warm page cache: converting float16 to
float32 costs more than the smaller reads save) and, on 2,000 real MiniLM title vectors,
10-nearest-neighbour sets that agree at 0.9999 (top-1 at 0.9985). float16 also rounds each
component by up to ~1.2e-4, so vectors read back would no longer equal those a fresh run
computes (cached and uncached runs would train slightly differently). Exact reproducibility and
faster batches win by default; ``dtype="float16"`` halves the disk and page-cache footprint for
image stores too large for the page cache, where reads are disk-bound and half the bytes count.

Guarantees
----------
* Lookups are vectorised and hold little per key: a shard's sorted keys are read in place
  from its memory map (page cache, not private memory); only a bucket table on their top bits
  (int32, ~1 key a bucket: 4-8 bytes a key) is built, on the shard's first search. A query's
  bucket is found by a shift and its rows compared in a few vectorised passes (no per-key Python,
  no sort of the queries). Shards are searched largest first; keys found are not searched again.
  ``locate`` returns positions only (a :class:`StoreRows` view); vectors are gathered from the
  memory map when rows are read. ``bench/bench_store.py`` measures it against the old per-key
  dict path.
* Writes are append-only: every flush writes one new shard (temporary file, fsync, rename) and
  then records it in the manifest under a file lock, so several processes (``torchrun`` ranks)
  can write to one store. Merging is bounded: shards below ``max_merge_rows`` are grouped into
  size tiers (factor ``merge_factor``); when a tier holds ``merge_factor`` shards they are merged
  into one (a k-way merge streamed in blocks of ``base_rows`` rows, keys read from the maps). The
  whole store is never rewritten.
* Trust model (what is verified, when, at what cost):

  - **First open on a machine** (no record in ``verified.json``): every shard is hashed whole
    (SHA-256) and compared with its manifest entry (checksum, byte size, row count) and its
    schema is checked; a shard that fails (truncated, flipped bits, edited vectors, wrong
    schema) is renamed to ``*.corrupt``, reported with a warning and in ``corrupt``, and its
    items are simply recomputed. Cost: one read of the store.
  - **Every later open, in every process** (every rank of every command): a shard recorded in
    ``verified.json`` is trusted only if its size, mtime, **ctime** and inode are those recorded
    *and* its sampled checksum still matches (:func:`sampled_digest`: BLAKE2b of 16 blocks of
    64 KiB spread over the file, the first and last included; a shard of at most 1 MiB is hashed
    whole). Cost: a ``stat`` and at most 1 MiB read per shard, whatever its size
    (``bench/bench_store.py --trust-only`` prints the ratio to a full check). Any change made
    through the file system -- a write, a truncate, an ``os.utime`` that puts the old mtime back --
    sets the ctime, which no process can set back, so it is detected and the shard is hashed
    whole again. What this does **not** detect at open: a change that keeps size, mtime, ctime
    and inode (only possible below the file system -- writing the raw block device -- or by
    setting the system clock back) and touches no sampled block. ``VectorStore.verify()`` (the
    full SHA-256 of every shard, on demand) and ``SEMCAT_STORE_VERIFY=always`` (the full check
    at every open) close that gap.
  - **Shards the manifest does not list** (a writer killed between its rename and its manifest
    entry): a shard's file name carries the first 128 bits of its SHA-256
    (``shard-<writer>-<sha256[:32]>.arrow``); an unlisted shard is hashed whole and adopted only
    when its content matches its name. Any other unlisted file (copied in, written by an older
    version, its name forged) is moved aside as ``*.corrupt``, never served.
  - The checksums detect corruption, not tampering: they live beside the shards.
* A cache folder that cannot be written is detected when the store is opened (one warning
  naming the folder); a write that fails later (disk full) is warned about once. In both cases
  lookups keep working and nothing computed is lost by the caller: it simply is not cached.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa

from .._core.digest import file_sha256
from .._core.io import atomic_write_text, umask

__all__ = ["VectorStore", "StoreRows", "content_key", "content_keys", "as_keys", "KEY_BYTES", "STORE_FORMAT",
           "write_probe", "writable_problem", "arrow_dataset", "schema", "DTYPES", "forget_verified"]

KEY_BYTES = 16
STORE_FORMAT = "semcat-vector-store/1"
_SHARD_RE = re.compile(r"^shard-[A-Za-z0-9_.-]+\.arrow$")
_DIGEST_NAME = re.compile(r"^shard-[A-Za-z0-9_]+-([0-9a-f]{32})\.arrow$")   # the name carries the checksum
_VERIFIED: dict[tuple, str] = {}  # (path, size, mtime_ns, ctime_ns, inode) -> sha256 hex, per process
VERIFIED_FILE = "verified.json"     # name -> {bytes, mtime_ns, ctime_ns, inode, sha256, sample}
SAMPLE_BLOCKS, SAMPLE_BYTES = 16, 1 << 16   # the sampled checksum read at every open: 16 x 64 KiB
_GATHER_ROWS = 4096  # rows per block when copying vectors out of a shard
_LOCATE_BLOCK = 1 << 18  # query keys per block in VectorStore.locate (bounds its temporaries)
_EDGE_BLOCK = 1 << 20  # bucket edges per block when a key index is built


def forget_verified() -> None:
    """Forget which shard files this process has verified: the next open of a store checks its
    shards as a new process does (stat and sampled checksum against ``verified.json``, or a whole
    hash where that record does not match)."""
    _VERIFIED.clear()


def content_key(data: bytes | str) -> bytes:
    """16-byte BLAKE2b digest of text (UTF-8) or raw bytes."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.blake2b(data, digest_size=KEY_BYTES).digest()


def content_keys(items: Iterable[bytes | str]) -> np.ndarray:
    """Keys of many texts/byte strings as a ``(n, 16)`` uint8 array."""
    return as_keys([content_key(x) for x in items])


def as_keys(keys) -> np.ndarray:
    """``(n, 16)`` uint8 array from a list of 16-byte strings or an array (validated)."""
    if isinstance(keys, np.ndarray):
        k = np.ascontiguousarray(keys, dtype=np.uint8)
        if k.ndim != 2 or k.shape[1] != KEY_BYTES:
            raise ValueError(f"keys must be (n, {KEY_BYTES}) uint8, got shape {k.shape}")
        return k
    keys = list(keys)
    if not keys:
        return np.zeros((0, KEY_BYTES), dtype=np.uint8)
    try:   # lengths first ('S16' would pad a short key / cut a long one), then one C-level copy
        lens = np.fromiter(map(len, keys), dtype=np.int64, count=len(keys))
        ok = (lens == KEY_BYTES).all() and set(map(type, keys)) == {bytes}   # 'S16' would encode a str
        arr = np.array(keys, dtype=f"S{KEY_BYTES}") if ok else None
    except (TypeError, ValueError):
        arr = None
    if arr is not None and arr.shape == (len(keys),):
        # 'S16' keeps all 16 bytes in its buffer (trailing NULs are only hidden when read as bytes)
        return arr.view(np.uint8).reshape(len(keys), KEY_BYTES)
    try:
        flat = b"".join(keys)
    except TypeError:
        flat = b""
    if len(flat) != KEY_BYTES * len(keys) or any(len(k) != KEY_BYTES for k in keys):
        bad = next(i for i, k in enumerate(keys) if not isinstance(k, (bytes, bytearray)) or len(k) != KEY_BYTES)
        raise ValueError(f"key {bad} is not {KEY_BYTES} bytes: {keys[bad]!r}")
    # uint8 rows, not numpy 'S' strings: those silently drop trailing NUL bytes of a digest
    return np.frombuffer(flat, dtype=np.uint8).reshape(len(keys), KEY_BYTES).copy()


def sampled_digest(path, size: int | None = None) -> str:
    """BLAKE2b-128 of ``SAMPLE_BLOCKS`` blocks of ``SAMPLE_BYTES`` spread evenly over the file (the
    first and last included: the Arrow header, schema and footer); a file of at most
    ``SAMPLE_BLOCKS * SAMPLE_BYTES`` bytes (1 MiB) is hashed whole. Reads at most 1 MiB."""
    size = Path(path).stat().st_size if size is None else size
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        if size <= SAMPLE_BLOCKS * SAMPLE_BYTES:
            h.update(f.read())
        else:
            for k in range(SAMPLE_BLOCKS):
                f.seek((size - SAMPLE_BYTES) * k // (SAMPLE_BLOCKS - 1))
                h.update(f.read(SAMPLE_BYTES))
    return h.hexdigest()


def _identity(st: os.stat_result) -> dict:
    """What ``verified.json`` pins a checked shard to. ``ctime`` is set by the kernel on every change
    (a write, a truncate, and an ``os.utime`` that puts the old mtime back) and no process can set it."""
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino}


def _split(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo) native uint64 halves; sorting by (hi, lo) is bytewise order of the key."""
    be = keys.view(">u8")
    return be[:, 0].astype(np.uint64), be[:, 1].astype(np.uint64)


class _KeyIndex:
    """Sorted 128-bit keys (``hi``/``lo`` uint64 halves) with a bucket table on their top bits.

    A lookup needs no sort of the queries and no per-key Python: the top ``bits`` of a key pick
    its bucket (keys are uniform hashes), and the rows of the buckets are compared with the
    queries in a few vectorised passes (pass ``j`` checks the ``j``-th row of each still
    unresolved query's bucket; the set shrinks geometrically).

    The keys are either two in-memory arrays (``_KeyIndex(hi, lo)``: queued vectors, ~1 key a
    bucket) or read in place (:meth:`mapped`: a shard's key column in its memory map, as
    big-endian words: row ``r`` of record batch ``b`` at word ``waddr[b] + 2 r``). ~1 key a
    bucket. Private memory: the bucket table (4 bytes a bucket: 4-8 bytes a key), plus 16 bytes
    a key for in-memory halves.
    """

    __slots__ = ("hi", "lo", "words", "waddr", "ends", "n", "shift", "start")

    def __init__(self, hi: np.ndarray, lo: np.ndarray):
        self.hi, self.lo, self.words, self.n = hi, lo, None, len(hi)
        self.waddr = self.ends = None
        self._table(_bucket_bits(self.n, 1))
        # the bucket edges in blocks: no (2^bits,) uint64 / int64 temporaries (16 bytes a key)
        nb = len(self.start) - 1
        for a in range(0, nb, _EDGE_BLOCK):
            edges = np.arange(a, min(nb, a + _EDGE_BLOCK), dtype=np.uint64) << self.shift
            self.start[a:a + len(edges)] = np.searchsorted(hi, edges, "left")
        self.start[-1] = self.n

    @classmethod
    def mapped(cls, words: np.ndarray, waddr: np.ndarray, ends: np.ndarray, hi_runs) -> "_KeyIndex":
        """Index over keys read in place: ``words`` (big-endian uint64 view of the file), ``waddr``
        and ``ends`` (per record batch: word of row 0 minus twice its first row, end row);
        ``hi_runs`` yields the ``hi`` halves batch by batch, to count the buckets."""
        self = cls.__new__(cls)
        self.hi = self.lo = None
        self.words, self.waddr, self.ends = words, waddr, ends
        self.n = int(ends[-1]) if len(ends) else 0
        self._table(_bucket_bits(self.n, 1))
        counts = self.start                      # bucket b's count goes to start[b + 1], then a cumsum
        for h in hi_runs:
            for a in range(0, len(h), _EDGE_BLOCK):
                bk = (np.asarray(h[a:a + _EDGE_BLOCK], dtype=np.uint64) >> self.shift).astype(np.intp)
                if bk.size:          # sorted keys: a run's buckets are one contiguous range
                    counts[bk[0] + 1:bk[-1] + 2] += np.bincount(bk - bk[0]).astype(counts.dtype)
        np.cumsum(counts, out=counts)
        return self

    def _table(self, bits: int) -> None:
        self.shift = np.uint64(64 - bits)
        self.start = np.zeros((1 << bits) + 1, dtype=np.int32 if self.n < np.iinfo(np.int32).max else np.int64)

    # a cursor over rows: for mapped keys the record batch of each row, advanced as rows move on
    def _batch_of(self, rows: np.ndarray):
        if self.words is None or len(self.waddr) == 1:
            return None
        return np.searchsorted(self.ends, rows, "right")

    def _next(self, rows: np.ndarray, bi):
        """Rows moved one on (``rows`` already incremented): their batches follow."""
        if bi is not None:
            while True:
                cross = rows == self.ends[np.minimum(bi, len(self.ends) - 1)]
                if not cross.any():
                    break
                bi[cross] += 1
        return bi

    def _read(self, rows: np.ndarray, bi) -> tuple[np.ndarray, np.ndarray]:
        if self.words is None:
            return self.hi[rows], self.lo[rows]
        w = (self.waddr[0] if bi is None else self.waddr[bi]) + 2 * rows.astype(np.int64)
        return self.words[w].astype(np.uint64), self.words[w + 1].astype(np.uint64)

    def keys_of(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(hi, lo)`` of the keys of ``rows`` (native uint64 copies)."""
        rows = np.asarray(rows, dtype=np.intp)
        return self._read(rows, self._batch_of(rows))

    def search(self, qhi: np.ndarray, qlo: np.ndarray) -> np.ndarray:
        """Row of each query key, -1 where absent (vectorised; queries in any order)."""
        if not self.n or not len(qhi):
            return np.full(len(qhi), -1, dtype=np.int64)
        b = (qhi >> self.shift).astype(np.intp)
        cand = self.start[b].astype(np.intp)
        end = self.start[b + 1]
        pos = np.full(len(qhi), -1, dtype=np.int64)
        more = np.flatnonzero(cand < end)          # empty buckets: absent
        cand, end = cand[more], end[more]
        bi = self._batch_of(cand)
        while more.size:
            qh, ql = qhi[more], qlo[more]
            h, l_ = self._read(cand, bi)
            eqh = h == qh
            hit = eqh & (l_ == ql)
            pos[more[hit]] = cand[hit]
            # rows are sorted: the query may be further on only while the row's key is smaller and
            # the bucket goes on
            go = ((h < qh) | (eqh & (l_ < ql))) & (cand + 1 < end)
            more, cand, end = more[go], cand[go] + 1, end[go]
            bi = self._next(cand, None if bi is None else bi[go])
        return pos

    def upper(self, qhi: np.ndarray, qlo: np.ndarray) -> np.ndarray:
        """Number of keys ``<=`` each query (its insertion point on the right; vectorised)."""
        qhi, qlo = np.atleast_1d(qhi).astype(np.uint64), np.atleast_1d(qlo).astype(np.uint64)
        if not self.n:
            return np.zeros(len(qhi), dtype=np.int64)
        b = (qhi >> self.shift).astype(np.intp)
        out = self.start[b].astype(np.int64)       # every key of an earlier bucket is smaller
        end = self.start[b + 1]
        more = np.flatnonzero(out < end)
        while more.size:
            h, l_ = self.keys_of(out[more])
            le = (h < qhi[more]) | ((h == qhi[more]) & (l_ <= qlo[more]))
            more = more[le]
            out[more] += 1
            more = more[out[more] < end[more]]
        return out


def _bucket_bits(n: int, per_bucket: int) -> int:
    """Bits of the bucket table: about ``per_bucket`` keys a bucket (at least 2 buckets)."""
    return int(min(31, max(1, np.ceil(np.log2(max(n / per_bucket, 2))))))


#: precisions a store's vectors may have
DTYPES = ("float32", "float16")


def schema(dim: int, dtype: str = "float32") -> pa.Schema:
    """The Arrow schema of a store's shards with vectors of ``dim`` components in ``dtype``."""
    return pa.schema([("key", pa.binary(KEY_BYTES)), ("vector", pa.list_(_arrow_type(dtype), int(dim)))])


def arrow_dataset(files, dim: int, dtype: str = "float32"):
    """The shards as one ``pyarrow.dataset`` whose vectors are read as ``dtype`` (cast on read).

    DuckDB cannot read float16 Arrow data ("Unsupported Internal Arrow Type e"); this dataset (the
    default ``float32``) is what it queries: ``duckdb.sql("SELECT ... FROM ds")``. Without
    semcat_kit the same is ``pyarrow.dataset.dataset(files, format="ipc", schema=pa.schema([("key",
    pa.binary(16)), ("vector", pa.list_(pa.float32(), dim))]))``. Shards of both precisions mix.
    """
    import pyarrow.dataset as ds

    return ds.dataset([str(f) for f in files], format="ipc", schema=schema(dim, dtype))


def _arrow_type(dtype: str) -> pa.DataType:
    return {"float32": pa.float32(), "float16": pa.float16()}[dtype]


class _Shard:
    """One memory-mapped shard: vectors and keys as views into the map. Searched in place: the
    sorted keys are read from the map (page cache, not private memory); only a bucket table on
    their top bits (4-8 bytes a key) is built, on the first search."""

    def __init__(self, path: Path, dim: int, dtype: str | None = None):
        """``dtype``: the precision expected; a shard of the other one (float32 / float16) is read
        as well (its schema says which: ``self.dtype``), so a store written with either is usable."""
        self.path = path
        self._mm = pa.memory_map(str(path), "r")
        reader = pa.ipc.open_file(self._mm)
        got = reader.schema.remove_metadata()
        # a shard holds float32 or float16 vectors, whatever precision the store now writes: each
        # is read as it is (gathered into float32); only another shape or type is corrupt
        for dt in dict.fromkeys((dtype, "float32", "float16")):
            if got.equals(pa.schema([("key", pa.binary(KEY_BYTES)), ("vector", pa.list_(_arrow_type(dt), dim))])):
                dtype = dt
                break
        else:
            want = pa.schema([("key", pa.binary(KEY_BYTES)), ("vector", pa.list_(_arrow_type(dtype), dim))])
            raise ValueError(f"schema {got} is not {want} (or its float16 / float32 twin)")
        self.dtype = dtype
        self._mm.seek(0)
        whole = self._mm.read_buffer()            # zero copy: the whole map, to address the key columns
        self._words = np.frombuffer(whole, dtype=">u8", count=whole.size // 8)
        self.vecs, self._kbufs, offs, waddr = [], [], [0], []
        prev = None
        for b in range(reader.num_record_batches):
            batch = reader.get_batch(b)
            kcol, vcol = batch.column(0), batch.column(1)
            if kcol.null_count or vcol.null_count or vcol.values.null_count:
                raise ValueError("null keys or vectors")
            n = len(batch)
            kbuf = np.frombuffer(kcol.buffers()[1], dtype=np.uint8, count=n * KEY_BYTES, offset=kcol.offset * KEY_BYTES)
            child = vcol.values
            np_dt = np.dtype(dtype)
            v = np.frombuffer(child.buffers()[1], dtype=np_dt, count=n * dim,
                              offset=(child.offset + vcol.offset * dim) * np_dt.itemsize).reshape(n, dim)
            kb = kbuf.reshape(n, KEY_BYTES)
            # sorted check batch by batch (bounded memory; the key index itself is built on first use)
            hi, lo = _split(kb)
            if prev is not None and n:
                hi, lo = np.concatenate([prev[0], hi]), np.concatenate([prev[1], lo])
            if len(hi) > 1:
                bad = (hi[1:] < hi[:-1]) | ((hi[1:] == hi[:-1]) & (lo[1:] < lo[:-1]))
                if bad.any():
                    raise ValueError("keys are not sorted")
            if n:
                prev = (hi[-1:], lo[-1:])
            at = kbuf.__array_interface__["data"][0] - whole.address    # byte offset of the key column
            waddr.append(at // 8 - 2 * offs[-1] if at % 8 == 0 and 0 <= at <= whole.size - n * KEY_BYTES else None)
            self._kbufs.append(kb)
            self.vecs.append(v)
            offs.append(offs[-1] + n)
        self.offsets = np.asarray(offs, dtype=np.int64)
        # word of row r's key: waddr[batch(r)] + 2 r (Arrow aligns buffers to 8 bytes; else copies)
        self._waddr = None if any(w is None for w in waddr) else np.asarray(waddr, dtype=np.int64)
        self._ends = self.offsets[1:]
        self._hi = self._lo = self._index = None

    def _build(self) -> None:
        if self._waddr is not None:
            self._index = _KeyIndex.mapped(self._words, self._waddr, self._ends,
                                           (kb.view(">u8")[:, 0] for kb in self._kbufs))
            return
        # unaligned key columns (not written by pyarrow): sorted key halves copied to memory
        n = len(self)
        self._hi, self._lo = np.empty(n, np.uint64), np.empty(n, np.uint64)
        for k, kb in enumerate(self._kbufs):
            a, b = int(self.offsets[k]), int(self.offsets[k + 1])
            be = kb.view(">u8")
            self._hi[a:b], self._lo[a:b] = be[:, 0], be[:, 1]
        self._index = _KeyIndex(self._hi, self._lo)

    @property
    def indexed(self) -> bool:
        """Whether the bucket table is built (held in memory)."""
        return self._index is not None

    def drop_index(self) -> None:
        """Free the bucket table (rebuilt on the next search)."""
        self._hi = self._lo = self._index = None

    @property
    def index(self) -> "_KeyIndex":
        if self._index is None:
            if self._words is None and len(self):   # closed: an empty table would answer "absent"
                raise RuntimeError(f"store shard {self.path} was closed (merged away or the store refreshed); "
                                   "look the keys up again through the VectorStore")
            self._build()
        return self._index

    def search(self, qhi: np.ndarray, qlo: np.ndarray) -> np.ndarray:
        """Row of each query key, -1 where absent."""
        return self.index.search(qhi, qlo)

    def key_halves(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """``(hi, lo)`` of rows ``a:b`` (in-memory copies of that block only)."""
        return self.index.keys_of(np.arange(a, b, dtype=np.intp))

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def keys(self) -> np.ndarray:
        """All keys, ``(n, 16)`` uint8 (a copy)."""
        return np.concatenate(self._kbufs) if self._kbufs else np.zeros((0, KEY_BYTES), np.uint8)

    def gather(self, rows: np.ndarray, out: np.ndarray, where: np.ndarray) -> None:
        """``out[where] = vector[rows]`` across record batches."""
        _gather(self.vecs, self.offsets, rows, out, where)

    def rows_source(self) -> "_Rows":
        """The vectors of this shard for a view (stays valid when the shard is merged away)."""
        return _Rows(list(self.vecs), self.offsets)

    def close(self) -> None:
        self.vecs, self._kbufs, self._words = [], [], None
        self._hi = self._lo = self._index = None
        try:
            self._mm.close()
        except Exception:  # noqa: BLE001 - closing a map that other views still use is harmless
            pass


def _gather(vecs: list, offsets: np.ndarray, rows: np.ndarray, out: np.ndarray, where: np.ndarray) -> None:
    """``out[where] = vector[rows]`` over record batches ``vecs`` starting at ``offsets``.

    Rows are read in file order (sorted) in blocks of ``_GATHER_ROWS``: a small reused
    temporary, never an (n, d) one besides ``out``.
    """
    if len(rows) > 1 and np.any(rows[1:] < rows[:-1]):
        o = np.argsort(rows, kind="stable")
        rows, where = rows[o], where[o]
    if len(vecs) == 1:
        v = vecs[0]
        for c in range(0, len(rows), _GATHER_ROWS):
            out[where[c:c + _GATHER_ROWS]] = v[rows[c:c + _GATHER_ROWS]]
        return
    cuts = np.searchsorted(rows, offsets)          # rows sorted -> record batches are contiguous runs
    for k, v in enumerate(vecs):
        s, e = int(cuts[k]), int(cuts[k + 1])
        r, w = rows[s:e] - offsets[k], where[s:e]
        for c in range(0, e - s, _GATHER_ROWS):
            out[w[c:c + _GATHER_ROWS]] = v[r[c:c + _GATHER_ROWS]]


class _Rows:
    """Vectors of one source (a shard's record batches or queued arrays) that a view reads from."""

    __slots__ = ("vecs", "offsets")

    def __init__(self, vecs: list, offsets: np.ndarray):
        self.vecs, self.offsets = vecs, offsets

    def gather(self, rows, out, where) -> None:
        _gather(self.vecs, self.offsets, rows, out, where)


class StoreRows:
    """A read-only ``(n, dim)`` float32 view of store vectors: positions only, rows read when used.

    Returned by :meth:`VectorStore.locate`. It holds, per row, which source (shard) and which row
    of it holds the vector (6 bytes a row) -- no vector is copied until rows are read:
    ``view[idx]`` (integer positions, a boolean mask, a slice or one int) gathers just those rows
    from the memory-mapped shards into a new float32 array (zeros where the key was absent);
    ``view.take(idx)`` is another view (nothing read); ``np.asarray(view)`` materialises all
    ``n x dim`` floats (the explicit, expensive case). Shards merged or removed later stay readable
    through the view (their memory maps live as long as it does).

    Attributes
    ----------
    found : bool (n,)
        Whether the store holds the key of each row.
    """

    lazy = True
    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, sources: list, src: np.ndarray, row: np.ndarray, dim: int):
        self._sources, self._src, self._row, self.dim = sources, src, row, int(dim)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self._src), self.dim)

    @property
    def size(self) -> int:
        return len(self._src) * self.dim

    @property
    def nbytes(self) -> int:
        """Bytes of a full materialisation (what ``np.asarray`` would allocate)."""
        return self.size * 4

    def __len__(self) -> int:
        return len(self._src)

    @property
    def found(self) -> np.ndarray:
        return self._src >= 0

    def __repr__(self) -> str:
        return f"StoreRows(n={len(self)}, dim={self.dim}, found={int(self.found.sum())}, sources={len(self._sources)})"

    def _norm(self, idx):
        if isinstance(idx, slice):
            return idx
        idx = np.asarray(idx)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise IndexError(f"boolean mask of shape {idx.shape} does not match {len(self)} rows")
            return np.flatnonzero(idx)
        if idx.size == 0:
            return idx.astype(np.int64).reshape(-1)
        if not np.issubdtype(idx.dtype, np.integer):
            raise IndexError(f"StoreRows is indexed by integer positions, a boolean mask or a slice, not {idx.dtype}")
        return idx

    def take(self, idx) -> "StoreRows":
        """Another view on the selected rows (positions only; no vector is read)."""
        i = self._norm(idx)
        return StoreRows(self._sources, self._src[i], self._row[i], self.dim)

    def __getitem__(self, idx) -> np.ndarray:
        if isinstance(idx, tuple):
            if len(idx) == 2 and isinstance(idx[1], slice) and idx[1] == slice(None):
                return self[idx[0]]
            raise IndexError("StoreRows supports row selection only (view[rows] or view[rows, :])")
        if isinstance(idx, (int, np.integer)):
            return self[np.asarray([idx])][0]
        i = self._norm(idx)
        return self._read(self._src[i], self._row[i])

    def _read(self, src: np.ndarray, row: np.ndarray) -> np.ndarray:
        out = np.zeros((len(src), self.dim), dtype=np.float32)
        if not len(src):
            return out
        for s, source in enumerate(self._sources):
            where = np.flatnonzero(src == s)
            if where.size:
                source.gather(row[where].astype(np.int64), out, where)
        return out

    def __array__(self, dtype=None, copy=None):
        out = self._read(self._src, self._row)
        return out if dtype is None else out.astype(dtype, copy=False)

    def to_numpy(self) -> np.ndarray:
        """All rows as one in-memory ``(n, dim)`` float32 array (``n x dim x 4`` bytes)."""
        return np.asarray(self)

    def blocks(self, size: int = 65536):
        """``(start, rows)`` blocks of at most ``size`` rows in order (bounded memory)."""
        for a in range(0, len(self), size):
            yield a, self._read(self._src[a:a + size], self._row[a:a + size])

    def __reduce__(self):
        # pickled (DataLoader workers, another process): the vectors travel with it; a view is
        # meant to stay in the process that opened the store
        return (np.asarray, (self.to_numpy(),))


class VectorStore:
    """Vectors of one modality for one encoder, in memory-mapped Arrow shards (see module doc).

    Parameters
    ----------
    root : path
        The store folder (``<cache>/<fingerprint digest>/<modality>``); created if possible.
    dim : int
        Vector width; shards of another width are treated as corrupt.
    dtype : {"float32", "float16"}, optional
        Storage precision of new shards. Default: the precision the store's manifest records (its
        shards'), float32 for a new store. Shards of either precision are read (never called
        corrupt); a ``dtype`` other than that of a store that already holds shards is warned about
        and the store's own precision is kept, so a store stays one Arrow schema (DuckDB and
        ``pyarrow.dataset`` read it as one table).
    merge_factor : int
        Shards in one size tier that trigger a merge of that tier.
    base_rows : int
        Size of tier 0 (shards below ``base_rows * merge_factor`` rows).
    max_merge_rows : int
        Shards at least this large are never rewritten.
    auto_merge : bool
        Merge after each flush when a tier is full.
    writer : str
        Tag in the names of shards this object writes (e.g. ``"r0"`` for rank 0).
    keep_unwritten : bool
        Keep vectors that could not be written (read-only folder, disk full) in memory, still
        found by :meth:`locate` / :meth:`get` (``encode_catalog`` returning a view needs them);
        by default they are dropped (the caller holds them).
    """

    def __init__(self, root, dim: int, dtype: str | None = None, merge_factor: int = 8, base_rows: int = 8192,
                 max_merge_rows: int = 1 << 20, auto_merge: bool = True, writer: str | None = None,
                 fingerprint: str | None = None, warn: bool = True, keep_unwritten: bool = False):
        if dtype not in (None, "float32", "float16"):
            raise ValueError(f"dtype must be 'float32' or 'float16', not {dtype!r}")
        if int(dim) < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if merge_factor < 2:
            raise ValueError(f"merge_factor must be >= 2, got {merge_factor}")
        self.root = Path(root).expanduser()
        self.dim, self.dtype = int(dim), dtype or "float32"
        self.merge_factor, self.base_rows, self.max_merge_rows = int(merge_factor), int(base_rows), int(max_merge_rows)
        self.auto_merge, self.fingerprint, self._warn = auto_merge, fingerprint, warn
        self.writer = re.sub(r"[^A-Za-z0-9_]", "", writer or f"p{os.getpid()}")
        self.corrupt: list[str] = []
        self.write_error: str | None = None
        self._shards: dict[str, _Shard] = {}
        self._pending_keys: list[np.ndarray] = []
        self._pending_vecs: list[np.ndarray] = []
        self.keep_unwritten = bool(keep_unwritten)
        self._unwritten_keys: list[np.ndarray] = []
        self._unwritten_vecs: list[np.ndarray] = []
        self._worker = False
        self.writable = self._probe()
        self.dtype = self._store_dtype(dtype)
        self.refresh()

    def _store_dtype(self, asked: str | None) -> str:
        """The precision of new shards: the manifest's when the store holds shards, else ``asked``."""
        try:
            m = json.loads(self.manifest_path.read_text(encoding="utf-8"))
            have = m.get("dtype") if isinstance(m, dict) and m.get("shards") else None
        except (OSError, ValueError):
            have = None
        if have not in ("float32", "float16"):
            return asked or "float32"
        if asked is not None and asked != have and self._warn:
            warnings.warn(f"embedding store {self.root} holds {have} vectors; new ones are stored as {have} too (one "
                          f"precision per store), not {asked}. Give another cache_dir for a {asked} store",
                          RuntimeWarning, stacklevel=3)
        return have

    @classmethod
    def for_encoder(cls, cache_dir, fingerprint: str, modality: str, dim: int, **kw) -> "VectorStore":
        """The store of ``modality`` vectors of the encoder with this fingerprint under ``cache_dir``."""
        base = Path(cache_dir).expanduser() / hashlib.sha256(fingerprint.encode()).hexdigest()[:24]
        store = cls(base / modality, dim, fingerprint=fingerprint, **kw)
        info = base / "encoder.json"
        if store.writable and not info.exists():
            with contextlib.suppress(OSError):
                atomic_write_text(info, json.dumps({"fingerprint": fingerprint}, indent=1))
        return store

    # ---------------------------------------------------------------------- pickling (workers)
    def __getstate__(self):
        # DataLoader workers get a read-only view of the shards the parent already verified
        return {"root": str(self.root), "dim": self.dim, "dtype": self.dtype,
                "files": sorted(self._shards)}

    def __setstate__(self, state):
        self.root, self.dim, self.dtype = Path(state["root"]), state["dim"], state["dtype"]
        self.corrupt, self.write_error, self.writable, self._worker, self._warn = [], None, False, True, False
        self.auto_merge, self.fingerprint, self.writer = False, None, "w"
        self._pending_keys, self._pending_vecs, self._shards = [], [], {}
        self.keep_unwritten, self._unwritten_keys, self._unwritten_vecs = False, [], []
        for name in state["files"]:
            with contextlib.suppress(Exception):
                self._shards[name] = _Shard(self.root / name, self.dim, self.dtype)

    # --------------------------------------------------------------------------- writability
    def _fail_write(self, what: str, e: BaseException) -> None:
        reason = f"{type(e).__name__}: {e}" if not isinstance(e, OSError) else \
            f"{errno.errorcode.get(e.errno, e.errno) if e.errno else type(e).__name__}: {e.strerror or e}"
        first = self.write_error is None
        self.write_error = f"{what} ({reason})"
        self.writable = False
        if first and self._warn:
            warnings.warn(f"embedding cache folder {self.root} cannot be written: {self.write_error}. Vectors are "
                          "still computed and returned, but not cached (a re-run will encode them again); free disk "
                          "space or give another cache_dir", RuntimeWarning, stacklevel=4)

    def _probe(self) -> bool:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            write_probe(self.root)
            return True
        except OSError as e:
            self._fail_write("write test failed", e)
            return False

    @contextlib.contextmanager
    def _locked(self):
        """Exclusive lock of the store folder (manifest updates, merges) across processes."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: one writer at a time is the caller's job
            yield
            return
        with open(self.root / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # ------------------------------------------------------------------------------ manifest
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def dataset(self, dtype: str = "float32"):
        """:func:`arrow_dataset` of this store's live shards (vectors cast to ``dtype`` on read)."""
        return arrow_dataset(self.shard_files, self.dim, dtype)

    def _read_manifest(self) -> dict:
        try:
            m = json.loads(self.manifest_path.read_text(encoding="utf-8"))
            if not isinstance(m, dict) or not isinstance(m.get("shards"), list):
                raise ValueError("no 'shards' list")
            return m
        except FileNotFoundError:
            return {"shards": []}
        except (OSError, ValueError) as e:
            # the manifest is only an index: rebuilt from the shard files (each re-verified by opening)
            if self._warn:
                warnings.warn(f"embedding store manifest {self.manifest_path} is unreadable ({e}); rebuilding it from "
                              "the shard files", RuntimeWarning, stacklevel=4)
            return {"shards": []}

    def _write_manifest(self, entries: list[dict]) -> None:
        m = {"format": STORE_FORMAT, "dim": self.dim, "dtype": self.dtype, "fingerprint": self.fingerprint,
             "columns": {"key": f"fixed_size_binary({KEY_BYTES}), BLAKE2b-128 of the content",
                         "vector": f"fixed_size_list<{self.dtype}>[{self.dim}]"},
             "shards": sorted(entries, key=lambda e: e["file"])}
        atomic_write_text(self.manifest_path, json.dumps(m, indent=1))

    def _move_aside(self, path: Path, reason: str) -> None:
        if self._warn:
            warnings.warn(f"embedding cache shard {path} is corrupt ({reason}); moved aside, its items will be "
                          "recomputed", RuntimeWarning, stacklevel=4)
        self.corrupt.append(str(path))
        with contextlib.suppress(OSError):
            os.replace(path, path.with_suffix(".corrupt"))

    def _read_verified(self) -> dict:
        """``verified.json``: shards already checked on this file system (empty when re-checking)."""
        if os.environ.get("SEMCAT_STORE_VERIFY", "once") == "always":
            return {}
        try:
            v = json.loads((self.root / VERIFIED_FILE).read_text(encoding="utf-8"))
            return v if isinstance(v, dict) else {}
        except (OSError, ValueError):
            return {}

    def _record_verified(self, names: dict) -> None:
        """Add ``{name: {bytes, mtime_ns, ctime_ns, inode, sha256, sample}}`` to ``verified.json`` (under the store lock;
        entries of shards gone are dropped). Best effort: a failed write only costs a re-check."""
        if not self.writable or not names:
            return
        v = self._read_verified()
        v.update(names)
        v = {k: e for k, e in v.items() if (self.root / k).exists()}
        try:
            atomic_write_text(self.root / VERIFIED_FILE, json.dumps(v, sort_keys=True))
        except OSError:
            pass

    def _open_verified(self, path: Path, entry: dict | None, checked: dict | None = None,
                       newly: dict | None = None) -> tuple[_Shard | None, dict | None]:
        """Open a shard after checking it (``entry`` None: a shard the manifest does not list).

        A shard is trusted without a full SHA-256 only when ``verified.json`` (``checked``) records
        it with the same size, mtime, ctime and inode *and* its sampled checksum
        (:func:`sampled_digest`, 1 MiB read) still matches; otherwise it is hashed whole and compared
        with the manifest. An unlisted shard is adopted only when its full checksum matches the one
        its name carries. ``newly`` gets the records of the shards hashed here."""
        try:
            st = path.stat()
        except FileNotFoundError:
            return None, None  # merged away by another process
        try:
            ident = _identity(st)
            memo = (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
            digest = _VERIFIED.get(memo)
            if digest is None:
                rec = (checked or {}).get(path.name)
                if isinstance(rec, dict) and all(rec.get(k) == v for k, v in ident.items()) and \
                        rec.get("sample") == sampled_digest(path, st.st_size):
                    digest = rec.get("sha256")
            if digest is None:
                digest = file_sha256(path)
                if newly is not None:
                    newly[path.name] = {**ident, "sha256": digest, "sample": sampled_digest(path, st.st_size)}
            if entry is None:
                named = _DIGEST_NAME.match(path.name)
                if named is None or not digest.startswith(named.group(1)):
                    raise ValueError("not listed in manifest.json, and its name carries no checksum that its content "
                                     "matches: not adopted")
            elif entry.get("sha256") != digest or entry.get("bytes") != st.st_size:
                raise ValueError("checksum or size mismatch with manifest.json")
            shard = _Shard(path, self.dim, self.dtype)
            if entry is not None and entry.get("rows") != len(shard):
                shard.close()
                raise ValueError("row count mismatch with manifest.json")
            _VERIFIED[memo] = digest
            return shard, {"file": path.name, "rows": len(shard), "bytes": st.st_size, "sha256": digest}
        except FileNotFoundError:
            return None, None
        except Exception as e:  # noqa: BLE001 - any unreadable shard is recomputed, never fatal
            self._move_aside(path, f"{type(e).__name__}: {e}")
            return None, None

    def verify(self) -> list[str]:
        """The full check, on demand: SHA-256 of every live shard against the manifest (reads the
        whole store). A shard that fails is moved aside and its items are recomputed by the next
        encoding, as at open. Returns the shards that failed."""
        before = len(self.corrupt)
        with (self._locked() if self.writable else contextlib.nullcontext()):
            listed = {e["file"]: e for e in self._read_manifest()["shards"] if isinstance(e, dict) and "file" in e}
            for name in sorted(self._shards):
                p = self.root / name
                try:
                    ok = file_sha256(p) == listed.get(name, {}).get("sha256")
                except OSError as e:
                    ok, why = False, f"{type(e).__name__}: {e}"
                else:
                    why = "checksum mismatch with manifest.json (full check)"
                if not ok:
                    self._shards.pop(name).close()
                    for k in [k for k in _VERIFIED if k[0] == str(p)]:
                        del _VERIFIED[k]
                    self._move_aside(p, why)
        if len(self.corrupt) > before:
            self.refresh()              # the manifest drops the shards moved aside
        return self.corrupt[before:]

    def refresh(self) -> None:
        """Re-read the manifest: open new shards, drop merged ones, adopt complete unlisted shards."""
        if not self.root.is_dir():
            return
        ctx = self._locked() if self.writable else contextlib.nullcontext()
        try:
            with ctx:
                m = self._read_manifest()
                listed = {e["file"]: e for e in m["shards"] if isinstance(e, dict) and "file" in e}
                on_disk = {p.name for p in self.root.iterdir() if _SHARD_RE.match(p.name)}
                entries, changed = [], False
                checked = self._read_verified() if any(n not in self._shards for n in on_disk) else {}
                newly: dict = {}
                for name in sorted(set(listed) | on_disk):
                    if name not in on_disk:
                        changed = True
                        continue
                    if name in self._shards:
                        entries.append(listed.get(name) or self._entry_of(name))
                        continue
                    shard, entry = self._open_verified(self.root / name, listed.get(name), checked, newly)
                    if shard is None:
                        changed = True
                        continue
                    changed |= name not in listed
                    self._shards[name] = shard
                    entries.append(entry)
                for name in [n for n in self._shards if n not in on_disk]:
                    self._shards.pop(name).close()
                if changed and self.writable:
                    self._write_manifest(entries)
                self._record_verified(newly)
        except OSError as e:
            self._fail_write("could not update the manifest", e)

    def _entry_of(self, name: str) -> dict:
        p = self.root / name
        st = p.stat()
        return {"file": name, "rows": len(self._shards[name]), "bytes": st.st_size, "sha256": file_sha256(p)}

    # ---------------------------------------------------------------------------------- read
    def __len__(self) -> int:
        """Rows stored in shards (a key written by two processes at once may count twice)."""
        return int(sum(len(s) for s in self._shards.values()))

    @property
    def shard_files(self) -> list[Path]:
        return [self.root / n for n in sorted(self._shards)]

    def locate(self, keys, valid=None, keep_index: bool = True) -> StoreRows:
        """Where each key's vector is (vectorised), as a :class:`StoreRows` view: no vector is read.

        Parameters
        ----------
        keys : (n, 16) uint8 array or list of 16-byte strings
        valid : bool (n,), optional
            Rows to look up; the others are absent (``found`` False, zeros when read).
        keep_index : bool
            Keep the bucket table of each shard searched (4-8 bytes a stored key; the keys
            themselves are read in place from the memory map) for later lookups (the default:
            encoding looks up every chunk). ``False`` for a one-off lookup (building a view of a
            whole catalog): each table built for this call is freed before the next is built.

        Returns
        -------
        StoreRows
            ``(n, dim)`` view; ``.found`` tells which keys are stored, ``view[idx]`` reads rows,
            ``np.asarray(view)`` materialises all of them.
        """
        keys = as_keys(keys)
        n = len(keys)
        valid = None if valid is None else np.asarray(valid, dtype=bool)
        if valid is not None and valid.shape != (n,):
            raise ValueError(f"locate: valid has shape {valid.shape}, expected ({n},)")
        src = np.full(n, -1, dtype=np.int16)
        on_disk = sorted(self._shards.values(), key=len, reverse=True)
        shards = on_disk + self._pending_shards()
        if len(shards) > np.iinfo(np.int16).max:
            raise RuntimeError(f"{len(shards)} shards in {self.root}; run compact() first")
        row = np.zeros(n, dtype=np.int32 if max([len(x) for x in shards] + [0]) < np.iinfo(np.int32).max
                       else np.int64)
        nq = n if valid is None else int(np.count_nonzero(valid))
        # shard by shard, largest first (most keys are resolved by the first; found keys are not
        # searched again), queries in blocks: the temporaries (key halves, candidate rows) are
        # bounded by the block, not by n; the keys themselves are read in place from the map
        left = nq
        for s_i, sh in enumerate(shards):
            if not left:
                break
            built_here = not getattr(sh, "indexed", True)
            for a, todo in self._todo_blocks(valid, src, n):
                pos = sh.search(*_split(keys[todo]))
                hit = pos >= 0
                src[todo[hit]], row[todo[hit]] = s_i, pos[hit]
                left -= int(hit.sum())
            if built_here and not keep_index:
                sh.drop_index()
        return StoreRows([sh.rows_source() for sh in shards], src, row, self.dim)

    @staticmethod
    def _todo_blocks(valid, src: np.ndarray, n: int):
        """``(start, rows)`` of the rows still to look up (valid, not found yet), block by block."""
        for a in range(0, n, _LOCATE_BLOCK):
            b = min(n, a + _LOCATE_BLOCK)
            need = src[a:b] < 0
            if valid is not None:
                need &= valid[a:b]
            todo = a + np.flatnonzero(need)
            if todo.size:
                yield a, todo

    def contains(self, keys) -> np.ndarray:
        """bool (n,): which keys are stored (no vector is read)."""
        return self.locate(keys).found

    def get(self, keys) -> tuple[np.ndarray, np.ndarray]:
        """Look up keys and read their vectors (vectorised; :meth:`locate` then a gather).

        Parameters
        ----------
        keys : (n, 16) uint8 array or list of 16-byte strings

        Returns
        -------
        found : bool (n,)
        vectors : float32 (n, dim), zeros where not found
        """
        view = self.locate(keys)
        return view.found, np.asarray(view)

    def _pending_shards(self) -> list:
        out = []
        if self._pending_keys:
            out.append(_Mem(*self._merged(self._pending_keys, self._pending_vecs)))
        if self._unwritten_keys:
            if len(self._unwritten_keys) > 1:   # merged once, then reused
                self._unwritten_keys[:] = [np.concatenate(self._unwritten_keys)]
                self._unwritten_vecs[:] = [np.concatenate(self._unwritten_vecs)]
            out.append(_Mem(*self._merged(self._unwritten_keys, self._unwritten_vecs)))
        return out

    # --------------------------------------------------------------------------------- write
    @property
    def pending(self) -> int:
        """Number of vectors queued but not yet written."""
        return int(sum(len(k) for k in self._pending_keys))

    def put(self, keys, vectors) -> None:
        """Queue vectors (written by ``flush``); ignored when the store cannot be written."""
        keys = as_keys(keys)
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(keys), self.dim):
            raise ValueError(f"store put: vectors {vectors.shape} do not match {len(keys)} keys x dim {self.dim}")
        if not len(keys):
            return
        if not self.writable:
            if self.keep_unwritten:
                self._unwritten_keys.append(keys.copy())
                self._unwritten_vecs.append(vectors.astype(self.dtype, copy=True))
            return
        self._pending_keys.append(keys.copy())
        self._pending_vecs.append(vectors.astype(self.dtype, copy=True))

    def _merged_pending(self):
        return self._merged(self._pending_keys, self._pending_vecs)

    @staticmethod
    def _merged(key_parts, vec_parts):
        keys = np.concatenate(key_parts)
        vecs = np.concatenate(vec_parts)
        hi, lo = _split(keys)
        order = np.lexsort((lo, hi))
        hi, lo = hi[order], lo[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])
        order = order[first]
        return keys[order], vecs[order]

    def flush(self) -> Path | None:
        """Write queued vectors as one new shard (atomic, checksummed), then merge a full tier.

        A write failure (read-only folder, disk full) is warned about once and turns caching off
        for this store; the queued vectors are dropped (the caller still holds them).
        """
        if not self._pending_keys:
            return None
        if not self.writable:
            self._keep(self._pending_keys, self._pending_vecs)
            self._pending_keys, self._pending_vecs = [], []
            return None
        keys, vecs = self._merged_pending()
        self._pending_keys, self._pending_vecs = [], []
        try:
            path = self._write_shard([(keys, vecs)], len(keys))
        except OSError as e:
            self._fail_write("writing a shard failed", e)
            self._keep([keys], [vecs])
            return None
        if self.auto_merge:
            self.merge()
        return path

    def _keep(self, keys: list, vecs: list) -> None:
        if self.keep_unwritten and keys:
            self._unwritten_keys.extend(keys)
            self._unwritten_vecs.extend(vecs)

    def _write_shard(self, parts: Sequence[tuple[np.ndarray, np.ndarray]], rows: int | None,
                     replaces: Sequence[str] = ()) -> Path:
        """Write sorted (keys, vectors) parts as one shard; record it (and drop ``replaces``) in the manifest."""
        name = f"shard-{self.writer}-{uuid.uuid4().hex[:16]}.arrow"    # (renamed after its checksum below)
        schema = pa.schema([("key", pa.binary(KEY_BYTES)), ("vector", pa.list_(_arrow_type(self.dtype), self.dim))],
                           metadata={"semcat": json.dumps({"format": STORE_FORMAT, "dim": self.dim,
                                                           "dtype": self.dtype})})
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.root)
        os.close(fd)
        tmp = Path(tmp)
        try:
            with pa.OSFile(str(tmp), "wb") as sink:
                with pa.ipc.new_file(sink, schema) as w:
                    written = 0
                    for keys, vecs in parts:
                        if len(keys):
                            w.write_batch(_batch(keys, vecs, schema, self.dtype))
                            written += len(keys)
            rows = written if rows is None else rows
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())

            os.chmod(tmp, 0o666 & ~umask())
            digest, size = file_sha256(tmp), tmp.stat().st_size
            # the name carries the checksum: a shard found but not listed (a writer killed between
            # the rename and the manifest update) is adopted only when its content matches its name
            name = f"shard-{self.writer}-{digest[:32]}.arrow"
            path = self.root / name
            shard = _Shard(tmp, self.dim, self.dtype)
            with self._locked():
                os.replace(tmp, path)
                shard.path = path
                m = self._read_manifest()
                entries = [e for e in m["shards"] if isinstance(e, dict) and e.get("file") not in replaces
                           and e.get("file") != name and (self.root / e.get("file", "")).exists()]
                entries.append({"file": name, "rows": rows, "bytes": size, "sha256": digest})
                self._write_manifest(entries)
                for old in replaces:
                    if old != name:
                        (self.root / old).unlink(missing_ok=True)
                st = path.stat()            # other processes need not hash it again (verified.json)
                self._record_verified({name: {**_identity(st), "sha256": digest,
                                              "sample": sampled_digest(path, st.st_size)}})
        finally:
            if tmp.exists():
                tmp.unlink()
        _VERIFIED[(str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)] = digest
        for old in replaces:
            if old in self._shards and old != name:
                self._shards.pop(old).close()
        if name in self._shards:
            self._shards.pop(name).close()
        self._shards[name] = shard
        return path

    # -------------------------------------------------------------------------------- merging
    def _tier(self, rows: int) -> int:
        t, cap = 0, self.base_rows * self.merge_factor
        while rows >= cap:
            t, cap = t + 1, cap * self.merge_factor
        return t

    def merge(self, force: bool = False) -> int:
        """Merge full size tiers (``force``: every shard below ``max_merge_rows``). Returns merges done.

        Bounded: shards of ``max_merge_rows`` rows or more are never rewritten, and a merge reads
        only the shards of one tier, streaming them in record batches of ``base_rows`` rows.
        """
        if not self.writable:
            return 0
        self.refresh()  # see other writers' shards (and drop the ones they merged away) first
        done = 0
        while True:
            small = {n: len(s) for n, s in self._shards.items() if len(s) < self.max_merge_rows}
            tiers: dict[int, list[str]] = {}
            for n, r in small.items():
                tiers.setdefault(self._tier(r), []).append(n)
            group = [g for t, g in sorted(tiers.items()) if len(g) >= self.merge_factor]
            if force and not group and len(small) > 1:
                group = [sorted(small)]
            if not group:
                return done
            try:
                self._merge(sorted(group[0]))
            except OSError as e:
                self._fail_write("merging shards failed", e)
                return done
            done += 1
            force = False

    def compact(self) -> int:
        """Merge every shard below ``max_merge_rows`` into one (explicit, e.g. at the end of a run)."""
        return self.merge(force=True)

    def _merge(self, names: list[str]) -> None:
        """Merge sorted shards into one, streamed: a k-way merge in blocks of at most ``base_rows``
        rows. Memory: one block (the keys are read in place from the shards' memory maps, found
        with their bucket tables)."""
        shards = [self._shards[n] for n in names]
        step = max(self.base_rows, 1)

        def key_at(i: int, r: int) -> tuple[int, int]:
            h, l_ = shards[i].key_halves(r, r + 1)
            return int(h[0]), int(l_[0])

        def parts():
            cur = [0] * len(shards)
            while True:
                live = [i for i in range(len(shards)) if cur[i] < len(shards[i])]
                if not live:
                    return
                # the block ends at the smallest of each shard's (step / shards)-th next key: every key
                # up to it (from all shards) goes in this block -- at most ``step`` rows -- so equal
                # keys of two shards meet in one block
                per = max(1, step // len(live))
                bh, bl = min(key_at(i, min(len(shards[i]), cur[i] + per) - 1) for i in live)
                qh, ql = np.asarray([bh], np.uint64), np.asarray([bl], np.uint64)
                hs, ls, src, row = [], [], [], []
                for i in live:
                    a = cur[i]
                    e = max(a, int(shards[i].index.upper(qh, ql)[0]))    # keys <= the block's bound
                    if e > a:
                        h, l_ = shards[i].key_halves(a, e)
                        hs.append(h), ls.append(l_)
                        src.append(np.full(e - a, i, dtype=np.int32)), row.append(np.arange(a, e, dtype=np.int64))
                    cur[i] = e
                hi, lo, src, row = np.concatenate(hs), np.concatenate(ls), np.concatenate(src), np.concatenate(row)
                o = np.lexsort((lo, hi))                 # stable: a key in two shards keeps the first shard's
                h, l_ = hi[o], lo[o]
                first = np.ones(len(o), dtype=bool)
                first[1:] = (h[1:] != h[:-1]) | (l_[1:] != l_[:-1])
                o = o[first]
                k = np.empty((len(o), 2), dtype=">u8")
                k[:, 0], k[:, 1] = hi[o], lo[o]
                v = np.empty((len(o), self.dim), dtype=self.dtype)
                for i in range(len(shards)):
                    m = src[o] == i
                    if m.any():
                        shards[i].gather(row[o][m], v, np.flatnonzero(m))
                yield k.view(np.uint8).reshape(len(o), KEY_BYTES), v

        self._write_shard(_Lazy(parts), None, replaces=names)


class _Lazy:
    """An iterable of parts produced on demand (keeps a merge's memory at one batch)."""

    def __init__(self, gen):
        self.gen = gen

    def __iter__(self):
        return self.gen()


class _Mem:
    """Queued (not yet written) vectors, searchable like a shard."""

    def __init__(self, keys, vecs):
        self.hi, self.lo = _split(keys)
        self.vecs = vecs
        self.index = _KeyIndex(self.hi, self.lo)

    def __len__(self) -> int:
        return len(self.hi)

    def search(self, qhi: np.ndarray, qlo: np.ndarray) -> np.ndarray:
        return self.index.search(qhi, qlo)

    def gather(self, rows, out, where):
        out[where] = self.vecs[rows]

    def rows_source(self) -> _Rows:
        return _Rows([self.vecs], np.asarray([0, len(self.vecs)], dtype=np.int64))


def _batch(keys: np.ndarray, vecs: np.ndarray, schema: pa.Schema, dtype: str) -> pa.RecordBatch:
    n = len(keys)
    k = pa.FixedSizeBinaryArray.from_buffers(pa.binary(KEY_BYTES), n, [None, pa.py_buffer(np.ascontiguousarray(keys))])
    flat = pa.array(np.ascontiguousarray(vecs, dtype=dtype).reshape(-1), type=_arrow_type(dtype))
    v = pa.FixedSizeListArray.from_arrays(flat, vecs.shape[1])
    return pa.RecordBatch.from_arrays([k, v], schema=schema)


def writable_problem(folder) -> str | None:
    """None when ``folder`` can be created and written, else why not (checked before any encoding)."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        write_probe(Path(folder))
        return None
    except OSError as e:
        return f"{type(e).__name__}: {e.strerror or e}"


def write_probe(folder: Path) -> None:
    """Create and remove a small file in ``folder`` (raises ``OSError`` when it cannot be written)."""
    fd, tmp = tempfile.mkstemp(prefix=".write-test-", dir=folder)
    try:
        os.write(fd, b"ok")
    finally:
        os.close(fd)
        os.unlink(tmp)
