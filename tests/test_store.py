"""The embedding store (semcat_kit.encode.store), streaming/resumable encode_catalog, cache write failures,
the memory-mapped Embeddings folder, and `semcat encode` on one process and under torchrun."""
from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing as mp
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import _torchrun as torchrun
import semcat_kit as sk
from semcat_kit.encode.store import VectorStore, content_key

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def txt_enc():
    return sk.encoders.load("minilm")


@pytest.fixture(scope="module")
def img_enc():
    return sk.encoders.load("efficientnet-lite0@64")


@pytest.fixture(scope="module")
def catalog(myntra_styles, fashion_dir):
    df = myntra_styles.dropna(subset=["productDisplayName"]).iloc[:12]
    return pd.DataFrame({"item_id": df["id"].astype(str).to_numpy(), "title": df["productDisplayName"].to_numpy(),
                         "image_path": [str(fashion_dir / "images" / f"{i}.jpg") for i in df["id"]]})


def _rand(n, dim, seed=0):
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    return keys, rng.normal(size=(n, dim)).astype(np.float32)


# --------------------------------------------------------------------------- the store itself
def test_shard_is_a_plain_arrow_file_listed_with_its_checksum(tmp_path):
    keys, vecs = _rand(50, 6)
    s = VectorStore(tmp_path / "st", 6)
    s.put(keys, vecs)
    (path,) = [s.flush()]
    # read with plain pyarrow (memory-mapped) and pandas: documented columns, sorted keys
    with pa.memory_map(str(path)) as mm:
        t = pa.ipc.open_file(mm).read_all()
    assert t.schema.field("key").type == pa.binary(16)
    assert t.schema.field("vector").type == pa.list_(pa.float32(), 6)
    got = {bytes(k): np.asarray(v, dtype=np.float32) for k, v in zip(t.column("key").to_pylist(),
                                                                      t.column("vector").to_pylist())}
    assert len(got) == 50
    for k, v in zip(keys, vecs):
        np.testing.assert_array_equal(got[k.tobytes()], v)
    assert t.column("key").to_pylist() == sorted(t.column("key").to_pylist())
    assert len(pd.read_feather(path)) == 50
    m = json.loads((tmp_path / "st" / "manifest.json").read_text())
    (entry,) = m["shards"]
    assert entry["file"] == path.name and entry["rows"] == 50
    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert m["dim"] == 6 and m["dtype"] == "float32"


def test_vectorised_lookup_matches_a_dict_including_prefix_collisions(tmp_path):
    keys, vecs = _rand(3000, 5, seed=1)
    # keys sharing their first 8 bytes exercise the rare path of the 64-bit-prefix index
    keys[1:4, :8] = keys[0, :8]
    s = VectorStore(tmp_path / "st", 5, merge_factor=4, base_rows=200)
    for a in range(0, 3000, 250):
        s.put(keys[a:a + 250], vecs[a:a + 250])
        s.flush()
    ref = {k.tobytes(): v for k, v in zip(keys, vecs)}
    absent, _ = _rand(500, 5, seed=2)
    absent[0, :8] = keys[0, :8]  # same prefix, different key: absent
    q = np.concatenate([keys, absent])[np.random.default_rng(3).permutation(3500)]
    for store in (s, VectorStore(tmp_path / "st", 5)):   # in the writing process and freshly opened
        found, got = store.get(q)
        want = np.array([k.tobytes() in ref for k in q])
        assert found.tolist() == want.tolist() and want.sum() == 3000
        np.testing.assert_array_equal(got[found], np.stack([ref[k.tobytes()] for k in q[found]]))
        assert np.all(got[~found] == 0)


def test_merging_is_bounded_and_never_rewrites_large_shards(tmp_path):
    s = VectorStore(tmp_path / "st", 3, merge_factor=3, base_rows=10, max_merge_rows=90)
    keys, vecs = _rand(1200, 3, seed=4)
    s.put(keys[:100], vecs[:100])
    big = s.flush()                       # 100 rows >= max_merge_rows: frozen
    ino = big.stat().st_ino
    counts = []
    for a in range(100, 1200, 10):
        s.put(keys[a:a + 10], vecs[a:a + 10])
        s.flush()
        counts.append(len(s.shard_files))
    assert big.exists() and big.stat().st_ino == ino          # never rewritten
    # at most (merge_factor - 1) shards per tier below max_merge_rows, plus the frozen ones
    frozen = sum(1 for p in s.shard_files if sk.store.arrow_dataset([p], s.dim).count_rows() >= 90)
    assert max(counts) <= frozen + 2 * 2 + 1, counts
    assert len(s) == 1200 and s.get(keys)[0].all()
    listed = {e["file"] for e in json.loads(s.manifest_path.read_text())["shards"]}
    assert listed == {p.name for p in s.shard_files} == {p.name for p in (tmp_path / "st").glob("shard-*.arrow")}


