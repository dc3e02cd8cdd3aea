"""Tests for semcat_kit.judge.metrics: evaluate, per-sample helpers, CRM decoding."""
from __future__ import annotations

import types
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_recall_fscore_support

import semcat_kit as sk
from semcat_kit import Taxonomy
from semcat_kit import metrics as M


# ------------------------------------------------------------------------------ fixtures / helpers
@pytest.fixture
def tiny():
    """4 leaves at depth 2: A > a1, A > a2, B > b1, B > b2, and 4 hand-checked samples."""
    tax = Taxonomy.from_paths(["A > a1", "A > a2", "B > b1", "B > b2"])
    assert tax.classes == ["A > a1", "A > a2", "B > b1", "B > b2"]
    probs = np.array([
        [0.7, 0.2, 0.1, 0.0],   # y=0, right
        [0.1, 0.6, 0.3, 0.0],   # y=0, predicts sibling a2 (d=1), y at rank 3
        [0.0, 0.1, 0.5, 0.4],   # y=3, predicts sibling b1 (d=1), y at rank 2
        [0.5, 0.0, 0.2, 0.3],   # y=2, predicts a1 across the root (d=2), y at rank 3
    ])
    y = np.array([0, 0, 3, 2])
    nbrs = np.array([[1, 2], [0, 3], [3, 0], [2, 0]])
    return tax, probs, y, nbrs


def random_taxonomy(rng: np.random.Generator) -> Taxonomy:
    """A random tree (depth 1-4, mixed branching) whose classes are all leaves plus some inner nodes."""
    paths = []

    def grow(prefix, depth):
        n_child = 0 if depth >= 4 else int(rng.integers(0 if depth else 1, 4))
        if prefix and (n_child == 0 or rng.random() < 0.3):
            paths.append(" > ".join(prefix))
        for c in range(n_child):
            grow(prefix + [f"n{depth}{c}"], depth + 1)

    grow([], 0)
    if len(paths) < 2:
        paths += ["X > y", "X > z"]
    return Taxonomy.from_paths(paths)


def brute_cost(probs, tax):
    D = tax.distance_matrix().astype(np.float64)
    return probs @ D


def brute_topm_cost(probs, tax, m):
    """cost over the top-m classes by a stable sort, with renormalised probabilities (loop per row)."""
    out = np.full(probs.shape, np.inf)
    D = tax.distance_matrix().astype(np.float64)
    for n, p in enumerate(probs):
        cand = np.argsort(-p, kind="stable")[:m]
        q = p[cand] / p[cand].sum()
        out[n, cand] = q @ D[np.ix_(cand, cand)]
    return out


# ------------------------------------------------------------------------------ topk
def test_topk_matches_stable_sort_and_breaks_ties_by_index():
    rng = np.random.default_rng(0)
    p = rng.integers(0, 4, size=(200, 30)).astype(float)   # many ties
    for k in (1, 3, 7, 30, 50):
        got = M.topk(p, k)
        ref = np.argsort(-p, axis=1, kind="stable")[:, : min(k, 30)]
        np.testing.assert_array_equal(got, ref)
    assert M.topk(p, 50).shape == (200, 30)


def test_topk_tiebreak_and_inf():
    s = np.array([[0.0, -np.inf, 0.0, -np.inf, 1.0]])
    tb = np.array([[0.1, 0.5, 0.3, 0.9, 0.0]])
    np.testing.assert_array_equal(M.topk(s, 5), [[4, 0, 2, 1, 3]])
    np.testing.assert_array_equal(M.topk(s, 5, tiebreak=tb), [[4, 2, 0, 3, 1]])
    with pytest.raises(ValueError, match="NaN in rows \\[0\\]"):
        M.topk(np.array([[0.1, np.nan]]), 1)
    with pytest.raises(ValueError, match="positive integer"):
        M.topk(s, 0)


