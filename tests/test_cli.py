"""The ``semcat`` command line: train end to end on the tutorial catalog (and a CSV catalog),
predictions equal to Predictor.predict, --help, and one-line errors with a non-zero exit."""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import _export_case as ec
import semcat_kit as sk
from semcat_kit import cli
from semcat_kit.cli.predict import product_chunks
from semcat_kit import datasets as D
from semcat_kit.datasets import tutorial_dir

torch.set_num_threads(1)
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
SMALL = {"epochs": 2, "proj_dim": 64, "hidden": 128, "batch_size": 64, "lr": 0.003, "device": "cpu",
         "smoothing": "semantic", "k": 5, "alpha": 0.2}


def _write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _yaml(d: dict) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False)


def _one_line_error(capsys, *needles) -> str:
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("semcat: error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def cache(request):
    return str(request.config.cache.mkdir("semcat_export_emb"))


@pytest.fixture(scope="module")
def trained(cache, tmp_path_factory):
    """``semcat train --catalog tutorial`` with a 2-epoch config on the 240-product sample."""
    root = tmp_path_factory.mktemp("cli")
    cfg = _write_config(root / "config.yaml", _yaml({
        "text_encoder": "minilm", "image_encoder": "efficientnet-lite0", "sample": ec.N_ITEMS, "seed": ec.SEED,
        "split": {"val": 0.1, "test": 0.2, "seed": 0, "min_count": 3}, "neighbors": {"k": 20},
        "train": SMALL, "export": {"onnx": True, "pt2": False}}))
    out = root / "head"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli.main(["train", "--catalog", "tutorial", "--config", str(cfg), "--out", str(out),
                       "--cache-dir", cache, "--quiet"])
    return rc, buf.getvalue(), out, cfg


# ------------------------------------------------------------------------------ train
def test_train_end_to_end_on_the_tutorial_catalog(trained, cache):
    rc, stdout, out, _ = trained
    assert rc == 0, stdout
    assert f"catalog: {ec.N_ITEMS} products" in stdout and "test metrics (" in stdout
    head = sk.load_head(out)
    cfg = head.config
    assert cfg["train_config"]["epochs"] == 2 and cfg["train_config"]["smoothing"] == "semantic"
    # the data decides what the YAML leaves "auto", and it is printed; explicit values win
    assert "training config: TrainConfig(" in stdout and "# decided by the data (" in stdout
    assert "solver: minibatch (an MLP head" in stdout         # which solver ran, and why (this config: an MLP)
    assert cfg["train_config"]["lr"] == SMALL["lr"] and cfg["train_config"]["min_steps"] == 0
    assert cfg["encoders"]["text_encoder"]["name"] == "minilm"
    assert sorted(cfg["files"]) == ["head.onnx", "labels.json", "model.safetensors", "taxonomy.json"]
    metrics = cfg["metadata"]["test_metrics"]
    # printed metrics = stored metrics
    for k, v in metrics.items():
        assert (f"{k:>24s}  {int(v)}" if k == "n" else f"{k:>24s}  {v:.4f}") in stdout
    # and they are what the exported head measures on the same test split
    df = ec.sample()
    tax = sk.Taxonomy.from_paths(df["label"])
    assert head.classes == list(tax.classes)
    y = tax.index_of(df["label"].tolist())
    sp = sk.split(y, val=0.1, test=0.2, seed=0, min_count=3)
    assert cfg["metadata"]["split"]["n_test"] == len(sp.test) > 0 and cfg["metadata"]["split"]["test"] == 0.2
    emb = ec.embed(df, cache)
    te = ec.encoders()[0]
    nbrs = sk.similarity.label_neighbors(te.encode_texts(sk.similarity.class_texts(tax)), k=20)
    again = sk.evaluate(head.predict_proba(emb.take(sp.test)), y[sp.test], tax, neighbors=nbrs)
    for k, v in again.items():
        assert metrics[k] == pytest.approx(float(v), abs=1e-6), k
    assert 0.0 <= metrics["top1"] <= 1.0 and metrics["n"] == len(sp.test)


def test_train_on_a_csv_catalog_text_only(cache, tmp_path, capsys, monkeypatch):
    from semcat_kit.orchestrate.pipeline import Pipeline

    trained_without_table = []
    real_train = Pipeline.train

    def train(self, *a, **k):          # the catalog table is released before training
        trained_without_table.append("catalog" not in self.built and "labels" in self.built)
        return real_train(self, *a, **k)
    monkeypatch.setattr(Pipeline, "train", train)
    df = ec.sample()
    csv = tmp_path / "shop.csv"
    # one pair of casual shoes (11 in the sample) filed under Apparel > Topwear, a stray path as in
    # the real Myntra data (3 belts there): merged, and said so
    label = df["label"].copy()
    label[label.eq("Footwear > Shoes > Casual Shoes").idxmax()] = "Apparel > Topwear > Casual Shoes"
    pd.DataFrame({"sku": df["item_id"], "name": df["title"], "category": label}).to_csv(csv, index=False)
    cfg = _write_config(tmp_path / "c.yaml", _yaml({
        "text_encoder": "minilm", "image_encoder": None,
        "catalog": {"id": "sku", "title": "name", "path_col": "category"},
        "train": {**SMALL, "smoothing": "tree"}, "export": {"onnx": False, "torchscript": True}}))
    with pytest.warns(FutureWarning, match=r"'export.torchscript' is replaced by 'export.pt2'"):   # a 0.1 config
        rc = cli.main(["train", "--catalog", str(csv), "--config", str(cfg), "--out", str(tmp_path / "h"),
                       "--cache-dir", cache, "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "test metrics (" in out and trained_without_table == [True]
    assert ("'Apparel > Topwear > Casual Shoes' (1 item) merged into 'Footwear > Shoes > Casual Shoes' "
            "(10 items)") in out
    head = sk.load_head(tmp_path / "h", backend="pt2")
    assert head.uses == ("text", "image") or head.uses == ("text",)
    assert head.config["encoders"]["image_encoder"] is None and head.config["input_dims"]["image"] is None
    assert "head.pt2" in head.config["files"] and "head.onnx" not in head.config["files"]
    assert not list((tmp_path / "h").glob("*torchscript*"))
    # --out exists now: refused without --overwrite
    rc = cli.main(["train", "--catalog", str(csv), "--config", str(cfg), "--out", str(tmp_path / "h")])
    assert rc == 1
    _one_line_error(capsys, "exists", "--overwrite")


def test_train_on_a_csv_with_its_own_separator_keeps_the_tree(cache, tmp_path, capsys):
    df = ec.sample()
    csv = tmp_path / "shop.csv"
    pd.DataFrame({"sku": df["item_id"], "name": df["title"],
                  "category": df["label"].str.replace(" > ", " / ", regex=False)}).to_csv(csv, index=False)
    cfg = _write_config(tmp_path / "c.yaml", _yaml({
        "text_encoder": "minilm", "image_encoder": None,
        "catalog": {"id": "sku", "title": "name", "path_col": "category", "sep": " / "},
        "train": SMALL, "export": {"onnx": False, "pt2": False}}))
    rc = cli.main(["train", "--catalog", str(csv), "--config", str(cfg), "--out", str(tmp_path / "h"),
                   "--cache-dir", cache, "--quiet"])
    assert rc == 0, capsys.readouterr().err
    tax = sk.load_head(tmp_path / "h").taxonomy
    assert tax.max_depth == 3 and all(" / " in c for c in tax.classes)


# ------------------------------------------------------------------------------ predict
def _products_csv(tmp_path: Path, n: int = 30) -> tuple[Path, pd.DataFrame]:
    """Tutorial products as a shop would send them: relative image names, one broken image, one
    product without title, one without image."""
    df = ec.sample().head(n).reset_index(drop=True)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all" * 8)
    rows = pd.DataFrame({"sku": df["item_id"], "title": df["title"].astype(object),
                         "image": [Path(p).name for p in df["image_path"]]})
    rows.loc[1, "image"] = str(broken)
    rows.loc[2, "title"] = None
    rows.loc[3, "image"] = None
    csv = tmp_path / "products.csv"
    rows.to_csv(csv, index=False)
    images = tutorial_dir() / "images"
    expected = pd.DataFrame({"item_id": rows["sku"], "title": rows["title"],
                             "image_path": [None if pd.isna(v) else (v if os.path.isabs(v) else str(images / v))
                                            for v in rows["image"]]})
    return csv, expected


def _read_preds(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"item_id": str}, keep_default_na=False, na_values=[""])


@pytest.mark.parametrize("crm", [False, True])
def test_predict_equals_predictor(trained, cache, tmp_path, capsys, crm):
    out = trained[2]
    csv, products = _products_csv(tmp_path)
    args = ["predict", "--model", str(out), "--input", str(csv), "--images", str(tutorial_dir() / "images"),
            "--id-col", "sku", "--output", str(tmp_path / "preds.csv"), "--top-k", "3", "--cache-dir", cache, "--quiet"]
    rc = cli.main(args + (["--crm"] if crm else []))
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert f"wrote {len(products)} predictions" in captured.out and "broken.jpg" in captured.err
    got = _read_preds(tmp_path / "preds.csv")
    te, ie = ec.encoders()
    want = sk.Predictor.load(out, text_encoder=te, image_encoder=ie).predict(products, top_k=3, crm=crm,
                                                                             cache_dir=cache)
    assert list(got.columns) == list(want.columns)
    for c in want.columns:
        if c.startswith(("prob_", "exp_dist_")):
            np.testing.assert_allclose(got[c].to_numpy(float), want[c].to_numpy(float), atol=1e-12, err_msg=c)
        else:
            assert got[c].fillna("").tolist() == want[c].fillna("").tolist(), c
    assert got.loc[1, "used"] == "text" and "broken.jpg" in got.loc[1, "failures"]
    # semcat train judged CRM on the val split (issue 27: CRM collapses on flat probabilities); --crm says so
    trust = sk.load_head(out).config["metadata"]["crm_trust"]
    assert trust["ok"] == (trust["confidence"] >= trust["threshold"])
    assert ("CRM decoding (--crm): " + ("can be used" if trust["ok"] else "FLAGGED")) in trained[1]
    assert ("--crm is flagged for this head" in captured.err) == (crm and not trust["ok"])
    assert got.loc[2, "used"] == "image" and got.loc[3, "used"] == "text"
    assert got["pred_1"].notna().all()


def test_train_exports_hedging_thresholds_and_predict_precision(trained, cache, tmp_path, capsys):
    """semcat train calibrates the hedging thresholds on its val split; --precision adds the hedged columns
    (those of Predictor.predict(precision=)), and a precision it cannot serve is a one-line error."""
    rc, stdout, out, _ = trained
    head = sk.load_head(out)
    n_val = head.config["metadata"]["split"]["n_val"]
    assert head.hedging is not None and head.hedging.n == n_val > 0
    assert f"hedging thresholds (calibrated on {n_val} val products" in stdout
    assert "precision 0.995: root for every product" in stdout          # ~24 val products cannot certify it
    csv, products = _products_csv(tmp_path)
    args = ["predict", "--model", str(out), "--input", str(csv), "--images", str(tutorial_dir() / "images"),
            "--id-col", "sku", "--output", str(tmp_path / "preds.csv"), "--top-k", "2", "--cache-dir", cache, "--quiet"]
    assert cli.main(args + ["--precision", "0.9"]) == 0
    assert "hedged at precision 0.9 (threshold" in capsys.readouterr().out
    got = _read_preds(tmp_path / "preds.csv")
    te, ie = ec.encoders()
    want = sk.Predictor.load(out, text_encoder=te, image_encoder=ie).predict(products, top_k=2, cache_dir=cache,
                                                                             precision=0.9, progress=False)
    assert list(got.columns) == list(want.columns) and "needs_review" in got.columns
    assert got["node"].fillna("").tolist() == want["node"].fillna("").tolist()
    assert got["is_leaf"].tolist() == want["is_leaf"].tolist()
    assert got["needs_review"].tolist() == want["needs_review"].tolist()
    np.testing.assert_allclose(got["node_prob"].to_numpy(float), want["node_prob"].to_numpy(float), atol=1e-12)
    assert cli.main(args + ["--precision", "0.975"]) == 1
    _one_line_error(capsys, "--precision 0.975", "no threshold was calibrated", "calibrated: [0.9, 0.95")
    assert cli.main(args + ["--precision", "1.5"]) == 1
    _one_line_error(capsys, "--precision must lie strictly between 0 and 1")


def test_predict_finds_images_by_id(trained, cache, tmp_path, capsys):
    """Without an image column, --images DIR gives DIR/<id>.jpg."""
    df = ec.sample().head(5)
    csv = tmp_path / "p.csv"
    pd.DataFrame({"id": df["item_id"], "title": df["title"]}).to_csv(csv, index=False)
    rc = cli.main(["predict", "--model", str(trained[2]), "--input", str(csv), "--images",
                   str(tutorial_dir() / "images"), "--output", str(tmp_path / "o.csv"), "--cache-dir", cache, "--quiet"])
    assert rc == 0, capsys.readouterr().err
    got = _read_preds(tmp_path / "o.csv")
    assert got["used"].tolist() == ["text+image"] * 5 and got["item_id"].tolist() == df["item_id"].tolist()
    # the output gets the usual umask permissions, not the private 0600 of its temporary file
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "o.csv").stat().st_mode & 0o777 == 0o666 & ~umask


def test_train_writes_the_split_ids_and_predict_on_the_test_ids_reproduces_the_test_metrics(trained, cache, tmp_path,
                                                                                          capsys):
    """split.csv in the head folder (item_id, split): `semcat predict` on its test ids gives the printed
    test top-1, with the images, and with --text-only the printed titles-only top-1."""
    rc, stdout, out, _ = trained
    head = sk.load_head(out)
    meta = head.config["metadata"]
    split = pd.read_csv(out / "split.csv", dtype=str)
    assert list(split.columns) == ["item_id", "split"] and meta["split"]["ids_file"] == "split.csv"
    counts = split["split"].value_counts()
    assert (counts["train"], counts["val"], counts["test"]) == (meta["split"]["n_train"], meta["split"]["n_val"],
                                                                 meta["split"]["n_test"])
    df = ec.sample()
    test = df.set_index("item_id").loc[split.loc[split["split"] == "test", "item_id"]].reset_index()
    csv = tmp_path / "test.csv"
    pd.DataFrame({"id": test["item_id"], "title": test["title"],
                  "image": [Path(p).name for p in test["image_path"]]}).to_csv(csv, index=False)
    args = ["predict", "--model", str(out), "--input", str(csv), "--images", str(tutorial_dir() / "images"),
            "--output", str(tmp_path / "p.csv"), "--top-k", "1", "--cache-dir", cache, "--quiet"]
    truth = head.taxonomy.resolve(test["label"].tolist())
    printed = float(re.search(r"^\s+top1  ([0-9.]+)$", stdout, re.M).group(1))
    assert cli.main(args) == 0
    top1 = float(np.mean(_read_preds(tmp_path / "p.csv")["pred_1"].to_numpy() == np.array(truth, dtype=object)))
    assert top1 == pytest.approx(meta["test_metrics"]["top1"], abs=1e-9) and f"{top1:.4f}" == f"{printed:.4f}"
    # titles alone: the number semcat train printed (and stored) for it
    blind = float(re.search(r"without images \(titles only, .*\): top1 ([0-9.]+)", stdout).group(1))
    assert cli.main(args + ["--text-only"]) == 0
    got = _read_preds(tmp_path / "p.csv")
    assert set(got["used"]) == {"text"}
    top1 = float(np.mean(got["pred_1"].to_numpy() == np.array(truth, dtype=object)))
    assert top1 == pytest.approx(meta["test_metrics_text_only"]["top1"], abs=1e-9) and f"{top1:.4f}" == f"{blind:.4f}"


def test_predict_without_the_images_of_an_image_head_is_refused_unless_text_only(trained, cache, tmp_path, capsys):
    """The README's example (--id-col / --title-col only) on a head trained on images: one-line refusal naming
    the head's image input and its measured cost; --text-only predicts from titles and says the cost; the
    Predictor API warns."""
    from semcat_kit.ship.predictor import MissingImagesWarning

    out = trained[2]
    meta = sk.load_head(out).config["metadata"]
    df = ec.sample().head(6)
    csv = tmp_path / "p.csv"
    pd.DataFrame({"sku": df["item_id"], "name": df["title"]}).to_csv(csv, index=False)
    args = ["predict", "--model", str(out), "--input", str(csv), "--id-col", "sku", "--title-col", "name",
            "--output", str(tmp_path / "o.csv"), "--cache-dir", cache, "--quiet"]
    assert cli.main(args) == 1
    full, blind = meta["test_metrics"]["top1"], meta["test_metrics_text_only"]["top1"]
    _one_line_error(capsys, "has no image column", "image encoder 'efficientnet-lite0",
                    f"was {blind:.3f} instead of {full:.3f}", "--text-only")
    assert not (tmp_path / "o.csv").exists()
    assert cli.main(args + ["--text-only"]) == 0
    captured = capsys.readouterr()
    assert "--text-only: the head in" in captured.out and f"{blind:.3f} instead of {full:.3f}" in captured.out
    assert _read_preds(tmp_path / "o.csv")["used"].tolist() == ["text"] * 6
    te, ie = ec.encoders()
    pred = sk.Predictor.load(out, text_encoder=te, image_encoder=ie)
    with pytest.warns(MissingImagesWarning, match=r"no image column .* trained on titles and images .* instead of"):
        pred.predict(df[["item_id", "title"]], cache_dir=cache, progress=False)


def test_predict_bad_device_and_repeated_ids_are_one_line_errors(tmp_path, capsys):
    csv = tmp_path / "p.csv"
    csv.write_text("id,title\n1,shirt\n")
    base = ["predict", "--model", str(tmp_path / "nohead"), "--output", str(tmp_path / "o.csv")]
    assert cli.main(base + ["--input", str(csv), "--device", "gpu"]) == 1    # was a RuntimeError traceback
    _one_line_error(capsys, "--device='gpu' is not a device", "cpu")
    if not torch.cuda.is_available():
        assert cli.main(base + ["--input", str(csv), "--device", "cuda"]) == 1
        _one_line_error(capsys, "--device='cuda' but CUDA is not available", "'auto'")
    csv.write_text("sku,title\n7,shirt\n8,jeans\n7,shoes\n")
    assert cli.main(base + ["--input", str(csv), "--id-col", "sku"]) == 1
    _one_line_error(capsys, "p.csv", "column 'sku' repeats id '7'", "lines [2, 4]")
    assert not (tmp_path / "o.csv").exists()


def test_predict_output_folder_is_a_one_line_error_before_any_work(tmp_path, capsys):
    csv = tmp_path / "p.csv"
    csv.write_text("id,title\n1,shirt\n")
    (tmp_path / "outdir").mkdir()
    # --model does not exist: the --output check comes first, before loading or encoding anything
    assert cli.main(["predict", "--model", str(tmp_path / "nohead"), "--input", str(csv),
                     "--output", str(tmp_path / "outdir")]) == 1
    err = _one_line_error(capsys, "--output", "is a folder", "predictions.csv")
    assert ".tmp" not in err


# ------------------------------------------------------------------------------ errors
def test_print_config_is_the_template_and_leaves_the_budget_to_the_data(tmp_path, capsys):
    """`semcat train --print-config > c.yaml` is the help's template, valid as a config on its own (no
    --catalog/--out needed), and its training config trains the budget the defaults train: an
    explicit `epochs:` in the template would have switched the data-aware budget off."""
    from semcat_kit.orchestrate.config import CONFIG_TEMPLATE, read_train_config

    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--print-config"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out == CONFIG_TEMPLATE
    (tmp_path / "c.yaml").write_text(out)
    cfg = read_train_config(tmp_path / "c.yaml")["train"]
    assert (cfg.epochs, cfg.min_steps, cfg.early_stopping) == ("auto", "auto", "auto")
    for n_train, n_val in ((500, 60), (2080, 323), (30_000, 4000)):
        mine, default = cfg.resolve(n_train, n_val), sk.TrainConfig().resolve(n_train, n_val)
        assert mine.budget(n_train) == default.budget(n_train)
        assert mine.epochs_for(n_train) * -(-n_train // mine.batch_size) >= min(600, 30 * -(-n_train // 256))
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert "--print-config" in capsys.readouterr().out


def test_config_unknown_keys_are_named(tmp_path, capsys):
    cfg = _write_config(tmp_path / "c.yaml", _yaml({"train": {"epochz": 2}}))
    assert cli.main(["train", "--catalog", "tutorial", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 1
    _one_line_error(capsys, "unknown key 'train.epochz'", "c.yaml")
    cfg = _write_config(tmp_path / "c2.yaml", _yaml({"text_encoders": "minilm"}))
    assert cli.main(["train", "--catalog", "tutorial", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 1
    _one_line_error(capsys, "unknown key 'text_encoders'")
    cfg = _write_config(tmp_path / "c3.yaml", _yaml({"split": {"tset": 0.2}}))
    assert cli.main(["train", "--catalog", "tutorial", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 1
    _one_line_error(capsys, "unknown key 'split.tset'")
    cfg = _write_config(tmp_path / "c4.yaml", _yaml({"train": {"smoothing": "fuzzy"}}))
    assert cli.main(["train", "--catalog", "tutorial", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 1
    _one_line_error(capsys, "smoothing = 'fuzzy' is not allowed")
    cfg = _write_config(tmp_path / "c5.yaml", "train: [1, 2\n")
    assert cli.main(["train", "--catalog", "tutorial", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 1
    _one_line_error(capsys, "not valid YAML")
    assert not (tmp_path / "o").exists()


def test_train_bad_catalog(tmp_path, capsys):
    cfg = _write_config(tmp_path / "c.yaml", _yaml({"train": {"epochs": 1}}))
    assert cli.main(["train", "--catalog", str(tmp_path / "nope.csv"), "--config", str(cfg),
                     "--out", str(tmp_path / "o")]) == 1
    _one_line_error(capsys, "nope.csv", "no such file")
    (tmp_path / "folder").mkdir()
    assert cli.main(["train", "--catalog", str(tmp_path / "folder"), "--config", str(cfg),
                     "--out", str(tmp_path / "o")]) == 1
    _one_line_error(capsys, "Kaggle fashion layout (styles.csv + images/)")
    csv = tmp_path / "cat.csv"
    csv.write_text("id,title,cat\n1,shirt,A > B\n")
    assert cli.main(["train", "--catalog", str(csv), "--config", str(cfg), "--out", str(tmp_path / "o")]) == 1
    _one_line_error(capsys, "catalog.path")
    cfg2 = _write_config(tmp_path / "c2.yaml", _yaml({"catalog": {"path_col": "category"}}))
    assert cli.main(["train", "--catalog", str(csv), "--config", str(cfg2), "--out", str(tmp_path / "o")]) == 1
    _one_line_error(capsys, "no column(s) ['category']", "'cat'")


def test_predict_bad_input(trained, tmp_path, capsys):
    out = trained[2]
    csv = tmp_path / "p.csv"
    csv.write_text("id,name\n1,shirt\n")
    base = ["predict", "--model", str(out), "--output", str(tmp_path / "o.csv")]
    assert cli.main(base + ["--input", str(csv), "--title-col", "title_en"]) == 1
    _one_line_error(capsys, "no column 'title_en' (from --title-col)", "'name'")
    assert cli.main(base + ["--input", str(csv)]) == 1
    _one_line_error(capsys, "neither a title column")
    assert cli.main(base + ["--input", str(tmp_path / "missing.csv")]) == 1
    _one_line_error(capsys, "missing.csv: no such file")
    csv.write_text("id,title\n1,shirt\n")
    broken = tmp_path / "broken-head"
    shutil.copytree(out, broken)
    (broken / "labels.json").unlink()
    assert cli.main(["predict", "--model", str(broken), "--input", str(csv), "--output", str(tmp_path / "o.csv")]) == 1
    _one_line_error(capsys, "labels.json is missing")
    assert not (tmp_path / "o.csv").exists()
    with pytest.raises(SystemExit) as e:
        cli.main(["predict", "--input", str(csv), "--output", "x.csv"])
    assert e.value.code == 2 and "--model" in capsys.readouterr().err


def test_predict_checks_the_authors_sha256(trained, cache, tmp_path, capsys):
    """--expected-sha256: a head whose config.json is not the author's is refused before any prediction."""
    out = trained[2]
    csv = tmp_path / "p.csv"
    csv.write_text("id,title\n1,blue denim jeans\n")
    args = ["predict", "--model", str(out), "--input", str(csv), "--output", str(tmp_path / "o.csv"),
            "--cache-dir", cache, "--quiet", "--text-only"]
    assert cli.main(args + ["--expected-sha256", "0" * 64]) == 1
    _one_line_error(capsys, "expected_sha256", "not the head")
    assert not (tmp_path / "o.csv").exists()
    author_sha = hashlib.sha256((out / "config.json").read_bytes()).hexdigest()     # as `sha256sum` prints it
    assert cli.main(args + ["--expected-sha256", author_sha.upper()]) == 0
    assert _read_preds(tmp_path / "o.csv")["pred_1"].notna().all()


def test_quiet_predict_prints_no_progress_bars(trained, cache, tmp_path):
    df = ec.sample().head(3)
    csv = tmp_path / "p.csv"
    pd.DataFrame({"id": df["item_id"], "title": df["title"]}).to_csv(csv, index=False)
    exe = Path(sys.executable).parent / "semcat"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "semcat_kit.cli"]
    r = subprocess.run(cmd + ["predict", "--model", str(trained[2]), "--input", str(csv), "--output",
                              str(tmp_path / "o.csv"), "--cache-dir", cache, "--quiet", "--text-only"],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "", r.stderr          # was transformers' "Loading weights" bar
    assert "wrote 3 predictions" in r.stdout


def test_console_script_help_and_exit_status(tmp_path, capsys):
    exe = Path(sys.executable).parent / "semcat"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "semcat_kit.cli"]
    r = subprocess.run(cmd + ["predict", "--help"], capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 0, r.stderr
    for opt in ("--model", "--input", "--images", "--id-col", "--title-col", "--image-col", "--output", "--top-k",
                "--crm", "--cache-dir", "--device", "--backend"):
        assert opt in r.stdout, opt
    with pytest.raises(SystemExit) as e:          # in-process: importing torch twice more is slow
        cli.main(["train", "--help"])
    assert e.value.code == 0
    helptext = capsys.readouterr().out
    for opt in ("--catalog", "--config", "--out", "--cache-dir", "--overwrite", "text_encoder:", "split:", "train:",
                "sample:", "catalog:", "export:"):
        assert opt in helptext, opt
    r = subprocess.run(cmd + ["predict", "--model", str(tmp_path / "none"), "--input", str(tmp_path / "none.csv"),
                              "--output", str(tmp_path / "o.csv")], capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("semcat: error: ") and "Traceback" not in r.stderr


# ------------------------------------------------------------------------------ chunked predict
def test_predict_in_chunks_csv_and_parquet_equal_one_shot(trained, cache, tmp_path, capsys):
    """--chunk-size that does not divide N gives the same bytes as one chunk; Parquet in and out
    (one row group per chunk) hold the same predictions."""
    csv, products = _products_csv(tmp_path)
    images = str(tutorial_dir() / "images")
    base = ["predict", "--model", str(trained[2]), "--images", images, "--id-col", "sku", "--top-k", "3",
            "--cache-dir", cache, "--quiet"]
    assert cli.main(base + ["--input", str(csv), "--output", str(tmp_path / "one.csv")]) == 0
    assert cli.main(base + ["--input", str(csv), "--output", str(tmp_path / "chunked.csv"), "--chunk-size", "7"]) == 0
    out = capsys.readouterr()
    assert "wrote 30 predictions" in out.out and "broken.jpg" in out.err
    assert (tmp_path / "chunked.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
    # Parquet input (ids as integers, missing values as nulls) and Parquet output
    raw = pd.read_csv(csv, dtype=str, keep_default_na=False, na_values=[""])
    raw["sku"] = raw["sku"].astype(int)
    raw.to_parquet(tmp_path / "products.parquet", index=False)
    assert cli.main(base + ["--input", str(tmp_path / "products.parquet"), "--output", str(tmp_path / "p.parquet"),
                            "--chunk-size", "8"]) == 0
    import pyarrow.parquet as pq

    assert pq.ParquetFile(tmp_path / "p.parquet").metadata.num_row_groups == 4
    got = pd.read_parquet(tmp_path / "p.parquet")
    want = _read_preds(tmp_path / "one.csv")
    assert list(got.columns) == list(want.columns)
    for c in want.columns:
        if c.startswith("prob_"):
            np.testing.assert_array_equal(got[c].to_numpy(float), want[c].to_numpy(float), err_msg=c)
        else:
            assert got[c].fillna("").tolist() == want[c].fillna("").tolist(), c


def test_predict_chunks_keep_ids_unique_and_row_numbers(trained, cache, tmp_path, capsys):
    csv = tmp_path / "p.csv"
    csv.write_text("sku,title\n7,shirt\n8,jeans\n9,dress\n7,shoes\n")
    base = ["predict", "--model", str(trained[2]), "--output", str(tmp_path / "o.csv"), "--cache-dir", cache,
            "--quiet", "--text-only", "--chunk-size", "2"]
    assert cli.main(base + ["--input", str(csv), "--id-col", "sku"]) == 1       # 7 repeats in the second chunk
    _one_line_error(capsys, "p.csv", "column 'sku' repeats id '7'", "lines [2, 5]")
    assert not (tmp_path / "o.csv").exists() and list(tmp_path.iterdir()) == [csv]
    # without an id column the row number is the id, counted over the whole file, not per chunk
    csv.write_text("title\nshirt\njeans\ndress\nshoes\nsocks\n")
    assert cli.main(base + ["--input", str(csv)]) == 0
    assert _read_preds(tmp_path / "o.csv")["item_id"].tolist() == ["0", "1", "2", "3", "4"]
    assert cli.main(base[:-1] + ["0", "--input", str(csv)]) == 1
    _one_line_error(capsys, "--chunk-size must be >= 1")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really parquet")
    assert cli.main(base + ["--input", str(tmp_path / "bad.parquet")]) == 1
    _one_line_error(capsys, "bad.parquet: not a readable Parquet file")


CSV_CASES = [
    ("well formed", "id,title\n1,Shirt\n2,Mug\n3,Tee\n"),
    ("malformed first line", "id,title\n101,Shirt, blue, cotton\n102,Mug\n103,Tee\n"),
    ("malformed later line", "id,title\n101,Shirt\n102,Mug\n103,Tee, white\n"),
    ("bom", "\ufeffid,title\n7,Tee\n8,Cap\n"),
    ("header only", "id,title\n"),
    ("not utf-8", b"id,title\n7,Tee\n8,Caf\xe9\n"),
    ("duplicate columns", "id,title,title\n1,a,b\n"),
    ("unrepairable", "id,image\n1,a.jpg\n2,a.jpg,b.jpg\n"),
]


@pytest.mark.parametrize("case", CSV_CASES, ids=[c[0] for c in CSV_CASES])
def test_chunked_input_reads_like_the_one_csv_reader(tmp_path, case):
    """semcat predict reads its input in chunks with the guarantees of datasets.read_csv: any chunk
    size gives the products of the whole file in one chunk, errors are the same one line."""
    import argparse
    import warnings

    p = tmp_path / "p.csv"
    data = case[1]
    p.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    args = argparse.Namespace(input=str(p), id_col=None, title_col=None, image_col=None, images=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            want = pd.concat(list(product_chunks(args, 10**6)), ignore_index=True)
        except ValueError as e:
            with pytest.raises(ValueError) as got:
                list(product_chunks(args, 1))
            assert str(got.value) == str(e)
            return
        got = pd.concat(list(product_chunks(args, 2)), ignore_index=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_images_by_id_are_found_like_load_catalog_without_listing_the_folder(tmp_path, monkeypatch):
    """--images DIR without an image column: DIR/<id>.<ext> as load_catalog(images_dir=) finds it
    (datasets.image_paths_for: extension priority, any case; ids never leave the folder); a
    catalog whose products all have a .jpg/.JPG is found without listing the folder; an entry that
    is not a regular file is passed on for encoding to report."""
    import argparse

    img = tmp_path / "img"
    img.mkdir()
    for name in ["a.png", "b.JPG", "c.jpg", "c.png", "d.txt", "...jpg", "g.Jpeg"]:
        (img / name).write_bytes(b"x")
    (img / "sub").mkdir()
    (img / "sub" / "e.jpg").write_bytes(b"x")
    os.mkfifo(img / "f.jpg")
    csv = tmp_path / "p.csv"
    csv.write_text("id,title\na,t\nb,t\nc,t\nd,t\nsub/e,t\n..,t\nzz,t\nf,t\ng,t\n", encoding="utf-8")
    args = argparse.Namespace(input=str(csv), id_col=None, title_col=None, image_col=None, images=str(img))
    got = [p if isinstance(p, str) else None      # (concat turns a chunk's None into NaN)
           for p in pd.concat(list(product_chunks(args, 2)), ignore_index=True)["image_path"]]
    assert got == [str(img / "a.png"), str(img / "b.JPG"), str(img / "c.jpg"), None, None, str(img / "...jpg"),
                   None, str(img / "f.jpg"), str(img / "g.Jpeg")]
    want = D.load_catalog(pd.DataFrame({"id": list("abcdg"), "title": "t", "cat": "A"}), images_dir=img,
                          path_col="cat")["image_path"].tolist()
    assert [str(Path(p).resolve()) if p else None for p in got[:4] + got[-1:]] == want
    # every product has a .jpg / .JPG: per-id probes only, the folder is never listed
    monkeypatch.setattr(os, "scandir", lambda *a: pytest.fail("the folder was listed"))
    monkeypatch.setattr(os, "listdir", lambda *a: pytest.fail("the folder was listed"))
    csv.write_text("id,title\nb,t\nc,t\n", encoding="utf-8")
    got = pd.concat(list(product_chunks(args, 1)), ignore_index=True)["image_path"].tolist()
    assert got == [str(img / "b.JPG"), str(img / "c.jpg")]


def test_predict_with_the_committed_old_head_on_every_backend(tmp_path):
    """semcat predict on a head exported by semcat_kit 0.1 (tests/data/head_v0_1_0): torch, onnx and
    its TorchScript file give the predictions recorded at export; pt2 says to re-export."""
    data = Path(__file__).parent / "data"
    want = np.load(data / "head_v0_1_0_logits.npy").argmax(1)
    classes = sk.load_head(data / "head_v0_1_0").classes
    for backend in ("torch", "onnx", "torchscript"):
        out = tmp_path / f"{backend}.csv"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)     # torchscript: "re-export to get head.pt2"
            rc = cli.main(["predict", "--model", str(data / "head_v0_1_0"), "--input",
                           str(data / "head_v0_1_0_products.csv"), "--id-col", "item_id", "--output", str(out),
                           "--backend", backend, "--device", "cpu", "--quiet"])
        assert rc == 0
        assert pd.read_csv(out)["pred_1"].tolist() == [classes[i] for i in want], backend
    rc = cli.main(["predict", "--model", str(data / "head_v0_1_0"), "--input", str(data / "head_v0_1_0_products.csv"),
                   "--output", str(tmp_path / "x.csv"), "--backend", "pt2", "--quiet"])
    assert rc == 1


def test_readme_step_5_runs_as_written(tmp_path, monkeypatch, capsys):
    """README "Your own catalog", step 5, as a new user follows it on (a sample of) the Amazon toys file:
    `semcat train --print-config > toys.yaml`, the column mapping put under `catalog:`, then the two
    commands of the README verbatim (file names as written, in a folder holding them)."""
    import contextlib as _cl
    import re as _re
    import shlex

    import yaml

    from conftest import ROOT, SHARED_DATA

    toys = SHARED_DATA / "amazon-uk-toys" / "products.csv"
    if not toys.is_file():
        pytest.skip(f"{toys} not found (set SEMCAT_SHARED_DATA)")
    readme = (ROOT / "README.md").read_text()
    step = readme.split("**5. From the shell**", 1)[1]
    cmds = [ln.strip() for ln in step.split("```", 2)[1].splitlines() if ln.strip().startswith("semcat ")]
    assert [c.split()[1] for c in cmds] == ["train", "predict"], cmds
    params_block = readme.split("<!-- own-catalog-params:start -->", 1)[1].split("<!-- own-catalog-params:end -->")[0]
    params: dict = {}
    exec(params_block.split("```python", 1)[1].split("```", 1)[0], {}, params)
    # the catalog: a stratified-enough sample of the real file (its largest classes and unlabelled rows)
    df = pd.read_csv(toys, dtype=str)
    col = params["catalog_options"]["path_col"]
    top = df[col].value_counts().index[:12]
    sample = pd.concat([df[df[col].isin(top)].groupby(col).head(60), df[df[col].isna()].head(40)])
    sample.sample(frac=1, random_state=0).to_csv(tmp_path / "products.csv", index=False)
    sample.drop(columns=[col]).head(25).to_csv(tmp_path / "new.csv", index=False)
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with _cl.redirect_stdout(out), pytest.raises(SystemExit) as e:
        cli.main(["train", "--print-config"])
    assert e.value.code == 0
    cfg = yaml.safe_load(out.getvalue())
    cfg["catalog"].update(params["catalog_options"])          # "put the column mapping under catalog:"
    if params["image_encoder"] is None:
        assert "image_encoder" in step.split("```", 1)[0], "step 5 does not say how to leave images out"
        cfg["image_encoder"] = None
    (tmp_path / "toys.yaml").write_text(yaml.safe_dump(cfg))
    for cmd in cmds:
        argv = shlex.split(cmd)[1:] + ["--quiet"]
        assert cli.main(argv) == 0, (cmd, capsys.readouterr())
    printed = capsys.readouterr().out
    assert "training config: TrainConfig(smoothing='semantic')" in printed and "decided by the data" in printed
    preds = pd.read_csv(tmp_path / "preds.csv", dtype=str)
    assert len(preds) == 25 and preds["pred_1"].notna().all()
    assert (tmp_path / "heads" / "toys" / "split.csv").is_file()
    assert (tmp_path / "heads" / "toys" / "unlabelled_predictions.csv").is_file()
    assert _re.search(r"test metrics \(\d+ products\)", printed)
