"""Hedged decoding (issue 23): the hedge tree, node probabilities, the decoders against brute force,
the calibration formulas, the finite-sample guarantee checked over many random calibration/test splits
of real catalogs (Myntra, Amazon toys), the always-right and uniform heads, metrics, curves, the
compare columns, export -> load and Predictor.predict(precision=)."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import beta, binom

import semcat_kit as sk
from semcat_kit.judge import hedging as H
from semcat_kit.judge.metrics import hedging_metric_names, hedging_metrics, lower_is_better, metric_info

PATHS = ["A", "A > B", "A > B > x", "A > B > y", "A > C", "D > E", "D > F > g", "H"]


@pytest.fixture(scope="module")
def small():
    return sk.datasets.taxonomy.read_taxonomy(PATHS)


@pytest.fixture(scope="module")
def google(google_taxonomy_file):
    return sk.Taxonomy.from_google_taxonomy(google_taxonomy_file)


def _under(tax, path):
    """Brute force: class indices whose path is ``path`` or below it ('' = all)."""
    return [c for c, cp in enumerate(tax.classes) if path == "" or cp == path or cp.startswith(path + tax.sep)]


def _peaky(rng, n, C, conc=0.05, top=0.9):
    """Probabilities with most mass on a random class, the rest Dirichlet-spread."""
    top = np.broadcast_to(np.asarray(top, dtype=float), (n,))
    p = rng.dirichlet(np.full(C, conc), size=n) * (1 - top)[:, None]
    p[np.arange(n), rng.integers(0, C, n)] += top
    return p


# ------------------------------------------------------------------------------ the tree
def test_hedge_tree_of_a_taxonomy_with_inner_classes(small):
    t = H.hedge_tree(small)
    assert t is H.hedge_tree(small)                       # cached on the taxonomy
    assert t.n_inner == 5 and t.n_nodes == 5 + len(PATHS)
    assert t.paths[:5] == ["", "A", "D", "A > B", "D > F"] and t.paths[5:] == list(small.classes)
    # "A" and "A > B" are classes and inner nodes: their leaves hang under their inner nodes
    a_leaf, ab_leaf = 5 + small.index_of("A"), 5 + small.index_of("A > B")
    assert t.parent[a_leaf] == 1 and t.parent[ab_leaf] == 3 and t.depth[a_leaf] == 1 and t.depth[ab_leaf] == 2
    assert t.n_under.tolist()[:5] == [8, 5, 2, 3, 1] and (t.n_under[5:] == 1).all()
    np.testing.assert_allclose(t.bits, np.log2(8) - np.log2(t.n_under))
    assert sorted(t.child_idx[t.child_ptr[1]:t.child_ptr[2]].tolist()) == [3, a_leaf, 5 + small.index_of("A > C")]
    # contains: a node holds exactly the classes of its path prefix
    for h, path in enumerate(t.paths):
        want = set(_under(small, path)) if h < t.n_inner else {h - t.n_inner}
        got = {c for c in range(small.n_classes) if t.contains(h, c)}
        assert got == want, path
    # sparse operators: one entry per class, ancestors only; never C x C
    assert t.to_inner.nnz == small.n_classes and t.ancestors.shape == (small.n_classes, t.n_inner)


def test_node_probabilities_are_sums_of_class_probabilities(small, google):
    rng = np.random.default_rng(0)
    for tax in (small, google):
        t = H.hedge_tree(tax)
        p = rng.dirichlet(np.full(tax.n_classes, 0.3), size=40)
        m = H.node_probabilities(p, tax)
        assert m.shape == (40, t.n_nodes)
        np.testing.assert_allclose(m[:, t.n_inner:], p)
        for h in range(0, t.n_inner, max(1, t.n_inner // 60)):
            np.testing.assert_allclose(m[:, h], p[:, _under(tax, t.paths[h])].sum(1), atol=1e-12)
        np.testing.assert_allclose(m[:, 0], 1, atol=1e-9)
        np.testing.assert_allclose(m[:, :t.n_inner], p @ t.ancestors.toarray(), atol=1e-12)


def test_google_tree_is_sparse(google):
    t = H.hedge_tree(google)
    assert google.n_classes == 5595 and t.n_inner == 877
    assert t.to_inner.nnz == 5595 and t.up.nnz <= t.n_inner * (google.max_depth + 1)


# ------------------------------------------------------------------------------ decoding
def _brute_threshold(m, t, lam):
    """Greedy descent to the most probable child while its probability exceeds lam."""
    out = []
    for row in m:
        cur = 0
        while cur < t.n_inner:
            kids = t.child_idx[t.child_ptr[cur]:t.child_ptr[cur + 1]]
            j = kids[np.argmax(row[kids])]
            if row[j] > lam:
                cur = j
            else:
                break
        out.append(cur)
    return np.array(out)


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.5, 0.8, 0.97, 1.0])
def test_threshold_rule_against_brute_force(small, google, lam):
    rng = np.random.default_rng(1)
    for tax, n in ((small, 400), (google, 150)):
        t = H.hedge_tree(tax)
        p = _peaky(rng, n, tax.n_classes, top=0.55)
        m = H.node_probabilities(p, tax)
        h = H.hedge(p, tax, lam)
        np.testing.assert_array_equal(h.node, _brute_threshold(m, t, lam))
        np.testing.assert_allclose(h.prob, np.where(h.node == 0, 1, m[np.arange(n), h.node]), atol=1e-9)
        assert (h.node == 0).all() if lam == 1.0 else True
        if lam >= 0.5:    # = the deepest node whose probability exceeds lam (the leaf first at equal depth)
            key = np.where(m > lam, 2 * t.depth + (np.arange(t.n_nodes) >= t.n_inner), -1)
            key[:, 0] = 0
            np.testing.assert_array_equal(h.node, key.argmax(1))


def test_hedged_predictions_fields_and_chunking(google, monkeypatch):
    rng = np.random.default_rng(2)
    p = _peaky(rng, 300, google.n_classes, top=rng.uniform(0.5, 1, 300)).astype(np.float32)
    p /= p.sum(1, keepdims=True)
    whole = H.hedge(p, google, 0.8, floor=0.9)
    monkeypatch.setattr(H, "row_block", lambda *a, **k: 7)      # blocks of 7 rows give the same answer
    parts = H.hedge(p, google, 0.8, floor=0.9)
    np.testing.assert_array_equal(whole.node, parts.node)
    np.testing.assert_array_equal(whole.prob, parts.prob)
    t = whole.tree
    assert (whole.is_leaf == (whole.node >= t.n_inner)).all() and whole.is_leaf.any() and (~whole.is_leaf).any()
    assert (whole.needs_review == ((whole.node == 0) | (whole.prob < 0.9))).all()
    assert (whole.class_index[whole.is_leaf] == whole.node[whole.is_leaf] - t.n_inner).all()
    assert whole.path[whole.is_leaf].tolist() == [google.classes[c] for c in whole.class_index[whole.is_leaf]]
    df = whole.frame()
    assert list(df.columns) == ["node", "node_depth", "node_prob", "is_leaf", "needs_review"]
    assert (df["node_depth"].to_numpy() == whole.depth).all() and (df["node"] == whole.path).all()
    # an inner class of the Google taxonomy (every node is a class) can be the answer as a leaf
    c = google.index_of("Apparel & Accessories")
    one = np.zeros((1, google.n_classes))
    one[0, c] = 1
    h = H.hedge(one, google, 0.99)
    assert h.is_leaf[0] and h.class_index[0] == c and h.path[0] == "Apparel & Accessories"


def test_info_gain_rule_against_brute_force(small):
    rng = np.random.default_rng(3)
    t = H.hedge_tree(small)
    p = _peaky(rng, 300, small.n_classes, top=0.5)
    m = H.node_probabilities(p, small)
    for lam in (0.0, 0.7, 5.0, 1e3):
        got = H.hedge(p, small, lam, rule="info_gain")
        score = (t.bits + lam) * m
        np.testing.assert_allclose(score[np.arange(300), got.node], score.max(1), rtol=1e-12)
    assert (H.hedge(p, small, np.inf, rule="info_gain").node == 0).all()


def test_bad_input_is_named(small):
    p = np.full((2, small.n_classes), 1 / small.n_classes)
    with pytest.raises(ValueError, match="threshold must lie in"):
        H.hedge(p, small, 1.5)
    with pytest.raises(ValueError, match="rule must be one of"):
        H.hedge(p, small, 0.5, rule="best")
    with pytest.raises(ValueError, match="floor must lie in"):
        H.hedge(p, small, 0.5, floor=-1)
    with pytest.raises(ValueError, match="negative values"):
        H.hedge(-p, small, 0.5)
    with pytest.raises(ValueError, match="each of precisions must lie in"):
        H.calibrate_hedging(p, [0, 1], small, precisions=[1.0])
    with pytest.raises(ValueError, match="method must be one of"):
        H.calibrate_hedging(p, [0, 1], small, method="bonferroni")
    with pytest.raises(ValueError, match="monotone"):
        H.calibrate_hedging(p, [0, 1], small, method="crc", rule="info_gain")
    with pytest.raises(ValueError, match="no threshold was calibrated for precision=0.9.*calibrated: \\[0.5\\]"):
        H.HedgeCalibration({0.5: 0.2}).threshold(0.9)
    with pytest.raises(KeyError, match="not classes"):
        H.hedge_scores(p, ["A", "nope"], small)


# ------------------------------------------------------------------------------ calibration
def test_calibrated_threshold_matches_the_definitions():
    rng = np.random.default_rng(4)
    for n in (60, 500, 2000):
        t = np.where(rng.random(n) < 0.3, rng.random(n), -1.0)
        grid = np.unique(np.concatenate([[0.0, 1.0], t[t >= 0]]))
        for eps in (0.01, 0.05, 0.1, 0.2):
            risk = np.array([(t > g).mean() for g in grid])
            # CRC: inf{lambda : n/(n+1) R(lambda) + 1/(n+1) <= eps}
            ok = n / (n + 1) * risk + 1 / (n + 1) <= eps
            want = grid[ok].min() if ok.any() else 1.0
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", H.CalibrationWarning)
                assert H.calibrated_threshold(t, 1 - eps, "crc") == pytest.approx(want)
                # RCPS: the Clopper-Pearson upper bound of the risk at level delta is below eps
                k = np.rint(risk * n).astype(int)
                ucb = np.where(k < n, beta.ppf(0.9, k + 1, np.maximum(n - k, 1)), 1.0)
                ok = ucb <= eps
                want = grid[ok].min() if ok.any() else 1.0
                assert H.calibrated_threshold(t, 1 - eps, "rcps", 0.1) == pytest.approx(want)


def test_too_few_calibration_products_give_the_root(small):
    p = np.eye(small.n_classes)[[0, 1, 2]]
    with pytest.warns(H.CalibrationWarning, match=r"too few to certify precision 0.99 .*at least 230"):
        cal = H.calibrate_hedging(p, [0, 1, 2], small, precisions=[0.99])
    assert cal.threshold(0.99) == 1.0 and (cal.predict(p, small, 0.99).node == 0).all()
    with warnings.catch_warnings(record=True) as caught:       # one warning for all the targets it cannot serve
        warnings.simplefilter("always")
        cal = H.calibrate_hedging(p, [0, 1, 2], small, precisions=[0.5, 0.9, 0.99], method="crc")
    assert len(caught) == 1 and "precisions 0.9, 0.99 with crc (at least 9, 99 are needed)" in str(caught[0].message)
    assert cal.threshold(0.5) < 1 and cal.threshold(0.9) == cal.threshold(0.99) == 1.0
    with pytest.warns(H.CalibrationWarning, match="precision 0.99"):
        H.calibrate_hedging(p, [0, 1, 2], small, precisions=[0.99], rule="info_gain")


def test_always_right_head_gives_leaves_and_uniform_head_gives_the_root(myntra_probs, google):
    tax, P, y = myntra_probs
    C = tax.n_classes
    onehot = np.eye(C)[y]
    for method in ("rcps", "crc"):
        cal = H.calibrate_hedging(onehot[:3000], y[:3000], tax, (0.95, 0.98, 0.99), method=method)
        for q in (0.95, 0.98, 0.99):
            h = cal.predict(onehot[3000:6000], tax, q)
            assert h.is_leaf.all() and (h.class_index == y[3000:6000]).all() and not h.needs_review.any()
        uniform = np.full((3000, C), 1 / C)
        cal = H.calibrate_hedging(uniform, y[:3000], tax, (0.95, 0.98, 0.99), method=method)
        for q in (0.95, 0.98, 0.99):
            h = cal.predict(uniform, tax, q)
            assert (h.node == 0).all() and h.needs_review.all() and h.correct(y[:3000]).all()
    # the same on the Google taxonomy, whose classes include inner nodes
    rng = np.random.default_rng(5)
    yg = rng.integers(0, google.n_classes, 600)
    cal = H.calibrate_hedging(np.eye(google.n_classes)[yg[:300]], yg[:300], google, (0.98,))
    h = cal.predict(np.eye(google.n_classes)[yg[300:]], google, 0.98)
    assert h.is_leaf.all() and (h.class_index == yg[300:]).all()
    uni = np.full((300, google.n_classes), 1 / google.n_classes)
    assert (H.calibrate_hedging(uni, yg[:300], google, (0.98,)).predict(uni, google, 0.98).node == 0).all()


# ------------------------------------------------------------------------------ real catalogs
def _lr_probs(titles, labels, n_train):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tax = sk.Taxonomy.from_paths(labels, on_conflict="majority")
    y = np.asarray(tax.index_of(labels))
    X = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit_transform(titles)
    perm = np.random.default_rng(0).permutation(len(y))
    tr, rest = perm[:n_train], perm[n_train:]
    lr = LogisticRegression(C=5, max_iter=100, tol=1e-3).fit(X[tr], y[tr])
    P = np.zeros((len(rest), tax.n_classes))
    P[:, lr.classes_] = lr.predict_proba(X[rest])
    return tax, P, y[rest]


@pytest.fixture(scope="module")
def myntra_probs(fashion_dir):
    """A TF-IDF + LogisticRegression head fitted on 6,000 Myntra products; probabilities of the other ~38,000."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cat = sk.datasets.load_fashion(fashion_dir)
    cat = cat[cat["label"].notna()]
    return _lr_probs(cat["title"].fillna("").astype(str).to_numpy(), cat["label"].to_numpy(), 6000)