# ------------------------------------------------------------------------------ evaluate on hand-computed values
def test_evaluate_tiny_hand_computed(tiny):
    tax, probs, y, nbrs = tiny
    s = sk.evaluate(probs, y, taxonomy=tax, neighbors=nbrs, ks=(1, 2, 3))
    expected = {
        "n": 4, "top1": 0.25, "top2": 0.5, "top3": 1.0, "top5": 1.0,
        "macro_f1": 1 / 6,            # class 0: P=R=1/2; classes 2, 3: 0; class 1 absent from y
        "balanced_acc": 1 / 6,
        "acc_level_1": 0.75, "acc_level_2": 0.25,
        "mistake_severity": 4 / 3,    # (1 + 1 + 2) / 3 mistakes
        "hdist@1": 1.0, "hdist@2": 1.0, "hdist@3": 1.0,
        "nbrs@1": 0.25, "nbrs@2": 0.75, "nbrs@3": 11 / 12,
        "hP": 0.5, "hR": 0.5, "hF1": 0.5,   # shared ancestors 2+1+1+0 of 8
        "ece": 0.25 * 0.3 + 0.25 * 0.6 + 0.5 * 0.5,
    }
    assert list(s.index) == list(expected)
    for key, v in expected.items():
        assert s[key] == pytest.approx(v, abs=1e-12), key
    assert s.name == "argmax"


def test_evaluate_default_keys_and_sklearn_agreement(tiny):
    tax, probs, y, nbrs = tiny
    s = sk.evaluate(probs, y, tax)
    assert list(s.index) == ["n", "top1", "top5", "top20", "macro_f1", "balanced_acc", "acc_level_1",
                             "acc_level_2", "mistake_severity", "hdist@1", "hdist@5", "hdist@20",
                             "hP", "hR", "hF1", "ece"]
    # k capped at C = 4: hdist@20 averages the distances to every class {0, 1, 2, 2}
    assert s["hdist@20"] == pytest.approx(1.25)
    pred = probs.argmax(1)
    assert s["macro_f1"] == pytest.approx(f1_score(y, pred, labels=np.unique(y), average="macro"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert s["balanced_acc"] == pytest.approx(balanced_accuracy_score(y, pred))
    # with neighbours: nbrs keys appear; too narrow a table warns
    with pytest.warns(UserWarning, match="only 2 neighbours"):
        s2 = sk.evaluate(probs, y, tax, neighbors=nbrs)
    assert {"nbrs@1", "nbrs@5", "nbrs@20"} <= set(s2.index)
    assert s2["nbrs@20"] == pytest.approx(3 / 4)   # {y} + 2 neighbours, all in the top-4, over k=4


def test_evaluate_accepts_label_strings_and_neighbors_object(tiny):
    tax, probs, y, nbrs = tiny
    a = sk.evaluate(probs, y, tax, neighbors=nbrs, ks=(1, 2))
    b = sk.evaluate(probs, [tax.classes[i] for i in y], tax,
                    neighbors=types.SimpleNamespace(indices=nbrs), ks=(1, 2))
    pd.testing.assert_series_equal(a, b)


def test_perfect_predictions():
    tax = Taxonomy.from_paths(["A > a1", "A > a2", "B"])
    y = np.array([0, 1, 2, 2])
    probs = np.eye(3)[y]
    s = sk.evaluate(probs, y, tax, ks=(1, 2))
    assert s["top1"] == 1 and s["macro_f1"] == 1 and s["hF1"] == 1 and s["ece"] == 0
    assert np.isnan(s["mistake_severity"])    # no mistakes
    assert s["hdist@1"] == 0
    # hdist@2 = mean over samples of d(second choice, y) / 2; second choice is index order
    assert s["hdist@2"] == pytest.approx(np.mean([1, 1, 2, 2]) / 2)


# ------------------------------------------------------------------------------ helpers
def test_per_sample_helpers(tiny):
    tax, probs, y, nbrs = tiny
    ranked = M.topk(probs, 4)
    np.testing.assert_array_equal(M.mistake_distances(ranked[:, 0], y, tax), [0, 1, 1, 2])
    np.testing.assert_array_equal(M.mistake_distances(ranked, y, tax)[3], [2, 1, 0, 2])
    np.testing.assert_allclose(M.hierarchical_distance_at_k(ranked, y, tax, 2), [0.5, 1.5, 0.5, 1.5])
    np.testing.assert_allclose(M.neighbors_at_k(ranked, y, nbrs, 2), [1, 0.5, 1, 0.5])
    assert M.hierarchical_prf(ranked[:, 0], y, tax) == pytest.approx((0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="outside \\[0, 4\\)"):
        M.mistake_distances([0, 9, 1, 1], y, tax)
    # a negative class index must not silently wrap around to the last class's neighbours
    for bad in ([0, -1, 1, 1], [0, 1, 7, 1]):
        with pytest.raises(ValueError, match=r"y rows \[\d\] hold class indices outside \[0, \d+\)"):
            M.neighbors_at_k(ranked, np.array(bad), nbrs, 2)


def test_hierarchical_prf_with_ancestor_prediction():
    tax = Taxonomy.from_paths(["A", "A > b", "A > b > c", "D"])
    # predict the ancestor "A" for true "A > b > c": |A(pred)|=1, |A(y)|=3, overlap 1
    # predict "D" for "A > b": overlap 0, |A(pred)|=1, |A(y)|=2
    hp, hr, hf = M.hierarchical_prf([0, 3], [2, 1], tax)
    assert hp == pytest.approx(1 / 2) and hr == pytest.approx(1 / 5)
    assert hf == pytest.approx(2 * 0.5 * 0.2 / 0.7)


def test_reliability_table_and_ece():
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.3, 0.7]])
    y = np.array([0, 1, 0, 1])
    t = M.reliability_table(probs, y)
    assert len(t) == 15 and t["count"].sum() == 4
    full = t[t["count"] > 0]
    assert list(full["count"]) == [1, 1, 2]
    np.testing.assert_allclose(full["accuracy"], [1.0, 1.0, 0.5])
    ece = (1 * abs(1 - 0.55) + 1 * abs(1 - 0.7) + 2 * abs(0.5 - 0.95)) / 4
    assert M.expected_calibration_error(probs, y) == pytest.approx(ece)


