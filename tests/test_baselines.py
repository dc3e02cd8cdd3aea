"""Baselines (LogisticRegression, hiclass LCPPN) fitted on embeddings and scored like trained heads."""
import numpy as np
import pytest
import torch

import semcat_kit as sk

from semcat_kit import Taxonomy
from semcat_kit.experiments.baselines import HiClassBaseline, LogisticBaseline, features
from semcat_kit.experiments.comparison import CRM_SUFFIX, baseline_suite, compare
from semcat_kit.encode.embeddings import Embeddings
from semcat_kit.judge.metrics import evaluate
from semcat_kit.learn.training import TrainConfig

torch.set_num_threads(1)
# uneven depth; "A > B" is a class and also the parent of two classes
PATHS = ["A > B > C", "A > B > D", "A > E", "A > B", "F > G", "F > H > I", "F > H > K", "J"]


def _make(tax, n, seed, dt=8, di=None, noise=0.3, centre_seed=0):
    rng = np.random.default_rng(seed)
    C = tax.n_classes
    cent = np.random.default_rng(centre_seed).normal(size=(C, dt + (di or 0)))
    y = np.concatenate([np.arange(C), rng.integers(0, C, n - C)])
    x = (cent[y] + noise * rng.normal(size=(n, cent.shape[1]))).astype(np.float32)
    ids = np.array([f"s{seed}-{i}" for i in range(n)])
    if di:
        im = np.ones(n, bool)
        im[::7] = False
        return Embeddings(ids, x[:, :dt], x[:, dt:], np.ones(n, bool), im), y
    return Embeddings(ids, x, None, np.ones(n, bool), np.zeros(n, bool)), y


@pytest.fixture(scope="module")
def data():
    tax = Taxonomy.from_paths(PATHS)
    return tax, _make(tax, 240, 1), _make(tax, 80, 2, noise=1.2), _make(tax, 120, 3, noise=1.2)


def test_features_concatenate_modalities_and_masks(data):
    tax = Taxonomy.from_paths(PATHS)
    emb, _ = _make(tax, 30, 0, dt=4, di=3)
    X = features(emb)
    assert X.shape == (30, 4 + 3 + 2)
    assert np.array_equal(X[:, 7], emb.text_mask.astype(np.float32))
    assert np.array_equal(X[:, 8], emb.image_mask.astype(np.float32))
    assert (X[~emb.image_mask, 4:7] == 0).all()       # a missing image is zeros, flagged by its mask
    text_only, _ = _make(tax, 30, 0, dt=4)
    assert features(text_only).shape == (30, 4)


def test_logistic_picks_C_on_val_and_refits_on_train_only(data):
    from sklearn.linear_model import LogisticRegression

    tax, (etr, ytr), (eva, yva), _ = data
    b = LogisticBaseline(Cs=(0.01, 1.0, 100.0)).fit(etr, ytr, taxonomy=tax, val=(eva, yva))
    # the grid is scored by validation top-1 of a model fitted on train
    for c, acc in b.selection_.items():
        m = LogisticRegression(C=c, max_iter=500).fit(etr.text, ytr)
        assert acc == pytest.approx((m.predict(eva.text) == yva).mean())
    best = max(b.selection_.values())
    assert b.C_ == min(c for c, v in b.selection_.items() if v == best)
    ref = LogisticRegression(C=b.C_, max_iter=500).fit(etr.text, ytr)      # train only, not train+val
    np.testing.assert_allclose(b.predict_proba(eva), ref.predict_proba(eva.text), atol=1e-5)


def test_logistic_without_val_uses_cv_and_unseen_classes_get_zero(data):
    tax, (etr, ytr), (eva, yva), _ = data
    keep = ytr != 0                                     # class 0 never seen in training
    b = LogisticBaseline(Cs=(0.1, 10.0)).fit(etr.take(keep), ytr[keep], taxonomy=tax)
    assert b.C_ in (0.1, 10.0) and b.selection_ == {}
    p = b.predict_proba(eva)
    assert p.shape == (len(yva), tax.n_classes) and p.dtype == np.float32
    assert (p[:, 0] == 0).all()
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)


