"""sk.SemcatClassifier: scikit-learn's estimator checks, and the tools a scikit-learn user reaches for
(cross_val_predict(method="predict_proba"), Pipeline, GridSearchCV, clone) on real catalogs: the
Amazon toys titles (MiniLM) and tutorial products with titles and images (MiniLM + EfficientNet).

Exceptions to scikit-learn's checks (explained): the checks run on 2-feature blobs, where the head's
default input ``LayerNorm`` (``input_norm=True``, meant for 384-d+ embeddings) leaves only the sign of
``x1 - x2`` of a row, so ``check_classifiers_train`` (accuracy > 0.83) cannot pass with it. The checks
therefore run on an instance with ``input_norm=False`` and a small, fast head; every other
parameter keeps its default. No check is expected to fail.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.model_selection import GridSearchCV, cross_val_predict
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

import _export_case as ec
import _toys_case as tc
import semcat_kit as sk
from semcat_kit.learn.estimator import CONFIG_PARAMS, cross_val_proba, to_matrix

torch.set_num_threads(1)
SMALL = dict(input_norm=False, epochs=20, hidden=32, proj_dim=0, device="cpu", batch_size=64,
             dropout=0.0, modality_dropout=0.0, lr=1e-2)
FAST = dict(epochs=8, batch_size=64, proj_dim=64, hidden=128, lr=3e-3, device="cpu", solver="lbfgs")   # C searched


@parametrize_with_checks([sk.SemcatClassifier(**SMALL)])
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


def test_parameters_are_the_trainconfig_fields():
    import dataclasses

    params = sk.SemcatClassifier().get_params()
    for f in dataclasses.fields(sk.TrainConfig):
        if f.name == "seed":
            assert "seed" not in params and params["random_state"] is None
            continue
        assert f.name in CONFIG_PARAMS and params[f.name] == f.default, f.name
    assert {"taxonomy", "neighbors", "text_dim", "sep", "progress"} <= set(params)
    with pytest.raises(TypeError, match="unknown parameter"):
        sk.SemcatClassifier(learning_rate=0.1)


@pytest.fixture(scope="module")
def toys(request):
    """700 Amazon toys products of the 14 largest categories (50 each), MiniLM title embeddings."""
    return tc.toys(request.config.cache.mkdir("semcat_toys_emb"))


def test_cross_val_predict_proba_feeds_cleanlab(toys):
    cat, emb, tax = toys
    X = np.asarray(emb.text)
    y = tax.index_of(cat["label"])
    clf = sk.SemcatClassifier(taxonomy=tax, **FAST)
    probs = cross_val_predict(clf, X, y, cv=3, method="predict_proba")
    assert probs.shape == (len(y), tax.n_classes)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    oos = (probs.argmax(1) == y).mean()
    insample = clone(clf).fit(X, y).score(X, y)
    assert 0.5 < oos < insample, (oos, insample)     # 14 classes: chance is 0.07
    # the same thing with the taxonomy-indexed helper (the safe form when classes are absent from y)
    probs2 = cross_val_proba(clf, X, y, cv=3)
    assert probs2.shape == probs.shape and 0.5 < (probs2.argmax(1) == y).mean() < insample
    cleanlab = pytest.importorskip("cleanlab.filter")
    issues = cleanlab.find_label_issues(y, probs)
    assert issues.dtype == bool and issues.shape == y.shape and issues.sum() < len(y) / 2


def test_pipeline_gridsearch_and_string_labels(toys):
    cat, emb, tax = toys
    X = np.asarray(emb.text)
    labels = cat["label"].to_numpy()
    half = len(X) // 2
    pipe = Pipeline([("pca", PCA(48, random_state=0)), ("clf", sk.SemcatClassifier(**FAST))])
    pipe.fit(X[:half], labels[:half])
    clf = pipe.named_steps["clf"]
    assert clf.n_features_in_ == 48 and list(clf.classes_) == sorted(set(labels[:half]))
    assert clf.taxonomy_.n_classes == len(clf.classes_)          # built from the " > " paths
    assert clf.taxonomy_.classes == sorted(clf.classes_)
    pred = pipe.predict(X[half:])
    assert pred.dtype.kind in "OU" and set(pred) <= set(labels) and pipe.score(X[half:], labels[half:]) > 0.5
    grid = GridSearchCV(sk.SemcatClassifier(taxonomy=tax, **FAST), {"C": [1e-5, 10.0]}, cv=2)
    grid.fit(X[:half], labels[:half])
    assert grid.best_params_ == {"C": 10.0}             # L2 at C=1e-5 leaves the weights near zero
    scores = grid.cv_results_["mean_test_score"]
    assert scores[1] > scores[0] + 0.2 and grid.best_estimator_.config_.C == 10.0
    assert grid.score(X[half:], labels[half:]) > 0.5
    # validation data: per-epoch metrics and early stopping, labels given as paths
    v = sk.SemcatClassifier(taxonomy=tax, early_stopping="val_top1", patience=2, **{**FAST, "epochs": 30})
    v.fit(X[:half], labels[:half], val=(X[half:], labels[half:]))
    assert "val_top1" in v.run_.history and v.run_.best_epoch >= 1 and v.config_.early_stopping == "val_top1"


def test_embeddings_and_their_matrix_train_the_same_head(tmp_path_factory):
    """Titles + images (some images missing): fit on the Embeddings equals fit on to_matrix(emb)."""
    df = ec.sample()
    emb = ec.embed(df, tmp_path_factory.mktemp("emb"))
    emb = emb.take(np.arange(len(emb)))
    emb.image_mask[::5] = False
    emb.image[::5] = 0
    tax = ec.taxonomy()
    y = df["label"].to_numpy()
    a = sk.SemcatClassifier(taxonomy=tax, **FAST).fit(emb, y)
    X, td = to_matrix(emb)
    assert td == emb.text.shape[1] and X.shape == (len(emb), emb.text.shape[1] + emb.image.shape[1])
    b = sk.SemcatClassifier(taxonomy=tax, text_dim=td, **FAST).fit(X, y)
    assert a.run_.model.config["image_dim"] == emb.image.shape[1] == b.run_.model.config["image_dim"]
    np.testing.assert_allclose(a.predict_proba(emb), b.predict_proba(X), atol=1e-6)
    np.testing.assert_allclose(a.predict_proba(X), a.predict_proba(emb), atol=1e-6)   # fitted on the table, given the matrix
    assert a.n_features_in_ == X.shape[1]
    with pytest.raises(ValueError, match="features"):
        b.predict_proba(X[:, :-1])
    # the trained head exports like any TrainRun
    out = sk.export_head(a.run_, tmp_path_factory.mktemp("head") / "h")
    head = sk.export.load_head(out)
    np.testing.assert_allclose(head.predict_proba(emb), a.run_.predict_proba(emb), atol=1e-5)


def test_bad_input_is_named(toys):
    cat, emb, tax = toys
    X = np.asarray(emb.text)[:40]
    with pytest.raises(ValueError, match="outside"):
        sk.SemcatClassifier(taxonomy=tax, **FAST).fit(X, np.full(40, tax.n_classes + 3))
    with pytest.raises(ValueError, match="text_dim"):
        sk.SemcatClassifier(text_dim=10_000, **FAST).fit(X, cat["label"][:40])
    with pytest.raises(KeyError, match="not classes"):
        sk.SemcatClassifier(taxonomy=tax, **FAST).fit(X, ["Nope > Nothing"] * 40)
    with pytest.raises(ValueError, match="cv must be"):
        cross_val_proba(sk.SemcatClassifier(taxonomy=tax), X, tax.index_of(cat["label"][:40]), cv=1)
