"""Bad input and faults that must be reported, never silent (issue 14; listed in docs/guarantees.md).

Each test fails on the code before its fix: the comment says what used to happen.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import semcat_kit as sk
from semcat_kit import datasets as D


# ------------------------------------------------------------------------------ one CSV reader
def read_products(path) -> pd.DataFrame:
    """The products of a file as `semcat predict --input` reads them (datasets.read_products), in one frame."""
    return pd.concat(list(D.read_products(path, what="--input")), ignore_index=True)


def test_csv_field_over_the_csv_module_limit_in_the_first_record(tmp_path):
    # before: _csv.Error "field larger than field limit (131072)" from the first-record peek
    long_title = "x" * (csv.field_size_limit() + 10)
    p = tmp_path / "c.csv"
    p.write_text(f"id,title,cat\n1,{long_title},A > B\n2,short,A > C\n", encoding="utf-8")
    df = D.load_catalog(p, path_col="cat")
    assert df["title"].str.len().tolist() == [len(long_title), 5]
    # and in a file that needs the csv-module repair pass (a malformed line further down)
    p.write_text(f"id,title,cat\n1,{long_title},A > B\n2,a, b,A > C\n", encoding="utf-8")
    with pytest.warns(UserWarning, match="repaired 1 malformed line"):
        df = D.load_catalog(p, path_col="cat")
    assert df["title"].tolist() == [long_title, "a, b"]
    assert csv.field_size_limit() == 131072   # the module-wide limit is restored


def test_csv_duplicate_column_names_are_refused(tmp_path):
    # before: pandas renamed the second 'title' to 'title.1' and it was silently ignored
    p = tmp_path / "c.csv"
    p.write_text("id,title,cat,title\n1,a,A > B,b\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"names a column more than once: 'title' \(columns \[2, 4\]\)"):
        D.load_catalog(p, path_col="cat")
    p.write_text("id,title ,cat, title\n1,a,A > B,b\n", encoding="utf-8")   # equal once stripped
    with pytest.raises(ValueError, match="more than once"):
        D.read_csv(p)
    with pytest.raises(ValueError, match=r"c.csv' names a column more than once"):
        read_products(p)
    df = pd.DataFrame([[1, "a", "A > B", "b"]], columns=["id", "title", "cat", "title"])
    with pytest.raises(ValueError, match=r"names column\(s\) \['title'\] more than once"):
        D.load_catalog(df, path_col="cat")


def test_predict_input_goes_through_the_catalog_reader(tmp_path, capsys):
    # before: a plain pd.read_csv took the first column of a malformed first row as the index,
    # shifting ids and titles (and `semcat predict` exited 0)
    p = tmp_path / "p.csv"
    p.write_text("id,title\n101,Shirt, blue, cotton\n102,Mug\n", encoding="utf-8")
    df = read_products(p)
    assert "101: malformed CSV line" in capsys.readouterr().err      # the repair is reported
    assert df["item_id"].tolist() == ["101", "102"]
    assert df["title"].tolist() == ["Shirt, blue, cotton", "Mug"]
    # a BOM is dropped (the id column is found), not-UTF-8 text names the file
    p.write_bytes("\ufeffid,title\n7,Tee\n".encode("utf-8"))
    assert read_products(p)["item_id"].tolist() == ["7"]
    p.write_bytes(b"id,title\n7,Caf\xe9\n")
    with pytest.raises(ValueError, match=r"--input '.*p.csv' is not UTF-8"):
        read_products(p)
    # extra fields with no title column to absorb them: an error naming the line, not a shift
    p.write_text("id,image\n1,a.jpg,b.jpg\n", encoding="utf-8")
    with pytest.raises(ValueError, match="more fields than the 2 header columns"):
        read_products(p)


def test_every_csv_read_uses_the_one_reader():
    pkg = Path(sk.__file__).parent
    files = list(pkg.rglob("*.py")) + list((pkg.parent / "scripts").glob("*.py")) + list((pkg.parent / "bench").glob("*.py"))
    plain = [f"{p.name}:{k + 1}" for p in files for k, line in enumerate(p.read_text().splitlines())
             if "pd.read_csv(" in line and p != pkg / "datasets" / "csv_files.py"]
    assert plain == []


# ------------------------------------------------------------------------------ not-a-file images
def _tiny_jpeg(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 10, 10)).save(path)
    return path


def test_fifo_and_device_images_are_refused_without_reading(tmp_path):
    # before: hashing read_bytes() blocked forever on a FIFO and filled memory on /dev/zero
    from semcat_kit import images as I
    from semcat_kit.encode.batches import image_key

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    good = _tiny_jpeg(tmp_path / "good.jpg")
    for path, kind in ((fifo, "FIFO"), ("/dev/zero", "character device"), (tmp_path, "folder")):
        with pytest.raises(I.ImageError, match=f"not a regular file \\(a {kind}"):
            I.check_image_file(path)
        with pytest.raises(I.ImageError, match="not a regular file"):
            I.load_image(path)
        key, reason = image_key(str(path))
        assert key is None and reason.startswith("not a regular file")
    with pytest.raises(I.ImageError, match="file too large"):
        I.check_image_file(good, max_bytes=10)
    # the streamed digest equals the whole-file digest (cache keys unchanged)
    from semcat_kit.encode.store import content_key

    assert image_key(str(good)) == (content_key(good.read_bytes()), None)
    assert I.read_image_bytes(good) == good.read_bytes()


def test_catalog_loader_reports_fifo_images(tmp_path):
    img = tmp_path / "img"
    img.mkdir()
    _tiny_jpeg(img / "1.jpg")
    os.mkfifo(img / "2.jpg")
    (tmp_path / "c.csv").write_text("id,title,cat,image\n1,a,A > B,img/1.jpg\n2,b,A > B,img/2.jpg\n"
                                    "3,c,A > B,/dev/zero\n", encoding="utf-8")
    df = D.load_catalog(tmp_path / "c.csv", path_col="cat", image="image")
    assert df["image_path"].notna().tolist() == [True, False, False]
    rep = df.attrs["report"].set_index("item_id")["problem"]
    assert "not a regular file (a FIFO" in rep["2"] and "character device" in rep["3"]
    # images found by id in a folder: the FIFO is reported, not returned as a path
    (tmp_path / "d.csv").write_text("id,title,cat\n1,a,A > B\n2,b,A > B\n", encoding="utf-8")
    df = D.load_catalog(tmp_path / "d.csv", path_col="cat", images_dir=img)
    assert df["image_path"].notna().tolist() == [True, False]
    assert "not a regular file" in df.attrs["report"].set_index("item_id")["problem"]["2"]


def test_predictor_reports_a_fifo_image_instead_of_hanging(tmp_path):
    from semcat_kit import encode_catalog
    from semcat_kit.encode.encoders import Encoder

    class Img(Encoder):   # a tiny image encoder: the point is what is read, not the vectors
        name, fingerprint, text_dim, image_dim = "tiny", "tiny-1", 0, 3
        device = __import__("torch").device("cpu")
        image_transform = None

        def embed_image_batch(self, x):
            return np.ones((len(x), 3), np.float32)

    fifo = tmp_path / "p.jpg"
    os.mkfifo(fifo)
    cat = pd.DataFrame({"item_id": ["a"], "title": ["x"], "image_path": [str(fifo)]})
    try:
        emb = encode_catalog(cat, image_encoder=Img(), progress=False)
    except TypeError:   # Encoder's constructor differs: the key function is what matters here
        pytest.skip("Encoder cannot be subclassed this simply")
    assert not emb.image_mask[0] and "not a regular file" in emb.failures["reason"].iloc[0]


# ------------------------------------------------------------------------------ exported heads
@pytest.fixture(scope="module")
def small_head(tmp_path_factory):
    from semcat_kit.encode.embeddings import Embeddings

    rng = np.random.default_rng(0)
    n = 40
    tax = sk.Taxonomy.from_paths(["A > a", "A > b", "B > c"])
    emb = Embeddings([str(i) for i in range(n)], rng.normal(size=(n, 6)).astype(np.float32), None,
                     np.ones(n, bool), np.zeros(n, bool))
    run = sk.train(emb, np.arange(n) % 3, taxonomy=tax, progress=False,
                   config=sk.TrainConfig(epochs=1, proj_dim=4, hidden=4, device="cpu", early_stopping=None,
                                         fusion="text"))
    return sk.export_head(run, tmp_path_factory.mktemp("head") / "h", onnx=False)


def _edited(src: Path, dst: Path, edit) -> Path:
    import shutil

    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    edit(cfg)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_config_files_cannot_turn_checksums_off(small_head, tmp_path):
    # before: `files: {}` loaded without verifying a single file
    d = _edited(small_head, tmp_path / "h", lambda c: c.update(files={}))
    with pytest.raises(ValueError, match=r"key 'files' lacks the checksum of \['model.safetensors', 'labels.json', "
                                         r"'taxonomy.json', 'head.pt2'\]"):
        sk.load_head(d)
    d = _edited(small_head, tmp_path / "h2", lambda c: c["files"].update({"../../etc/passwd": "0" * 64}))
    with pytest.raises(ValueError, match=r"key 'files' lists '../../etc/passwd'"):
        sk.load_head(d)
    d = _edited(small_head, tmp_path / "h3", lambda c: c["files"].update({"labels.json": "nope"}))
    with pytest.raises(ValueError, match=r"key 'files.labels.json' must be a sha256"):
        sk.load_head(d)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(n_classes="3"), r"key 'n_classes' must be integer, not str"),
    (lambda c: c.pop("backends"), r"lacks the key 'backends'"),
    (lambda c: c["architecture"].update(text_dim="6"), r"key architecture.'text_dim' must be integer or null"),
    (lambda c: c["architecture"].pop("n_classes"), r"lacks the key architecture.'n_classes'"),
    (lambda c: c.update(inputs=["image", "image_mask"]), r"key 'inputs' \['image', 'image_mask'\] does not match"),
    (lambda c: c.update(backends=["torch", "pickle"]), r"key 'backends'"),
    (lambda c: c.update(label_representation={"kind": "magic"}), r"label_representation.kind"),
    (lambda c: c.update(encoders=[]), r"key 'encoders' must be object, not list"),
])
def test_config_json_is_validated_naming_the_key(small_head, tmp_path, edit, message):
    d = _edited(small_head, tmp_path / "h", edit)
    with pytest.raises(ValueError, match=message):
        sk.load_head(d)


def test_expected_sha256_pins_the_whole_folder(small_head, tmp_path):
    import hashlib
    import shutil

    good = hashlib.sha256((small_head / "config.json").read_bytes()).hexdigest()
    assert sk.load_head(small_head, backend="pt2", expected_sha256=good).n_classes == 3
    assert sk.Predictor.load(small_head, device="cpu", expected_sha256=good.upper(),
                             text_encoder=_FakeText()).head.n_classes == 3
    # a tampered folder whose config.json was re-signed by the tamperer: the folder's own checksums
    # pass, the caller's checksum does not
    d = tmp_path / "evil"
    shutil.copytree(small_head, d)
    (d / "head.pt2").write_bytes((d / "head.pt2").read_bytes() + b"\0")
    cfg = json.loads((d / "config.json").read_text())
    cfg["files"]["head.pt2"] = hashlib.sha256((d / "head.pt2").read_bytes()).hexdigest()
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"config.json has sha256 [0-9a-f]{64} but expected_sha256 is"):
        sk.load_head(d, backend="pt2", expected_sha256=good)
    # the default backend reads data only
    assert sk.load_head.__defaults__[0] == "torch" and "executes code" in sk.load_head.__doc__


class _FakeText:
    """Stands in for the recorded text encoder (fingerprint and dim of the small head)."""
    name, fingerprint, text_dim = "fake", None, 6


# ------------------------------------------------------------------------------ unreadable files
def test_truncated_or_foreign_checkpoint_is_a_value_error_naming_the_file(tmp_path):
    import pickle

    import torch

    from semcat_kit.learn.training import CHECKPOINT_FORMAT, load_checkpoint

    good = tmp_path / "good.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "epoch": 3, "w": torch.ones(1000)}, good)
    assert load_checkpoint(good)["epoch"] == 3
    data = good.read_bytes()
    cases = {"truncated.pt": data[: len(data) // 2], "empty.pt": b"", "text.pt": b"hello",
             # a pickle of an arbitrary object: torch's message suggests weights_only=False
             "pickled.pt": pickle.dumps(argparse.Namespace(x=1))}
    for name, raw in cases.items():
        (tmp_path / name).write_bytes(raw)
        with pytest.raises(ValueError) as e:
            load_checkpoint(tmp_path / name)
        msg = str(e.value)
        assert name in msg and "train again without resume=" in msg and "weights_only" not in msg, msg
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt is not a semcat_kit training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


# ------------------------------------------------------------------------------ silent data changes
def test_rows_with_no_usable_modality_are_named_in_training():
    # before: rows whose every mask was False trained on zero vectors without a word
    from semcat_kit import contracts
    from semcat_kit.encode.embeddings import Embeddings

    rng = np.random.default_rng(0)
    n = 30
    tmask, imask = np.ones(n, bool), np.ones(n, bool)
    tmask[[4, 9]] = imask[[4, 9]] = False
    imask[5] = False      # text only: usable
    emb = Embeddings([f"p{i}" for i in range(n)], rng.normal(size=(n, 6)).astype(np.float32),
                     rng.normal(size=(n, 5)).astype(np.float32), tmask, imask)
    tax = sk.Taxonomy.from_paths(["A > a", "A > b", "B > c"])
    with pytest.warns(contracts.EmptyRowsWarning, match=r"2 of 30 row\(s\) have no usable modality.*row 4 \(item 'p4'\), "
                                              r"row 9 \(item 'p9'\)"):
        sk.train(emb, np.arange(n) % 3, taxonomy=tax, progress=False,
                 config=sk.TrainConfig(epochs=1, proj_dim=4, hidden=4, device="cpu", early_stopping=None))
    with pytest.raises(ValueError, match="no usable modality"):
        contracts.as_embedding_table(emb, empty="error")
    with warnings.catch_warnings():   # prediction reports them itself: no warning there
        warnings.simplefilter("error")
        contracts.as_embedding_table(emb)


def test_image_path_none_beside_an_image_column_is_refused():
    # before: 'image_path' (all None) won and the 'image' column was silently ignored
    from semcat_kit.datasets import products_frame   # what Predictor reads products with

    df = pd.DataFrame({"item_id": ["a", "b"], "title": ["x", "y"], "image_path": [None, "/i/b.jpg"],
                       "image": ["/i/a.jpg", "/i/b.jpg"]})
    with pytest.raises(ValueError, match=r"both an 'image_path' and an 'image' column.*items \['a'\]"):
        products_frame(df)
    ok = df.assign(image_path=["/i/a.jpg", "/i/b.jpg"])
    assert products_frame(ok)["image_path"].tolist() == ["/i/a.jpg", "/i/b.jpg"]


# ------------------------------------------------------------------------------ plotly labels
def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):   # legendgroup is an identifier plotly never displays
        for k, v in obj.items():
            if k != "legendgroup":
                yield from _strings(v)
    elif isinstance(obj, (list, tuple, np.ndarray)):
        for v in (obj.tolist() if isinstance(obj, np.ndarray) else obj):
            yield from _strings(v)


def test_every_figure_escapes_category_and_run_names():
    # before: legend names, tick labels, node hover texts and default titles drew raw names, so a
    # category "<b>Evil</b>" rendered as markup (and "<a href=...>" as a link), "%{x}" was templated
    from semcat_kit import viz
    from semcat_kit.labels.similarity import Neighbors

    evil = '<b>Evil</b> & "Co" 100%{x}'
    tax = sk.Taxonomy.from_paths([f"{evil} | <i>sub</i> | {evil}", f"{evil} | <i>sub</i> | Mugs",
                                  "Home | Kitchen | Cups", "Home | Kitchen | <a href='x'>Plates</a>"], sep=" | ")
    C = tax.n_classes
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(C, 8)).astype(np.float32)
    nb = Neighbors(np.array([[(i + 1) % C, (i + 2) % C] for i in range(C)]), np.full((C, 2), 0.5, np.float32))
    y = np.arange(40) % C
    probs = rng.dirichlet(np.ones(C), size=40).astype(np.float32)
    hist = pd.DataFrame({"epoch": [1, 2], "loss": [1.0, 0.5]})
    figs = {
        "label_map": viz.label_map(emb, tax, method="pca"),
        "similarity_graph": viz.similarity_graph(nb, tax, k=2, layout="circular"),
        "confusion_heatmap": viz.confusion_heatmap(probs, y, tax, 0, neighbors=nb, size=C),
        "severity_histogram": viz.severity_histogram({evil: (probs, y)}, tax),
        "training_curves": viz.training_curves({evil: hist, "plain": hist}),
    }
    for name, fig in figs.items():
        texts = list(_strings(fig.to_plotly_json()))
        raw = [t for t in texts if "<b>Evil" in t or "<i>sub" in t or "<a href" in t or "100%{x}" in t]
        assert raw == [], f"{name}: unescaped names {raw[:3]}"
        assert any("&lt;b&gt;Evil&lt;/b&gt; &amp; \"Co\" 100&#37;{x}" in t for t in texts), name
    # what plotly displays after decoding the entities is the name as written
    import html as _html

    assert _html.unescape(viz.plot_text(evil)) == evil