def test_per_class_report(tiny):
    tax, probs, y, _ = tiny
    r = M.per_class_report(probs, y, tax)
    assert list(r.index) == [0, 2, 3]                          # classes present in y
    assert list(r["support"]) == [2, 1, 1]
    assert list(r["n_predicted"]) == [2, 1, 0]
    P, R, _, _ = precision_recall_fscore_support(y, probs.argmax(1), labels=[0, 2, 3], zero_division=np.nan)
    np.testing.assert_allclose(r["accuracy"], R)
    np.testing.assert_allclose(r["precision"], P)              # class 3 never predicted: NaN
    np.testing.assert_allclose(r["mean_distance"], [0.5, 2.0, 1.0])
    np.testing.assert_allclose(r["mistake_severity"], [1.0, 2.0, 1.0])
    assert list(r["top_confusion"]) == ["A > a2", "A > a1", "B > b1"]
    assert len(M.per_class_report(probs, y, tax, all_classes=True)) == 4
    # support-weighted accuracy is top-1
    assert (r["accuracy"] * r["support"]).sum() / r["support"].sum() == pytest.approx(0.25)


def test_per_sample_report(tiny):
    tax, probs, y, _ = tiny
    r = M.per_sample_report(probs, y, tax, k=5)
    assert list(r["rank_true"]) == [1, 3, 2, 3]
    assert list(r["distance"]) == [0, 1, 1, 2]
    assert list(r["pred_class"]) == ["A > a1", "A > a2", "B > b1", "A > a1"]
    np.testing.assert_allclose(r["confidence"], [0.7, 0.6, 0.5, 0.5])
    np.testing.assert_allclose(r["p_true"], [0.7, 0.1, 0.4, 0.2])
    assert len(r["topk"][0]) == 4


