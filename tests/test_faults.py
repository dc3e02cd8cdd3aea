"""Nothing silent, nothing lost, part two (issue 25): malformed CSV lines, ids kept verbatim,
checkpoints of another run, float16 stores, full and read-only disks, store trust, ranks that
disagree, exit codes and messages. Each test would fail if its guarantee broke."""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import _torchrun as torchrun
import semcat_kit as sk
from semcat_kit import cli
from semcat_kit import datasets as D
from semcat_kit.encode.encoders import HashingTextEncoder

HERE = Path(__file__).parent
ROOT = HERE.parent

# ------------------------------------------------------------------------------ malformed CSV lines
UNCLOSED_MID = 'id,title,cat\n1,"red shirt,A\n2,blue jeans,B\n3,"green hat",C\n4,sock,D\n'
UNCLOSED_EOF = 'id,title,cat\n1,red shirt,A\n2,"blue jeans,B\n3,green hat,C\n4,sock,D\n'
SHORT = 'id,title,image,cat\n1,red shirt,a.jpg,A\n2,b.jpg,B\n3,hat,c.jpg,C\n'
# a legitimate quoted value over two lines (a description) is still read
MULTILINE_OK = 'id,title,cat\n1,"red shirt\nwith, commas",A\n2,"say ""hi""",B\n'

BROKEN = {"unclosed quote (closed later)": (UNCLOSED_MID, r"quoted value that starts on line 2 is not closed properly"),
          "unclosed quote (to the end)": (UNCLOSED_EOF, r"quoted value that starts on line 3 is never closed"),
          "too few fields": (SHORT, r"1 line\(s\) have fewer fields than the 4 header columns.*line 3 \((item_)?id '2'\)")}


def _entry_points(path: Path):
    """Every public way a catalog CSV is read: (name, callable)."""
    def encode_path():
        return sk.encode_catalog(path, text_encoder=HashingTextEncoder(8), progress=False)

    return [("load_catalog", lambda: D.load_catalog(path, path=["cat"])),
            ("load_catalog_chunks", lambda: list(D.load_catalog_chunks(path, chunk_size=2, path=["cat"]))),
            ("read_csv", lambda: D.read_csv(path, id_col="id", repair_col="title")),
            ("read_csv_chunks", lambda: list(D.read_csv_chunks(path, 2, id_col="id", repair_col="title"))),
            ("CatalogFile.chunks", lambda: list(D.CatalogFile(path).chunks(2))),
            ("encode_catalog(path)", encode_path)]


@pytest.mark.parametrize("case", list(BROKEN))
def test_malformed_csv_lines_are_refused_in_every_reader(tmp_path, case):
    text, msg = BROKEN[case]
    p = tmp_path / "cat.csv"
    p.write_text(text, encoding="utf-8")
    for name, read in _entry_points(p):
        if name == "encode_catalog(path)":
            # encode_catalog reads item_id/title columns: same file with those names
            q = tmp_path / "enc.csv"
            q.write_text(text.replace("id,title", "item_id,title", 1), encoding="utf-8")
            read = _entry_points(q)[-1][1]
        with pytest.raises(ValueError, match=msg):
            read()


@pytest.mark.parametrize("case", list(BROKEN))
def test_semcat_predict_refuses_malformed_csv_lines_with_exit_1(tmp_path, case, capsys):
    text, msg = BROKEN[case]
    p = tmp_path / "p.csv"
    p.write_text(text, encoding="utf-8")
    for chunk in ("1", "8192"):
        rc = cli.main(["predict", "--model", str(tmp_path / "nohead"), "--input", str(p),
                       "--output", str(tmp_path / "o.csv"), "--chunk-size", chunk])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 1 and len(err) == 1 and err[0].startswith("semcat: error: --input"), err
        import re

        assert re.search(msg, err[0]), err[0]
    assert not (tmp_path / "o.csv").exists()


def test_multiline_quoted_values_are_still_read(tmp_path):
    p = tmp_path / "ok.csv"
    p.write_text(MULTILINE_OK, encoding="utf-8")
    df = D.load_catalog(p, path=["cat"])
    assert df["title"].tolist() == ["red shirt\nwith, commas", 'say "hi"']
    chunks = pd.concat([c for c, _ in D.load_catalog_chunks(p, chunk_size=1, path=["cat"])])
    assert chunks["title"].tolist() == df["title"].tolist()