def test_float16_store_is_half_the_size_and_close(tmp_path):
    keys, vecs = _rand(400, 64, seed=5)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    sizes = {}
    for dt in ("float32", "float16"):
        s = VectorStore(tmp_path / dt, 64, dtype=dt)
        s.put(keys, vecs)
        sizes[dt] = s.flush().stat().st_size
        found, got = VectorStore(tmp_path / dt, 64, dtype=dt).get(keys)
        assert found.all() and got.dtype == np.float32
        tol = 0 if dt == "float32" else 5e-4
        np.testing.assert_allclose(got, vecs, atol=tol, rtol=0)
    assert sizes["float16"] < 0.6 * sizes["float32"]
    # a store of the other precision is read as it is (issue 25: it was called corrupt and re-encoded),
    # and keeps its own precision for new shards
    with pytest.warns(RuntimeWarning, match="holds float16 vectors; new ones are stored as float16 too"):
        other = VectorStore(tmp_path / "float16", 64, dtype="float32")
    found, got = other.get(keys)
    assert found.all() and not other.corrupt and other.dtype == "float16"
    np.testing.assert_allclose(got, vecs, atol=5e-4, rtol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert VectorStore(tmp_path / "float16", 64).dtype == "float16"    # default: the store's own


def test_lost_manifest_and_unlisted_shards_are_recovered(tmp_path):
    keys, vecs = _rand(40, 4, seed=6)
    s = VectorStore(tmp_path / "st", 4, auto_merge=False)
    for a in (0, 20):
        s.put(keys[a:a + 20], vecs[a:a + 20])
        s.flush()
    s.manifest_path.unlink()   # e.g. a crash between a shard's rename and its manifest entry
    t = VectorStore(tmp_path / "st", 4)
    assert t.get(keys)[0].all()
    assert len(json.loads(t.manifest_path.read_text())["shards"]) == 2


def _writer(root, seed, n_flush):
    s = VectorStore(root, 4, writer=f"w{seed}", merge_factor=3, base_rows=5)
    keys, vecs = _rand(n_flush * 5, 4, seed=seed)
    for a in range(0, len(keys), 5):
        s.put(keys[a:a + 5], vecs[a:a + 5])
        s.flush()


def test_concurrent_writers_lose_nothing(tmp_path):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path / "st"), seed, 12)) for seed in (10, 11)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    s = VectorStore(tmp_path / "st", 4)
    for seed in (10, 11):
        keys, vecs = _rand(60, 4, seed=seed)
        found, got = s.get(keys)
        assert found.all()
        np.testing.assert_array_equal(got, vecs)
    listed = {e["file"] for e in json.loads(s.manifest_path.read_text())["shards"]}
    assert listed == {p.name for p in (tmp_path / "st").glob("shard-*.arrow")}


# ----------------------------------------------------------------- streaming, resumable encode
def test_killed_run_resumes_where_it_stopped(tmp_path, catalog, txt_enc, img_enc, monkeypatch):
    cat = catalog.iloc[:10]
    ref = sk.encode_catalog(cat, txt_enc, img_enc, progress=False)
    calls = {"t": 0, "i": 0}
    real_t, real_i = txt_enc.encode_texts, img_enc.embed_image_batch

    def dying_texts(texts, batch_size=64, progress=False):
        calls["t"] += 1
        if calls["t"] == 3:
            raise RuntimeError("killed")   # after 2 chunks of 4 titles
        return real_t(texts, batch_size=batch_size)

    def dying_images(x):
        calls["i"] += 1
        if calls["i"] == 4:
            raise RuntimeError("killed")   # after 3 batches of 2 images (chunk_size=2: each one written)
        return real_i(x)

    monkeypatch.setattr(txt_enc, "encode_texts", dying_texts)
    with pytest.raises(RuntimeError, match="killed"):
        sk.encode_catalog(cat, text_encoder=txt_enc, cache_dir=tmp_path, batch_size=4, chunk_size=4, progress=False)
    monkeypatch.setattr(img_enc, "embed_image_batch", dying_images)
    with pytest.raises(RuntimeError, match="killed"):
        sk.encode_catalog(cat, image_encoder=img_enc, cache_dir=tmp_path, batch_size=2, chunk_size=2, progress=False)
    monkeypatch.undo()
    again = sk.encode_catalog(cat, txt_enc, img_enc, cache_dir=tmp_path, batch_size=4, chunk_size=4, progress=False)
    assert again.meta["stats"]["text_encoded"] == 2 and again.meta["stats"]["image_encoded"] == 4
    np.testing.assert_allclose(again.text, ref.text, atol=1e-5)
    np.testing.assert_allclose(again.image, ref.image, atol=1e-5)


def test_each_image_is_read_once(tmp_path, catalog, img_enc, monkeypatch):
    import builtins
    import io

    opened = []
    real_open = io.open

    def counting_open(file, *a, **k):
        if str(file).endswith(".jpg"):
            opened.append(str(file))
        return real_open(file, *a, **k)

    real_os_open = os.open

    def counting_os_open(file, *a, **k):
        if str(file).endswith(".jpg"):
            opened.append(str(file))
        return real_os_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", counting_open)  # PIL.Image.open(path)
    monkeypatch.setattr(io, "open", counting_open)        # pathlib
    monkeypatch.setattr(os, "open", counting_os_open)     # images.read_image_bytes
    emb = sk.encode_catalog(catalog.iloc[:6], image_encoder=img_enc, cache_dir=tmp_path, progress=False)
    monkeypatch.undo()
    assert emb.image_mask.all() and sorted(opened) == sorted(catalog["image_path"].iloc[:6])