# ------------------------------------------------------------------------------ errors
def test_errors_name_rows_and_arguments(tiny):
    tax, probs, y, nbrs = tiny
    with pytest.raises(ValueError, match="3 columns but the taxonomy has 4 classes"):
        sk.evaluate(probs[:, :3] / probs[:, :3].sum(1, keepdims=True), y, tax)
    with pytest.raises(ValueError, match=r"rows \[2\] hold class indices \[7\] outside \[0, 4\)"):
        sk.evaluate(probs, [0, 0, 7, 2], tax)
    with pytest.raises(ValueError, match=r"rows \[0, 3\] hold class indices \[-1, 4\]"):
        sk.evaluate(probs, [-1, 0, 3, 4], tax)
    bad = probs.copy(); bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite values in rows \[1\]"):
        sk.evaluate(bad, y, tax)
    logits = np.log(probs + 1e-3) * 3
    with pytest.raises(ValueError, match=r"negative values in rows \[0, 1, 2, 3\].*softmax"):
        sk.evaluate(logits, y, tax)
    off = probs.copy(); off[3] *= 2
    with pytest.raises(ValueError, match=r"rows \[3\] sum to 2, not 1.*not logits"):
        sk.evaluate(off, y, tax)
    with pytest.raises(ValueError, match="3 entries but probs has 4 rows"):
        sk.evaluate(probs, y[:3], tax)
    with pytest.raises(ValueError, match="2-D"):
        sk.evaluate(probs[0], y, tax)
    with pytest.raises(ValueError, match="no rows"):
        sk.evaluate(probs[:0], y[:0], tax)
    with pytest.raises(ValueError, match="non-integer"):
        sk.evaluate(probs, [0.0, 0.5, 3.0, 2.0], tax)
    with pytest.raises(KeyError, match="not classes"):
        sk.evaluate(probs, ["A > a1", "A > zz", "B > b1", "B > b2"], tax)
    with pytest.raises(ValueError, match="each of ks must be a positive integer"):
        sk.evaluate(probs, y, tax, ks=(1, 0))
    with pytest.raises(ValueError, match=r"neighbors cover 3 classes but the taxonomy has 4"):
        sk.evaluate(probs, y, tax, neighbors=nbrs[:3])
    with pytest.raises(ValueError, match=r"neighbors.indices rows \[1\] hold values outside"):
        sk.evaluate(probs, y, tax, neighbors=np.array([[1, 2], [0, 9], [3, 0], [2, 1]]))
    with pytest.raises(ValueError, match="top_m must be a positive integer"):
        M.crm_rerank(probs, tax, top_m=0)
    with pytest.raises(ValueError, match="3 columns but the taxonomy has 4"):
        M.crm_predict(probs[:, :3] / probs[:, :3].sum(1, keepdims=True), tax)


# ------------------------------------------------------------------------------ CRM
def test_crm_changes_decision_on_hand_made_tree():
    tax = Taxonomy.from_paths(["A > a1", "A > a2", "A > a3", "B > b1"])
    p = np.array([[0.22, 0.22, 0.22, 0.34]])
    # cost(a_i) = 0.34*2 + 0.22*1 + 0.22*1 = 1.12;  cost(b1) = 0.66*2 = 1.32
    np.testing.assert_allclose(M.crm_rerank(p, tax), [[-1.12, -1.12, -1.12, -1.32]], atol=1e-12)
    idx, cost = M.crm_predict(p, tax, top_k=4)
    np.testing.assert_array_equal(idx, [[0, 1, 2, 3]])        # equal costs: lower index first
    np.testing.assert_allclose(cost, [[1.12, 1.12, 1.12, 1.32]])
    assert M.topk(p, 1)[0, 0] == 3                             # argmax disagrees
    s_arg = sk.evaluate(p, [0], tax, ks=(1,))
    s_crm = sk.evaluate(p, [0], tax, ks=(1,), crm=True)
    assert s_arg["top1"] == 0 and s_crm["top1"] == 1 and s_crm.name == "crm"
    assert s_crm["ece"] == s_arg["ece"]                        # probabilities untouched


def test_crm_ties_broken_by_probability():
    tax = Taxonomy.from_paths(["A > a1", "A > a2", "B > b1", "B > b2"])
    p = np.array([[0.3, 0.2, 0.25, 0.25]])    # cost a1 = .2+1.0 = 1.2, a2 = .3+1.0 = 1.3, b's = .25+1.0
    idx, cost = M.crm_predict(p, tax, top_k=4)
    np.testing.assert_array_equal(idx, [[0, 2, 3, 1]])
    np.testing.assert_allclose(cost, [[1.2, 1.25, 1.25, 1.3]])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), alpha=st.sampled_from([0.05, 0.3, 1.0]))