def test_real_catalogs_pass_the_strict_reader():
    from conftest import SHARED_DATA

    toys = SHARED_DATA / "amazon-uk-toys" / "products.csv"
    if not toys.is_file():
        pytest.skip(f"shared data not found at {toys}")
    n = sum(len(c) for c, _ in D.CatalogFile(toys).chunks(4096, ["uniq_id"] if "uniq_id" in
                                                             D.CatalogFile(toys).columns else None))
    assert n == 10_000
    tut = D.tutorial_dir() / "styles.csv"
    assert len(D.read_csv(tut, id_col="id", repair_col="productDisplayName")) == 3000


# ------------------------------------------------------------------------------ ids verbatim
def test_ids_are_kept_verbatim_and_a_nul_is_refused(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("id,title,cat\n 8 ,a,A\n8,b,B\n", encoding="utf-8")
    for df in (D.load_catalog(p, path=["cat"]), pd.concat([c for c, _ in D.load_catalog_chunks(p, path=["cat"])])):
        assert df["item_id"].tolist() == [" 8 ", "8"]           # two items, spaces kept, no collision
    p.write_bytes(b"id,title,cat\n7,a,A\n7\x00,b,B\n")
    with pytest.raises(ValueError, match=r"column 'id': 1 id\(s\) contain a NUL character \(rows \[1\]"):
        D.load_catalog(p, path=["cat"])
    with pytest.raises(ValueError, match=r"contain a NUL character \(rows \[1\]"):
        list(D.load_catalog_chunks(p, path=["cat"]))
    from semcat_kit import contracts

    with pytest.raises(ValueError, match=r"'7\\x00' \(position 1; 1 such id\(s\)\) ends in a NUL"):
        contracts.compact_ids(pd.Series(["7", "7\x00"]))
    with pytest.raises(ValueError, match="NUL"):
        sk.Embeddings(item_ids=np.array(["7", "7\x00"], dtype=object), text=np.zeros((2, 4), np.float32), image=None,
                      text_mask=np.ones(2, bool), image_mask=np.zeros(2, bool))


def test_predict_keeps_ids_verbatim_and_refuses_a_nul(tmp_path, capsys):
    p = tmp_path / "p.csv"
    p.write_text("id,title\n 8 ,a\n8,b\n", encoding="utf-8")
    got = pd.concat(list(sk.datasets.read_products(p)))
    assert got["item_id"].tolist() == [" 8 ", "8"]
    p.write_bytes(b"id,title\n7,a\n7\x00,b\n")
    rc = cli.main(["predict", "--model", str(tmp_path / "nohead"), "--input", str(p), "--output",
                   str(tmp_path / "o.csv")])
    err = capsys.readouterr().err
    assert rc == 1 and "NUL character (lines [3]" in err and err.count("\n") == 1, err


# ------------------------------------------------------------------------------ checkpoints of another run
FAST = dict(epochs=2, proj_dim=16, hidden=32, batch_size=32, lr=3e-3, device="cpu", early_stopping=None)


@pytest.fixture(scope="module")
def toy():
    paths = [f"Top{i // 4} > Leaf{i}" for i in range(8)]
    tax = sk.Taxonomy.from_paths(paths)
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(8), 12)
    emb = (rng.normal(size=(8, 12))[y] + 0.3 * rng.normal(size=(len(y), 12))).astype(np.float32)
    return tax, emb, y


def test_resume_into_a_folder_of_another_run_is_refused(toy, tmp_path):
    from semcat_kit.learn.training import TrainConfig, load_checkpoint, train

    tax, emb, y = toy
    a, b = tmp_path / "A", tmp_path / "B"
    from semcat_kit import trainer as T

    class StopAfterOne(T.Callback):       # A: killed after epoch 1 of 2 (something left to resume)
        def on_epoch_end(self, t):
            t.stop = True

    cfg = TrainConfig(**FAST)
    train(emb, y, taxonomy=tax, config=cfg, checkpoint_dir=a, progress=False, callbacks=[StopAfterOne()])
    train(emb, y, taxonomy=tax, config=cfg.replace(lr=0.01), checkpoint_dir=b, progress=False)
    before = (b / "last.pt").read_bytes()
    with pytest.raises(ValueError, match=rf"checkpoint_dir {b} already holds a run at epoch 2 of 2 .*lr=0.01.*; "
                                         rf"resuming {a}/last.pt there would replace it"):
        train(emb, y, taxonomy=tax, resume=a, checkpoint_dir=b, progress=False)
    assert (b / "last.pt").read_bytes() == before                       # nothing lost
    # continuing in place, into an empty folder, or into a copy of the same run is fine
    train(emb, y, taxonomy=tax, resume=a, checkpoint_dir=tmp_path / "C", progress=False)
    assert load_checkpoint(tmp_path / "C")["config"]["lr"] == 0.003
    with pytest.raises(ValueError, match=r"\(the same run, further on\); resuming"):   # C holds A's epoch 2
        train(emb, y, taxonomy=tax, resume=a, checkpoint_dir=tmp_path / "C", progress=False)
    train(emb, y, taxonomy=tax, resume=a, checkpoint_dir=b, overwrite=True, progress=False)
    assert load_checkpoint(b)["config"]["lr"] == 0.003
    train(emb, y, taxonomy=tax, resume=a, checkpoint_dir=a, progress=False)