def test_hiclass_path_product_is_a_distribution_over_classes(data):
    tax, (etr, ytr), (eva, yva), _ = data
    b = HiClassBaseline(C=10.0).fit(etr, ytr, taxonomy=tax, val=(eva, yva))
    raw = b._proba(features(eva))                      # private: before any renormalisation (no public call)
    np.testing.assert_allclose(raw.sum(1), 1.0, atol=1e-5)
    p = b.predict_proba(eva)
    # the inner-node class "A > B" is predictable (its "stop here" child), and so are the deeper ones
    ab = tax.index_of(["A > B"])[0]
    assert (p.argmax(1) == ab).any()
    lr = LogisticBaseline(C=10.0).fit(etr, ytr, taxonomy=tax).predict_proba(eva)
    assert evaluate(p, yva, tax)["top1"] >= evaluate(lr, yva, tax)["top1"] - 0.1 > 0.3   # chance is 1/8
    # probability of a class = product of the local conditionals along its path
    m = b.model_
    sep = m.separator_
    root_clf = m.hierarchy_.nodes[m.root_]["classifier"]
    a_clf = m.hierarchy_.nodes["A"]["classifier"]
    X = features(eva)
    pA = root_clf.predict_proba(X)[:, list(root_clf.classes_).index("A")]
    pAE = a_clf.predict_proba(X)[:, list(a_clf.classes_).index("A" + sep + "E")]
    np.testing.assert_allclose(p[:, tax.index_of(["A > E"])[0]], pA * pAE, rtol=1e-4, atol=1e-6)


def test_hiclass_needs_val_to_choose_C(data):
    tax, (etr, ytr), _, _ = data
    with pytest.raises(ValueError, match="needs validation data"):
        HiClassBaseline(C="val").fit(etr, ytr, taxonomy=tax)


def test_bad_inputs_are_named():
    tax = Taxonomy.from_paths(PATHS)
    etr, ytr = _make(tax, 60, 0)
    with pytest.raises(ValueError, match="C must be a positive number or 'val'"):
        LogisticBaseline(C=0)
    with pytest.raises(ValueError, match="'val'"):
        LogisticBaseline(C="auto")
    with pytest.raises(RuntimeError, match="not fitted"):
        LogisticBaseline().predict_proba(etr)
    b = LogisticBaseline(C=1.0).fit(etr, ytr, taxonomy=tax)
    other, _ = _make(tax, 10, 1, dt=5)
    with pytest.raises(ValueError, match="dimension 5 but the baseline was fitted on 8"):
        b.predict_proba(other)
    with pytest.raises(ValueError, match="train labels"):
        LogisticBaseline(C=1.0).fit(etr, ["no such class"] * len(ytr), taxonomy=tax)


def test_compare_scores_baselines_on_the_same_split(data):
    tax, tr, va, te = data
    suite = baseline_suite(C=10.0, soft_labels=None)
    configs = {**suite, "head": TrainConfig(epochs=4, batch_size=32, proj_dim=16, hidden=32, lr=5e-3)}
    df = compare(configs, train=tr, val=va, test=te, taxonomy=tax, seeds=(0, 1, 2),
                 crm_for=["LogisticRegression"], progress=False)
    assert list(df.index) == ["LogisticRegression", "LogisticRegression" + CRM_SUFFIX, "hiclass LCPPN", "head"]
    runs = df.attrs["runs"]
    lr = runs[("LogisticRegression", 0)]
    assert isinstance(lr, LogisticBaseline) and lr is runs[("LogisticRegression", 2)]   # fitted once
    assert lr is not suite["LogisticRegression"]                                      # the given one stays unfitted
    assert df.loc["LogisticRegression", "top1_std"] == 0.0
    assert np.isnan(df.loc["LogisticRegression", "best_epoch_mean"])
    want = evaluate(lr.predict_proba(te[0]), te[1], tax)
    assert df.loc["LogisticRegression", "top1_mean"] == pytest.approx(want["top1"])
    assert df.loc["hiclass LCPPN", "hdist@5_mean"] == pytest.approx(
        evaluate(runs[("hiclass LCPPN", 1)].predict_proba(te[0]), te[1], tax)["hdist@5"])
    crm = evaluate(lr.predict_proba(te[0]), te[1], tax, crm=True)
    assert df.loc["LogisticRegression" + CRM_SUFFIX, "hdist@5_mean"] == pytest.approx(crm["hdist@5"])
    with pytest.raises(TypeError, match="not a TrainConfig or a semcat_kit.experiments.baselines.Baseline"):
        compare({"x": object()}, train=tr, test=te, taxonomy=tax, progress=False)


