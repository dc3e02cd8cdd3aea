"""Workspace: the notebooks' shared, cached pipeline state."""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

import semcat_kit as sk
from semcat_kit import comparison
from semcat_kit.orchestrate.workspace import SuiteResult, Workspace


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory, myntra_styles):
    """~260 real Myntra products from 8 classes as a plain CSV catalog (title + path column)."""
    df = myntra_styles.dropna(subset=["productDisplayName"])
    keep = ["Tshirts", "Shirts", "Jeans", "Casual Shoes", "Watches", "Handbags", "Kurtas", "Sunglasses"]
    df = df[df["articleType"].isin(keep)]
    df = df.groupby("articleType").sample(33, random_state=0)
    out = pd.DataFrame({"sku": df["id"].astype(str), "name": df["productDisplayName"],
                        "category": df["masterCategory"] + " > " + df["subCategory"] + " > " + df["articleType"]})
    path = tmp_path_factory.mktemp("cat") / "products.csv"
    out.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def ws(small_csv, tmp_path_factory):
    return Workspace(tmp_path_factory.mktemp("work"), catalog=str(small_csv), image_encoder=None, k=4,
                     catalog_options={"id": "sku", "title": "name", "path_col": "category"})


def test_stages_are_built_from_a_csv_catalog(ws):
    cat = ws.load_catalog()
    assert len(cat) == 264 and cat["item_id"].is_unique
    tax = ws.taxonomy()
    assert tax.n_classes == 8 and "Apparel > Topwear > Tshirts" in tax.classes
    y = ws.labels()
    assert np.array_equal(np.bincount(y), np.full(8, 33))
    emb = ws.embeddings(progress=False)
    assert len(emb) == 264 and emb.text.shape == (264, 384) and emb.image is None
    assert list(emb.item_ids) == list(cat["item_id"])
    nb = ws.neighbors()
    assert nb.indices.shape == (8, 4) and not (nb.indices == np.arange(8)[:, None]).any()
    # class texts follow the chosen template and come in class order
    assert ws.label_texts()[tax.index_of("Apparel > Topwear > Tshirts")] == "Apparel > Topwear > Tshirts"


def test_class_texts_are_encoded_once_per_work_dir(ws, small_csv, monkeypatch):
    """The label embeddings go through the work dir's vector cache: a new session on the same work dir
    (the next notebook) looks them up instead of encoding the class texts again (5,595 Google
    taxonomy classes: 23 s a notebook), and gets the same vectors as encoding them now."""
    first = ws.label_embeddings()
    again = Workspace(ws.work_dir, catalog=str(small_csv), image_encoder=None, k=4,
                      catalog_options={"id": "sku", "title": "name", "path_col": "category"})
    enc = again.text_reader()
    encoded = []
    real = type(enc)._embed_texts
    monkeypatch.setattr(type(enc), "_embed_texts", lambda self, b: (encoded.append(len(b)), real(self, b))[1])
    got = again.label_embeddings()
    assert encoded == [] and got.shape == (8, 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, first, atol=1e-6)
    np.testing.assert_allclose(got, enc.encode_texts(again.label_texts()), atol=1e-5)
    assert encoded                                  # the spy sees real encodings (the lookup made none)


def test_stages_are_memoised(ws):
    assert ws.embeddings() is ws.embeddings()
    assert ws.taxonomy() is ws.taxonomy()


def test_parts_partition_the_catalog(ws):
    sp = ws.split()
    parts = [np.asarray(sp[k]) for k in ("train", "val", "test")]
    allidx = np.concatenate(parts)
    assert sorted(allidx.tolist()) == list(range(264))
    emb_te, y_te = ws.part("test")
    cat_te = ws.part_catalog("test")
    assert list(emb_te.item_ids) == list(cat_te["item_id"])
    assert np.array_equal(ws.taxonomy().index_of(cat_te["label"]), y_te)
    with pytest.raises(ValueError, match="'train', 'val' or 'test'"):
        ws.part("holdout")


