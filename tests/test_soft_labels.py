"""Soft targets: builders, SoftTargets invariants, schedules, taxonomy codes."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from semcat_kit import Taxonomy
from semcat_kit import soft_labels as sl
from semcat_kit.labels.similarity import Neighbors, label_neighbors, tree_neighbors

PATHS = ["A > B > C", "A > B > D", "A > E > F", "G > H > I", "G > H > J", "G > K > L"]


@pytest.fixture(scope="module")
def tax():
    return Taxonomy.from_paths(PATHS)


def random_neighbors(C, k, seed, pad_frac=0.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(C, 6)).astype(np.float32)
    nb = label_neighbors(x, k)
    if pad_frac and nb.k:
        cut = rng.random(nb.indices.shape) < pad_frac
        # padding only at the end of each row: keep a prefix
        keep = np.cumprod(~cut, axis=1).astype(bool)
        nb = Neighbors(np.where(keep, nb.indices, -1), np.where(keep, nb.sims, 0))
    return nb


def dense_reference(kind, C, alpha, nb=None, tax=None, temperature=1.0, beta=1.0):
    """Independent dense construction of the targets, one class at a time."""
    T = np.zeros((C, C))
    for c in range(C):
        if kind == "onehot" or alpha == 0:
            T[c, c] = 1
            continue
        if kind == "uniform":
            T[c] = alpha / C
            T[c, c] += 1 - alpha
            continue
        js = [int(j) for j in nb.indices[c] if j >= 0]
        if not js:
            T[c, c] = 1
            continue
        if kind == "topk":
            w = np.ones(len(js))
        elif kind == "semantic":
            s = np.array([nb.sims[c, m] for m in range(nb.k) if nb.indices[c, m] >= 0], dtype=np.float64)
            w = np.exp((s - s.max()) / temperature)
        else:
            d = np.array([tax.lca_distance(c, j) for j in js], dtype=np.float64)
            w = np.exp(-beta * (d - d.min()))
        w = w / w.sum()
        T[c, c] = 1 - alpha
        for j, wj in zip(js, w):
            T[c, j] += alpha * wj
    return T


@settings(max_examples=40, deadline=None)
@given(C=st.integers(1, 12), k=st.integers(0, 15), alpha=st.floats(0, 1), seed=st.integers(0, 10_000),
       kind=st.sampled_from(["onehot", "uniform", "topk", "semantic"]), pad=st.sampled_from([0.0, 0.4]),
       temperature=st.floats(0.05, 5.0))
def test_builders_match_independent_dense(C, k, alpha, seed, kind, pad, temperature):
    nb = random_neighbors(C, k, seed, pad)
    t = sl.build(kind, C, alpha, neighbors=nb, temperature=temperature)
    D = t.dense()
    np.testing.assert_allclose(D.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(D, dense_reference(kind, C, alpha, nb, temperature=temperature), atol=1e-5)
    # self weight is 1 - alpha (+ floor/C for uniform), unless the class has no neighbour
    has = nb.mask.any(1) if nb.k else np.zeros(C, bool)
    diag = np.diag(D)
    if kind in ("topk", "semantic"):
        np.testing.assert_allclose(diag[has], 1 - alpha, atol=1e-5)
        np.testing.assert_allclose(diag[~has], 1.0, atol=1e-6)
    if kind == "uniform":
        np.testing.assert_allclose(diag, 1 - alpha + alpha / C, atol=1e-5)


@pytest.mark.parametrize("kind", sl.KINDS)
def test_alpha_zero_is_exact_onehot(kind, tax):
    nb = tree_neighbors(tax, 3)
    t = sl.build(kind, tax.n_classes, 0.0, neighbors=nb, taxonomy=tax)
    assert np.array_equal(t.dense(), np.eye(tax.n_classes, dtype=np.float32))
    assert t.floor == 0.0


def tree_levels_reference(tax, k):
    """Brute force: per class, others sorted by (LCA distance, index), whole distance levels while
    they fit in k; a nearest level larger than k keeps its k lowest indices."""
    C = tax.n_classes
    rows = []
    for c in range(C):
        others = sorted((int(tax.lca_distance(c, j)), j) for j in range(C) if j != c)
        chosen = []
        for dist in sorted({d for d, _ in others}):
            level = [j for d, j in others if d == dist]
            if len(chosen) + len(level) <= k:
                chosen += level
            else:
                if not chosen:
                    chosen = level[:k]
                break
        rows.append(chosen)
    width = max([len(r) for r in rows] + [0])
    idx = np.full((C, width), -1, dtype=np.int64)
    sims = np.zeros((C, width), dtype=np.float32)
    for c, r in enumerate(rows):
        idx[c, :len(r)] = r
        sims[c, :len(r)] = [1 - tax.lca_distance(c, j) / tax.max_depth for j in r]
    return Neighbors(idx, sims)


@settings(max_examples=30, deadline=None)
@given(k=st.integers(1, 12), seed=st.integers(0, 1000), beta=st.floats(0, 3))
def test_tree_targets_take_whole_distance_levels(k, seed, beta):
    rng = np.random.default_rng(seed)
    paths = sorted({f"T{rng.integers(3)} > S{rng.integers(3)} > L{i}" for i in range(int(rng.integers(2, 14)))})
    t = Taxonomy.from_paths(paths)
    D = sl.build("tree", t.n_classes, 0.4, taxonomy=t, beta=beta, k=k).dense()
    np.testing.assert_allclose(D, dense_reference("tree", t.n_classes, 0.4, tree_levels_reference(t, k), t,
                                                  beta=beta), atol=1e-6)


def test_tree_targets_never_cut_a_level_by_index():
    # X has 2 siblings (distance 1) and 4 cousins (distance 2): k=4 gives the siblings only,
    # k=6 siblings and every cousin, k=1 (nearest level larger than k) the lowest-index sibling
    t = Taxonomy.from_paths(["A > B > X", "A > B > Y", "A > B > Z", "A > E > P", "A > E > Q",
                             "A > F > R", "A > F > S", "G > H > W"])
    x = t.index_of("A > B > X")
    for k, expect in [(4, {"Y", "Z"}), (6, {"Y", "Z", "P", "Q", "R", "S"}), (1, {"Y"}), (2, {"Y", "Z"})]:
        row = sl.build("tree", t.n_classes, 0.5, taxonomy=t, k=k).dense()[x]
        got = {t.names[j] for j in np.flatnonzero(row) if j != x}
        assert got == expect, (k, got)


@pytest.mark.parametrize("beta", [0.0, 0.7, 3.0])
def test_tree_targets(tax, beta):
    C = tax.n_classes
    t = sl.build("tree", C, 0.3, taxonomy=tax, beta=beta, k=3)
    D = t.dense()
    np.testing.assert_allclose(D, dense_reference("tree", C, 0.3, tree_levels_reference(tax, 3), tax, beta=beta),
                               atol=1e-6)
    # siblings C and D (distance 1) get more than cousins (distance 2) when beta > 0
    i, j, f = tax.index_of(["A > B > C", "A > B > D", "A > E > F"])
    if beta > 0:
        assert D[i, j] > D[i, f] > 0
    else:
        assert D[i, j] == pytest.approx(D[i, f])
    # k taken from neighbors.k when k is not given
    t2 = sl.build("tree", C, 0.3, taxonomy=tax, beta=beta, neighbors=label_neighbors(np.eye(C), 2))
    assert t2.k == 3


def test_class_without_neighbours_keeps_all_mass():
    nb = Neighbors(np.array([[1, -1], [-1, -1], [0, 1]]), np.array([[0.5, 0], [0, 0], [0.9, 0.1]]))
    for kind in ("topk", "semantic"):
        D = sl.build(kind, 3, 0.4, neighbors=nb).dense()
        assert D[1, 1] == 1.0 and D[1].sum() == 1.0
        assert D[0, 0] == pytest.approx(0.6) and D[0, 1] == pytest.approx(0.4)


def test_duplicate_class_names_are_each_others_neighbours():
    x = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)  # classes 0 and 1 have one name
    t = sl.build("semantic", 3, 0.2, neighbors=label_neighbors(x, 1), temperature=0.1)
    D = t.dense()
    assert D[0, 1] == pytest.approx(0.2) and D[1, 0] == pytest.approx(0.2)
    assert D[0, 0] == pytest.approx(0.8)


def test_semantic_temperature_sharpens():
    nb = Neighbors(np.array([[1, 2], [0, 2], [0, 1]]), np.array([[0.9, 0.1], [0.9, 0.5], [0.5, 0.4]]))
    hot = sl.build("semantic", 3, 0.5, neighbors=nb, temperature=10.0).dense()
    cold = sl.build("semantic", 3, 0.5, neighbors=nb, temperature=0.01).dense()
    assert cold[0, 1] > hot[0, 1] > hot[0, 2] > cold[0, 2]
    assert cold[0, 1] == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize("C", [1, 2])
def test_tiny_class_counts(C):
    x = np.eye(C, dtype=np.float32) if C > 1 else np.ones((1, 4), np.float32)
    nb = label_neighbors(x, 5)
    assert nb.indices.shape == (C, C - 1)
    for kind in ("onehot", "uniform", "topk", "semantic"):
        D = sl.build(kind, C, 0.3, neighbors=nb).dense()
        np.testing.assert_allclose(D.sum(1), 1, atol=1e-6)
        if C == 1:
            assert D[0, 0] == pytest.approx(1.0)
    if C == 2:
        np.testing.assert_allclose(sl.build("topk", 2, 0.3, neighbors=nb).dense(), [[0.7, 0.3], [0.3, 0.7]],
                                   atol=1e-6)


def test_errors_name_the_kind(tax):
    with pytest.raises(ValueError, match="'semantic'.*neighbors"):
        sl.build("semantic", 6, 0.1)
    with pytest.raises(ValueError, match="'topk'.*neighbors"):
        sl.build("topk", 6, 0.1)
    with pytest.raises(ValueError, match="'tree'.*taxonomy"):
        sl.build("tree", 6, 0.1)
    with pytest.raises(ValueError, match="unknown soft-label kind 'smooth'"):
        sl.build("smooth", 6, 0.1)
    with pytest.raises(ValueError, match="alpha"):
        sl.build("uniform", 6, 1.5)
    with pytest.raises(ValueError, match="'topk'.*7 classes.*n_classes=6"):
        sl.build("topk", 6, 0.1, neighbors=label_neighbors(np.eye(7), 2))
    with pytest.raises(ValueError, match="temperature"):
        sl.build("semantic", 6, 0.1, neighbors=tree_neighbors(tax, 2), temperature=0)


def test_softtargets_validation():
    with pytest.raises(ValueError, match="row 1 weights sum to 0.5"):
        sl.SoftTargets(np.array([[0], [1]]), np.array([[1.0], [0.5]]))
    with pytest.raises(ValueError, match="row 0 lists a class twice"):
        sl.SoftTargets(np.array([[0, 0], [1, -1]]), np.array([[0.5, 0.5], [1.0, 0]]))
    with pytest.raises(ValueError, match="padding"):
        sl.SoftTargets(np.array([[0, -1], [1, -1]]), np.array([[0.5, 0.5], [1.0, 0]]))
    with pytest.raises(ValueError, match="outside"):
        sl.SoftTargets(np.array([[2], [1]]), np.array([[1.0], [1.0]]))
    with pytest.raises(MemoryError, match="too large"):
        sl.build("onehot", 30, 0.1).dense(max_classes=10)


@settings(max_examples=30, deadline=None)
@given(C=st.integers(1, 10), k=st.integers(0, 9), alpha=st.floats(0, 1), floor=st.floats(0, 1),
       seed=st.integers(0, 1000))
def test_neg_entropy_with_overlapping_floor(C, k, alpha, floor, seed):
    nb = random_neighbors(C, k, seed, 0.3)
    base = sl.build("topk", C, alpha, neighbors=nb)
    t = sl.SoftTargets(base.indices, base.weights * (1 - floor), floor)
    D = t.dense().astype(np.float64)
    ref = np.where(D > 0, D * np.log(np.where(D > 0, D, 1)), 0).sum(1)
    np.testing.assert_allclose(t.neg_entropy(), ref, atol=1e-5)


def test_schedules():
    E = 11
    for kind in sl.SCHEDULES:
        f = sl.schedule(kind, 0.4, E, final=0.1)
        vals = np.array([f(e) for e in range(E + 3)])
        assert vals[0] == pytest.approx(0.4)
        if kind == "constant":
            assert np.allclose(vals, 0.4)
            continue
        assert vals[E - 1] == pytest.approx(0.1) and np.allclose(vals[E:], 0.1)  # stays after the end
        assert np.all(np.diff(vals) <= 1e-12)  # soft early, harder later
    lin = sl.schedule("linear", 0.4, E, final=0.0)
    assert lin(5) == pytest.approx(0.2)
    cos = sl.schedule("cosine", 0.4, E)
    assert cos(5) == pytest.approx(0.2) and cos(2) > lin(2)
    step = sl.schedule("step", 0.4, 10, n_steps=2)
    assert [step(e) for e in (0, 4, 5, 9)] == [0.4, 0.4, 0.0, 0.0]
    one = sl.schedule("linear", 0.3, 1)
    assert one(0) == pytest.approx(0.3) and one(1) == pytest.approx(0.0)
    assert sl.schedule("step", 0.3, 1)(0) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="unknown schedule 'exp'"):
        sl.schedule("exp", 0.1, 5)
    with pytest.raises(ValueError, match="epochs"):
        sl.schedule("linear", 0.1, 0)
    import pickle
    assert pickle.loads(pickle.dumps(lin))(5) == lin(5)


def test_taxonomy_codes(tax):
    codes, nodes = sl.taxonomy_codes(tax, return_nodes=True)
    assert codes.dtype == np.float32 and codes.shape == (tax.n_classes, len(nodes))
    for c in range(tax.n_classes):
        on = {nodes[b] for b in np.nonzero(codes[c])[0]}
        assert on == set(tax.ancestors(c, include_self=True))
    assert len({tuple(r) for r in codes}) == tax.n_classes  # codes tell classes apart


def test_code_scores_match_bitwise_loglik(tax):
    codes = sl.taxonomy_codes(tax)
    x = torch.randn(5, codes.shape[1]) * 3
    s = sl.code_scores(x, codes)
    ref = torch.stack([(torch.tensor(codes[c]) * F_logsig(x) + (1 - torch.tensor(codes[c])) * F_logsig(-x)).sum(1)
                       for c in range(tax.n_classes)], 1)
    torch.testing.assert_close(s, ref, atol=1e-4, rtol=1e-5)
    # logits that reproduce a class's code (with margin) make it the argmax
    y = torch.tensor([0, 3, 5])
    good = (torch.tensor(codes)[y] * 2 - 1) * 5
    assert torch.equal(sl.code_scores(good, codes).argmax(1), y)
    with pytest.raises(ValueError, match="agree on B"):
        sl.code_scores(torch.zeros(2, 3), codes)


def F_logsig(x):
    return torch.nn.functional.logsigmoid(x)


def test_codes_on_real_google_taxonomy(google_taxonomy_file):
    gt = _google(google_taxonomy_file)
    codes = sl.taxonomy_codes(gt)
    assert codes.shape[0] == gt.n_classes == 5595
    np.testing.assert_array_equal(codes.sum(1), gt.depth(np.arange(gt.n_classes)))


def _google(path):
    try:
        return Taxonomy.from_google_taxonomy(path)
    except ImportError:  # datasets module not written yet: parse the file here
        lines = path.read_text(encoding="utf-8").splitlines()[1:]
        return Taxonomy.from_paths([ln.split(" - ", 1)[1] for ln in lines if ln.strip()], on_conflict="keep")


def test_real_myntra_targets(myntra_styles):
    df = myntra_styles.dropna(subset=["masterCategory", "subCategory", "articleType"])
    tax = Taxonomy.from_paths(df.masterCategory + " > " + df.subCategory + " > " + df.articleType)
    C = tax.n_classes
    t = sl.build("tree", C, 0.2, taxonomy=tax, beta=1.0, k=10)
    D = t.dense()
    np.testing.assert_allclose(D.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(np.diag(D), 0.8, atol=1e-6)
    # mass of the tree targets goes to siblings first
    i = tax.index_of("Footwear > Shoes > Casual Shoes")
    top = np.argsort(-D[i])[1:4]
    assert all(tax.parent(int(j)) == "Footwear > Shoes" for j in top)


def test_step_schedule_reaches_final_when_epochs_fewer_than_steps():
    # the last epoch reaches ``final`` for every (epochs, n_steps), also when epochs < n_steps
    for epochs in range(2, 9):
        for n_steps in range(2, 7):
            f = sl.schedule("step", 0.3, epochs, final=0.05, n_steps=n_steps)
            vals = [f(e) for e in range(epochs)]
            assert vals[0] == pytest.approx(0.3) and vals[-1] == pytest.approx(0.05), (epochs, n_steps, vals)
            assert np.all(np.diff(vals) <= 1e-12)