def test_out_folder_is_memory_mapped_and_equal_to_in_memory(tmp_path, catalog, txt_enc, img_enc):
    cat = pd.concat([catalog.iloc[:6], pd.DataFrame({"item_id": ["nope"], "title": [""],
                                                      "image_path": [str(tmp_path / "missing.jpg")]})])
    mem = sk.encode_catalog(cat, txt_enc, img_enc, progress=False)
    emb = sk.encode_catalog(cat, txt_enc, img_enc, cache_dir=tmp_path / "c", out=tmp_path / "emb",
                            chunk_size=3, progress=False)
    assert isinstance(emb.text.base, np.memmap) or isinstance(emb.text, np.memmap)
    assert not emb.text.flags.writeable
    np.testing.assert_allclose(emb.text, mem.text, atol=1e-5)
    np.testing.assert_allclose(emb.image, mem.image, atol=1e-5)
    assert emb.text_mask.tolist() == mem.text_mask.tolist() and emb.image_mask.tolist() == mem.image_mask.tolist()
    pd.testing.assert_frame_equal(emb.failures, mem.failures)
    assert emb.meta["text_encoder"] == mem.meta["text_encoder"]
    # take: a slice is a view of the map, positions copy only the rows taken
    s = emb.take(slice(1, 4))
    assert np.shares_memory(s.text, emb.text) and s.item_ids.tolist() == cat["item_id"].iloc[1:4].tolist()
    t = emb.take([5, 0])
    assert not np.shares_memory(t.image, emb.image) and t.image.shape == (2, img_enc.image_dim)
    assert emb.take(emb.text_mask).failures.empty
    # readable without semcat_kit
    import pyarrow.feather as feather

    assert np.load(tmp_path / "emb" / "text.npy").shape == (7, txt_enc.text_dim)
    assert feather.read_table(str(tmp_path / "emb" / "items.arrow")).column("item_id").to_pylist() == \
        cat["item_id"].tolist()
    # save/load round trip of a folder, and of a memory-mapped table into an .npz
    back = sk.Embeddings.load(t.save(tmp_path / "t"))
    np.testing.assert_array_equal(back.image, t.image)
    back = sk.Embeddings.load(emb.save(tmp_path / "e.npz"))
    np.testing.assert_array_equal(back.text, emb.text)
    (tmp_path / "junk").mkdir()
    with pytest.raises(ValueError, match="not an Embeddings folder"):
        sk.Embeddings.load(tmp_path / "junk")