def test_fingerprint_tracks_what_decides_the_data(ws, small_csv, tmp_path):
    other = Workspace(tmp_path, catalog=str(small_csv), image_encoder=None, k=4, split_seed=1,
                      catalog_options=ws.config.catalog_options)
    assert other.fingerprint() != ws.fingerprint()
    same = Workspace(tmp_path / "b", catalog=str(small_csv), image_encoder=None, k=4,
                     catalog_options=ws.config.catalog_options)
    assert same.fingerprint() == ws.fingerprint()


def test_suite_trains_once_then_reloads(ws, monkeypatch):
    configs = {"one-hot": sk.TrainConfig(epochs=2, smoothing="onehot"),
               "semantic": sk.TrainConfig(epochs=2, smoothing="semantic", k=4, alpha=0.2)}
    res = ws.suite(configs, seeds=[0, 1, 2], crm_for="semantic", progress=False)
    assert isinstance(res, SuiteResult)
    assert res.names == ["one-hot", "semantic"] and res.seeds == [0, 1, 2]
    assert list(res.summary.index) == ["one-hot", "semantic", "semantic + CRM"]
    assert len(res.long) == 9
    p = res.test_probs("semantic", seed=1)
    assert p.shape == (len(res.y_test), 8) and np.allclose(p.sum(1), 1, atol=1e-4)
    # the stored per-seed top-1 equals evaluate() on the stored probabilities
    top1 = sk.evaluate(p, res.y_test, ws.taxonomy())["top1"]
    row = res.long[(res.long["config"] == "semantic") & (res.long["seed"] == 1)]
    assert row["top1"].item() == pytest.approx(top1)
    # the exported first-seed head reproduces the stored probabilities
    emb_te, _ = ws.part("test")
    np.testing.assert_allclose(res.head("one-hot").predict_proba(emb_te), res.test_probs("one-hot"), atol=1e-5)
    assert "val_top1" in res.history("one-hot").columns
    # the C each kept: the best-validating C of its walk, one of the grid's
    for name in configs:
        h = res.history(name)
        assert res.chosen_C(name) in res.config(name).Cs
        best = h[h["val_top1"] == h["val_top1"].max()]["C"].min()      # ties: the smaller C
        assert res.chosen_C(name) == best
        # how it was fitted, and why (what notebook 03 prints)
        info = res.solver(name)
        assert info["method"] == "lbfgs" and "fitted full-batch to convergence" in info["why"]
        assert info["C"] == res.chosen_C(name) and info["threads"] >= 1 and info["stacked_with"] == 2
    assert res.best("top1") in res.names
    with pytest.raises(KeyError, match="not a configuration"):
        res.test_probs("nope")
    # the configuration each ran with (data-aware fields filled in), which retraining keeps as it is
    for name, cfg in configs.items():
        ran = res.config(name)
        assert ran.to_dict() == ws.train_config(cfg).to_dict() and ran.epochs == 2
        assert ws.train_config(ran).to_dict() == ran.to_dict()
    with pytest.raises(KeyError, match="not a configuration"):
        res.config("nope")

    # same inputs: loaded from disk, no training
    def boom(*a, **k):
        raise AssertionError("suite retrained although a stored result exists")
    monkeypatch.setattr(comparison, "compare", boom)
    again = ws.suite(configs, seeds=[0, 1, 2], crm_for="semantic", progress=False)
    pd.testing.assert_frame_equal(again.summary, res.summary)
    # a changed configuration is a different suite
    with pytest.raises(AssertionError, match="retrained"):
        ws.suite({**configs, "one-hot": sk.TrainConfig(epochs=3)}, seeds=[0, 1, 2], crm_for="semantic")


