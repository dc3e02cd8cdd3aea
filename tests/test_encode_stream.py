"""One chunked catalog-file reader for the package (datasets.CatalogFile) and ``semcat encode``
streaming its catalog: memory bounded by the chunk, not by N (issue 13, item 2)."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pytest

import _torchrun as torchrun
import semcat_kit as sk
from semcat_kit import cli
from semcat_kit.datasets import sample_catalog, sample_positions
from semcat_kit import datasets as D
from semcat_kit import encode_into_store
from semcat_kit.encode.encoders import HashingTextEncoder

from conftest import SHARED_DATA

HERE = Path(__file__).parent
ROOT = HERE.parent
TOYS = SHARED_DATA / "amazon-uk-toys" / "products.csv"


class _Tiny(HashingTextEncoder):
    """The library's 32-d hash-of-the-title encoder (fast, no model), counting its batches and
    raising KeyboardInterrupt after ``fail_after`` of them (a run killed mid-way)."""
    calls = 0
    fail_after = None

    def __init__(self):
        super().__init__(32)

    def _embed_texts(self, texts):
        type(self).calls += 1
        if self.fail_after is not None and type(self).calls > self.fail_after:
            raise KeyboardInterrupt("killed")
        return super()._embed_texts(texts)


@pytest.fixture
def tiny():
    sk.encoders.register("tiny-enc-test", lambda arg, device="auto", **kw: _Tiny(), overwrite=True)
    _Tiny.calls, _Tiny.fail_after = 0, None
    return _Tiny()


def _config(path: Path, **mapping) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"text_encoder": "tiny-enc-test", "image_encoder": None, "catalog": mapping}),
                    encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ CatalogFile
def _frame(n=23):
    return pd.DataFrame({"sku": [f"{i:05d}" for i in range(n)],                      # leading zeros: text
                         "name": [None if i == 4 else f"toy {i}, red" for i in range(n)],
                         "price": [float(i) + 0.5 for i in range(n)]})


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet", "feather"])
def test_catalog_file_reads_every_format_as_text_in_chunks_of_exactly_chunk_size(tmp_path, fmt):
    df = _frame()
    p = tmp_path / f"c.{fmt}"
    if fmt == "csv":
        df.to_csv(p, index=False)
    elif fmt == "tsv":
        df.to_csv(p, index=False, sep="\t")
    elif fmt == "parquet":
        df.to_parquet(p, index=False, row_group_size=5)
    else:
        feather.write_feather(pa.Table.from_pandas(df, preserve_index=False), str(p), chunksize=6)
    f = D.CatalogFile(p)
    assert f.columns == ["sku", "name", "price"] and f.num_rows() == 23
    chunks = list(f.chunks(7))
    assert [len(c) for c, _ in chunks] == [7, 7, 7, 2] and [s for _, s in chunks] == [0, 7, 14, 21]
    got = pd.concat([c for c, _ in chunks])
    assert got.index.tolist() == list(range(23))
    assert got["sku"].tolist() == df["sku"].tolist()                       # 00007 stays 00007
    assert got["name"].tolist() == [None if pd.isna(v) else v for v in df["name"]]   # None where missing
    assert got["price"].tolist() == [str(x) for x in df["price"]]          # numbers as their text
    assert all(isinstance(v, str) for v in got["price"])
    one = pd.concat([c for c, _ in D.CatalogFile(p).chunks(10, ["name", "sku"])])
    assert list(one.columns) == ["name", "sku"] and one["sku"].tolist() == df["sku"].tolist()
    t, first = next(f.chunks(5, "sku", arrow=True))
    assert t.column_names == ["sku"] and t.column(0).type == pa.string() and first == 0


def test_catalog_file_errors_name_the_file_and_the_column(tmp_path):
    _frame().to_parquet(tmp_path / "c.parquet", index=False)
    with pytest.raises(ValueError, match=r"c\.parquet' has no column\(s\) \['title'\]; its columns are"):
        list(D.CatalogFile(tmp_path / "c.parquet").chunks(5, ["sku", "title"]))
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        D.CatalogFile(tmp_path / "nope.csv")
    (tmp_path / "c.xlsx").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"unknown format '\.xlsx'"):
        D.CatalogFile(tmp_path / "c.xlsx")
    (tmp_path / "bad.feather").write_bytes(b"not arrow at all")
    with pytest.raises(ValueError, match=r"bad\.feather: not a readable Arrow file .*re-export"):
        D.CatalogFile(tmp_path / "bad.feather")
    nested = pa.table({"sku": ["1"], "tags": pa.array([[1, 2]], pa.list_(pa.int64()))})
    import pyarrow.parquet as pq

    pq.write_table(nested, tmp_path / "nested.parquet")
    with pytest.raises(ValueError, match=r"nested\.parquet': column 'tags' of type list<.*cannot be read as text"):
        list(D.CatalogFile(tmp_path / "nested.parquet").chunks(5))


# ------------------------------------------------------------------------------ read_csv_chunks
def test_read_csv_chunks_repairs_malformed_lines_while_streaming(tmp_path, monkeypatch):
    lines = ["id,title,cat"] + [f"{i},toy {i},A > B" for i in range(20)]
    lines[3] = "2,toy 2, large,A > B"           # chunk 0
    lines[15] = "14,toy 14, red, wooden,A > C"   # chunk 2
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    with pytest.warns(UserWarning, match=r"repaired 2 malformed line\(s\).*\['2', '14'\]"):
        want = D.read_csv(tmp_path / "m.csv", id_col="id", repair_col="title", dtype=str)

    def whole(*a, **k):
        raise AssertionError("read_csv_chunks read the whole file")
    # private: read_csv_chunks never falls back to read_csv's whole-file read (the output cannot show which read ran)
    from semcat_kit.datasets import csv_files

    monkeypatch.setattr(csv_files, "_read_csv", whole)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        chunks = list(D.read_csv_chunks(tmp_path / "m.csv", 6, id_col="id", repair_col="title", dtype=str))
    assert sum("repaired 2 malformed" in str(w.message) for w in rec) == 1      # one warning for the file
    assert [len(c) for c, _ in chunks] == [6, 6, 6, 2] and [f for _, f in chunks] == [0, 6, 12, 18]
    got = pd.concat([c for c, _ in chunks])
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want, check_dtype=False)
    assert got.loc[14, "title"] == "toy 14, red, wooden" and got.loc[14, "cat"] == "A > C"
    reports = [c.attrs["report"]["item_id"].tolist() for c, _ in chunks]
    assert reports == [["2"], [], ["14"], []]                                 # each chunk its own repairs
    (tmp_path / "u.csv").write_text("id,name\n1,a\n2,b,c\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"1 line\(s\) have more fields.*2,b,c"):
        next(D.read_csv_chunks(tmp_path / "u.csv", 1, id_col="id", repair_col="title"))


# ------------------------------------------------------------------------------ load_catalog_chunks
def _catalog_csv(tmp_path: Path, n=30) -> Path:
    img = tmp_path / "img"
    img.mkdir()
    for i in range(0, n, 3):
        (img / f"{i}.jpg").write_bytes(b"\xff\xd8 not decoded here")
    rows = ["sku,name,category,picture"]
    for i in range(n):
        rows.append(f"{i:04d},Toy {i},{'Toys > Cars' if i % 2 else 'Toys > Dolls'},{'img/' + str(i) + '.jpg' if i % 5 else ''}")
    rows[8] = "0007,Toy 7, the big one,Toys > Cars,img/7.jpg"     # malformed: repaired into the title
    p = tmp_path / "cat.csv"
    p.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return p


MAPPING = {"id": "sku", "title": "name", "path_col": "category", "image": "picture"}


def test_load_catalog_chunks_apply_load_catalogs_mapping_chunk_by_chunk(tmp_path):
    p = _catalog_csv(tmp_path)
    with pytest.warns(UserWarning, match="repaired 1 malformed"):
        want = D.load_catalog(p, **MAPPING)
    with pytest.warns(UserWarning, match="repaired 1 malformed"):
        chunks = list(D.load_catalog_chunks(p, 8, **MAPPING))
    assert [f for _, f in chunks] == [0, 8, 16, 24]
    got = pd.concat([c for c, _ in chunks])
    for col in ("item_id", "title", "image_path", "label", "level_1", "level_2"):
        assert got[col].tolist() == want[col].tolist(), col
    assert got.loc[7, "title"] == "Toy 7, the big one" and got.loc[3, "image_path"] == str(tmp_path / "img" / "3.jpg")
    rep = pd.concat([pd.DataFrame(c.attrs["report"]) for c, _ in chunks], ignore_index=True)
    pd.testing.assert_frame_equal(rep.sort_values(["item_id", "problem"]).reset_index(drop=True),
                                  pd.DataFrame(want.attrs["report"]).sort_values(["item_id", "problem"])
                                  .reset_index(drop=True))
    # an id repeated in a later chunk, an empty category in a later chunk: named with the file's row number
    (tmp_path / "dup.csv").write_text("sku,name,category\n" + "".join(f"{i},t,A\n" for i in range(10)) + "3,t,A\n")
    with pytest.raises(ValueError, match=r"dup\.csv': column 'sku' repeats id '3'"):
        list(D.load_catalog_chunks(tmp_path / "dup.csv", 4, id="sku", title="name", path=["category"],
                                   unlabelled="error"))
    (tmp_path / "gap.csv").write_text("sku,name,l1,l2\n" + "".join(f"{i},t,A,B\n" for i in range(9)) + "9,t,A,\n")
    with pytest.raises(ValueError, match=r"row 9 \(item '9'\) has an empty category level in column 'l2'"):
        list(D.load_catalog_chunks(tmp_path / "gap.csv", 4, id="sku", title="name", path=["l1", "l2"]))


# ------------------------------------------------------------------------------ semcat encode
def _encode(args_extra, capsys):
    rc = cli.main(["encode", "--quiet", *args_extra])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return out


def test_semcat_encode_streams_a_csv_with_a_malformed_line(tmp_path, tiny, capsys, monkeypatch):
    p = _catalog_csv(tmp_path)
    cfg = _config(tmp_path / "c.yaml", id="sku", title="name", path_col="category")

    def whole(*a, **k):
        raise AssertionError("semcat encode loaded the whole catalog file")

    monkeypatch.setattr(sk.Pipeline, "load_catalog", whole)   # the whole-catalog path of the command
    spy = []
    real = D.load_catalog_chunks

    def chunks(*a, **k):
        for c, f in real(*a, **k):
            spy.append(len(c))
            yield c, f
    monkeypatch.setattr(D, "load_catalog_chunks", chunks)
    with pytest.warns(UserWarning, match="repaired 1 malformed"):
        out = _encode(["--catalog", str(p), "--config", str(cfg), "--cache-dir", str(tmp_path / "cache"),
                       "--chunk-size", "8", "--out", str(tmp_path / "emb")], capsys)
    assert spy == [8, 8, 8, 6]                                          # read 8 rows at a time
    assert "0007: malformed CSV line" in out.err                         # the repair is reported
    assert "rank 0/1: 30 products, encoded text 30" in out.out
    monkeypatch.undo()
    with pytest.warns(UserWarning):
        cat = D.load_catalog(p, id="sku", title="name", path_col="category")
    want = sk.encode_catalog(cat, text_encoder=_Tiny(), progress=False)
    emb = sk.Embeddings.load(tmp_path / "emb")
    assert emb.item_ids.tolist() == cat["item_id"].tolist()
    np.testing.assert_array_equal(np.asarray(emb.text), want.text)
    assert np.asarray(emb.text)[7].tolist() == _Tiny().encode_texts(["Toy 7, the big one"])[0].tolist()
    # a re-run (or a killed run started again) encodes nothing: everything is in the store
    sk.encoders.register("tiny-enc-test", lambda arg, device="auto", **kw: _Tiny(), overwrite=True)
    with pytest.warns(UserWarning):
        out = _encode(["--catalog", str(p), "--config", str(cfg), "--cache-dir", str(tmp_path / "cache"),
                       "--chunk-size", "8"], capsys)
    assert "30 products, encoded text 0," in out.out


def test_semcat_encode_a_parquet_catalog_keeps_text_ids_and_reports_failures(tmp_path, tiny, capsys):
    df = pd.DataFrame({"sku": [f"{i:05d}" for i in range(40)], "name": [f"toy {i}" for i in range(40)],
                       "category": ["A > B"] * 40})
    df.loc[[5, 33], "name"] = ["", None]
    df.to_parquet(tmp_path / "cat.parquet", index=False, row_group_size=7)
    cfg = _config(tmp_path / "c.yaml", id="sku", title="name", path_col="category")
    out = _encode(["--catalog", str(tmp_path / "cat.parquet"), "--config", str(cfg), "--cache-dir",
                   str(tmp_path / "cache"), "--chunk-size", "16", "--out", str(tmp_path / "emb")], capsys)
    assert "40 products, encoded text 38" in out.out and "2 unusable input(s)" in out.out
    emb = sk.Embeddings.load(tmp_path / "emb")
    assert emb.item_ids.tolist() == df["sku"].tolist()                   # 00005, not 5
    assert sorted(emb.failures["item_id"]) == ["00005", "00033"] and not emb.text_mask[[5, 33]].any()
    want = sk.encode_catalog(sk.load_catalog(tmp_path / "cat.parquet", id="sku", title="name",
                                             path_col="category"), text_encoder=_Tiny(), progress=False)
    np.testing.assert_array_equal(np.asarray(emb.text), want.text)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_streamed_sample_selects_the_same_products_as_the_in_memory_sample(tmp_path, world, monkeypatch):
    p = _catalog_csv(tmp_path, n=61)
    mapping = {"id": "sku", "title": "name", "path_col": "category", "image": "picture"}
    pipe = sk.Pipeline(catalog=str(p), catalog_options=mapping, sample=25, sample_seed=7)
    checked = []
    from semcat_kit.datasets import mapping as catalog_mapping   # where load_catalog_chunks looks image files up

    real = catalog_mapping.check_image_file
    monkeypatch.setattr(catalog_mapping, "check_image_file", lambda f: (checked.append(Path(f).name), real(f))[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = pipe.load_catalog()
        assert len(whole) == 25
        for rank in range(world):
            checked.clear()
            frames, total = pipe.catalog_share(rank, world, chunk_size=8)
            got = pd.concat(list(frames))
            want = whole.iloc[rank::world]
            assert len(got) == total == len(want)
            for col in ("item_id", "title", "image_path"):
                assert got[col].tolist() == want[col].tolist(), (rank, col)
            # only this rank's image files were looked at (the rows with an image path)
            own = [f"{int(i)}.jpg" for i in want["item_id"] if int(i) % 5]
            assert sorted(checked) == sorted(own), rank
        frames, _ = pipe.catalog_share(0, world, chunk_size=8, rows_out=tmp_path / "rows.parquet")
        got = pd.concat(list(frames))
    assert got["item_id"].tolist() == whole["item_id"].iloc[0::world].tolist()    # rank 0's share, and ...
    assert pd.read_parquet(tmp_path / "rows.parquet")["item_id"].tolist() == whole["item_id"].tolist()  # ... all
    assert sample_positions(10, 12, 0).tolist() == list(range(10))    # --sample >= N: every product


def test_semcat_encode_sample_end_to_end_equals_the_in_memory_selection(tmp_path, tiny, capsys):
    p = _catalog_csv(tmp_path, n=50)
    cfg = _config(tmp_path / "c.yaml", id="sku", title="name", path_col="category")
    with pytest.warns(UserWarning, match="repaired 1 malformed"):    # warned although the count pass ran first
        _encode(["--catalog", str(p), "--config", str(cfg), "--cache-dir", str(tmp_path / "cache"),
                 "--chunk-size", "8", "--sample", "17", "--out", str(tmp_path / "emb")], capsys)
    with pytest.warns(UserWarning):
        cat = D.load_catalog(p, id="sku", title="name", path_col="category")
    want = sample_catalog(cat, 17, 0)                              # seed 0: the config's default
    emb = sk.Embeddings.load(tmp_path / "emb")
    assert emb.item_ids.tolist() == want["item_id"].tolist()
    np.testing.assert_array_equal(np.asarray(emb.text), _Tiny().encode_texts(want["title"].tolist()))


def test_encode_into_store_resumes_after_a_killed_run(tmp_path, tiny):
    df = pd.DataFrame({"item_id": [f"p{i}" for i in range(100)], "title": [f"toy {i}" for i in range(100)]})
    _Tiny.fail_after = 3                                    # killed in the 4th batch of 10
    with pytest.raises(KeyboardInterrupt):
        encode_into_store(df, _Tiny(), cache_dir=tmp_path, batch_size=10, chunk_size=20, progress=False)
    _Tiny.fail_after = None
    fill = encode_into_store(df, _Tiny(), cache_dir=tmp_path, batch_size=10, chunk_size=20, progress=False)
    assert fill.n == 100 and fill.stats["text_encoded"] == 70 and fill.stats["cached"]   # 30 were kept
    again = encode_into_store(iter([df.iloc[:50], df.iloc[50:]]), _Tiny(), cache_dir=tmp_path, progress=False)
    assert again.stats["text_encoded"] == 0 and again.n == 100
    with pytest.raises(ValueError, match=r"repeats id 'p3' \(.*and an earlier chunk\)"):
        encode_into_store(iter([df.iloc[:10], df.iloc[3:4]]), _Tiny(), cache_dir=tmp_path, progress=False)


# ------------------------------------------------------------------------------ memory
def _generated_csv(path: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    words = np.array(["red", "toy", "car", "wooden", "puzzle", "doll", "kit", "lego", "set", "blue", "large", "mini"])
    w = words[rng.integers(0, len(words), (n, 6))]
    names = pd.Series([" ".join(r) for r in w]) + " " + pd.Series(np.arange(n).astype(str))
    pd.DataFrame({"sku": np.char.add("sku", np.arange(n).astype(str)), "name": names,
                  "category": np.char.add("Toys > Kind ", (np.arange(n) % 50).astype(str)),
                  "brand": np.char.add("brand ", (np.arange(n) % 997).astype(str)),
                  "description": names + " -- a longer description of the product " + names}).to_csv(path, index=False)
    return path


def _peak_mb(mode: str, csv: Path, cache: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(HERE / "_encode_memory_case.py"), mode, str(csv), str(cache)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return float(r.stdout.split("peak_anon_mb:")[1].split()[0])


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads RssAnon from /proc")
def test_semcat_encode_private_memory_does_not_grow_with_the_catalog(tmp_path):
    """Peak RssAnon of `semcat encode` on a generated CSV: 30k vs 120k products streamed, and the
    whole-DataFrame path it replaced at 120k. Measured at 50k / 200k: 56 / 70 MB streamed, 282 MB
    whole (88 MB at 50k): the streamed path grows by ~100 bytes a product (store key index, id
    hashes), the whole one by ~1.3 kB (the DataFrame's Python strings)."""
    small, big = _generated_csv(tmp_path / "s.csv", 30_000), _generated_csv(tmp_path / "b.csv", 120_000)
    s_small = _peak_mb("stream", small, tmp_path / "c1")
    s_big = _peak_mb("stream", big, tmp_path / "c2")
    w_big = _peak_mb("whole", big, tmp_path / "c3")
    print(f"peak RssAnon: streamed 30k {s_small:.0f} MB, 120k {s_big:.0f} MB; whole-DataFrame 120k {w_big:.0f} MB")
    assert s_big - s_small < 30            # +90k products: bookkeeping only (measured +12 MB)
    assert w_big > s_big + 60              # the old path held the catalog (measured +118 MB at 120k, +75-78 MB
                                           # once take/save stopped building Python objects per id)


@pytest.mark.skipif(not TOYS.is_file(), reason="the Amazon toys CSV is not in the shared data")
def test_semcat_encode_real_toys_catalog_equals_the_in_memory_encode(tmp_path, tiny, capsys):
    """The real Amazon-toys CSV (10,000 products, 690 unlabelled) through `semcat encode` with the
    config mapping `semcat train` uses, against encode_catalog on load_catalog's DataFrame."""
    cfg = _config(tmp_path / "c.yaml", id="uniq_id", title="product_name",
                  path_col="amazon_category_and_sub_category")
    out = _encode(["--catalog", str(TOYS), "--config", str(cfg), "--cache-dir", str(tmp_path / "cache"),
                   "--chunk-size", "1024", "--out", str(tmp_path / "emb")], capsys)
    assert "rank 0/1: 10000 products" in out.out
    cat = sk.load_catalog(TOYS, id="uniq_id", title="product_name", path_col="amazon_category_and_sub_category")
    want = sk.encode_catalog(cat, text_encoder=_Tiny(), progress=False)
    emb = sk.Embeddings.load(tmp_path / "emb")
    assert emb.item_ids.tolist() == cat["item_id"].tolist()
    np.testing.assert_array_equal(np.asarray(emb.text), want.text)
    np.testing.assert_array_equal(emb.text_mask, want.text_mask)


@pytest.mark.slow
@pytest.mark.skipif(not TOYS.is_file(), reason="the Amazon toys CSV is not in the shared data")
def test_torchrun_two_ranks_stream_a_csv_catalog_like_one_process(tmp_path):
    """`torchrun --nproc-per-node=2 -m semcat_kit encode` on a CSV file (streamed by each rank, a
    malformed line repaired, --sample): the same products and vectors as one process and as the
    in-memory sample."""
    import yaml

    df = pd.read_csv(TOYS, dtype=str).head(90)
    df.to_csv(tmp_path / "toys.csv", index=False)
    lines = (tmp_path / "toys.csv").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 91                                           # one line a product: line k is row k - 1
    sampled = set(sample_positions(90, 61, 0).tolist())
    k = next(i for i, line in enumerate(lines[1:], 1) if i - 1 in sampled and line.count(",") == 8 and '"' not in line)
    f = lines[k].split(",")
    lines[k] = ",".join([f[0], f[1] + ", special edition"] + f[2:])            # an unquoted comma in the title
    (tmp_path / "toys.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        "text_encoder": "minilm", "image_encoder": None,
        "catalog": {"id": "uniq_id", "title": "product_name", "path_col": "amazon_category_and_sub_category"}}))
    common = ["encode", "--catalog", str(tmp_path / "toys.csv"), "--config", str(tmp_path / "c.yaml"),
              "--sample", "61", "--quiet", "--chunk-size", "16"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

    def run(args):
        r = torchrun.run(args, tmp_path, env, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        return r
    run([sys.executable, "-m", "semcat_kit", *common, "--cache-dir", str(tmp_path / "c1"), "--out",
         str(tmp_path / "e1")])
    two = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "semcat_kit",
               *common, "--cache-dir", str(tmp_path / "c2"), "--out", str(tmp_path / "e2")])
    assert "rank 0/2: 31 products" in two.stdout and "rank 1/2: 30 products" in two.stdout
    assert "malformed CSV line" in two.stderr
    with pytest.warns(UserWarning, match="repaired 1 malformed"):
        cat = sk.load_catalog(tmp_path / "toys.csv", id="uniq_id", title="product_name",
                              path_col="amazon_category_and_sub_category")
    want = sample_catalog(cat, 61, 0)
    a, b = sk.Embeddings.load(tmp_path / "e1"), sk.Embeddings.load(tmp_path / "e2")
    assert a.item_ids.tolist() == b.item_ids.tolist() == want["item_id"].tolist()
    assert ", special edition" in " ".join(want["title"])
    np.testing.assert_allclose(np.asarray(b.text), np.asarray(a.text), atol=1e-5, rtol=0)  # batches differ: ~1e-7


