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
from semcat_kit.encode.embeddings import Embeddings
from semcat_kit.judge.metrics import crm_predict, topk

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
    assert res.loc[0, "failures"].startswith("image file unusable (") and "broken.jpg" in res.loc[0, "failures"]
    assert res.loc[1, "failures"] == f"image file missing: {tmp_path / 'does-not-exist.jpg'}"
    assert res.loc[2, "failures"] == ""
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


def test_onnx_and_pt2_predictors_agree(pred, case, cache):
    df, _, _, d = case
    ref = pred.predict(_products(df), cache_dir=cache)
    for backend in ("onnx", "pt2"):
        other = Predictor.load(d, backend=backend, text_encoder=pred.text_encoder, image_encoder=pred.image_encoder)
        res = other.predict(_products(df), cache_dir=cache)
        assert res["pred_1"].tolist() == ref["pred_1"].tolist()
        np.testing.assert_allclose(res["prob_1"], ref["prob_1"], atol=1e-5)


def test_bad_products_input(pred):
    with pytest.raises(ValueError, match=r"neither a title column \('title', or title=\) nor an image column \('image_path' / 'image'"):
        pred.predict(pd.DataFrame({"item_id": ["a"], "name": ["shirt"]}))
    with pytest.raises(ValueError, match=r"repeats id 'a'"):
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
    d = sk.export_head(run, tmp_path / "h", onnx=False, pt2=False)
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
    raw = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(raw[:-100])
    with pytest.raises(ValueError, match=r"model\.safetensors is corrupted"):
        Predictor.load(d, text_encoder=pred.text_encoder, image_encoder=pred.image_encoder)


def test_text_only_head(case, pred, cache, tmp_path):
    """A head trained on titles only loads no image encoder and ignores images; products without
    any title column are refused (a wrong column mapping), not silently unpredicted."""
    df, emb, _, _ = case
    y = ec.taxonomy().index_of(df["label"].tolist())
    run = ec.train_head(emb, y, fusion="text")
    d = sk.export_head(run, tmp_path / "h", onnx=False, pt2=False)
    p = Predictor.load(d, text_encoder=pred.text_encoder)
    assert p.image_encoder is None and p.head.uses == ("text",)
    res = p.predict(_products(df, 10), top_k=2, cache_dir=cache)
    assert (res["used"] == "text").all()
    np.testing.assert_allclose(res["prob_1"], run.predict_proba(emb.take(np.arange(10))).max(1), atol=1e-6)
    with pytest.raises(ValueError, match=r"this head reads text, but the products have no 'title' column"):
        p.predict([{"image_path": df["image_path"].iloc[0]}])


# ------------------------------------------------------------------------------ chunked prediction
def _mixed_products(df, tmp_path, n=N):
    """Products with a broken image, a missing title, one with nothing usable, spread over chunks."""
    p = _products(df, n).astype(object)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 10)
    p.loc[6, "image_path"] = str(bad)        # last row of the first chunk of 7
    p.loc[7, "title"] = None                 # first row of the second chunk
    p.loc[20, "title"] = None
    p.loc[20, "image_path"] = None           # nothing usable
    p.loc[n - 1, "image_path"] = str(tmp_path / "missing.jpg")
    return p


@pytest.mark.parametrize("crm,block", [(False, 4096), (True, 4096), (False, 16), (True, 16)])
def test_chunked_prediction_equals_one_shot(pred, case, cache, tmp_path, monkeypatch, crm, block):
    """Bit-for-bit equal whatever the chunk size; block 16 makes the head's scoring blocks span chunks."""
    monkeypatch.setattr("semcat_kit.ship.predictor._SCORE_BLOCK", block)   # private: the scoring block (no parameter)
    p = _mixed_products(case[0], tmp_path)
    whole = pred.predict(p, top_k=4, crm=crm, cache_dir=cache, chunk_size=None, progress=False)
    whole_fails = pred.failures.copy()
    assert len(whole_fails) == 3
    for size in (7, 13):                                             # neither divides N = 60
        got = pred.predict(p, top_k=4, crm=crm, cache_dir=cache, chunk_size=size, progress=False)
        pd.testing.assert_frame_equal(got, whole, check_exact=True)
        pd.testing.assert_frame_equal(got.attrs["failures"], whole.attrs["failures"])
        pd.testing.assert_frame_equal(pred.failures, whole_fails)
    parts = list(pred.predict_iter(p, top_k=4, crm=crm, cache_dir=cache, chunk_size=13, progress=False))
    assert [len(x) for x in parts] == [13, 13, 13, 13, 8]
    assert [int((x["failures"] != "").sum()) for x in parts] == [1, 1, 0, 0, 1]
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), whole, check_exact=True)
    # an iterable of frames (e.g. pd.read_csv(..., chunksize=...)) gives the same rows
    frames = (p.iloc[a:a + 11] for a in range(0, len(p), 11))
    got = pred.predict(frames, top_k=4, crm=crm, cache_dir=cache, chunk_size=5, progress=False)
    pd.testing.assert_frame_equal(got, whole, check_exact=True)