@pytest.fixture(scope="module")
def toys_probs():
    from conftest import SHARED_DATA

    path = SHARED_DATA / "amazon-uk-toys" / "products.csv"
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    raw = sk.datasets.read_csv(path, id_col="uniq_id", repair_col="product_name")
    raw = raw[raw["amazon_category_and_sub_category"].notna()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cat = sk.load_catalog(raw, id="uniq_id", title="product_name", path_col="amazon_category_and_sub_category")
    return _lr_probs(cat["title"].fillna("").astype(str).to_numpy(), cat["label"].to_numpy(), 3000)


def _split_risks(tax, P, y, n_cal, splits, method, delta, eps, rule_k=None):
    """Realised test risk (1 - precision) of ``splits`` random calibration/test splits."""
    t = H.hedge_scores(P, y, tax)              # the test loss at lambda is 1[t > lambda]
    rng = np.random.default_rng(7)
    out = []
    for _ in range(splits):
        perm = rng.permutation(len(y))
        cal, te = perm[:n_cal], perm[n_cal:]
        if rule_k is None:
            lam = H.calibrated_threshold(t[cal], 1 - eps, method, delta)
        else:                                  # a broken calibration: the plain empirical quantile
            k = rule_k(n_cal, eps)
            lam = max(0.0, -np.partition(-t[cal], k)[k])
        out.append((t[te] > lam).mean())
    return np.array(out), len(y) - n_cal


@pytest.mark.slow
@pytest.mark.parametrize("catalog", ["myntra", "toys"])
def test_guarantee_over_random_splits(catalog, request):
    """RCPS: P(risk <= eps) >= 1 - delta over calibration draws. Counted as a failure: a split whose
    realised test risk exceeds eps by more than 2 standard errors of the test split itself; the
    failures must stay within the binomial spread of a (delta + 2.3 %) failure rate over the splits
    (and the plain empirical quantile, which has no finite-sample correction, must not).
    CRC: the mean realised risk over splits is at most eps (within 3 standard errors)."""
    tax, P, y = request.getfixturevalue(f"{catalog}_probs")
    n_cal, splits, delta = (2000 if catalog == "myntra" else 1500), 1000, 0.1
    for eps in (0.05, 0.02, 0.01):
        risks, n_test = _split_risks(tax, P, y, n_cal, splits, "rcps", delta, eps)
        slack = 2 * np.sqrt(eps * (1 - eps) / n_test)
        fails = int((risks > eps + slack).sum())
        allowed = binom.ppf(0.999, splits, delta + 0.023)
        assert fails <= allowed, (catalog, eps, fails, allowed)
        assert (risks <= eps).mean() >= 1 - delta - 0.05, (catalog, eps, (risks <= eps).mean())
        naive, _ = _split_risks(tax, P, y, n_cal, splits, "rcps", delta, eps, rule_k=lambda n, e: int(e * n))
        assert (naive > eps + slack).sum() > allowed, (catalog, eps, (naive > eps + slack).sum(), allowed)
        crc, _ = _split_risks(tax, P, y, n_cal, splits, "crc", delta, eps)
        assert crc.mean() <= eps + 3 * crc.std(ddof=1) / np.sqrt(splits), (catalog, eps, crc.mean())


@pytest.mark.slow
def test_rules_and_metrics_on_myntra(myntra_probs):
    tax, P, y = myntra_probs
    cal, te = slice(0, 4000), slice(4000, None)
    s = hedging_metrics(P[cal], y[cal], P[te], y[te], tax)
    assert list(s.index) == hedging_metric_names()
    for q in (95, 98, 99):
        assert s[f"hedged_precision@{q}"] >= q / 100 - 0.01
        assert 0.3 < s[f"leaf_coverage@{q}"] < 1 and 0 < s[f"specificity@{q}"] <= 3
    assert s["leaf_coverage@95"] >= s["leaf_coverage@98"] >= s["leaf_coverage@99"]
    assert s.attrs["calibration"].method == "rcps"
    # the threshold rule gives at least as many leaves as the information-gain rule (the measured choice)
    ig = H.calibrate_hedging(P[cal], y[cal], tax, (0.95, 0.98, 0.99), rule="info_gain")
    for q in (0.95, 0.98, 0.99):
        assert ig.predict(P[te], tax, q).is_leaf.mean() <= s[f"leaf_coverage@{q * 100:g}"] + 0.01
        assert ig.predict(P[te], tax, q).correct(y[te]).mean() >= q - 0.01
    # the curve: raising lambda never lowers precision nor raises specificity
    c = H.precision_specificity_curve(P[te], y[te], tax)
    assert c["threshold"].is_monotonic_increasing and c["precision"].is_monotonic_increasing
    assert c["leaf_coverage"].is_monotonic_decreasing and c["mean_depth"].is_monotonic_decreasing
    assert c.iloc[-1]["precision"] == 1 and c.iloc[-1]["mean_depth"] == 0 and c.iloc[-1]["review_share"] == 1
    assert c.iloc[0]["leaf_coverage"] == 1 and c.iloc[0]["threshold"] == 0


def test_hedging_metrics_are_registered():
    for key, direction in (("leaf_coverage@98", "max"), ("specificity@99.5", "max"), ("review@95", "min"),
                           ("hedged_precision@98_mean", "max"), ("val_specificity_bits@99", "max")):
        assert metric_info(key).direction == direction and metric_info(key).source == "hedge"
    assert lower_is_better("review@98_mean") and not lower_is_better("leaf_coverage@98_mean")
    assert hedging_metric_names((0.9, 0.995))[:2] == ["leaf_coverage@90", "leaf_coverage@99.5"]


# ------------------------------------------------------------------------------ serialisation
def test_calibration_round_trip_and_refusals():
    cal = H.HedgeCalibration({0.95: 0.7, 0.98: 0.91}, n=1000, val_precision={0.95: 0.96}, val_leaf_coverage={})
    d = json.loads(json.dumps(cal.to_dict()))
    back = H.HedgeCalibration.from_dict(d)
    assert back.thresholds == cal.thresholds and back.n == 1000 and back.val_precision == {0.95: 0.96}
    assert "probability >= 0.9" in back.guarantee(0.98)
    ig = H.HedgeCalibration({0.99: float("inf")}, rule="info_gain")
    assert H.HedgeCalibration.from_dict(json.loads(json.dumps(ig.to_dict()))).threshold(0.99) == float("inf")
    for bad, msg in (({"thresholds": []}, "non-empty list"),
                     ({"thresholds": [{"precision": 1.5, "threshold": 0.5}]}, r"thresholds\[0\].precision must lie"),
                     ({"thresholds": [{"precision": 0.9, "threshold": 2}]}, "out of range"),
                     ({"thresholds": [{"precision": 0.9, "threshold": "x"}]}, "must be a number"),
                     ({"rule": "magic", "thresholds": [{"precision": 0.9, "threshold": 0.5}]}, "rule must be one of")):
        with pytest.raises(ValueError, match=msg):
            H.HedgeCalibration.from_dict(bad)


# ------------------------------------------------------------------------------ export -> load -> predict
@pytest.fixture(scope="module")
def hedged_head(request, tmp_path_factory):
    """A small head on the 240-product tutorial sample, exported with thresholds calibrated on that sample
    (the plumbing under test; real use calibrates on the validation split)."""
    import _export_case as ec

    cache = request.config.cache.mkdir("semcat_export_emb")
    df = ec.sample()
    emb = ec.embed(df, cache)
    y = np.asarray(ec.taxonomy().index_of(df["label"].tolist()))
    run = ec.train_head(emb, y)
    root = tmp_path_factory.mktemp("hedged")
    with pytest.warns(H.CalibrationWarning, match="precision 0.995"):     # 240 < 460 products
        d = sk.export_head(run, root / "head", onnx=False, pt2=False, hedging=(emb, y))
    plain = sk.export_head(run, root / "plain", onnx=False, pt2=False)
    te, ie = ec.encoders()
    return df, emb, y, run, d, plain, cache, (te, ie)


def test_thresholds_survive_export_and_load(hedged_head):
    df, emb, y, run, d, plain, cache, encs = hedged_head
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", H.CalibrationWarning)
        want = H.calibrate_hedging(run.predict_proba(emb), y, run.taxonomy)
    cfg = json.loads((d / "config.json").read_text())
    assert [r["precision"] for r in cfg["hedging"]["thresholds"]] == list(H.DEFAULT_PRECISIONS)
    assert cfg["hedging"]["method"] == "rcps" and cfg["hedging"]["n_calibration"] == len(y)
    head = sk.load_head(d)
    assert head.hedging.thresholds == want.thresholds and head.hedging.threshold(0.995) == 1.0
    assert sk.Predictor.load(d, text_encoder=encs[0], image_encoder=encs[1]).hedging.thresholds == want.thresholds
    # a head exported before hedged decoding existed (no 'hedging' key) still loads
    assert "hedging" not in json.loads((plain / "config.json").read_text()) and sk.load_head(plain).hedging is None
    # a calibration object is stored as given
    cal = H.HedgeCalibration({0.9: 0.42}, method="crc", n=7)
    d2 = sk.export_head(run, d.parent / "given", onnx=False, pt2=False, hedging=cal)
    assert sk.load_head(d2).hedging.to_dict() == cal.to_dict()
    with pytest.raises(TypeError, match="hedging must be a HedgeCalibration"):
        sk.export_head(run, d.parent / "bad", onnx=False, pt2=False, hedging=0.98)


def test_a_broken_hedging_entry_is_refused_naming_the_key(hedged_head, tmp_path):
    import shutil

    d = hedged_head[4]
    bad = tmp_path / "head"
    shutil.copytree(d, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["hedging"]["thresholds"][1]["threshold"] = 7
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"config.json: key hedging.thresholds\[1\].threshold 7 is out of range"):
        sk.load_head(bad)


def test_predict_with_precision(hedged_head):
    df, emb, y, run, d, plain, cache, (te, ie) = hedged_head
    pred = sk.Predictor.load(d, text_encoder=te, image_encoder=ie)
    products = df[["item_id", "title", "image_path"]].head(50).reset_index(drop=True)
    res = pred.predict(products, top_k=3, cache_dir=cache, precision=0.95, progress=False)
    assert list(res.columns) == (["item_id"] + [f"{c}_{i}" for c in ("pred", "name", "prob") for i in (1, 2, 3)]
                                 + ["node", "node_depth", "node_prob", "is_leaf", "needs_review", "used", "failures"])
    lam, T = pred.hedging.threshold(0.95), pred.hedging.temperature(0.95)
    want = H.hedge(run.predict_proba(emb.take(np.arange(50))), run.taxonomy, lam, temperature=T)
    assert res["node"].tolist() == want.path.tolist() and res["node_depth"].tolist() == want.depth.tolist()
    np.testing.assert_allclose(res["node_prob"], want.prob, atol=1e-6)
    assert res["is_leaf"].tolist() == want.is_leaf.tolist() and res["needs_review"].tolist() == want.needs_review.tolist()
    assert res.loc[res["is_leaf"], "node"].tolist() == res.loc[res["is_leaf"], "pred_1"].tolist() or lam < 0.5
    np.testing.assert_array_equal(H.hedged_correct(res, y[:50], run.taxonomy), want.correct(y[:50]))
    # chunking does not change anything; a product with nothing usable needs review
    again = pred.predict(products, top_k=3, cache_dir=cache, precision=0.95, chunk_size=7, progress=False)
    pd.testing.assert_frame_equal(again, res)
    empty = pred.predict([{"item_id": "x", "title": None}], top_k=1, precision=0.95, progress=False)
    assert empty.loc[0, "node"] is None and empty.loc[0, "needs_review"] and not empty.loc[0, "is_leaf"]
    assert pd.isna(empty.loc[0, "node_depth"]) and np.isnan(empty.loc[0, "node_prob"])
    assert not H.hedged_correct(empty, [0], run.taxonomy)[0]
    with pytest.raises(ValueError, match="predict with precision"):
        H.hedged_correct(res.drop(columns="is_leaf"), y[:50], run.taxonomy)
    # already-encoded rows (e.g. a store) give the same hedged columns
    frames = list(pred.predict_embeddings_iter(emb.take(np.arange(50)), top_k=3, precision=0.95, progress=False))
    via_emb = pd.concat(frames, ignore_index=True)
    for c in ("node", "node_depth", "is_leaf", "needs_review"):
        assert via_emb[c].tolist() == res[c].tolist(), c
    # the Parquet file keeps the types
    out = sk.predictor.write_predictions(pred.predict_iter(products, top_k=1, cache_dir=cache, precision=0.95,
                                                           progress=False), d.parent / "p.parquet")
    back = pd.read_parquet(d.parent / "p.parquet")
    assert out == 50 and back["is_leaf"].dtype == bool and back["node_depth"].dtype == "int64"
    # refusals name what to do
    with pytest.raises(ValueError, match=r"no threshold was calibrated for precision=0.975.*calibrated: \[0.9, 0.95"):
        pred.predict(products.head(2), precision=0.975, progress=False)
    with pytest.raises(ValueError, match="carries no calibrated thresholds; re-export"):
        sk.Predictor.load(plain, text_encoder=te, image_encoder=ie).predict(products.head(2), precision=0.95)


# ------------------------------------------------------------------------------ figure
def test_precision_specificity_figure(google):
    rng = np.random.default_rng(9)
    n = 400
    y = rng.integers(0, google.n_classes, n)
    sharp = _peaky(rng, n, google.n_classes, top=rng.uniform(0.3, 1, n))
    sharp[np.arange(n), y] += 0.5           # a head whose mass mostly sits on the true class
    sharp /= sharp.sum(1, keepdims=True)
    flat = _peaky(rng, n, google.n_classes, top=0.2)
    cal = H.calibrate_hedging(sharp[:200], y[:200], google, (0.95,))
    fig = sk.viz.precision_specificity_curves({"sharp & <b>": (sharp[200:], y[200:]), "flat": (flat[200:], y[200:])},
                                              google, calibrations={"sharp & <b>": cal})
    lines = [t for t in fig.data if t.mode == "lines"]
    assert [t.name for t in lines] == ["sharp &amp; &lt;b&gt;", "flat"]            # names drawn verbatim
    want = H.precision_specificity_curve(sharp[200:], y[200:], google)
    np.testing.assert_allclose(lines[0].y, want["precision"])
    np.testing.assert_allclose(lines[0].x, want["leaf_coverage"])
    marks = [t for t in fig.data if t.mode == "markers"]
    assert len(marks) == 1 and len(marks[0].x) == 1
    at = cal.predict(sharp[200:], google, 0.95)          # the threshold at its calibrated temperature
    assert marks[0].y[0] == pytest.approx(at.correct(y[200:]).mean())
    assert marks[0].x[0] == pytest.approx(at.is_leaf.mean())
    assert {round(s["y0"], 3) for s in fig.layout.shapes} == {0.95, 0.98, 0.99}
    fig = sk.viz.precision_specificity_curves({"flat": (flat, y)}, google, specificity="mean_bits")
    assert "bits" in fig.layout.xaxis.title.text
    with pytest.raises(ValueError, match="specificity must be one of"):
        sk.viz.precision_specificity_curves({"flat": (flat, y)}, google, specificity="depth")


def test_ids_from_paths_tell_a_class_from_its_branch(small):
    t = H.hedge_tree(small)
    ids = t.ids(["A", "A", "", "A > B > x", None], [False, True, False, True, False])
    assert ids.tolist() == [1, 5 + small.index_of("A"), 0, 5 + small.index_of("A > B > x"), -1]
    with pytest.raises(KeyError, match="'A > B > x' is not an inner node"):
        t.ids(["A > B > x"], [False])


def test_misprediction_browser_shows_the_hedged_node_beside_the_top1(small):
    from semcat_kit.see import widgets

    rng = np.random.default_rng(11)
    n = 40
    y = rng.integers(0, small.n_classes, n)
    p = _peaky(rng, n, small.n_classes, top=rng.uniform(0.2, 1, n))
    cat = pd.DataFrame({"item_id": [f"i{i}" for i in range(n)], "title": [f"product {i}" for i in range(n)],
                        "label": [small.classes[c] for c in y]})
    b = widgets.MispredictionBrowser(cat, p, None, small, page_size=n, hedge_threshold=0.6)
    h = H.hedge(p, small, 0.6)
    t = b.table.set_index("item_id").loc[cat["item_id"]]
    assert t["hedged_label"].tolist() == h.path.tolist() and t["hedged_correct"].tolist() == h.correct(y).tolist()
    b.mode.value = "all"
    html = {c.children[0].children[1].value for c in b.cards}
    assert len(html) == n and all("hedged: " in s for s in html)
    assert any("root: needs review" in s for s in html) == (h.node == 0).any()
    assert any(", leaf)" in s for s in html) and any("hedged: A &gt; B (" in s for s in html) == (h.path == "A > B").any()
    plain = widgets.MispredictionBrowser(cat, p, None, small, page_size=n)
    assert "hedged_label" not in plain.table and not any("hedged" in c.children[0].children[1].value for c in plain.cards)


@pytest.mark.parametrize("method", ["crc", "rcps"])
def test_the_calibration_size_named_in_the_warning_is_the_smallest_that_works(method):
    # private: the size formula and the error budget behind the warning, compared at many targets (the
    # warning shows one size per calibration; no public call gives the budget at n - 1)
    for q in (0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995):
        n = H._min_calibration_size(1 - q, method, 0.1)
        assert H._max_errors(n, 1 - q, method, 0.1) >= 0 and H._max_errors(n - 1, 1 - q, method, 0.1) < 0, (q, n)


# ------------------------------------------------------------------------------ temperatures
def test_temper_sharpens_without_reordering():
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.full(30, 0.3), size=50).astype(np.float32)
    p[:5, 7] = 0.0
    p /= p.sum(1, keepdims=True)
    assert H.temper(p, 1.0) is p
    for T in (0.25, 0.5, 2.0):
        q = H.temper(p, T)
        assert q.dtype == np.float32 and q.shape == p.shape
        np.testing.assert_allclose(q.sum(1), 1, rtol=1e-5)
        np.testing.assert_array_equal(np.argsort(-q, 1, kind="stable")[:, :3], np.argsort(-p, 1, kind="stable")[:, :3])
        assert (q[:5, 7] == 0).all()
        want = p.astype(np.float64) ** (1 / T)
        np.testing.assert_allclose(q, want / want.sum(1, keepdims=True), rtol=1e-4, atol=1e-7)
        assert ((q.max(1) >= p.max(1) - 1e-6) if T < 1 else (q.max(1) <= p.max(1) + 1e-6)).all()
    assert H.temper(np.zeros((0, 4)), 0.5).shape == (0, 4)
    for bad in (0, -1, float("nan"), "x"):
        with pytest.raises(ValueError, match="temperature must be"):
            H.temper(p, bad)