def test_crm_equals_brute_force_on_random_trees(seed, alpha):
    rng = np.random.default_rng(seed)
    tax = random_taxonomy(rng)
    C = tax.n_classes
    probs = rng.dirichlet(np.full(C, alpha), size=7)
    ref = brute_cost(probs, tax)
    exact = -M.crm_rerank(probs, tax)
    np.testing.assert_allclose(exact, ref, atol=1e-8)
    np.testing.assert_allclose(-M.crm_rerank(probs, tax, top_m=C), exact, atol=1e-12)
    np.testing.assert_allclose(-M.crm_rerank(probs, tax, top_m=C + 5), exact, atol=1e-12)
    m = max(1, C // 2)
    np.testing.assert_allclose(-M.crm_rerank(probs, tax, top_m=m), brute_topm_cost(probs, tax, m), atol=1e-8)
    idx, cost = M.crm_predict(probs, tax, top_k=3)
    # the CRM pick has the minimum brute-force expected distance; costs ascend
    best = ref.min(1)
    np.testing.assert_allclose(ref[np.arange(len(probs)), idx[:, 0]], best, atol=1e-8)
    assert (np.diff(cost, axis=1) >= -1e-12).all()
    np.testing.assert_allclose(cost, np.take_along_axis(ref, idx, 1), atol=1e-8)


def test_crm_predict_beyond_candidates_follows_probability():
    tax = Taxonomy.from_paths(["A > a1", "A > a2", "B > b1", "B > b2", "C"])
    p = np.array([[0.05, 0.4, 0.1, 0.3, 0.15]])
    idx, cost = M.crm_predict(p, tax, top_k=5, top_m=2)
    # candidates {a2, b2}: renormalised q = (4/7, 3/7); cost a2 = 3/7*2, cost b2 = 4/7*2
    np.testing.assert_array_equal(idx, [[1, 3, 4, 2, 0]])
    np.testing.assert_allclose(cost[0, :2], [6 / 7, 8 / 7])
    assert np.isinf(cost[0, 2:]).all()


def test_evaluate_crm_uses_crm_ranking(tiny):
    tax, probs, y, nbrs = tiny
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.full(4, 0.5), size=40)
    y = rng.integers(0, 4, size=40)
    s = sk.evaluate(probs, y, tax, neighbors=nbrs, ks=(1, 2), crm=True)
    ranked, _ = M.crm_predict(probs, tax, top_k=4)
    assert s["top1"] == pytest.approx((ranked[:, 0] == y).mean())
    assert s["top2"] == pytest.approx((ranked[:, :2] == y[:, None]).any(1).mean())
    assert s["hdist@2"] == pytest.approx(M.hierarchical_distance_at_k(ranked, y, tax, 2).mean())
    assert s["nbrs@2"] == pytest.approx(M.neighbors_at_k(ranked, y, nbrs, 2).mean())
    assert s["hF1"] == pytest.approx(M.hierarchical_prf(ranked[:, 0], y, tax)[2])
    assert s["ece"] == pytest.approx(M.expected_calibration_error(probs, y))
    r = M.per_class_report(probs, y, tax, crm=True)
    assert (r["accuracy"] * r["support"]).sum() / len(y) == pytest.approx(s["top1"])


# ------------------------------------------------------------------------------ real data
@pytest.fixture(scope="module")
def myntra(myntra_styles):
    df = myntra_styles.dropna(subset=["masterCategory", "subCategory", "articleType"])
    labels = (df["masterCategory"] + " > " + df["subCategory"] + " > " + df["articleType"]).tolist()
    tax = Taxonomy.from_paths(labels)
    y_all = tax.index_of(labels)
    return tax, y_all


def _synthetic_model(tax, y, correct, wrong_pred, peak=0.6):
    """probs with `peak` on the predicted class (y where correct) and the rest spread uniformly."""
    C = tax.n_classes
    pred = np.where(correct, y, wrong_pred)
    probs = np.full((len(y), C), (1 - peak) / (C - 1))
    probs[np.arange(len(y)), pred] = peak
    return probs