def test_chunked_prediction_never_scores_more_than_a_chunk(pred, case, cache, monkeypatch):
    """Memory is bounded by the chunk: the head scores blocks of _SCORE_BLOCK rows (at the same
    positions as the one-shot path), never the whole input."""
    monkeypatch.setattr("semcat_kit.ship.predictor._SCORE_BLOCK", 16)     # private: the scoring block (no parameter)
    rows = []
    orig = pred.head.predict_proba

    def spy(emb, *a, **kw):
        rows.append(len(emb))
        return orig(emb, *a, **kw)
    monkeypatch.setattr(pred.head, "predict_proba", spy)
    held = []
    for part in pred.predict_iter(_products(case[0]), top_k=3, cache_dir=cache, chunk_size=7, progress=False):
        held.append((len(rows), len(part)))
    assert rows == [16, 16, 16, 12]
    # the first chunk of 7 is yielded after the first block of 16 is scored, not after all 60 rows
    assert held[0] == (1, 7) and held[-1] == (4, 4)


def test_write_predictions_streams_csv_and_parquet(pred, case, cache, tmp_path):
    import pyarrow.parquet as pq

    from semcat_kit.ship.predictor import write_predictions

    p = _mixed_products(case[0], tmp_path)
    whole = pred.predict(p, top_k=3, cache_dir=cache, chunk_size=None, progress=False)
    one = tmp_path / "one.csv"
    whole.to_csv(one, index=False)
    n = write_predictions(pred.predict_iter(p, top_k=3, cache_dir=cache, chunk_size=9, progress=False),
                          tmp_path / "chunked.csv")
    assert n == N and (tmp_path / "chunked.csv").read_bytes() == one.read_bytes()
    pd.testing.assert_frame_equal(pred.failures, whole.attrs["failures"])
    n = write_predictions(pred.predict_iter(p, top_k=3, cache_dir=cache, chunk_size=9, progress=False),
                          tmp_path / "chunked.parquet")
    f = pq.ParquetFile(tmp_path / "chunked.parquet")
    assert n == N and f.metadata.num_row_groups == 7                  # one row group per chunk (6 x 9 + 6)
    assert str(f.schema_arrow.field("prob_1").type) == "double" and str(f.schema_arrow.field("pred_1").type) == "string"
    back = pd.read_parquet(tmp_path / "chunked.parquet")
    pd.testing.assert_frame_equal(back, whole, check_exact=True, check_dtype=False)
    assert pd.isna(back.loc[20, "pred_1"]) and np.isnan(back.loc[20, "prob_1"])
    assert f.read().column("pred_1").null_count == 1                  # a real null, not the string 'None'
    with pytest.raises(ValueError, match="nothing to write"):
        write_predictions(iter([]), tmp_path / "none.parquet")
    assert not (tmp_path / "none.parquet").exists()


def test_write_predictions_is_atomic(pred, case, cache, tmp_path):
    from semcat_kit.ship.predictor import write_predictions

    out = tmp_path / "preds.csv"
    out.write_text("earlier run\n")

    def frames():
        yield from pred.predict_iter(_products(case[0], 10), top_k=2, cache_dir=cache, chunk_size=4, progress=False)
        raise KeyboardInterrupt                                      # interrupted after three chunks
    with pytest.raises(KeyboardInterrupt):
        write_predictions(frames(), out)
    assert out.read_text() == "earlier run\n" and sorted(x.name for x in tmp_path.iterdir()) == ["preds.csv"]