def test_suite_applies_the_data_aware_defaults_unless_a_config_sets_them(ws, monkeypatch):
    seen = {}

    def capture(configs, **kw):
        seen.update(configs)
        raise RuntimeError("captured")
    monkeypatch.setattr(comparison, "compare", capture)
    mine = dict(lr=0.05, early_stopping="val_loss", epochs=3)
    with pytest.raises(RuntimeError, match="captured"):
        ws.suite({"auto": sk.TrainConfig(), "mine": sk.TrainConfig(**mine)}, seeds=[0], retrain=True, progress=False)
    sp = ws.split()
    want = sk.TrainConfig().resolve(len(sp.train), len(sp.val))
    assert seen["auto"] == want and seen["auto"].decided
    assert all(getattr(seen["mine"], k) == v for k, v in mine.items()) and seen["mine"].min_steps == 0
    # the default suite leaves the budget to the data (no explicit epochs)
    with pytest.raises(RuntimeError, match="captured"):
        ws.suite(seeds=[0], retrain=True, progress=False)
    assert seen["one-hot"].min_steps == want.min_steps and seen["one-hot"].decided["epochs"] == 30


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ValueError, match="text_encoder and image_encoder are both None"):
        Workspace(tmp_path, text_encoder=None, image_encoder=None)
    with pytest.raises(TypeError, match="give the catalog as catalog="):
        Workspace(tmp_path, "tutorial")
    assert not hasattr(Workspace(tmp_path), "k")          # the configuration is ws.config, read as such
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        Workspace(tmp_path, catalog=str(tmp_path / "nowhere.csv")).load_catalog()


def test_a_csv_with_its_own_separator_keeps_the_tree(small_csv, tmp_path):
    """Labels joined with a custom separator still give a 3-level taxonomy (not a flat one)."""
    df = pd.read_csv(small_csv)
    df["category"] = df["category"].str.replace(" > ", " / ", regex=False)
    path = tmp_path / "slash.csv"
    df.to_csv(path, index=False)
    ws = Workspace(tmp_path / "w", catalog=str(path), image_encoder=None,
                   catalog_options={"id": "sku", "title": "name", "path_col": "category", "sep": " / "})
    tax = ws.taxonomy()
    assert tax.max_depth == 3 and tax.n_classes == 8
    i, j = tax.index_of(["Apparel / Topwear / Tshirts", "Apparel / Topwear / Shirts"])
    assert tax.lca_distance(i, j) == 1


def test_peers_are_scored_on_the_suites_split_and_stored(ws, monkeypatch):
    """ws.baselines: the peers of notebook 03 / make_results, on the same test split as the suite."""
    from semcat_kit.experiments.baselines import LogisticBaseline

    peers = {"LogisticRegression": LogisticBaseline(C=1.0)}
    df = ws.baselines(peers, seeds=[0, 1, 2], crm_for=["LogisticRegression", "not a peer"], progress=False)
    assert list(df.index) == ["LogisticRegression", "LogisticRegression + CRM"]
    # the same numbers as a LogisticRegression fitted on the train part and scored on the test part
    (tr, ytr), (te, yte) = ws.part("train"), ws.part("test")
    lr = LogisticBaseline(C=1.0).fit(tr, ytr, taxonomy=ws.taxonomy())
    want = sk.evaluate(lr.predict_proba(te), yte, ws.taxonomy(), neighbors=ws.neighbors())
    assert df.loc["LogisticRegression", "top1_mean"] == pytest.approx(want["top1"])
    assert df.loc["LogisticRegression", "hdist@5_mean"] == pytest.approx(want["hdist@5"])
    # its per-product test predictions are kept (paired comparisons need no refit)
    np.testing.assert_array_equal(df.attrs["y_test"], yte)
    np.testing.assert_array_equal(df.attrs["test_top1"]["LogisticRegression"], lr.predict_proba(te).argmax(1))

    def boom(*a, **k):
        raise AssertionError("peers refitted although a stored result exists")
    monkeypatch.setattr(comparison, "compare", boom)
    again = ws.baselines(peers, seeds=[0, 1, 2], crm_for=["LogisticRegression"], progress=False)
    pd.testing.assert_frame_equal(again, df)
    np.testing.assert_array_equal(again.attrs["test_top1"]["LogisticRegression"],
                                  df.attrs["test_top1"]["LogisticRegression"])
    with pytest.raises(ValueError, match="unknown peers \\['LR'\\].*LogisticRegression"):
        ws.baselines(["LR"])
    with pytest.raises(ValueError, match="no peers"):
        ws.baselines([])