def test_myntra_sibling_confusion_is_less_severe(myntra):
    tax, y_all = myntra
    C = tax.n_classes
    assert C > 100 and tax.max_depth == 3
    rng = np.random.default_rng(0)
    parent = tax.level_index(np.arange(C), 2)
    siblings = [np.flatnonzero((parent == parent[c]) & (np.arange(C) != c)) for c in range(C)]
    has_sib = np.array([len(s) > 0 for s in siblings])
    y = rng.choice(y_all[has_sib[y_all]], size=3000)          # real (long-tailed) label mix
    correct = rng.random(len(y)) < 0.6
    sib_pred = np.array([rng.choice(siblings[c]) for c in y])
    rand_pred = np.array([rng.choice(np.delete(np.arange(C), c)) for c in y])
    sib = sk.evaluate(_synthetic_model(tax, y, correct, sib_pred), y, tax)
    rnd = sk.evaluate(_synthetic_model(tax, y, correct, rand_pred), y, tax)
    assert sib["top1"] == rnd["top1"] == pytest.approx(correct.mean())
    assert sib["mistake_severity"] == 1.0                      # siblings are always at LCA height 1
    assert rnd["mistake_severity"] > 1.8                       # random mistakes mostly cross the root
    assert sib["hdist@1"] < rnd["hdist@1"]
    assert sib["acc_level_1"] == sib["acc_level_2"] == 1.0
    assert rnd["acc_level_2"] < 0.7
    assert sib["hF1"] > rnd["hF1"]
    assert sib["ece"] == pytest.approx(rnd["ece"])             # same confidences and correctness
    # with the real Neighbors of similarity.py (tree neighbours: siblings come first)
    nb = sk.similarity.tree_neighbors(tax, k=19)
    sib_n = sk.evaluate(_synthetic_model(tax, y, correct, sib_pred), y, tax, neighbors=nb)
    rnd_n = sk.evaluate(_synthetic_model(tax, y, correct, rand_pred), y, tax, neighbors=nb)
    assert sib_n["nbrs@1"] == sib_n["top1"]                   # S_1(y) = {y}
    assert sib_n["nbrs@20"] > rnd_n["nbrs@20"]
    pd.testing.assert_series_equal(sib_n, sk.evaluate(_synthetic_model(tax, y, correct, sib_pred), y, tax,
                                                      neighbors=nb.indices))


def test_myntra_crm_exact_and_lowers_hdist(myntra):
    tax, y_all = myntra
    C = tax.n_classes
    rng = np.random.default_rng(1)
    y = rng.choice(y_all, size=1500)
    # a model that knows the subCategory but is noisy: mass on y's subtree + Dirichlet noise
    parent = tax.level_index(np.arange(C), 2)
    same = (parent[None, :] == parent[y][:, None]).astype(float)
    same[np.arange(len(y)), y] += 1.0
    probs = 0.5 * same / same.sum(1, keepdims=True) + 0.5 * rng.dirichlet(np.full(C, 0.05), size=len(y))
    ref = brute_cost(probs[:200], tax)
    exact = -M.crm_rerank(probs[:200], tax)
    np.testing.assert_allclose(exact, ref, atol=1e-8)
    np.testing.assert_allclose(-M.crm_rerank(probs[:50], tax, top_m=C), exact[:50], atol=1e-10)
    arg = sk.evaluate(probs, y, tax)
    crm = sk.evaluate(probs, y, tax, crm=True)
    assert crm["hdist@5"] < arg["hdist@5"]
    assert crm["hdist@20"] < arg["hdist@20"]
    assert crm["mistake_severity"] <= arg["mistake_severity"]
    assert crm["ece"] == arg["ece"]


def test_google_taxonomy_crm_matches_distance_columns(google_taxonomy_file):
    tax = Taxonomy.from_google_taxonomy(google_taxonomy_file)
    C = tax.n_classes
    assert C == 5595
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.full(C, 0.01), size=4)
    cols = rng.choice(C, size=60, replace=False)
    D = tax.lca_distance(np.arange(C)[:, None], cols[None, :]).astype(float)   # (C, 60) distance columns
    exact = -M.crm_rerank(probs, tax)
    np.testing.assert_allclose(exact[:, cols], probs @ D, atol=1e-8)
    idx, cost = M.crm_predict(probs, tax, top_k=3, top_m=200)
    assert idx.shape == (4, 3) and np.isfinite(cost).all()
    # the top-m pick lies among the 200 most probable classes
    top200 = M.topk(probs, 200)
    assert all(idx[n, 0] in top200[n] for n in range(4))