def test_semcat_encode_streams_real_images_relative_to_the_csv(tmp_path, myntra_styles, fashion_dir, capsys):
    """Real Myntra photos named by a CSV's image column (relative to the CSV's folder), one missing:
    streamed in chunks of 5, the same vectors as encode_catalog on load_catalog's DataFrame."""
    df = myntra_styles.iloc[:12]
    (tmp_path / "images").symlink_to(fashion_dir / "images")
    cat = pd.DataFrame({"id": df["id"].astype(str), "title": df["productDisplayName"],
                        "path": df["masterCategory"] + " > " + df["subCategory"],
                        "picture": [f"images/{i}.jpg" for i in df["id"]]})
    cat.loc[4, "picture"] = "images/absent.jpg"
    cat.to_csv(tmp_path / "cat.csv", index=False)
    import yaml

    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"text_encoder": None, "image_encoder": "efficientnet-lite0@64",
                                                     "catalog": {"image": "picture", "path_col": "path"}}))
    out = _encode(["--catalog", str(tmp_path / "cat.csv"), "--config", str(tmp_path / "c.yaml"), "--cache-dir",
                   str(tmp_path / "cache"), "--chunk-size", "5", "--batch-size", "4", "--device", "cpu",
                   "--out", str(tmp_path / "emb")], capsys)
    assert "12 products, encoded text -, image 11" in out.out and "absent.jpg" in out.err
    enc = sk.encoders.load("efficientnet-lite0@64", device="cpu")
    want = sk.encode_catalog(sk.load_catalog(tmp_path / "cat.csv", image="picture", path_col="path"),
                             image_encoder=enc, progress=False, batch_size=4)
    emb = sk.Embeddings.load(tmp_path / "emb")
    assert emb.item_ids.tolist() == cat["id"].tolist()
    np.testing.assert_array_equal(emb.image_mask, want.image_mask)
    assert not emb.image_mask[4] and emb.image_mask.sum() == 11
    np.testing.assert_allclose(np.asarray(emb.image), want.image, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_semcat_encode_resumes_after_sigkill(tmp_path):
    """A real kill: `semcat encode` is SIGKILLed mid-run (no exception handler, no flush runs); the
    chunks already written stay in the store (every shard in the manifest verifies), and the next
    run computes only the titles the store lacks, ending with every vector of a clean run."""
    import signal
    import time

    from semcat_kit.encode.store import VectorStore

    csv = _generated_csv(tmp_path / "cat.csv", 1000)
    cache, counts = tmp_path / "cache", tmp_path / "counts.txt"
    script = str(Path(__file__).parent / "_encode_kill_case.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, script, str(csv), str(cache), "0.15", str(counts)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def batches():
        return [int(x) for x in counts.read_text().split()] if counts.exists() else []
    t0 = time.time()
    while sum(batches()) < 450 and p.poll() is None and time.time() - t0 < 240:   # ~4 chunks of 100 written
        time.sleep(0.05)
    assert p.poll() is None, p.communicate()[1][-2000:]
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL
    done_before = sum(batches())
    assert 450 <= done_before < 1000
    store = VectorStore.for_encoder(cache, HashingTextEncoder(8).fingerprint, "text", 8, writer="check")
    kept = len(store)
    assert 400 <= kept <= done_before and kept % 100 == 0           # whole chunks, nothing torn
    counts.unlink()
    r = subprocess.run([sys.executable, script, str(csv), str(cache), "0", str(counts)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sum(batches()) == 1000 - kept                             # only what the store lacked
    assert f"encoded text {1000 - kept}" in r.stdout
    # every vector equals a clean run's
    clean, counts2 = tmp_path / "clean", tmp_path / "counts2.txt"
    r = subprocess.run([sys.executable, script, str(csv), str(clean), "0", str(counts2)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    a = VectorStore.for_encoder(cache, HashingTextEncoder(8).fingerprint, "text", 8, writer="check")
    b = VectorStore.for_encoder(clean, HashingTextEncoder(8).fingerprint, "text", 8, writer="check")
    assert len(a) == len(b) == 1000
    keys = sk.store.as_keys(b.dataset().to_table(columns=["key"]).column("key").to_pylist())   # every key b holds
    fa, va = a.get(keys)
    fb, vb = b.get(keys)
    assert fa.all() and fb.all()
    np.testing.assert_array_equal(va, vb)