def test_resume_with_another_taxonomy_blames_the_taxonomy(toy, tmp_path):
    from semcat_kit.learn.training import TrainConfig, train

    tax, emb, y = toy
    train(emb, y, taxonomy=tax, config=TrainConfig(**FAST), checkpoint_dir=tmp_path, progress=False)
    bigger = sk.Taxonomy.from_paths(list(tax.classes) + ["Top9 > Leaf99"])
    with pytest.raises(ValueError, match=r"the taxonomy has 9 classes, the checkpointed head 8; resume with the "
                                         r"run's taxonomy") as e:
        train(emb, y, taxonomy=bigger, resume=tmp_path, checkpoint_dir=tmp_path, progress=False)
    assert "embeddings" not in str(e.value).split("(")[0]


# ------------------------------------------------------------------------------ store: precision and trust
def _store_with(root, n=64, dim=8, dtype=None, writer="w"):
    from semcat_kit.encode.store import VectorStore, content_key

    s = VectorStore(root, dim, dtype=dtype, auto_merge=False, writer=writer)
    keys = [content_key(f"item {i}") for i in range(n)]
    vecs = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
    s.put(keys, vecs)
    s.flush()
    return s, keys, vecs


def _new_process(monkeypatch):
    sk.store.forget_verified()


def test_float16_store_is_read_by_a_default_store_and_never_re_encoded(tmp_path):
    """`semcat encode --store-dtype float16` then any default reader (`semcat train --cache-dir`):
    nothing corrupt, nothing encoded again."""
    from semcat_kit import encode_into_store

    enc = HashingTextEncoder(16)
    cat = pd.DataFrame({"item_id": [f"i{k}" for k in range(30)], "title": [f"red shirt {k}" for k in range(30)],
                        "image_path": [None] * 30})
    first = encode_into_store(cat, text_encoder=enc, cache_dir=tmp_path, store_dtype="float16", progress=False)
    assert first.stats["text_encoded"] == 30
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # no "corrupt" warning, no precision warning
        refill = encode_into_store(cat, text_encoder=enc, cache_dir=tmp_path, progress=False)
        again = sk.encode_catalog(cat, text_encoder=enc, cache_dir=tmp_path, progress=False)
    assert refill.stats.get("text_encoded", 0) == 0 and not list(tmp_path.rglob("*.corrupt"))
    direct = sk.encode_catalog(cat, text_encoder=enc, progress=False)
    np.testing.assert_allclose(np.asarray(again.text), np.asarray(direct.text), atol=1e-3)


def test_semcat_encode_float16_then_default_reuses_the_store(tmp_path, capsys):
    sk.encoders.register("tiny-faults", lambda arg, device="auto", **kw: HashingTextEncoder(16), overwrite=True)
    csv = tmp_path / "c.csv"
    pd.DataFrame({"id": [f"p{k}" for k in range(20)], "title": [f"toy {k}" for k in range(20)],
                  "cat": ["A > B"] * 20}).to_csv(csv, index=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("text_encoder: tiny-faults\nimage_encoder: null\ncatalog:\n  path_col: cat\n")
    base = ["encode", "--catalog", str(csv), "--config", str(cfg), "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    assert cli.main(base + ["--store-dtype", "float16"]) == 0
    assert "encoded text 20" in capsys.readouterr().out
    assert cli.main(base) == 0
    out = capsys.readouterr()
    assert "encoded text 0" in out.out and "corrupt" not in out.err
    assert not list((tmp_path / "cache").rglob("*.corrupt"))


def test_shard_edited_in_place_with_the_same_size_mtime_and_inode_is_detected(tmp_path, monkeypatch):
    import semcat_kit.encode.store as store_mod
    from semcat_kit.encode.store import VectorStore

    s, keys, vecs = _store_with(tmp_path / "s")
    shard = s.shard_files[0]
    st = shard.stat()
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF                   # one vector byte
    with open(shard, "r+b") as f:                  # in place: same inode, same size
        f.write(data)
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))                 # the old mtime put back
    assert (shard.stat().st_size, shard.stat().st_mtime_ns, shard.stat().st_ino) == \
        (st.st_size, st.st_mtime_ns, st.st_ino)
    _new_process(monkeypatch)
    with pytest.warns(RuntimeWarning, match="corrupt .*checksum or size mismatch"):
        t = VectorStore(tmp_path / "s", 8)
    assert t.corrupt == [str(shard)] and not t.get(keys)[0].any()       # not served; recomputed later