def _saturated(rng, tax, n, cap=0.6):
    """A soft-label-like head: the true class (or, for a fifth, a random one) gets at most ``cap``, and
    the rest goes to the classes of the same parent, so the top-1 probability saturates."""
    y = rng.integers(0, tax.n_classes, n)
    top = np.where(rng.random(n) < 0.8, y, rng.integers(0, tax.n_classes, n))
    parent = np.array([tax.sep.join(c.split(tax.sep)[:-1]) for c in tax.classes])
    p = np.full((n, tax.n_classes), 1e-4)
    for i in range(n):
        sib = np.flatnonzero(parent == parent[top[i]])
        p[i, sib] += (1 - cap) / len(sib)
        p[i, top[i]] += cap * rng.uniform(0.6, 1.0)
    return p / p.sum(1, keepdims=True), y


def test_a_calibrated_temperature_gives_a_saturated_head_more_leaves(myntra_probs):
    """Learn-then-Test over the temperature grid: a head whose top-1 saturates gets T < 1 and more
    leaves than its own probabilities give, at a precision that still holds on new products."""
    tax = myntra_probs[0]
    rng = np.random.default_rng(5)
    p, y = _saturated(rng, tax, 6000)
    cal, te = slice(0, 3000), slice(3000, None)
    grid = H.calibrate_hedging(p[cal], y[cal], tax, (0.95, 0.98))
    plain = H.calibrate_hedging(p[cal], y[cal], tax, (0.95, 0.98), temperatures=(1.0,))
    assert grid.temperature_grid == H.DEFAULT_TEMPERATURES and plain.temperature(0.98) == 1.0
    for q in (0.95, 0.98):
        assert grid.temperature(q) < 1
        g, f = grid.predict(p[te], tax, q), plain.predict(p[te], tax, q)
        assert g.is_leaf.mean() > f.is_leaf.mean() + 0.05, (q, g.is_leaf.mean(), f.is_leaf.mean())
        assert g.correct(y[te]).mean() >= q - 0.01
        # the reported probability (and the review floor) is the head's own, not the tempered one
        np.testing.assert_allclose(g.prob, H.node_mass(p[te], H.hedge_tree(tax), g.node))
    assert "over 5 temperatures at delta/5 each" in grid.guarantee(0.98)
    s = hedging_metrics(p[cal], y[cal], p[te], y[te], tax)
    assert s["leaf_coverage@98"] == pytest.approx(grid.predict(p[te], tax, 0.98).is_leaf.mean())
    assert s["review@98"] == pytest.approx(grid.predict(p[te], tax, 0.98).needs_review.mean())
    # the mispredictions table hedges with a calibration at its temperature
    cat = pd.DataFrame({"item_id": [f"i{i}" for i in range(200)], "label": [tax.classes[c] for c in y[te][:200]]})
    t = sk.see.mispredictions(cat, p[te][:200], None, tax, hedge_threshold=grid, precision=0.98)
    assert t["hedged_label"].tolist() == grid.predict(p[te][:200], tax, 0.98).path.tolist()