# ----------------------------------------------------------------------- cache write failures
def test_unwritable_cache_is_reported_once_before_encoding(tmp_path, catalog, txt_enc, img_enc, monkeypatch):
    import semcat_kit.encode.store as S

    def refuse(folder):
        raise PermissionError(errno.EACCES, "Permission denied", str(folder))

    monkeypatch.setattr(S, "write_probe", refuse)   # the store's own probe and encoding's up-front check
    calls = []
    real = txt_enc.encode_texts
    monkeypatch.setattr(txt_enc, "encode_texts", lambda t, **k: calls.append(len(t)) or real(t, **k))
    cache = tmp_path / "ro-cache"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        emb = sk.encode_catalog(catalog.iloc[:5], txt_enc, img_enc, cache_dir=cache, progress=False)
    msgs = [str(w.message) for w in caught if w.category is RuntimeWarning]
    assert len(msgs) == 1 and str(cache) in msgs[0] and "not cached" in msgs[0], msgs
    assert emb.text_mask.all() and emb.image_mask.all() and calls
    assert emb.meta["stats"]["cached"] is False and "Permission denied" in emb.meta["stats"]["cache_write_error"]
    fresh = sk.encode_catalog(catalog.iloc[:5], txt_enc, img_enc, progress=False)
    np.testing.assert_allclose(emb.text, fresh.text, atol=1e-5)
    np.testing.assert_allclose(emb.image, fresh.image, atol=1e-5)
    assert not list(cache.rglob("shard-*"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; simulated in the test above")
def test_read_only_cache_folder_really(tmp_path, catalog, txt_enc):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o555)
    try:
        with pytest.warns(RuntimeWarning, match="cannot be written"):
            emb = sk.encode_catalog(catalog.iloc[:3], text_encoder=txt_enc, cache_dir=cache, progress=False)
        assert emb.text_mask.all() and emb.meta["stats"]["cached"] is False
    finally:
        cache.chmod(0o755)


def test_disk_full_mid_run_keeps_every_vector(tmp_path, catalog, txt_enc, monkeypatch):
    real = VectorStore._write_shard      # private: ENOSPC is injected where a shard is written (no public hook)
    n = {"writes": 0}

    def full_disk(self, *a, **k):
        n["writes"] += 1
        if n["writes"] >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(VectorStore, "_write_shard", full_disk)
    cat = catalog.iloc[:10]
    with pytest.warns(RuntimeWarning, match="No space left") as rec:
        emb = sk.encode_catalog(cat, text_encoder=txt_enc, cache_dir=tmp_path, chunk_size=3, progress=False)
    assert sum("No space left" in str(w.message) for w in rec) == 1          # said once, not per chunk
    assert emb.text_mask.all() and emb.meta["stats"]["text_encoded"] == 10
    assert "ENOSPC" in emb.meta["stats"]["cache_write_error"] and emb.meta["stats"]["cached"] is False
    np.testing.assert_allclose(emb.text, txt_enc.encode_texts(cat["title"].tolist()), atol=1e-5)
    monkeypatch.undo()
    again = sk.encode_catalog(cat, text_encoder=txt_enc, cache_dir=tmp_path, chunk_size=3, progress=False)
    assert again.meta["stats"]["text_encoded"] == 7   # the chunk written before the disk filled up is kept


# ---------------------------------------------------------------------- semcat encode / torchrun
def _run(args, cwd, env_extra=None, timeout=900):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return torchrun.run(args, cwd, env, timeout=timeout)


@pytest.mark.slow
def test_torchrun_two_processes_encode_the_same_vectors_as_one(tmp_path):
    common = ["encode", "--catalog", "tutorial", "--sample", "200", "--image-encoder", "efficientnet-lite0@64",
              "--quiet", "--chunk-size", "64"]
    one = _run([sys.executable, "-m", "semcat_kit", *common, "--cache-dir", str(tmp_path / "c1"),
                "--out", str(tmp_path / "e1")], tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                "-m", "semcat_kit", *common, "--cache-dir", str(tmp_path / "c2"), "--out", str(tmp_path / "e2")],
               tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "rank 0/2: 100 products" in two.stdout and "rank 1/2: 100 products" in two.stdout
    assert "encoded text 100, image 100" in two.stdout
    a, b = sk.Embeddings.load(tmp_path / "e1"), sk.Embeddings.load(tmp_path / "e2")
    assert a.item_ids.tolist() == b.item_ids.tolist() and len(a) == 200
    assert a.text_mask.tolist() == b.text_mask.tolist() and a.image_mask.tolist() == b.image_mask.tolist()
    # same model, same CPU kernels; only the batch composition differs (titles padded to another
    # length, other batch sizes), which moves float32 results by ~1e-7: 1e-5 is the cache tests' bound
    np.testing.assert_allclose(b.text, a.text, atol=1e-5, rtol=0)
    np.testing.assert_allclose(b.image, a.image, atol=1e-5, rtol=0)
    # both ranks wrote their own shards into the shared store, rank 0 listed them all in the manifest
    for mod in ("text", "image"):
        (root,) = (tmp_path / "c2").glob(f"*/{mod}")
        files = {p.name for p in root.glob("shard-*.arrow")}
        assert {f.split("-")[1] for f in files} >= {"r0", "r1"}, files
        assert {e["file"] for e in json.loads((root / "manifest.json").read_text())["shards"]} == files


def test_encode_command_bad_input(tmp_path):
    from semcat_kit.cli import main

    assert main(["encode", "--catalog", str(tmp_path / "none.csv"), "--cache-dir", str(tmp_path)]) == 1
    assert main(["encode", "--catalog", "tutorial", "--cache-dir", str(tmp_path), "--text-encoder", "none",
                 "--image-encoder", "none"]) == 1
    with pytest.raises(SystemExit) as e:
        main(["encode", "--catalog", "tutorial"])
    assert e.value.code == 2
    r = _run([sys.executable, "-m", "semcat_kit", "--help"], tmp_path, timeout=120)
    assert r.returncode == 0 and "encode" in r.stdout


# ------------------------------------------------------------------- locate -> StoreRows view
def test_key_index_matches_a_dict_including_shared_prefixes():
    # private: the key index alone, at sizes and shared 64-bit prefixes no store call builds cheaply
    from semcat_kit.encode.store import _KeyIndex

    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 300, 5000):
        hi = rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2)
        hi[: n // 3] = hi[0]                 # many keys sharing one 64-bit prefix (worst case)
        lo = rng.integers(0, 2**63, n, dtype=np.uint64)
        o = np.lexsort((lo, hi))
        hi, lo = hi[o], lo[o]
        keep = np.ones(n, bool)
        keep[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])
        hi, lo = hi[keep], lo[keep]
        truth = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(hi, lo))}
        ix = _KeyIndex(hi, lo)
        q = rng.integers(0, len(hi), 2000)
        for qh, ql in ((hi[q], lo[q]), (hi[q], lo[q] ^ np.uint64(1)),                     # present / absent
                       (rng.integers(0, 2**63, 500, dtype=np.uint64), rng.integers(0, 2**63, 500, dtype=np.uint64))):
            want = np.array([truth.get((int(a), int(b)), -1) for a, b in zip(qh, ql)])
            np.testing.assert_array_equal(ix.search(qh, ql), want)