def test_baseline_suite_has_the_linear_model_with_soft_labels(data):
    tax, tr, va, te = data
    suite = baseline_suite()
    soft = suite["LogisticRegression + semantic soft labels"]
    assert isinstance(soft, TrainConfig) and soft.solver == "lbfgs" and soft.hidden == 0 and soft.proj_dim == 0
    assert soft.C == "val" and soft.Cs == tuple(float(c) for c in suite["LogisticRegression"].Cs)
    nb = sk.similarity.tree_neighbors(tax, k=3)
    df = compare({"LogisticRegression": suite["LogisticRegression"],
                  "LR + soft": soft.replace(k=3)}, train=tr, val=va, test=te, taxonomy=tax, neighbors=nb,
                 seeds=(0, 1, 2), progress=False)
    run = df.attrs["runs"][("LR + soft", 0)]
    assert run.solver["method"] == "lbfgs" and run.solver["C"] in soft.Cs
    # the same linear model; soft labels must not cost more than noise on this small problem
    assert df.loc["LR + soft", "top1_mean"] >= df.loc["LogisticRegression", "top1_mean"] - 0.05


def test_baselines_are_sklearn_estimators_with_the_classifier_signature():
    """fit(X, y) as SemcatClassifier: taxonomy in the constructor or built from the labels; clone,
    get_params / set_params, predict, score, and GridSearchCV over C."""
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV

    tax = Taxonomy.from_paths(PATHS)
    etr, ytr = _make(tax, 40, 0)
    eva, yva = _make(tax, 20, 1)
    labels = np.asarray(tax.classes, dtype=object)[ytr]
    b = LogisticBaseline(C=1.0, taxonomy=tax)
    assert b.get_params() == {"C": 1.0, "Cs": (0.1, 1.0, 10.0, 100.0), "max_iter": 500, "taxonomy": tax}
    b2 = clone(b).set_params(C=10.0)
    assert b2.C == 10.0 and b.C == 1.0 and not hasattr(b2, "classes_")
    b.fit(etr.text, labels)                                       # an array, label paths, taxonomy in the constructor
    assert list(b.classes_) == list(tax.classes) and b.predict_proba(eva.text).shape == (len(yva), tax.n_classes)
    ref = LogisticBaseline(C=1.0).fit(etr, ytr, taxonomy=tax)     # compare()'s call
    np.testing.assert_allclose(b.predict_proba(eva), ref.predict_proba(eva), atol=1e-6)
    assert (ref.predict(eva) == ref.predict_proba(eva).argmax(1)).all()          # indices in, indices out
    assert b.score(eva, np.asarray(tax.classes, dtype=object)[yva]) == ref.score(eva, yva) > 0.5
    # no taxonomy: built from the labels (paths give the tree); integer labels stay integers
    free = LogisticBaseline(C=1.0).fit(etr, labels)
    assert free.taxonomy_.classes == sorted(set(labels)) and set(free.predict(eva)) <= set(labels)
    ints = LogisticBaseline(C=1.0).fit(etr, ytr + 100)
    assert set(ints.predict(eva)) <= set(ytr + 100) and ints.predict(eva).dtype.kind == "i"
    grid = GridSearchCV(HiClassBaseline(taxonomy=tax), {"C": [0.01, 10.0]}, cv=2).fit(etr.text, ytr)
    assert grid.best_params_["C"] in (0.01, 10.0) and grid.best_estimator_.taxonomy_.classes == tax.classes
    with pytest.raises(Exception, match="not fitted"):
        LogisticBaseline().predict_proba(eva)
