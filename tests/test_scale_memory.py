"""No per-item Python objects on the streaming paths: compact ids, vectorised duplicate checks,
catalogs read from files in record batches (issue 13, "flat in N")."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pytest

import semcat_kit as sk
from semcat_kit import contracts
from semcat_kit._core.seen_ids import SeenIds   # internal (no public name): the id memory behind check_unique_ids
from semcat_kit.encode.encoders import HashingTextEncoder


@pytest.fixture
def tiny():
    """A deterministic 32-d text encoder (hash of the title): fast, no model."""
    return HashingTextEncoder(32)


# ---------------------------------------------------------------------------------- ids
def test_compact_ids_is_one_unicode_array_without_copy():
    a = np.array(["a1", "b22", "c"])
    assert contracts.compact_ids(a) is a                                   # already compact: no copy
    emb = sk.Embeddings(a, np.zeros((3, 2), np.float32), None, np.ones(3, bool), np.zeros(3, bool))
    assert emb.item_ids is a and emb.item_ids.dtype.kind == "U"   # Embeddings keeps it as is
    got = contracts.compact_ids(pd.Series(["x", 7, "00123"], dtype=object))
    assert got.dtype.kind == "U" and got.tolist() == ["x", "7", "00123"]
    assert contracts.compact_ids(pa.array(["p", "q"])).tolist() == ["p", "q"]


def test_id_hashes_do_not_depend_on_the_array_width():
    a = np.array(["p5", "abc"])
    wide = np.array(["p5", "abc", "a much longer identifier"])
    np.testing.assert_array_equal(contracts.id_hashes(a), contracts.id_hashes(wide)[:2])
    assert len(set(contracts.id_hashes(np.char.add("p", np.arange(100_000).astype(str))).tolist())) == 100_000


def test_duplicated_ids_names_the_duplicates_exactly_even_on_a_hash_collision(monkeypatch):
    ids = np.char.add("p", np.arange(50_000).astype(str))
    assert len(contracts.duplicated_ids(ids)) == 0
    ids[7], ids[40_000], ids[123], ids[49_999] = "p3", "p3", "zz", "zz"
    assert contracts.duplicated_ids(ids).tolist() == ["p3", "zz"]
    # every hash equal (worst case): still exact, nothing reported for distinct ids
    monkeypatch.setattr(contracts, "id_hashes", lambda a: np.zeros(len(contracts.compact_ids(a)), np.uint64))
    assert len(contracts.duplicated_ids(np.array(["a", "b", "c"]))) == 0
    assert contracts.duplicated_ids(np.array(["a", "b", "a"])).tolist() == ["a"]


def test_seen_ids_refuses_an_id_of_an_earlier_chunk_in_tiers():
    seen = SeenIds()
    ids = np.char.add("p", np.arange(20_000).astype(str))
    for a in range(0, len(ids), 1000):
        assert len(seen.add(ids[a:a + 1000])) == 0
    assert len(seen) == 20_000 and len(seen._tiers) < 10          # (private) merged in tiers, not one array a chunk
    assert seen.add(np.array(["new", "p17", "p19999"])).tolist() == ["p17", "p19999"]


def test_seen_ids_spills_large_tiers_to_memory_mapped_files_and_answers_the_same(tmp_path):
    """Tiers above ``spill_rows`` live in memory-mapped anonymous temporary files (sorted in place
    there): the same answers as all in memory, and no file is ever left in the folder (removed by
    the OS at creation: nothing to clean up, even after a kill)."""
    ids = np.char.add("p", np.arange(30_000).astype(str))
    mem, disk = SeenIds(spill_rows=None), SeenIds(spill_rows=2_000, spill_dir=tmp_path)
    for a in range(0, len(ids), 1000):
        chunk = ids[a:a + 1000]
        if a == 17_000:                                   # repeats of earlier chunks, found in any tier
            chunk = np.concatenate([chunk[:-3], ids[[5, 12_345, 16_999]]])
        np.testing.assert_array_equal(mem.add(chunk), disk.add(chunk))
    assert len(disk) == len(mem) and disk.spilled > 20_000 and mem.spilled == 0 and disk.spill_error is None
    # private: the tiers themselves, spilled and sorted in place (the answers above cannot show where they live)
    assert all(isinstance(t, np.memmap) for t in disk._tiers if len(t) > 2_000)
    for t in disk._tiers:
        assert np.all(t[1:] >= t[:-1])
    assert list(tmp_path.iterdir()) == []
    assert disk.add(np.array(["new", "p17", "p29999"])).tolist() == ["p17", "p29999"]


def test_seen_ids_that_cannot_spill_warn_once_and_keep_the_hashes_in_memory(tmp_path, monkeypatch):
    """A spill folder that is missing / read-only, or a disk that fills up while the tier is
    written, is one warning naming the folder: the check goes on in memory with the same answers
    (a long run is never stopped by its temporary files)."""
    import warnings

    import tempfile   # SeenIds spills through it (the disk-full case patches it)

    ids = np.char.add("p", np.arange(12_000).astype(str))
    for case in ("missing folder", "disk full"):
        seen = SeenIds(spill_rows=2_000, spill_dir=tmp_path / "nope" if case == "missing folder" else tmp_path)
        if case == "disk full":
            real = tempfile.TemporaryFile

            class Full:
                def __init__(self, *a, **k):
                    self.f = real(*a, **k)

                def write(self, b):
                    raise OSError(28, "No space left on device")

                def __enter__(self):
                    return self

                def __exit__(self, *exc):
                    self.f.close()
            monkeypatch.setattr(tempfile, "TemporaryFile", Full)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            for a in range(0, len(ids), 1000):
                assert len(seen.add(ids[a:a + 1000])) == 0
        msgs = [str(x.message) for x in w if issubclass(x.category, RuntimeWarning)]
        assert len(msgs) == 1 and "TMPDIR" in msgs[0], (case, msgs)
        assert (str(tmp_path / "nope") if case == "missing folder" else "No space left") in msgs[0]
        assert seen.spilled == 0 and seen.spill_error is not None and len(seen) == 12_000
        assert seen.add(np.array(["p3", "q"])).tolist() == ["p3"]


def test_the_one_id_rule_refuses_an_id_repeated_across_chunks():
    seen = SeenIds()
    contracts.check_unique_ids(pd.Series(["a", "b"]), seen=seen)
    with pytest.raises(contracts.DuplicateIdError, match=r"repeats id 'b' \(row 1 and an earlier chunk\)") as e:
        contracts.check_unique_ids(np.array(["c", "b"]), seen=seen)
    assert e.value.ids == ["b"]
    with pytest.raises(contracts.DuplicateIdError,
                       match=r"f.csv: column 'sku' repeats id 'y' \(lines \[2, 6\]\); 2 repeated"):
        contracts.check_unique_ids(["y", "x", "z", "x", "y"], where="f.csv", column="sku", row0=2, row_word="line")


# ------------------------------------------------------------------------- file catalogs
def _catalog(n=300):
    ids = [f"{i:05d}" for i in range(n)]                  # leading zeros: must stay text
    titles = [None if i % 50 == 0 else ("  " if i % 77 == 0 else f"product {i % 120}") for i in range(n)]
    return pd.DataFrame({"item_id": ids, "title": titles})


@pytest.mark.parametrize("fmt", ["parquet", "csv", "feather"])
def test_encode_catalog_reads_a_file_in_record_batches_same_as_the_dataframe(tmp_path, tiny, fmt, monkeypatch):
    df = _catalog()
    path = tmp_path / f"cat.{fmt}"
    if fmt == "parquet":
        df.to_parquet(path, index=False, row_group_size=64)
    elif fmt == "csv":
        df.to_csv(path, index=False)
    else:
        feather.write_feather(pa.Table.from_pandas(df, preserve_index=False), str(path), chunksize=70)
    from semcat_kit.encode.columns import FileCatalog

    seen_sizes = []
    real = FileCatalog.chunks

    def spy(self, column, size):
        for arr in real(self, column, size):
            seen_sizes.append((column, len(arr)))
            yield arr
    monkeypatch.setattr(FileCatalog, "chunks", spy)
    want = sk.encode_catalog(df, text_encoder=tiny, progress=False, chunk_size=64)
    got = sk.encode_catalog(str(path), text_encoder=tiny, progress=False, chunk_size=64)
    assert got.item_ids.dtype.kind == "U" and got.item_ids.tolist() == df["item_id"].tolist()
    np.testing.assert_array_equal(got.text, want.text)
    np.testing.assert_array_equal(got.text_mask, want.text_mask)
    pd.testing.assert_frame_equal(got.failures, want.failures)
    titles = [s for c, s in seen_sizes if c == "title"]
    assert titles and max(titles) == 64 and sum(titles) == len(df)    # the titles came in chunks of 64
    # a view on the store, from the file (what the scale benchmark runs)
    v = sk.encode_catalog(path, text_encoder=tiny, progress=False, chunk_size=64, cache_dir=tmp_path / "c", view=True)
    np.testing.assert_array_equal(np.asarray(v.text), want.text)


def test_file_catalog_errors_name_the_file_rows_and_ids(tmp_path, tiny):
    df = _catalog(10)
    bad = df.copy()
    bad.loc[3, "item_id"] = None
    bad.to_parquet(tmp_path / "missing.parquet", index=False)
    with pytest.raises(ValueError, match=r"missing\.parquet has missing item_id at rows \[3\]"):
        sk.encode_catalog(tmp_path / "missing.parquet", text_encoder=tiny, progress=False)
    dup = df.copy()
    dup.loc[8, "item_id"] = "00002"
    dup.to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(ValueError, match=r"repeats id '00002'.*1 repeated id\(s\) in all"):
        sk.encode_catalog(tmp_path / "dup.csv", text_encoder=tiny, progress=False)
    df.drop(columns="title").to_parquet(tmp_path / "notitle.parquet", index=False)
    with pytest.raises(KeyError, match="notitle.parquet lacks column"):
        sk.encode_catalog(tmp_path / "notitle.parquet", text_encoder=tiny, progress=False)
    (tmp_path / "cat.xlsx").write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown format '.xlsx'"):
        sk.encode_catalog(tmp_path / "cat.xlsx", text_encoder=tiny, progress=False)
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        sk.encode_catalog(tmp_path / "nope.parquet", text_encoder=tiny, progress=False)
    # a malformed CSV line is repaired (the package's one CSV reader) and warned; a file that is not
    # Parquet: errors naming the file and what to do
    (tmp_path / "ragged.csv").write_text("item_id,title\n1,a\n2,b,extra\n")
    with pytest.warns(UserWarning, match=r"ragged\.csv: repaired 1 malformed line.*\['2'\]"):
        got = sk.encode_catalog(tmp_path / "ragged.csv", text_encoder=tiny, progress=False)
    np.testing.assert_array_equal(got.text, tiny.encode_texts(["a", "b,extra"]))
    (tmp_path / "text.parquet").write_text("not parquet")
    with pytest.raises(ValueError, match=r"text\.parquet: not a readable Parquet file.*re-export"):
        sk.encode_catalog(tmp_path / "text.parquet", text_encoder=tiny, progress=False)


def test_images_from_a_parquet_catalog_match_the_dataframe(tmp_path, myntra_styles, fashion_dir):
    enc = sk.encoders.load("efficientnet-lite0@64")
    df = myntra_styles.iloc[:6]
    cat = pd.DataFrame({"item_id": df["id"].astype(str).to_numpy(),
                        "image_path": [str(fashion_dir / "images" / f"{i}.jpg") for i in df["id"]]})
    cat.loc[2, "image_path"] = str(tmp_path / "absent.jpg")
    cat.to_parquet(tmp_path / "c.parquet", index=False)
    want = sk.encode_catalog(cat, image_encoder=enc, progress=False, batch_size=4)
    got = sk.encode_catalog(tmp_path / "c.parquet", image_encoder=enc, progress=False, batch_size=4)
    np.testing.assert_allclose(got.image, want.image, atol=1e-6)
    np.testing.assert_array_equal(got.image_mask, want.image_mask)
    assert not got.image_mask[2] and got.failures["reason"].str.contains("absent.jpg").any()


# ------------------------------------------------------------------ allocator retention
def test_training_and_streaming_evaluation_release_freed_memory_every_few_steps(monkeypatch):
    """A long epoch must not creep up through the allocator keeping freed step temporaries: the
    trainer trims every TRIM_EVERY steps, the streaming evaluator after every chunk."""
    import sys

    from semcat_kit import streaming, trainer
    from semcat_kit._core import memory as _memory   # internal: the memory layer's own calls and constants
    from semcat_kit.learn.training import TrainConfig, train

    if sys.platform.startswith("linux"):
        assert _memory.release_freed_memory() is True           # glibc: malloc_trim found and called
    calls = {"train": 0, "eval": 0}
    monkeypatch.setattr(trainer, "release_freed_memory", lambda: calls.__setitem__("train", calls["train"] + 1))
    monkeypatch.setattr(streaming, "release_freed_memory", lambda: calls.__setitem__("eval", calls["eval"] + 1))
    paths = [f"Top{i // 4} > Leaf{i}" for i in range(8)]
    tax = sk.Taxonomy.from_paths(paths)
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(8), 40)
    x = (rng.normal(size=(8, 6))[y] + 0.3 * rng.normal(size=(len(y), 6))).astype(np.float32)
    train(x, y, taxonomy=tax, config=TrainConfig(epochs=1, batch_size=8, device="cpu", early_stopping=None, solver="minibatch"),
          val=(x[:40], y[:40]), progress=False)
    assert calls["train"] == (len(y) // 8) // _memory.TRIM_EVERY      # 40 steps -> 2 trims
    assert calls["eval"] >= 1                                         # validation chunk(s)


def test_bound_heap_fixes_the_mmap_threshold_once_unless_the_user_chose_one(monkeypatch):
    """The streaming loops call bound_heap: on glibc it sets M_MMAP_THRESHOLD once (large blocks
    become their own mappings, returned when freed); a threshold the user set, or
    SEMCAT_BOUND_HEAP=0, is left alone."""
    import sys

    from semcat_kit._core import memory as _memory   # internal: the memory layer's own calls and constants

    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    # private: the C library is replaced (the mallopt call is the invariant) and the once-per-process
    # flag reset, so each environment is seen as a new process would see it
    monkeypatch.setattr(_memory, "_libc", lambda: FakeLibc())
    for env, want in (({}, [(-3, 1 << 20)]), ({"MALLOC_MMAP_THRESHOLD_": "65536"}, []),
                      ({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}, []), ({"SEMCAT_BOUND_HEAP": "0"}, [])):
        calls.clear()
        monkeypatch.setattr(_memory, "_bounded", None)
        for k in ("MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES", "SEMCAT_BOUND_HEAP"):
            monkeypatch.delenv(k, raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        assert _memory.bound_heap() is bool(want) and _memory.bound_heap() is bool(want)   # idempotent
        assert calls == want, env
    if sys.platform.startswith("linux"):          # the real call succeeds on this machine's glibc
        monkeypatch.undo()
        monkeypatch.setattr(_memory, "_bounded", None)
        for k in ("MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES", "SEMCAT_BOUND_HEAP"):
            monkeypatch.delenv(k, raising=False)
        assert _memory.bound_heap() is True


def test_training_and_streaming_evaluation_bound_the_heap(monkeypatch, tmp_path):
    import numpy as np

    import semcat_kit as sk
    from semcat_kit import streaming, trainer
    from semcat_kit._core import memory as _memory   # internal: the memory layer's own calls and constants

    seen = []
    monkeypatch.setattr(trainer, "bound_heap", lambda: seen.append("train"))
    monkeypatch.setattr(streaming, "bound_heap", lambda: seen.append("eval"))
    tax = sk.Taxonomy.from_paths(["a > b", "a > c", "d > e"])
    rng = np.random.default_rng(0)
    emb = sk.Embeddings(np.array([f"i{i}" for i in range(30)]), rng.standard_normal((30, 8)).astype(np.float32),
                        None, np.ones(30, bool), np.zeros(30, bool))
    y = np.arange(30) % 3
    sk.train(emb, y, taxonomy=tax, config=sk.TrainConfig(epochs=1, batch_size=8, device="cpu", solver="minibatch"), val=(emb, y),
             progress=False)
    assert "train" in seen and "eval" in seen