def test_locate_returns_a_view_that_reads_rows_only_when_asked(tmp_path):
    from semcat_kit.encode.store import StoreRows

    st = VectorStore(tmp_path / "s", 4, merge_factor=2, base_rows=3)
    keys = [content_key(f"k{i}") for i in range(10)]
    vecs = np.arange(40, dtype=np.float32).reshape(10, 4)
    for a in (0, 3, 6):                               # several shards, then a merge
        st.put(keys[a:a + 3], vecs[a:a + 3])
        st.flush()
    st.put(keys[9:], vecs[9:])                        # still queued (not written): found too
    q = [keys[5], content_key("absent"), keys[0], keys[9], keys[5]]
    v = st.locate(q)
    assert isinstance(v, StoreRows) and v.shape == (5, 4) and v.dtype == np.float32 and len(v) == 5
    np.testing.assert_array_equal(v.found, [True, False, True, True, True])
    want = np.stack([vecs[5], np.zeros(4), vecs[0], vecs[9], vecs[5]]).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(v), want)
    np.testing.assert_array_equal(v[np.array([3, 0])], want[[3, 0]])      # any order
    np.testing.assert_array_equal(v[1:4], want[1:4])
    np.testing.assert_array_equal(v[np.array([True, False, True, False, False])], want[[0, 2]])
    np.testing.assert_array_equal(v[2], want[2])
    np.testing.assert_array_equal(v[[0, 2], :], want[[0, 2]])
    t = v.take([4, 2])                                # another view: positions only
    assert isinstance(t, StoreRows) and t.shape == (2, 4)
    np.testing.assert_array_equal(np.asarray(t), want[[4, 2]])
    np.testing.assert_array_equal(np.concatenate([b for _, b in v.blocks(2)]), want)
    with pytest.raises(IndexError):
        v[np.array([0.5])]
    with pytest.raises(IndexError):
        v[:, 1]
    # found / get agree with locate; valid= skips rows
    f, g = st.get(q)
    np.testing.assert_array_equal(f, v.found)
    np.testing.assert_array_equal(g, want)
    assert st.locate(q, valid=[True, True, False, True, True]).found.tolist() == [True, False, False, True, True]
    np.testing.assert_array_equal(st.contains(q), v.found)
    assert len(st.shard_files) > 1       # searched shard by shard, largest first
    for i in (0, 2, 3):                                            # one key: one search per shard
        np.testing.assert_array_equal(st.locate([q[i]])[0], want[i])
    # the view stays readable after its shards are merged away (and their files removed)
    before = set(p.name for p in st.shard_files)
    st.flush()
    st.compact()
    assert not before & set(p.name for p in st.shard_files)
    np.testing.assert_array_equal(np.asarray(v), want)
    assert len(st.locate([])) == 0


def test_keep_unwritten_vectors_stay_findable_when_the_disk_refuses(tmp_path, monkeypatch):
    st = VectorStore(tmp_path / "s", 3, keep_unwritten=True)
    keys = [content_key(f"k{i}") for i in range(4)]
    vecs = np.eye(4, 3, dtype=np.float32)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(st, "_write_shard", full)      # private: ENOSPC where a shard is written (no public hook)
    st.put(keys[:2], vecs[:2])
    with pytest.warns(RuntimeWarning, match="cannot be written"):
        st.flush()
    st.put(keys[2:], vecs[2:])                       # not writable any more: kept in memory
    st.flush()
    v = st.locate(keys)
    assert v.found.all()
    np.testing.assert_array_equal(np.asarray(v), vecs)


def test_locate_over_spread_shards_and_shards_index_lazily(tmp_path):
    """Keys spread over similar shards: a large lookup finds each in its shard; a store that only
    writes never builds its shards' bucket tables."""
    st = VectorStore(tmp_path / "s", 4, auto_merge=False)
    keys = [content_key(f"k{i}") for i in range(40)]
    vecs = np.arange(160, dtype=np.float32).reshape(40, 4)
    for a in range(0, 40, 10):                     # 4 shards of 10 rows
        st.put(keys[a:a + 10], vecs[a:a + 10])
        st.flush()
    assert len(st.shard_files) == 4
    # private (the invariant: a shard written and never searched holds no key index)
    assert all(s._index is None for s in st._shards.values())
    q = keys[::-1] + [content_key("absent")]
    v = st.locate(q)
    want = np.concatenate([vecs[::-1], np.zeros((1, 4), np.float32)])
    np.testing.assert_array_equal(np.asarray(v), want)
    np.testing.assert_array_equal(v.found, [True] * 40 + [False])
    np.testing.assert_array_equal(np.asarray(st.locate(q[:3])), want[:3])
    # a reopened store checks the sort order when it opens a shard, without keeping the keys
    again = VectorStore(tmp_path / "s", 4, auto_merge=False)
    assert len(again) == 40 and all(s._index is None for s in again._shards.values())
    np.testing.assert_array_equal(np.asarray(again.locate(q)), want)