def test_store_trust_limits_sampled_checksum_and_full_verify(tmp_path, monkeypatch):
    """The documented limit: with the kernel's ctime forged too (a raw-device edit), an edit is still
    caught at open inside the sampled blocks, and only by verify() (the full checksum) outside them."""
    import json

    import semcat_kit.encode.store as store_mod
    from semcat_kit.encode.store import SAMPLE_BLOCKS, SAMPLE_BYTES, VectorStore

    dim = 512                                       # 1,200 x 512 float32: a 2.4 MB shard (> 1 MiB sampled)
    s, keys, vecs = _store_with(tmp_path / "s", n=1200, dim=dim)
    shard = s.shard_files[0]
    size = shard.stat().st_size
    assert size > SAMPLE_BLOCKS * SAMPLE_BYTES
    sampled = {(size - SAMPLE_BYTES) * k // (SAMPLE_BLOCKS - 1) for k in range(SAMPLE_BLOCKS)}

    def forge_edit(offset):
        with open(shard, "r+b") as f:
            f.seek(offset)
            b = f.read(1)
            f.seek(offset)
            f.write(bytes([b[0] ^ 0xFF]))
        rec_path = shard.parent / store_mod.VERIFIED_FILE
        rec = json.loads(rec_path.read_text())
        # private: the record's identity fields, forged to match so that only the sampled checksum can catch the flip
        rec[shard.name].update(store_mod._identity(shard.stat()))
        rec_path.write_text(json.dumps(rec))
        _new_process(monkeypatch)

    inside = min(sampled - {0}) + 10                # a byte of a sampled block
    forge_edit(inside)
    with pytest.warns(RuntimeWarning, match="corrupt"):
        assert VectorStore(tmp_path / "s", dim).corrupt
    s, keys, vecs = _store_with(tmp_path / "s2", n=1200, dim=dim)
    shard = s.shard_files[0]
    outside = next(o for o in range(size // 3, size) if all(not (a <= o < a + SAMPLE_BYTES) for a in sampled))
    forge_edit(outside)
    t = VectorStore(tmp_path / "s2", dim)
    assert not t.corrupt                            # the documented blind spot at open ...
    with pytest.warns(RuntimeWarning, match="full check"):
        assert t.verify() == [str(shard)]           # ... closed by the full check on demand
    assert not t.get(keys)[0].any() and not json.loads(t.manifest_path.read_text())["shards"]


def test_unlisted_shard_is_adopted_only_when_its_checksum_matches_its_name(tmp_path, monkeypatch):
    import json

    from semcat_kit.encode.store import VectorStore

    s, keys, vecs = _store_with(tmp_path / "s")
    good = s.shard_files[0]
    foreign = tmp_path / "s" / "shard-x-0123456789abcdef.arrow"        # no checksum in its name
    forged = tmp_path / "s" / ("shard-y-" + "0" * 32 + ".arrow")        # a checksum it does not match
    for p in (foreign, forged):
        p.write_bytes(good.read_bytes())
    s.manifest_path.unlink()                        # nothing listed: every shard is "unlisted"
    _new_process(monkeypatch)
    with pytest.warns(RuntimeWarning, match="not listed in manifest.json.*not adopted"):
        t = VectorStore(tmp_path / "s", 8)
    assert sorted(Path(c).name for c in t.corrupt) == sorted([foreign.name, forged.name])
    assert [p.name for p in t.shard_files] == [good.name] and t.get(keys)[0].all()
    assert [e["file"] for e in json.loads(t.manifest_path.read_text())["shards"]] == [good.name]


# ------------------------------------------------------------------------------ full and read-only disks
@contextlib.contextmanager
def _tmpfs(path: Path, size: str = "64k", ro: bool = False):
    """A small tmpfs at ``path`` (root: chmod would not stop root, a real mount does), unmounted after."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if ro else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}); full and read-only disks "
                    "are tested where mounting is permitted (root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _catalog(n=600):
    return pd.DataFrame({"item_id": [f"i{k}" for k in range(n)], "title": [f"red shirt size {k}" for k in range(n)],
                         "image_path": [None] * n})


def test_full_disk_out_folder_is_an_oserror_naming_it_and_leaves_no_temp_folder(tmp_path):
    enc = HashingTextEncoder(256)                  # 600 x 256 float32 = 614 KB > the 64 KiB disk
    with _tmpfs(tmp_path / "full") as full:
        with pytest.raises(OSError, match=rf"not enough space in {full} for text\.npy "
                                          r"\(614,528 bytes\).*free space there"):
            sk.encode_catalog(_catalog(), text_encoder=enc, out=full / "emb", progress=False)
        assert list(full.iterdir()) == []           # no temporary folder, no half-written file
        view = sk.encode_catalog(_catalog(), text_encoder=enc, cache_dir=tmp_path / "cache", view=True,
                                 progress=False)
        with pytest.raises(OSError, match=rf"not enough space in {full} for text\.npy"):
            view.save(full / "emb")
        assert list(full.iterdir()) == []


def _encode_args(tmp_path, n=600):
    csv = tmp_path / "c.csv"
    pd.DataFrame({"id": [f"p{k}" for k in range(n)], "title": [f"toy {k}" for k in range(n)],
                  "cat": ["A > B"] * n}).to_csv(csv, index=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("text_encoder: hash-text:256\nimage_encoder: null\ncatalog:\n  path_col: cat\n")
    return ["encode", "--catalog", str(csv), "--config", str(cfg), "--quiet"]


def test_semcat_encode_full_or_read_only_disk_exits_1_with_one_line(tmp_path, capsys):
    base = _encode_args(tmp_path)
    with _tmpfs(tmp_path / "full") as full:         # --out on a full disk
        rc = cli.main(base + ["--cache-dir", str(tmp_path / "cache"), "--out", str(full / "emb")])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 1 and err[-1].startswith(f"semcat: error: not enough space in {full}") and \
            not any("Traceback" in e for e in err), err
        assert list(full.iterdir()) == []
    with _tmpfs(tmp_path / "full2") as full:        # the store itself fills the disk mid-run
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rc = cli.main(base + ["--cache-dir", str(full / "cache")])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 1 and err[-1].startswith(f"semcat: error: the embedding store under --cache-dir {full}/cache "
                                              "could not be written (") and "ENOSPC" in err[-1], err
    with _tmpfs(tmp_path / "ro", ro=True) as ro:     # a read-only disk: refused before encoding anything
        rc = cli.main(base + ["--cache-dir", str(ro / "cache")])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 1 and err == [f"semcat: error: --cache-dir {ro}/cache cannot be written (OSError: Read-only "
                                   "file system); nothing was encoded. Give a folder you can write to"], err


def test_torchrun_encode_with_ranks_reading_different_catalogs_is_refused(tmp_path):
    rows = [f"p{k}" for k in range(12)]
    for r, ids in enumerate((rows, rows[::-1])):    # rank 1: the same products in another order
        pd.DataFrame({"id": ids, "title": [f"toy {i}" for i in ids], "cat": ["A > B"] * 12}).to_csv(
            tmp_path / f"c{r}.csv", index=False)
    (tmp_path / "c.yaml").write_text("catalog:\n  path_col: cat\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    refused = "semcat (rank 0): error: the ranks would read different catalogs"
    r = torchrun.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                      str(HERE / "_encode_ranks_case.py"), str(tmp_path)], tmp_path, env, timeout=300,
                     ok=lambda p: p.returncode != 0 and refused in p.stderr)
    assert r.returncode != 0
    ours = [l for l in r.stderr.splitlines() if l.startswith("semcat")]
    assert len(ours) == 1 and ours[0].startswith("semcat (rank 0): error: the ranks would read different catalogs"), \
        r.stderr[-3000:]
    assert "rank 1: content" in ours[0] and "Nothing was encoded" in ours[0]
    assert not list((tmp_path / "cache").rglob("shard-*.arrow"))