@pytest.mark.slow
@pytest.mark.parametrize("catalog", ["myntra", "toys"])
def test_guarantee_of_the_temperature_choice_over_random_splits(catalog, request):
    """The whole calibration (a lambda per temperature at delta/K, the temperature chosen on the same
    products) over random calibration/test splits, with the real heads and a saturated one: a split
    fails when its realised test precision is below the target by more than 2 standard errors; the
    failures stay within the binomial spread of a (delta + 2.3 %) failure rate."""
    tax, P, y = request.getfixturevalue(f"{catalog}_probs")
    sat, ys = _saturated(np.random.default_rng(8), tax, 4000)
    n_cal, n_test, splits, delta = 1500, 2500, 120, 0.1
    for probs, labels in ((P, y), (sat, ys)):
        rng = np.random.default_rng(7)
        fails = {q: 0 for q in (0.95, 0.98)}
        chosen = []
        for _ in range(splits):
            perm = rng.permutation(len(labels))
            cal, te = perm[:n_cal], perm[n_cal:n_cal + n_test]
            c = H.calibrate_hedging(probs[cal], labels[cal], tax, (0.95, 0.98), delta=delta)
            for q in fails:
                prec = c.predict(probs[te], tax, q).correct(labels[te]).mean()
                fails[q] += prec < q - 2 * np.sqrt(q * (1 - q) / len(te))
                chosen.append(c.temperature(q))
        allowed = binom.ppf(0.999, splits, delta + 0.023)
        assert max(fails.values()) <= allowed, (catalog, fails, allowed)
        assert len(set(chosen)) >= 1 and (probs is P or min(chosen) < 1)