def test_shard_keys_are_searched_in_place_in_the_memory_map(tmp_path):
    """A shard's key index is only a bucket table (int32, 4-8 bytes a key): the sorted keys are
    read from the memory-mapped file, across record batches (a merged shard has many), and every
    lookup -- present, absent, neighbours of present keys -- equals an in-memory search."""
    from semcat_kit.encode.store import _KeyIndex, _split   # private: the index's memory layout is the invariant

    rng = np.random.default_rng(3)
    st = VectorStore(tmp_path / "s", 2, base_rows=64, merge_factor=50, auto_merge=False)
    keys = rng.integers(0, 256, size=(5000, 16), dtype=np.uint8)
    keys[:50, :8] = keys[0, :8]                         # shared 64-bit prefixes
    keys = np.unique(keys, axis=0)
    vecs = rng.standard_normal((len(keys), 2)).astype(np.float32)
    for a in range(0, len(keys), 1000):
        st.put(keys[a:a + 1000], vecs[a:a + 1000])
        st.flush()
    assert st.compact() == 1
    (sh,) = st._shards.values()
    assert len(sh.vecs) > 10 and sh._waddr is not None          # many record batches, keys addressed in place
    hi, lo = _split(keys)                                       # np.unique sorted them bytewise
    ref = _KeyIndex(hi, lo)
    order = np.rec.fromarrays([hi, lo])
    absent = keys.copy()
    absent[:, 15] ^= 1
    for q in (keys[rng.permutation(len(keys))], absent, rng.integers(0, 256, size=(3000, 16), dtype=np.uint8)):
        qh, ql = _split(q)
        np.testing.assert_array_equal(sh.search(qh, ql), ref.search(qh, ql))
        np.testing.assert_array_equal(sh.index.upper(qh, ql),
                                      np.searchsorted(order, np.rec.fromarrays([qh, ql]), "right"))
    ix = sh.index
    assert ix.hi is None and ix.lo is None and sh._hi is None    # no in-memory copy of the keys
    assert ix.start.dtype == np.int32 and ix.start.nbytes <= 4 * (2 * len(keys) + 1)
    np.testing.assert_array_equal(ix.start[:-1], np.searchsorted(hi, np.arange(len(ix.start) - 1, dtype=np.uint64)
                                                                 << ix.shift, "left"))
    f, v = st.get(keys[::-1])
    assert f.all()
    np.testing.assert_array_equal(v, vecs[::-1])
    sh.close()                                        # a closed shard never answers "absent" for everything
    with pytest.raises(RuntimeError, match="was closed"):
        sh.search(*_split(keys[:3]))


def test_merge_streams_a_k_way_merge_in_blocks_dropping_keys_shared_by_shards(tmp_path):
    """Merging is streamed in blocks of ~base_rows per shard: with blocks much smaller than the
    shards, and keys shared between shards, the merged shard holds every key once, sorted, with
    its vector."""
    rng = np.random.default_rng(0)
    st = VectorStore(tmp_path / "s", 3, base_rows=4, merge_factor=50, auto_merge=False)
    names = [f"k{i}" for i in range(120)]
    vec = {n: rng.standard_normal(3).astype(np.float32) for n in names}
    parts = [names[0:50], names[40:90] + names[:5], names[85:120] + names[10:30:3]]   # overlapping
    for p in parts:
        st.put([content_key(n) for n in p], np.stack([vec[n] for n in p]))
        st.flush()
    assert len(st.shard_files) == 3
    assert st.compact() == 1 and len(st.shard_files) == 1
    assert len(st) == 120                                   # shared keys once
    again = VectorStore(tmp_path / "s", 3)                  # reopening checks the checksum and the sort order
    f, v = again.get([content_key(n) for n in names])
    assert f.all()
    np.testing.assert_array_equal(v, np.stack([vec[n] for n in names]))
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert [e["rows"] for e in m["shards"]] == [120]


def test_one_off_locate_frees_each_shard_index_and_answers_the_same(tmp_path, monkeypatch):
    """``keep_index=False`` (how a whole catalog's view is built): same view as a cached lookup,
    shards searched one after the other, each index built for the call freed before the next
    (the peak is one shard's index, not every shard's); indexes built before stay."""
    import semcat_kit.encode.store as store_mod

    st = VectorStore(tmp_path / "s", 4, auto_merge=False)
    keys = [content_key(f"k{i}") for i in range(60)]
    vecs = np.arange(240, dtype=np.float32).reshape(60, 4)
    for a, b in ((0, 40), (40, 52), (52, 60)):          # one large shard, two small: searched shard by shard
        st.put(keys[a:b], vecs[a:b])
        st.flush()
    q = keys[::-1] + [content_key("absent")]
    valid = np.ones(len(q), bool)
    valid[3] = False
    held = []
    # private: the indexes alive while a one-off locate runs (the peak memory is the invariant; the
    # answers are the same either way) and a small query block
    real = store_mod._Shard.drop_index

    def spy(self):
        held.append(sum(s.indexed for s in st._shards.values()))   # indexes alive when one is freed
        real(self)
    monkeypatch.setattr(store_mod._Shard, "drop_index", spy)
    monkeypatch.setattr(store_mod, "_LOCATE_BLOCK", 7)              # several query blocks per shard
    v = st.locate(q, valid=valid, keep_index=False)
    assert held == [1, 1, 1] and not any(s.indexed for s in st._shards.values())
    want = np.concatenate([vecs[::-1], np.zeros((1, 4), np.float32)])
    want[3] = 0
    np.testing.assert_array_equal(np.asarray(v), want)
    np.testing.assert_array_equal(v.found, valid & (np.arange(61) < 60))
    kept = st.locate(q, valid=valid)                                 # default: indexes stay for later lookups
    assert all(s.indexed for s in st._shards.values())
    np.testing.assert_array_equal(np.asarray(kept), want)
    st.locate(q[:2], keep_index=False)                               # built before this call: not freed
    assert all(s.indexed for s in st._shards.values())


