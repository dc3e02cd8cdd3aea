"""The embedding store (semcat_kit.encode.store) vs the per-key cache it replaced, at up to 1M keys.

In one run, on the same synthetic keys (BLAKE2b of item ids) and vectors (unit Gaussian):
  * build: ``VectorStore`` put/flush per 8,192 items (tiered merging) vs the old
    ``VectorCache`` (a copy is kept below: one .npz per flush, everything rewritten into one
    file every 16 flushes);
  * open: new = read manifest, verify checksums, memory-map; old = load every shard into RAM and
    build a per-key Python dict;
  * lookup of all N keys (shuffled) + 1% absent keys, measured three ways:
    (a) lookup as each path's consumer gets it: new = ``locate`` (vectorised searchsorted ->
        a ``StoreRows`` view of positions, what ``Embeddings`` and training use); old = its
        ``get`` (per-key dict loop copying each vector into an (n, d) array). Also the old
        dict loop alone (no copy);
    (b) the full materialisation: new = ``locate`` + gather of all n x d floats from the map;
    (c) a training-like pass: shuffled batches of ``--batch`` rows read as float32 arrays
        (old: fancy index of its in-memory result; new: the view gathers from the map);
  * storage format: Arrow IPC (memory-mapped, what the store uses) vs Parquet (decoded into
    private memory) on the same rows;
  * float16 vs float32 shards: size, lookup time, and agreement of 10-nearest-neighbour sets on
    real MiniLM title embeddings (tutorial catalog) — the evidence for the default (float32).
Peak private memory per stage comes from RssAnon (/proc/self/status) sampled every 2 ms
(memory-mapped store pages are page cache, reported apart as RssFile).

Usage: python bench/bench_store.py [--n 1000000] [--dim 384] [--old-build-max 250000] [--no-knn]
       [--batch 1024] [--json out.json]
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
from semcat_kit.encode.store import VectorStore, content_key  # noqa: E402


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


def trust_cost(folder: Path, dim: int) -> dict:
    """The store's trust model at open (see semcat_kit.encode.store): a new process opening a store
    it verified before (stat + a 1 MiB sampled checksum per shard, verified.json) vs one that hashes
    every shard whole (first open on a machine, or SEMCAT_STORE_VERIFY=always), and verify() (the
    full check on demand). Page cache warm in all three (the store was just written)."""
    import semcat_kit.encode.store as store_mod

    def opened(repeat: int = 3) -> float:        # best of 3 (a new process each time: memo cleared)
        best = float("inf")
        for _ in range(repeat):
            store_mod.forget_verified()
            t = time.perf_counter()
            VectorStore(folder, dim)
            best = min(best, time.perf_counter() - t)
        return best

    VectorStore(folder, dim)                       # records verified.json if the writer did not
    trusted = opened()
    os.environ["SEMCAT_STORE_VERIFY"] = "always"
    try:
        full = opened()
        st = VectorStore(folder, dim)
    finally:
        del os.environ["SEMCAT_STORE_VERIFY"]
    t = time.perf_counter()
    st.verify()
    ver = time.perf_counter() - t
    mb = dir_mb(folder)
    print(f"trust ({len(st.shard_files)} shards, {mb:.0f} MB): open trusting verified.json (stat + sampled checksum) "
          f"{trusted:.3f} s, open hashing every shard {full:.3f} s, verify() {ver:.3f} s")
    print(f"ratio: {full / max(trusted, 1e-9):.1f}x  store open, full SHA-256 of every shard / sampled checksum "
          "(verified.json)")
    return {"open_trusted_s": trusted, "open_full_s": full, "verify_s": ver, "store_mb": mb}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--old-build-max", type=int, default=250_000,
                    help="above this N the old cache is written as one compacted shard (its best state for "
                         "lookups) instead of timing its build loop, which rewrites everything every 16 flushes")
    ap.add_argument("--no-knn", action="store_true", help="skip the float16 kNN check (needs MiniLM)")
    ap.add_argument("--fmt-n", type=int, default=200_000, help="rows for the Arrow-vs-Parquet comparison")
    ap.add_argument("--batch", type=int, default=1024, help="rows per batch of the training-like pass (c)")
    ap.add_argument("--json", default=None, help="also write the measured figures to this JSON file")
    ap.add_argument("--write-doc", action="store_true",
                    help="record the figures in docs/scale_measured.json and re-render docs/scale.md")
    ap.add_argument("--trust-only", action="store_true",
                    help="only the trust-model cost (open with sampled checksums vs full SHA-256) on --n keys")
    args = ap.parse_args()
    n, dim = args.n, args.dim
    root = Path(tempfile.mkdtemp(prefix="bench_store_"))
    if args.trust_only:
        try:
            build(VectorStore(root / "new", dim), n, dim)
            trust_cost(root / "new", dim)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return
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
        from semcat_kit.encode.store import as_keys

        # the same query keys in each path's input form, created in query order (as a caller
        # would): old = a list of 16-byte strings (its API), new = an (n, 16) uint8 array (what
        # content_keys / Embeddings hold)
        all_keys = keys_for(0, n)
        q_arr = np.concatenate([as_keys([all_keys[i] for i in perm]), as_keys(absent)])
        del all_keys
        flat = q_arr.tobytes()
        q_list = [flat[i:i + 16] for i in range(0, len(flat), 16)]
        del flat
        rss0 = mem("RssAnon")

        # ------------------------------------------------------- open + lookup, new store first
        import semcat_kit.encode.store as store_mod

        store_mod.forget_verified()  # verify every shard's checksum from disk, as a new process would
        with Peak() as o_new:
            new = VectorStore(root / "new", dim)
        # (a) lookup, as each path's consumer receives it: new = positions (a StoreRows view on the
        #     memory-mapped shards, what Embeddings / training use); old = its get(), the per-key
        #     dict loop copying every vector into an (n, d) array (the only thing it could return)
        with Peak() as l_new:
            view = new.locate(q_arr)
        found_n = view.found
        with Peak() as l_new_list:        # the same from the list of bytes (+ list -> array)
            view_l = new.locate(q_list)
        assert np.array_equal(view_l.found, found_n)
        del view_l
        # (b) full materialisation of the view: every vector copied into private memory
        with Peak() as g_new:
            vec_n = np.asarray(view)
        digest_n = hashlib.sha256(vec_n.tobytes()).hexdigest()
        del vec_n
        print(f"RssFile after new lookups {mem('RssFile'):.0f} MB (memory-mapped shards: page cache the OS can drop)")
        with Peak() as o_old:
            old = OldVectorCache(root / "old", dim)
            old._load_index()
        with Peak() as l_old:
            found_o, vec_o = old.get(q_list)
        assert np.array_equal(found_n, found_o) and found_n.sum() == n
        assert hashlib.sha256(vec_o.tobytes()).hexdigest() == digest_n, "old and new paths returned other vectors"
        t = time.perf_counter()
        idx = old._index
        _ = [idx.get(k) for k in q_list]
        t_idx_old = time.perf_counter() - t
        del _, idx, old       # keep only its (n, d) result for the pass: bounds this bench's memory

        # (c) a training-like pass over the looked-up rows: shuffled batches of --batch rows, each
        #     read as a float32 (batch, d) array. old: fancy-indexing its in-memory result;
        #     new: the view gathers the batch's rows from the memory map
        nq = len(q_list)
        batches = np.array_split(np.random.default_rng(1).permutation(nq), max(1, nq // args.batch))
        chk_o = chk_n = 0.0
        with Peak() as p_old:
            for bi in batches:
                chk_o += float(vec_o[np.sort(bi)][:, 0].sum())
        with Peak() as p_new:
            for bi in batches:
                chk_n += float(view[np.sort(bi)][:, 0].sum())
        assert abs(chk_o - chk_n) < 1e-6 * max(1.0, abs(chk_o)), (chk_o, chk_n)
        del vec_o
        print(f"open            : new {o_new.seconds:6.2f} s (sha256 verify + mmap; peak_rss_mb: open_new {o_new.peak:.0f}) | "
              f"old {o_old.seconds:6.2f} s (load + dict; peak_rss_mb: open_old {o_old.peak:.0f})  [before: {rss0:.0f}]")
        print(f"ratio: {o_old.seconds / o_new.seconds:.2f}x  open time, old / new")
        print(f"(a) lookup {nq:,} keys -> what the consumer gets: new locate {l_new.seconds:6.3f} s "
              f"({nq / l_new.seconds / 1e6:.2f} M keys/s, positions view, peak_rss_mb: lookup_new {l_new.peak:.0f}) | "
              f"old get {l_old.seconds:6.2f} s ({nq / l_old.seconds / 1e6:.2f} M keys/s, dict loop + (n, d) copy, "
              f"peak_rss_mb: lookup_old {l_old.peak:.0f})")
        print(f"ratio: {l_old.seconds / l_new.seconds:.2f}x  (a) lookup of {nq:,} keys, old per-key get / new "
              "vectorised locate (goal >= 10x)")
        print(f"ratio: {l_old.seconds / l_new_list.seconds:.2f}x  (a) same, new locate given the list of bytes "
              f"({l_new_list.seconds:.3f} s incl. list -> array)")
        print(f"ratio: {t_idx_old / l_new.seconds:.2f}x  (a') key index only, old dict.get loop ({t_idx_old:.3f} s, "
              "no vector copy) / new locate")
        print(f"(b) materialise all {nq:,} x {dim} vectors: new gather {g_new.seconds:6.2f} s "
              f"(peak_rss_mb: gather_new {g_new.peak:.0f}); locate + gather {l_new.seconds + g_new.seconds:6.2f} s")
        print(f"ratio: {l_old.seconds / (l_new.seconds + g_new.seconds):.2f}x  (b) lookup incl. a full (n, d) copy, "
              "old get / new locate + gather")
        print(f"ratio: {(o_old.seconds + l_old.seconds) / (o_new.seconds + l_new.seconds + g_new.seconds):.2f}x  "
              "(b') open + lookup + full copy, old / new")
        print(f"(c) training-like pass, {len(batches)} shuffled batches of ~{args.batch}: old in-memory fancy index "
              f"{p_old.seconds:6.2f} s ({p_old.seconds / len(batches) * 1e3:.2f} ms/batch) | new view gather "
              f"{p_new.seconds:6.2f} s ({p_new.seconds / len(batches) * 1e3:.2f} ms/batch, peak_rss_mb: pass_new "
              f"{p_new.peak:.0f})")
        print(f"ratio: {p_old.seconds / p_new.seconds:.2f}x  (c) per-batch access, old in-memory rows / new view "
              "(below 1: reading from the memory map costs more per batch)")
        print(f"ratio: {(l_old.seconds + p_old.seconds) / (l_new.seconds + p_new.seconds):.2f}x  (c') lookup + one "
              "pass, old / new")
        res = {"n": n, "dim": dim, "open_new_s": o_new.seconds, "open_old_s": o_old.seconds,
               "lookup_new_s": l_new.seconds, "lookup_new_list_s": l_new_list.seconds, "lookup_old_s": l_old.seconds, "gather_new_s": g_new.seconds,
               "index_old_s": t_idx_old, "pass_new_s": p_new.seconds, "pass_old_s": p_old.seconds,
               "batches": len(batches), "lookup_new_rss_mb": l_new.peak, "lookup_old_rss_mb": l_old.peak}
        del q_list, q_arr, view
        res.update(trust_cost(root / "new", dim))

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
        bq = np.array_split(np.random.default_rng(2).permutation(m16), max(1, m16 // args.batch))

        def timed(st):
            t0 = time.perf_counter()
            v = st.locate(q)
            t1 = time.perf_counter()
            full = np.asarray(v)
            t2 = time.perf_counter()
            for bi in bq:
                v[np.sort(bi)]
            t3 = time.perf_counter()
            return full, t1 - t0, t2 - t1, t3 - t2

        a32, loc32, gat32, pass32 = timed(s32)
        a16, loc16, gat16, pass16 = timed(s16)
        err = float(np.abs(a32 - a16).max())
        size16, size32 = dir_mb(root / "f16"), dir_mb(root / "f32")
        print(f"float16 vs float32 ({m16:,} rows): size {size16:.0f} vs {size32:.0f} MB, locate {loc16:.3f} vs "
              f"{loc32:.3f} s, full gather {gat16:.2f} vs {gat32:.2f} s, pass of {len(bq)} batches {pass16:.2f} vs "
              f"{pass32:.2f} s, max |error| {err:.1e}")
        print(f"ratio: {size32 / size16:.2f}x  store size, float32 / float16")
        print(f"ratio: {pass32 / pass16:.2f}x  per-batch access (warm page cache), float32 / float16")
        res.update(f16_rows=m16, f16_mb=size16, f32_mb=size32, f16_pass_s=pass16, f32_pass_s=pass32,
                   f16_gather_s=gat16, f32_gather_s=gat32, f16_max_err=err)
        if not args.no_knn:
            r = knn_agreement(dim)
            if r is not None:
                print(f"float16 kNN on {r[2]} real MiniLM title vectors: 10-NN overlap {r[0]:.4f}, "
                      f"top-1 agreement {r[1]:.4f} (vs float32)")
                res.update(f16_knn_overlap=r[0], f16_top1_agreement=r[1], f16_knn_n=r[2])
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1), encoding="utf-8")
        if args.write_doc:
            sys.path.insert(0, str(ROOT / "bench"))
            import scale_doc

            res["load"] = round(os.getloadavg()[0], 1)
            scale_doc.record("bench_store", res)
            print(f"wrote {scale_doc.JSON_PATH} and {scale_doc.DOC_PATH}")
        print("peak_rss_mb: process " + json.dumps({"VmHWM": mem("VmHWM"), "RssAnon_now": mem("RssAnon")}))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
