"""Predictor: loading encoders by their recorded names, predictions equal to the trained run's on
real tutorial products, missing titles/images, unreadable images reported (not raised), CRM
re-ranking, backends, and the refusals (encoder fingerprint / dimension, corrupted folder)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import _export_case as ec
import semcat_kit as sk
from semcat_kit import Predictor
from semcat_kit.embeddings import Embeddings
from semcat_kit.metrics import crm_predict, topk

torch.set_num_threads(1)
N = 60     # products predicted in most tests (a subset of the trained sample)


@pytest.fixture(scope="module")
def cache(request):
    return request.config.cache.mkdir("semcat_export_emb")


@pytest.fixture(scope="module")
def case(cache, tmp_path_factory):
    df = ec.sample()
    emb = ec.embed(df, cache)
    y = ec.taxonomy().index_of(df["label"].tolist())
    run = ec.train_head(emb, y)
    d = sk.export_head(run, tmp_path_factory.mktemp("pred") / "head")
    return df, emb, run, d


@pytest.fixture(scope="module")
def pred(case):
    """Loaded the way users do: encoders by the names recorded in config.json."""
    return Predictor.load(case[3], device="cpu")


def _products(df, n=N):
    return df[["item_id", "title", "image_path"]].head(n).reset_index(drop=True)


def test_loads_the_recorded_encoders(pred, case):
    _, emb, _, _ = case
    assert pred.text_encoder.fingerprint == emb.meta["text_encoder"]["fingerprint"]
    assert pred.image_encoder.fingerprint == emb.meta["image_encoder"]["fingerprint"]
    assert pred.classes == list(ec.taxonomy().classes) and pred.taxonomy.n_classes == ec.taxonomy().n_classes


def test_predict_equals_the_trained_run(pred, case, cache):
    df, emb, run, _ = case
    res = pred.predict(_products(df), top_k=5, cache_dir=cache)
    probs = run.predict_proba(emb.take(np.arange(N)))
    idx = topk(probs, 5)
    classes = np.array(ec.taxonomy().classes, dtype=object)
    names = np.array(ec.taxonomy().names, dtype=object)
    assert list(res.columns) == (["item_id"] + [f"pred_{i}" for i in range(1, 6)] + [f"name_{i}" for i in range(1, 6)]
                                 + [f"prob_{i}" for i in range(1, 6)] + ["used", "failures"])
    assert res["item_id"].tolist() == df["item_id"].head(N).tolist()
    for j in range(5):
        assert res[f"pred_{j + 1}"].tolist() == classes[idx[:, j]].tolist()
        assert res[f"name_{j + 1}"].tolist() == names[idx[:, j]].tolist()
        np.testing.assert_allclose(res[f"prob_{j + 1}"], np.take_along_axis(probs, idx, 1)[:, j], atol=1e-6)
    assert (res["prob_1"] >= res["prob_2"]).all()
    assert (res["used"] == "text+image").all() and (res["failures"] == "").all()
    np.testing.assert_allclose(pred.predict_proba(_products(df), cache_dir=cache), probs, atol=1e-6)
    # encoding without the cache gives the same answer (a few products, to keep it quick)
    fresh = pred.predict(_products(df, 4), top_k=5)
    np.testing.assert_allclose(fresh[[f"prob_{i}" for i in range(1, 6)]].to_numpy(),
                               res[[f"prob_{i}" for i in range(1, 6)]].head(4).to_numpy(), atol=1e-5)


def test_list_of_dicts_and_row_index_ids(pred, case, cache):
    df = case[0]
    p = _products(df, 8)
    a = pred.predict(p, cache_dir=cache)
    recs = [{"title": r.title, "image": r.image_path} for r in p.itertuples()]
    b = pred.predict(recs, cache_dir=cache)
    assert b["item_id"].tolist() == [str(i) for i in range(8)]
    pd.testing.assert_frame_equal(a.drop(columns="item_id"), b.drop(columns="item_id"))


def test_missing_title_or_image_still_predicted(pred, case, cache):
    df, emb, run, _ = case
    p = _products(df, 4).astype(object)
    p.loc[0, "image_path"] = None        # title only
    p.loc[1, "title"] = ""               # image only
    p.loc[2, "title"] = None
    p.loc[2, "image_path"] = None        # nothing
    res = pred.predict(p, top_k=3, cache_dir=cache)
    assert res["used"].tolist() == ["text", "image", "", "text+image"]
    e = emb.take(np.arange(4))
    e.image_mask[0] = False
    e.text_mask[1] = False
    expect = run.predict_proba(e)
    for i in (0, 1, 3):
        np.testing.assert_allclose(res.loc[i, ["prob_1", "prob_2", "prob_3"]].to_numpy(float),
                                   np.sort(expect[i])[::-1][:3], atol=1e-6)
        assert res.loc[i, "pred_1"] == ec.taxonomy().classes[int(expect[i].argmax())]
    # text-only and full predictions differ (the image is really used)
    assert not np.allclose(expect[0], run.predict_proba(emb.take([0]))[0])
    assert pd.isna(res.loc[2, "pred_1"]) and pd.isna(res.loc[2, "name_1"]) and np.isnan(res.loc[2, "prob_1"])
    assert "no usable title or image" in res.loc[2, "failures"]
    assert res.loc[0, "failures"] == "" and res.loc[1, "failures"] == ""    # absence is not a failure
    probs = pred.predict_proba(p, cache_dir=cache)
    assert np.isnan(probs[2]).all() and np.isfinite(probs[[0, 1, 3]]).all()


def test_unreadable_images_are_reported_not_raised(pred, case, tmp_path):
    df = case[0]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 10)
    p = _products(df, 3).astype(object)
    p.loc[0, "image_path"] = str(bad)
    p.loc[1, "image_path"] = str(tmp_path / "does-not-exist.jpg")
    res = pred.predict(p, top_k=2)
    assert res["used"].tolist() == ["text", "text", "text+image"]
    assert res["pred_1"].notna().all()
    assert "image: " in res.loc[0, "failures"] and "broken.jpg" in res.loc[0, "failures"]
    assert "missing file" in res.loc[1, "failures"] and res.loc[2, "failures"] == ""
    f = res.attrs["failures"]
    assert f["item_id"].tolist() == [p.loc[0, "item_id"], p.loc[1, "item_id"]]
    assert (f["modality"] == "image").all()
    pd.testing.assert_frame_equal(pred.failures, f)


def test_crm_reranks_with_crm_predict(pred, case, cache):
    df, emb, run, _ = case
    res = pred.predict(_products(df), top_k=4, crm=True, cache_dir=cache)
    probs = run.predict_proba(emb.take(np.arange(N)))
    idx, cost = crm_predict(probs, ec.taxonomy(), top_k=4)
    classes = np.array(ec.taxonomy().classes, dtype=object)
    for j in range(4):
        assert res[f"pred_{j + 1}"].tolist() == classes[idx[:, j]].tolist()
        np.testing.assert_allclose(res[f"exp_dist_{j + 1}"], cost[:, j], atol=1e-5)
        np.testing.assert_allclose(res[f"prob_{j + 1}"], np.take_along_axis(probs, idx, 1)[:, j], atol=1e-6)
    assert (res["exp_dist_1"] <= res["exp_dist_2"] + 1e-9).all()


def test_top_k_bounds(pred, case, cache):
    p = _products(case[0], 2)
    res = pred.predict(p, top_k=10_000, cache_dir=cache)
    C = ec.taxonomy().n_classes
    assert f"pred_{C}" in res.columns and f"pred_{C + 1}" not in res.columns
    np.testing.assert_allclose(res[[f"prob_{i}" for i in range(1, C + 1)]].sum(axis=1), 1.0, atol=1e-4)
    with pytest.raises(ValueError, match="top_k must be a positive int"):
        pred.predict(p, top_k=0)


def test_onnx_and_torchscript_predictors_agree(pred, case, cache):
    df, _, _, d = case
    ref = pred.predict(_products(df), cache_dir=cache)
    for backend in ("onnx", "torchscript"):
        other = Predictor.load(d, backend=backend, text_encoder=pred.text_encoder, image_encoder=pred.image_encoder)
        res = other.predict(_products(df), cache_dir=cache)
        assert res["pred_1"].tolist() == ref["pred_1"].tolist()
        np.testing.assert_allclose(res["prob_1"], ref["prob_1"], atol=1e-5)


def test_bad_products_input(pred):
    with pytest.raises(ValueError, match="neither a 'title' nor an 'image_path'/'image' column"):
        pred.predict(pd.DataFrame({"item_id": ["a"], "name": ["shirt"]}))
    with pytest.raises(ValueError, match=r"duplicated item id.*'a'"):
        pred.predict(pd.DataFrame({"item_id": ["a", "a"], "title": ["x", "y"]}))
    with pytest.raises(TypeError, match=r"products\[1\] is a str"):
        pred.predict([{"title": "x"}, "y"])
    # a batch where no product has anything usable is reported, not raised
    res = pred.predict([{"title": None, "image_path": None}, {"title": " ", "image_path": ""}])
    assert res["pred_1"].isna().all() and res["failures"].str.contains("no usable title or image").all()
    assert len(pred.predict(pd.DataFrame({"item_id": [], "title": []}))) == 0


# ------------------------------------------------------------------------------ refusals
def test_refuses_an_encoder_with_another_fingerprint(case, pred):
    d = case[3]
    other = sk.encoders.load("efficientnet-lite0@128", device="cpu")      # same 1280-d, other preprocessing
    want = pred.image_encoder.fingerprint
    with pytest.raises(ValueError, match=rf"image encoder mismatch: .*fingerprint {want}.*fingerprint "
                                         rf"{other.fingerprint}"):
        Predictor.load(d, text_encoder=pred.text_encoder, image_encoder=other)


def test_refuses_a_head_recorded_with_another_encoder(case, pred, tmp_path):
    d = shutil.copytree(case[3], tmp_path / "h")
    cfg = json.loads((d / "config.json").read_text())
    cfg["encoders"]["text_encoder"]["fingerprint"] = "minilm:0123456789abcdef"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=rf"text encoder mismatch: .*minilm:0123456789abcdef.*"
                                         rf"{pred.text_encoder.fingerprint}"):
        Predictor.load(d, text_encoder=pred.text_encoder, image_encoder=pred.image_encoder)


def test_refuses_encoder_dimension_and_missing_record(pred, tmp_path):
    """A head trained on bare arrays (no encoder recorded) needs encoders passed in, of its dims."""
    rng = np.random.default_rng(0)
    tax = sk.Taxonomy.from_paths(["A > a1", "A > a2", "B > b1"])
    emb = Embeddings([str(i) for i in range(30)], rng.normal(size=(30, 16)).astype(np.float32), None,
                     np.ones(30, bool), np.zeros(30, bool))
    run = sk.train(emb, np.arange(30) % 3, taxonomy=tax, progress=False,
                   config=sk.TrainConfig(epochs=1, proj_dim=8, hidden=8, device="cpu", early_stopping=None))
    d = sk.export_head(run, tmp_path / "h", onnx=False, torchscript=False)
    with pytest.raises(ValueError, match="records no text encoder; pass text_encoder="):
        Predictor.load(d)
    with pytest.raises(ValueError, match="gives 384-d embeddings but the head .* expects 16-d text embeddings"):
        Predictor.load(d, text_encoder=pred.text_encoder)


def test_recorded_encoder_that_cannot_be_loaded_is_named(case, tmp_path):
    # e.g. a head trained with "openclip:<arch>@/path/on/another/machine.safetensors"
    d = shutil.copytree(case[3], tmp_path / "h")
    cfg = json.loads((d / "config.json").read_text())
    cfg["encoders"]["image_encoder"]["name"] = "nosuch:encoder"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"the head in .*h records image encoder 'nosuch:encoder', which cannot be "
                                         r"loaded here \(KeyError: unknown encoder.*pass image_encoder=\.\.\. to "
                                         r"Predictor\.load"):
        Predictor.load(d, device="cpu")


def test_refuses_a_corrupted_folder(case, pred, tmp_path):
    d = shutil.copytree(case[3], tmp_path / "h")
    raw = (d / "head.safetensors").read_bytes()
    (d / "head.safetensors").write_bytes(raw[:-100])
    with pytest.raises(ValueError, match=r"head\.safetensors is corrupted"):
        Predictor.load(d, text_encoder=pred.text_encoder, image_encoder=pred.image_encoder)


def test_text_only_head(case, pred, cache, tmp_path):
    """A head trained on titles only loads no image encoder and ignores images; products without
    any title column are refused (a wrong column mapping), not silently unpredicted."""
    df, emb, _, _ = case
    y = ec.taxonomy().index_of(df["label"].tolist())
    run = ec.train_head(emb, y, fusion="text")
    d = sk.export_head(run, tmp_path / "h", onnx=False, torchscript=False)
    p = Predictor.load(d, text_encoder=pred.text_encoder)
    assert p.image_encoder is None and p.head.uses == ("text",)
    res = p.predict(_products(df, 10), top_k=2, cache_dir=cache)
    assert (res["used"] == "text").all()
    np.testing.assert_allclose(res["prob_1"], run.predict_proba(emb.take(np.arange(10))).max(1), atol=1e-6)
    with pytest.raises(ValueError, match=r"this head reads text, but the products have no 'title' column"):
        p.predict([{"image_path": df["image_path"].iloc[0]}])