def test_key_index_bucket_table_built_in_blocks_equals_one_pass(monkeypatch):
    # private: the key index's bucket table built in small blocks (a module constant) equals one pass
    import semcat_kit.encode.store as store_mod
    from semcat_kit.encode.store import _KeyIndex

    rng = np.random.default_rng(0)
    hi = np.sort(rng.integers(0, 2**63, size=5000, dtype=np.uint64))
    lo = rng.integers(0, 2**63, size=5000, dtype=np.uint64)
    one = _KeyIndex(hi, lo)
    monkeypatch.setattr(store_mod, "_EDGE_BLOCK", 100)
    blocked = _KeyIndex(hi, lo)
    np.testing.assert_array_equal(one.start, blocked.start)
    edges = np.arange(len(one.start) - 1, dtype=np.uint64) << one.shift
    np.testing.assert_array_equal(one.start[:-1], np.searchsorted(hi, edges, "left"))
    assert one.start.dtype == np.int32 and one.start[-1] == 5000
    q = rng.permutation(5000)[:300]
    np.testing.assert_array_equal(blocked.search(hi[q], lo[q]), q)


def test_duckdb_reads_the_store_shards_without_semcat_kit(tmp_path):
    """The shards are plain Arrow IPC: DuckDB queries them through a pyarrow dataset (no
    semcat_kit code), e.g. to count vectors or fetch one by key."""
    import duckdb
    import pyarrow.dataset as ds

    st = VectorStore(tmp_path / "s", 4, auto_merge=False)
    keys = [content_key(f"title {i}") for i in range(30)]
    vecs = np.arange(120, dtype=np.float32).reshape(30, 4)
    for a in (0, 10, 20):                               # three shards
        st.put(keys[a:a + 10], vecs[a:a + 10])
        st.flush()
    shards = ds.dataset([str(p) for p in st.shard_files], format="ipc")      # noqa: F841 (read by DuckDB)
    con = duckdb.connect()
    ((n, total),) = con.sql("SELECT count(*), sum(list_sum(vector::FLOAT[])) FROM shards").fetchall()
    assert n == 30 and total == pytest.approx(float(vecs.sum()))
    k = keys[17]
    ((v,),) = con.execute("SELECT vector FROM shards WHERE key = ?", [k]).fetchall()
    np.testing.assert_array_equal(np.asarray(v, dtype=np.float32), vecs[17])


def test_shards_checked_once_are_trusted_by_other_processes_until_they_change(tmp_path, monkeypatch):
    """verified.json records each checked shard's digest with its size, mtime and inode: a new
    process (here: the per-process memo cleared) opens unchanged shards without hashing them again;
    a shard written to since is hashed and, when it no longer matches, set aside as corrupt;
    SEMCAT_STORE_VERIFY=always hashes every shard."""
    import semcat_kit.encode.store as store_mod

    st = VectorStore(tmp_path / "s", 4, auto_merge=False)
    keys = [content_key(f"k{i}") for i in range(20)]
    vecs = np.arange(80, dtype=np.float32).reshape(20, 4)
    for a in (0, 10):
        st.put(keys[a:a + 10], vecs[a:a + 10])
        st.flush()
    rec = json.loads((tmp_path / "s" / store_mod.VERIFIED_FILE).read_text())
    assert sorted(rec) == sorted(p.name for p in st.shard_files)       # recorded by the writer
    hashed = []
    real = store_mod.file_sha256
    monkeypatch.setattr(store_mod, "file_sha256", lambda p: hashed.append(p.name) or real(p))
    sk.store.forget_verified()                                          # a new process
    again = VectorStore(tmp_path / "s", 4, auto_merge=False)
    assert hashed == [] and len(again) == 20
    np.testing.assert_array_equal(again.get(keys)[1], vecs)
    monkeypatch.setenv("SEMCAT_STORE_VERIFY", "always")
    sk.store.forget_verified()
    VectorStore(tmp_path / "s", 4, auto_merge=False)
    assert sorted(hashed) == sorted(rec)
    monkeypatch.delenv("SEMCAT_STORE_VERIFY")
    hashed.clear()
    victim = st.shard_files[0]
    data = bytearray(victim.read_bytes())
    data[-200] ^= 0xFF                                                  # flipped bits, same size
    victim.write_bytes(bytes(data))
    sk.store.forget_verified()
    with pytest.warns(RuntimeWarning, match="corrupt"):
        third = VectorStore(tmp_path / "s", 4, auto_merge=False)
    assert hashed == [victim.name] and len(third) == 10 and third.corrupt