def test_ids_unique_across_chunks_and_bad_chunk_size(pred):
    frames = [pd.DataFrame({"item_id": ["a", "b"], "title": ["red shirt", "blue jeans"]}),
              pd.DataFrame({"item_id": ["c", "a"], "title": ["green dress", "black shoes"]})]
    with pytest.raises(ValueError, match=r"repeats id 'a' \(row 1 and an earlier chunk\)"):
        pred.predict(iter(frames), top_k=2, progress=False)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer, got 0"):
        pred.predict(frames[0], chunk_size=0)
    with pytest.raises(TypeError, match="chunk 1 of products is a str"):
        pred.predict(iter([frames[0], "x"]), progress=False)
    empty = pred.predict(iter([]), top_k=2, progress=False)
    assert len(empty) == 0 and list(empty.columns) == ["item_id", "pred_1", "pred_2", "name_1", "name_2", "prob_1",
                                                       "prob_2", "used", "failures"]


def test_predict_from_embeddings_in_chunks(pred, case, cache):
    """Already-encoded products (e.g. an embedding store) give the same rows as encoding them."""
    df, emb, _, _ = case
    want = pred.predict(_products(df), top_k=3, cache_dir=cache, chunk_size=None, progress=False)
    sub = emb.take(np.arange(N))
    got = pd.concat(list(pred.predict_embeddings_iter(sub, top_k=3, chunk_size=11, progress=False)),
                    ignore_index=True)
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    parts = (sub.take(np.arange(a, min(N, a + 25))) for a in range(0, N, 25))
    got = pd.concat(list(pred.predict_embeddings_iter(parts, top_k=3, progress=False)), ignore_index=True)
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    with pytest.raises(ValueError, match="and an earlier chunk"):
        list(pred.predict_embeddings_iter(iter([sub.take([0, 1]), sub.take([1])]), progress=False))
    with pytest.raises(TypeError, match="chunk 0 of embeddings is a ndarray"):
        list(pred.predict_embeddings_iter([np.zeros(3)], progress=False))


def test_a_missing_image_file_has_one_wording_in_every_report(pred, case, tmp_path, cache):
    """A named image file that is not there: the catalog report, Embeddings.failures (notebook 02) and the
    predictions' failures column (semcat predict) all say 'image file missing: <path>'; an empty image
    cell is 'no image path' everywhere."""
    from semcat_kit.datasets.images import image_problem

    df = case[0].head(3).reset_index(drop=True)
    gone = tmp_path / "gone.jpg"
    cat = pd.DataFrame({"id": df["item_id"], "title": df["title"], "cat": df["label"],
                        "img": [df["image_path"][0], str(gone), None]})
    loaded = sk.load_catalog(cat, id="id", title="title", path_col="cat", image="img")
    rep = loaded.attrs["report"].set_index("item_id")["problem"]
    want = f"image file missing: {gone}"
    assert want == image_problem("missing file", gone)
    assert rep[df["item_id"][1]] == want and rep[df["item_id"][2]].startswith("no image path")
    emb = sk.encode_catalog(loaded, text_encoder=pred.text_encoder, image_encoder=pred.image_encoder,
                            cache_dir=cache, progress=False)
    f = emb.failures.set_index("item_id")["reason"]
    assert f[df["item_id"][1]] == want and f[df["item_id"][2]] == "no image path"
    res = pred.predict(pd.DataFrame({"item_id": df["item_id"], "title": df["title"],
                                     "image_path": [df["image_path"][0], str(gone), None]}), cache_dir=cache,
                       progress=False)
    assert res["failures"].tolist() == ["", want, ""]          # an empty cell is absence, not a failure


def test_no_products_give_an_empty_frame_with_the_columns_of_any_prediction(pred, case, cache):
    """Notebook 07 writes unlabelled_predictions.csv from predict() even when no product lacks a category: the
    empty file's header is that of a real one (no leftover columns of another table)."""
    df = case[0]
    full = pred.predict(_products(df, 2), top_k=3, cache_dir=cache, progress=False)
    empty = pred.predict(df.iloc[:0][["item_id", "title", "image_path"]], top_k=3, cache_dir=cache, progress=False)
    assert len(empty) == 0 and list(empty.columns) == list(full.columns)