def test_temperatures_are_exported_and_checked():
    cal = H.HedgeCalibration({0.95: 0.7, 0.98: 0.91}, n=1000, temperatures={0.98: 0.5},
                             temperature_grid=(1.0, 0.5))
    back = H.HedgeCalibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back.temperature(0.98) == 0.5 and back.temperature(0.95) == 1.0 and back.temperature_grid == (1.0, 0.5)
    assert back.table()["temperature"].tolist() == [1.0, 0.5]
    old = {"thresholds": [{"precision": 0.98, "threshold": 0.9}]}        # exported before temperatures
    assert H.HedgeCalibration.from_dict(old).temperature(0.98) == 1.0
    with pytest.raises(ValueError, match=r"hedging.thresholds\[0\].temperature must be a finite number > 0"):
        H.HedgeCalibration.from_dict({"thresholds": [{"precision": 0.98, "threshold": 0.9, "temperature": -1}]})
    with pytest.raises(ValueError, match="hedging.temperature_grid"):
        H.HedgeCalibration.from_dict({**old, "temperature_grid": [0]})


def test_temperature_choices_that_are_refused_or_fall_back(small):
    rng = np.random.default_rng(2)
    p = _peaky(rng, 300, small.n_classes, top=rng.uniform(0.3, 1, 300))
    y = rng.integers(0, small.n_classes, 300)
    with pytest.raises(ValueError, match="method='crc' guarantees precision in expectation"):
        H.calibrate_hedging(p, y, small, (0.9,), method="crc", temperatures=(1.0, 0.5))
    assert H.calibrate_hedging(p, y, small, (0.9,), method="crc").temperature_grid == (1.0,)
    with pytest.raises(ValueError, match="temperatures is empty"):
        H.calibrate_hedging(p, y, small, (0.9,), temperatures=())
    # 300 products certify 0.99 at delta = 0.1 (229 needed) but not at delta / 5 (390): that target keeps
    # T = 1 at delta, decided from n alone, with no warning; 0.95 uses the whole grid
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cal = H.calibrate_hedging(p, y, small, (0.95, 0.99))
    assert cal.temperature(0.99) == 1.0 and "temperatures" not in cal.guarantee(0.99)
    assert "over 5 temperatures" in cal.guarantee(0.95)