# ------------------------------------------------------------------------------ float16 (issue 24)
def _two_precision_store(tmp_path, dtype):
    rng = np.random.default_rng(3)
    keys = [content_key(f"title {i}") for i in range(30)]
    vecs = rng.normal(size=(30, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    st = VectorStore(tmp_path / dtype, 8, dtype=dtype, auto_merge=False)
    for a in (0, 10, 20):                               # three shards
        st.put(keys[a:a + 10], vecs[a:a + 10])
        st.flush()
    want = vecs.astype(dtype).astype(np.float32)        # what the store holds, exactly
    return st, keys, want


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("reader", ["pyarrow", "pandas", "duckdb"])
def test_every_reader_reads_the_shards_in_both_precisions(tmp_path, dtype, reader):
    """pyarrow and pandas read a shard of either precision as it is; DuckDB reads float32 shards as
    they are and float16 ones through a dataset with a float32 schema (the cast the module docs give),
    with no semcat_kit code on the reading side."""
    import pyarrow.dataset as ds

    st, keys, want = _two_precision_store(tmp_path, dtype)
    order = {k: i for i, k in enumerate(keys)}
    files = [str(p) for p in st.shard_files]
    if reader == "pyarrow":
        t = pa.concat_tables([pa.ipc.open_file(f).read_all() for f in files])
        assert t.schema.field("vector").type == pa.list_(pa.float16() if dtype == "float16" else pa.float32(), 8)
        got = np.stack([np.asarray(v, dtype=np.float32) for v in t.column("vector").to_pylist()])
        ks = t.column("key").to_pylist()
    elif reader == "pandas":
        df = pd.concat([pd.read_feather(f) for f in files], ignore_index=True)
        assert df["vector"].iloc[0].dtype == np.dtype(dtype)
        got = np.stack(df["vector"].to_numpy()).astype(np.float32)
        ks = df["key"].tolist()
    else:
        import duckdb

        raw = ds.dataset(files, format="ipc")                                   # noqa: F841 (read by DuckDB)
        if dtype == "float16":
            with pytest.raises(duckdb.NotImplementedException, match="Unsupported Internal Arrow Type e"):
                duckdb.sql("SELECT count(*) FROM raw").fetchall()
        as32 = ds.dataset(files, format="ipc", schema=pa.schema(                # noqa: F841 (read by DuckDB)
            [("key", pa.binary(16)), ("vector", pa.list_(pa.float32(), 8))]))
        rows = duckdb.sql("SELECT key, vector FROM as32").fetchall()
        ks = [r[0] for r in rows]
        got = np.asarray([r[1] for r in rows], dtype=np.float32)
        assert st.dataset().schema == as32.schema                              # what the store's helper builds
    assert len(ks) == 30
    np.testing.assert_array_equal(got, want[[order[bytes(k)] for k in ks]])


def test_every_command_reads_a_float16_store(tmp_path, capsys):
    """`semcat encode --store-dtype float16` fills the store; `semcat train`, `semcat predict` and
    `semcat tune` with the same cache folder read it as it is: nothing is recomputed, no shard is set
    aside as corrupt and no float32 shard is added."""
    import yaml

    from semcat_kit import cli

    cache = tmp_path / "cache"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"text_encoder": "hash-text:32", "image_encoder": None, "sample": 200,
                                   "train": {"epochs": 2, "proj_dim": 16, "hidden": 16, "device": "cpu"},
                                   "export": {"onnx": False, "pt2": False}}))

    def store_state():
        man = json.loads(next(cache.glob("*/text/manifest.json")).read_text())
        return man["dtype"], sorted(e["file"] for e in man["shards"]), list(cache.rglob("*.corrupt"))

    assert cli.main(["encode", "--catalog", "tutorial", "--config", str(cfg), "--cache-dir", str(cache),
                     "--store-dtype", "float16", "--quiet"]) == 0
    dtype, shards, corrupt = store_state()
    assert dtype == "float16" and shards and not corrupt
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)       # a "corrupt shard" warning would fail here
        assert cli.main(["train", "--catalog", "tutorial", "--config", str(cfg), "--out", str(tmp_path / "h"),
                         "--cache-dir", str(cache), "--quiet"]) == 0
        assert store_state() == (dtype, shards, [])
        cat = sk.datasets.load_fashion_tutorial().head(50)
        prods = tmp_path / "p.csv"
        pd.DataFrame({"id": cat["item_id"], "title": cat["title"]}).to_csv(prods, index=False)
        assert cli.main(["predict", "--model", str(tmp_path / "h"), "--input", str(prods), "--output",
                         str(tmp_path / "pred.csv"), "--cache-dir", str(cache), "--device", "cpu", "--quiet"]) == 0
        # products the sample did not hold were encoded and cached: in float16 too, beside the old shards
        d2, shards2, corrupt2 = store_state()
        assert d2 == "float16" and set(shards) <= set(shards2) and not corrupt2
        for f in cache.glob("*/text/shard-*.arrow"):
            assert pa.ipc.open_file(str(f)).schema.field("vector").type.value_type == pa.float16()
        shards = shards2
        assert cli.main(["tune", "--catalog", "tutorial", "--config", str(cfg), "--out", str(tmp_path / "t"),
                         "--n-trials", "1", "--objective", "top1", "--cache-dir", str(cache), "--quiet"]) == 0
        assert store_state() == (dtype, shards, [])
    capsys.readouterr()
    # the vectors each command read are the float16 values (not re-encoded float32 ones)
    emb = sk.encode_catalog(cat, text_encoder=sk.encoders.load("hash-text:32"), cache_dir=cache, progress=False)
    fresh = sk.encoders.load("hash-text:32").encode_texts(cat["title"].tolist())
    np.testing.assert_array_equal(np.asarray(emb.text), fresh.astype(np.float16).astype(np.float32))
