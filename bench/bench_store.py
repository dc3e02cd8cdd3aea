"""The embedding store (semcat_kit.store) vs the per-key cache it replaced, at up to 1M keys.

In one run, on the same synthetic keys (BLAKE2b of item ids) and vectors (unit Gaussian):
  * build: ``VectorStore`` put/flush per 8,192 items (tiered merging) vs the old
    ``VectorCache`` (a copy is kept below: one .npz per flush, everything rewritten into one
    file every 16 flushes);
  * open: new = read manifest, verify checksums, memory-map; old = load every shard into RAM and
    build a per-key Python dict;
  * lookup of all N keys (shuffled) + 1% absent keys: new = vectorised searchsorted + gather from
    the memory map; old = per-key dict loop. Also the index-only part (found + position);
  * storage format: Arrow IPC (memory-mapped, what the store uses) vs Parquet (decoded into
    private memory) on the same rows;
  * float16 vs float32 shards: size, lookup time, and agreement of 10-nearest-neighbour sets on
    real MiniLM title embeddings (tutorial catalog) — the evidence for the default (float32).
Peak private memory per stage comes from RssAnon (/proc/self/status) sampled every 2 ms
(memory-mapped store pages are page cache, reported apart as RssFile).

Usage: python bench/bench_store.py [--n 1000000] [--dim 384] [--old-build-max 250000] [--no-knn]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from semcat_kit.store import VectorStore, content_key  # noqa: E402


# ------------------------------------------------------------------ the previous cache (baseline)
class OldVectorCache:
    """semcat_kit/_vector_cache.VectorCache as of commit 5ad699a (read + write paths), for the baseline."""

    KEY_BYTES = 16

    def __init__(self, root: Path, dim: int, max_shards: int = 16):
        self.root, self.dim, self.max_shards = root, dim, max_shards
        root.mkdir(parents=True, exist_ok=True)
        self._index, self._shards, self._pending_keys, self._pending_vecs = None, [], [], []

    @staticmethod
    def _checksum(keys, vecs):
        h = hashlib.blake2b(digest_size=16)
        h.update(np.ascontiguousarray(keys).tobytes())
        h.update(np.ascontiguousarray(vecs).tobytes())
        return h.hexdigest()

    @staticmethod
    def _key_list(keys):
        flat = np.ascontiguousarray(keys).tobytes()
        return [flat[i:i + 16] for i in range(0, len(flat), 16)]

    def _load_index(self):
        if self._index is None:
            self._index = {}
            for path in sorted(self.root.glob("shard-*.npz")):
                with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
                    keys, vecs, cs = z["keys"], z["vectors"], str(z["checksum"])
                assert self._checksum(keys, vecs) == cs
                s = len(self._shards)
                self._shards.append((path, keys, vecs))
                for r, k in enumerate(self._key_list(keys)):
                    self._index[k] = (s, r)
        return self._index

    def get(self, keys):
        index = self._load_index()
        found = np.zeros(len(keys), dtype=bool)
        out = np.zeros((len(keys), self.dim), dtype=np.float32)
        for i, k in enumerate(keys):
            hit = index.get(k)
            if hit is not None:
                s, r = hit
                out[i] = self._shards[s][2][r]
                found[i] = True
        return found, out

    def put(self, keys, vectors):
        self._pending_keys.extend(keys)
        self._pending_vecs.append(np.asarray(vectors, dtype=np.float32))

    def _write_shard(self, keys, vecs):
        path = self.root / f"shard-{uuid.uuid4().hex}.npz"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, keys=keys, vectors=vecs, checksum=np.array(self._checksum(keys, vecs)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path

    def flush(self):
        if not self._pending_keys:
            return
        keys = np.frombuffer(b"".join(self._pending_keys), dtype=np.uint8).reshape(-1, 16).copy()
        vecs = np.concatenate(self._pending_vecs)
        self._pending_keys, self._pending_vecs = [], []
        path = self._write_shard(keys, vecs)
        index = self._load_index()
        s = len(self._shards)
        self._shards.append((path, keys, vecs))
        for r, k in enumerate(self._key_list(keys)):
            index[k] = (s, r)
        if len(self._shards) > self.max_shards:
            self.compact()

    def compact(self):
        all_keys = np.concatenate([k for _, k, _ in self._shards])
        all_vecs = np.concatenate([v for _, _, v in self._shards])
        _, first = np.unique(all_keys, axis=0, return_index=True)
        first.sort()
        self._write_shard(all_keys[first], all_vecs[first])
        for old, _, _ in self._shards:
            old.unlink(missing_ok=True)
        self._shards, self._index = [], None
        self._load_index()


# ------------------------------------------------------------------------------------ helpers
def mem(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Peak:
    """Peak RssAnon (MB) while the block runs, sampled every 2 ms."""

    def __enter__(self):
        self.peak, self.stop = mem("RssAnon"), False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()
        self.t0 = time.perf_counter()
        return self

    def _run(self):
        while not self.stop:
            self.peak = max(self.peak, mem("RssAnon"))
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self.stop = True
        self.t.join()
        self.peak = max(self.peak, mem("RssAnon"))


def keys_for(start: int, stop: int) -> list[bytes]:
    return [content_key(f"item-{i}") for i in range(start, stop)]


def vecs_for(start: int, stop: int, dim: int) -> np.ndarray:
    v = np.random.default_rng(start).normal(size=(stop - start, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def dir_mb(p: Path) -> float:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 1e6


def build(store, n, dim, chunk=8192):
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        store.put(keys_for(a, b), vecs_for(a, b, dim))
        store.flush()


def knn_agreement(dim_hint: int) -> tuple[float, float, int] | None:
    """Mean overlap of 10-NN sets and top-1 agreement, float16-rounded vs float32 MiniLM title vectors."""
    try:
        import semcat_kit as sk

        cat = sk.datasets.load_fashion_tutorial()
        enc = sk.encoders.load("minilm", device="cpu")
    except Exception as e:  # noqa: BLE001 - the bench still reports the rest
        print(f"kNN check skipped ({type(e).__name__}: {e})")
        return None
    titles = cat["title"].dropna().astype(str).drop_duplicates().head(2000).tolist()
    x32 = enc.encode_texts(titles, batch_size=128)
    x16 = x32.astype(np.float16).astype(np.float32)
    k = 10

    def knn(x):
        s = x @ x.T
        np.fill_diagonal(s, -np.inf)
        return np.argsort(-s, axis=1)[:, :k]

    a, b = knn(x32), knn(x16)
    overlap = np.mean([len(set(r) & set(q)) / k for r, q in zip(a, b)])
    return float(overlap), float(np.mean(a[:, 0] == b[:, 0])), len(titles)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--old-build-max", type=int, default=250_000,
                    help="above this N the old cache is written as one compacted shard (its best state for "
                         "lookups) instead of timing its build loop, which rewrites everything every 16 flushes")
    ap.add_argument("--no-knn", action="store_true", help="skip the float16 kNN check (needs MiniLM)")
    ap.add_argument("--fmt-n", type=int, default=200_000, help="rows for the Arrow-vs-Parquet comparison")
    args = ap.parse_args()
    n, dim = args.n, args.dim
    root = Path(tempfile.mkdtemp(prefix="bench_store_"))
    print(f"N={n:,} keys, dim={dim}, float32 vectors; scratch {root}")
    try:
        # ------------------------------------------------------------------------- build
        with Peak() as p_new:
            new = VectorStore(root / "new", dim)
            build(new, n, dim)
        print(f"build new store : {p_new.seconds:7.1f} s  {len(new.shard_files)} shards  {dir_mb(root / 'new'):8.0f} MB"
              f"  peak_rss_mb: build_new {p_new.peak:.0f}")
        del new
        if n > args.old_build_max:
            old = OldVectorCache(root / "old", dim)
            for a in range(0, n, 8192):   # same chunks (and vectors) as build()
                b = min(n, a + 8192)
                old.put(keys_for(a, b), vecs_for(a, b, dim))
            old.flush()
            print(f"build old cache : not timed (N > --old-build-max); written as one compacted shard")
        else:
            with Peak() as p_old:
                old = OldVectorCache(root / "old", dim)
                build(old, n, dim)
            print(f"build old cache : {p_old.seconds:7.1f} s  {len(old._shards)} shards  {dir_mb(root / 'old'):8.0f} MB"
                  f"  peak_rss_mb: build_old {p_old.peak:.0f}")
            print(f"ratio: {p_old.seconds / p_new.seconds:.2f}x  store build time, old cache / new store")
        del old

        # ---------------------------------------------------------------------- queries
        rng = np.random.default_rng(0)
        perm = rng.permutation(n)
        absent = [content_key(f"absent-{i}") for i in range(max(1, n // 100))]
        all_keys = keys_for(0, n)
        q_list = [all_keys[i] for i in perm] + absent
        del all_keys
        rss0 = mem("RssAnon")

        # ------------------------------------------------------- open + lookup, new store first
        import semcat_kit.store as store_mod
        from semcat_kit.store import _search, _split, as_keys

        store_mod._VERIFIED.clear()  # verify every shard's checksum from disk, as a new process would
        with Peak() as o_new:
            new = VectorStore(root / "new", dim)
        with Peak() as l_new:
            found_n, vec_n = new.get(q_list)
        digest_n = hashlib.sha256(vec_n.tobytes()).hexdigest()
        del vec_n
        t = time.perf_counter()   # the index part of get(): keys -> sorted 64-bit prefixes -> searchsorted
        qk = as_keys(q_list)
        qhi, qlo = _split(qk)
        order = np.argsort(qhi, kind="stable")
        qhi, qlo = qhi[order], qlo[order]
        todo = np.arange(len(qk))
        for sh in sorted(new._shards.values(), key=len, reverse=True):
            pos = _search(sh.hi, sh.lo, qhi[todo], qlo[todo])
            todo = todo[pos < 0]
        t_idx_new = time.perf_counter() - t
        print(f"RssFile after new lookups {mem('RssFile'):.0f} MB (memory-mapped shards: page cache the OS can drop)")
        del new, qk, qhi, qlo, order, todo
        with Peak() as o_old:
            old = OldVectorCache(root / "old", dim)
            old._load_index()
        with Peak() as l_old:
            found_o, vec_o = old.get(q_list)
        assert np.array_equal(found_n, found_o) and found_n.sum() == n
        assert hashlib.sha256(vec_o.tobytes()).hexdigest() == digest_n, "old and new paths returned other vectors"
        del vec_o
        t = time.perf_counter()
        idx = old._index
        _ = [idx.get(k) for k in q_list]
        t_idx_old = time.perf_counter() - t
        print(f"open            : new {o_new.seconds:6.2f} s (sha256 verify + mmap; peak_rss_mb: open_new {o_new.peak:.0f}) | "
              f"old {o_old.seconds:6.2f} s (load + dict; peak_rss_mb: open_old {o_old.peak:.0f})  [before: {rss0:.0f}]")
        print(f"ratio: {o_old.seconds / o_new.seconds:.2f}x  open time, old / new")
        print(f"lookup {len(q_list):,} keys: new {l_new.seconds:6.2f} s ({len(q_list) / l_new.seconds / 1e6:.2f} M keys/s, "
              f"peak_rss_mb: lookup_new {l_new.peak:.0f}) | old {l_old.seconds:6.2f} s "
              f"({len(q_list) / l_old.seconds / 1e6:.2f} M keys/s, peak_rss_mb: lookup_old {l_old.peak:.0f})")
        print(f"ratio: {l_old.seconds / l_new.seconds:.2f}x  lookup of {len(q_list):,} keys incl. vectors, old per-key "
              "loop / new vectorised (goal >= 10x)")
        print(f"ratio: {(o_old.seconds + l_old.seconds) / (o_new.seconds + l_new.seconds):.2f}x  open + lookup (what "
              "every encode_catalog call does), old / new")
        print(f"index only      : new {t_idx_new:6.2f} s | old {t_idx_old:6.2f} s (dict.get loop)")
        print(f"ratio: {t_idx_old / t_idx_new:.2f}x  key index only (found + position), old / new")
        del old, q_list

        # --------------------------------------------------------------- Arrow IPC vs Parquet
        import pyarrow as pa
        import pyarrow.parquet as pq

        m = min(args.fmt_n, n)
        shard = max((root / "new").glob("shard-*.arrow"), key=lambda p: p.stat().st_size)
        with pa.memory_map(str(shard)) as mm:
            tab = pa.ipc.open_file(mm).read_all().slice(0, m)
            t = time.perf_counter()
            with pa.OSFile(str(root / "fmt.arrow"), "wb") as sink, pa.ipc.new_file(sink, tab.schema) as w:
                w.write_table(tab)
            w_ipc = time.perf_counter() - t
            t = time.perf_counter()
            pq.write_table(tab, root / "fmt.parquet")
            w_pq = time.perf_counter() - t
            del tab
        def read_all_values(table):
            # touch every stored value, chunk by chunk (no combine_chunks copy)
            return float(sum(c.flatten().to_numpy().astype(np.float64).sum() for c in table.column("vector").chunks))

        with Peak() as r_ipc:
            with pa.memory_map(str(root / "fmt.arrow")) as mm:
                s1 = read_all_values(pa.ipc.open_file(mm).read_all())
        with Peak() as r_pq:
            s2 = read_all_values(pq.read_table(root / "fmt.parquet"))
        print(f"format ({m:,} rows): Arrow IPC {(root / 'fmt.arrow').stat().st_size / 1e6:.0f} MB, write {w_ipc:.2f} s, "
              f"open+read {r_ipc.seconds:.3f} s, peak_rss_mb: read_ipc {r_ipc.peak:.0f} | Parquet "
              f"{(root / 'fmt.parquet').stat().st_size / 1e6:.0f} MB, write {w_pq:.2f} s, open+read {r_pq.seconds:.3f} s, "
              f"peak_rss_mb: read_parquet {r_pq.peak:.0f}  (same values: {abs(s1 - s2) < 1e-6 * max(1.0, abs(s1))})")
        print(f"ratio: {r_pq.seconds / max(r_ipc.seconds, 1e-6):.1f}x  open+read time, Parquet / memory-mapped Arrow IPC")

        # ------------------------------------------------------------------- float16 vs float32
        m16 = min(n, 200_000)
        s32, s16 = VectorStore(root / "f32", dim), VectorStore(root / "f16", dim, dtype="float16")
        build(s32, m16, dim)
        build(s16, m16, dim)
        q = keys_for(0, m16)
        t = time.perf_counter()
        _, a32 = s32.get(q)
        t32 = time.perf_counter() - t
        t = time.perf_counter()
        _, a16 = s16.get(q)
        t16 = time.perf_counter() - t
        err = float(np.abs(a32 - a16).max())
        print(f"float16 vs float32 ({m16:,} rows): size {dir_mb(root / 'f16'):.0f} vs {dir_mb(root / 'f32'):.0f} MB, "
              f"lookup {t16:.2f} vs {t32:.2f} s, max |error| {err:.1e}")
        print(f"ratio: {dir_mb(root / 'f32') / dir_mb(root / 'f16'):.2f}x  store size, float32 / float16")
        if not args.no_knn:
            r = knn_agreement(dim)
            if r is not None:
                print(f"float16 kNN on {r[2]} real MiniLM title vectors: 10-NN overlap {r[0]:.4f}, "
                      f"top-1 agreement {r[1]:.4f} (vs float32)")
        print("peak_rss_mb: process " + json.dumps({"VmHWM": mem("VmHWM"), "RssAnon_now": mem("RssAnon")}))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
