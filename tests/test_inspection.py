"""The tables behind the figures and widgets, ``sk.see.*`` (modules classes, label_noise, mistakes,
label_graph, confusions, severity, projection, histories, tables): real Myntra products, synthetic model
outputs from tests/_inspection_case.py, and tiny hand-computed cases."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from _inspection_case import MISSING_IMAGE_ID, make_case, small_taxonomy
from semcat_kit import Taxonomy
from semcat_kit import see as si


@pytest.fixture(scope="module")
def case(myntra_styles, fashion_dir):
    return make_case(myntra_styles, fashion_dir)


# --------------------------------------------------------------------------- label_issues
def test_label_issues_hand_computed():
    probs = np.array([
        [0.9, 0.05, 0.05],  # labelled 0, fine
        [0.7, 0.2, 0.1],    # labelled 0, 0.7 >= t_0 = 0.6: fine
        [0.2, 0.7, 0.1],    # labelled 0, p0 = 0.2 < t_0 and p1 = 0.7 >= t_1 -> issue, suggest 1
        [0.1, 0.8, 0.1],    # labelled 1
        [0.3, 0.6, 0.1],    # labelled 1, p1 = 0.6 < t_1 = 0.7 but nothing else >= its threshold
    ])
    y = np.array([0, 0, 0, 1, 1])
    # t_0 = (0.9 + 0.7 + 0.2) / 3 = 0.6, t_1 = (0.8 + 0.6) / 2 = 0.7, t_2 = inf (no items)
    df = si.label_issues(probs, y)
    assert list(df.columns) == ["index", "given", "suggested", "self_confidence", "is_issue"]
    assert df["is_issue"].tolist() == [False, False, True, False, False]
    assert df["suggested"].tolist() == [1, 1, 1, 0, 0]  # most probable other class (ties: lower index)
    np.testing.assert_allclose(df["self_confidence"], [0.9, 0.7, 0.2, 0.8, 0.6])
    assert df["index"].tolist() == [0, 1, 2, 3, 4]


def test_label_issues_class_without_items_is_never_a_confident_suggestion():
    probs = np.array([[0.1, 0.0, 0.9], [0.8, 0.2, 0.0], [0.6, 0.4, 0.0]])
    y = np.array([0, 0, 1])  # class 2 has no items: no threshold
    df = si.label_issues(probs, y)
    assert not df.loc[0, "is_issue"]          # p(2) = 0.9 but class 2 has no threshold
    assert df.loc[0, "suggested"] == 2        # still the most probable other class as a hint


def test_label_issues_find_planted_noise_on_myntra(case):
    df = si.label_issues(case.probs, case.y)
    assert df.loc[case.planted, "is_issue"].all()
    most_suspicious = df.sort_values("self_confidence").head(len(case.planted))["index"]
    assert set(most_suspicious) == set(case.planted)
    # the suggestion is the product's real class
    assert (df.loc[case.planted, "suggested"].to_numpy() == case.y_real[case.planted]).all()
    # confident correct predictions are not flagged
    ok = (case.probs.argmax(1) == case.y) & (case.probs.max(1) > 0.95)
    assert ok.sum() > 20 and not df.loc[ok, "is_issue"].any()


def test_label_issues_blocks_match_dense_reference():
    """Row blocks (4M entries each) give exactly the dense definition; float32 stays float32-safe."""
    rng = np.random.default_rng(0)
    N, C = 4500, 2000                                       # 3 blocks of 2000 rows
    p = rng.dirichlet(np.full(C, 0.05), size=N).astype(np.float32)
    y = rng.integers(C, size=N)
    y[:50] = p[:50].argmax(1)
    df = si.label_issues(p, y)
    t = np.full(C, np.inf)
    for c in np.unique(y):
        t[c] = p[y == c, c].astype(np.float64).mean()
    above = p >= t
    above[np.arange(N), y] = False
    other = np.where(above, p, -np.inf)
    free = p.astype(np.float64)
    free[np.arange(N), y] = -np.inf
    sugg = np.where(above.any(1), other.argmax(1), free.argmax(1))
    assert (df["suggested"].to_numpy() == sugg).all()
    assert (df["is_issue"].to_numpy() == ((p[np.arange(N), y] < t[y]) & above.any(1) & (p.argmax(1) != y))).all()
    assert df["is_issue"].sum() > 100


def test_label_issues_never_flags_an_item_whose_given_label_is_the_top_prediction():
    # a sharp model: class 0's threshold is ~0.9999, so p(0) = 0.998 is below it, and class 1
    # (poorly fitted, threshold ~0.001) is reached by 0.002. Seen on the real tutorial test split:
    # "Chhota Bheem ... Watch" labelled Watches, p(Watches) = 0.998, badged "possible label issue".
    probs = np.array([
        [0.99999, 0.00001], [0.99999, 0.00001], [0.99999, 0.00001],
        [0.998, 0.002],                          # labelled 0, predicted 0 at 0.998: not an issue
        [0.9999999, 0.0000001], [0.998, 0.002],  # labelled 1 (t_1 ~ 0.001); the first is an issue
    ])
    y = np.array([0, 0, 0, 0, 1, 1])
    df = si.label_issues(probs, y)
    assert not df.loc[3, "is_issue"]
    assert df.loc[3, "self_confidence"] < probs[y == 0, 0].mean()  # below its threshold all the same
    assert df["is_issue"].tolist() == [False, False, False, False, True, False]


@pytest.mark.parametrize("probs,y,msg", [
    (np.array([[0.5, 0.5]]), np.array([0, 1]), "2 entries but probs has 1 rows"),
    (np.array([[0.5, 0.5]]), np.array([0.5]), "non-integer"),
    (np.array([[0.5, 0.5]]), np.array([2]), "outside"),
    (np.array([[1.5, -0.5]]), np.array([0]), "logits"),
    (np.array([[np.nan, 0.5]]), np.array([0]), "NaN or infinite"),
    (np.array([0.5, 0.5]), np.array([0]), "2-D"),
])
def test_label_issues_bad_input(probs, y, msg):
    with pytest.raises(ValueError, match=msg):
        si.label_issues(probs, y)


# --------------------------------------------------------------------------- mispredictions
def test_mispredictions_matches_independent_computation(case):
    tax, p = case.taxonomy, case.probs
    df = si.mispredictions(case.catalog, p, case.y, tax, top=3)
    for col in ["row", "item_id", "title", "image_path", "true_label", "pred_label", "confidence", "p_true",
                "is_mistake", "lca_distance", "top1_label", "top1_prob", "top3_label", "top3_prob",
                "label_issue_score", "is_label_issue", "suggested_label"]:
        assert col in df.columns, col
    assert len(df) == len(case.catalog)
    pred = p.argmax(1)
    assert df["pred_label"].tolist() == [tax.classes[i] for i in pred]
    assert df["true_label"].tolist() == [tax.classes[i] for i in case.y]
    np.testing.assert_allclose(df["confidence"], p.max(1), rtol=1e-6)
    np.testing.assert_allclose(df["p_true"], p[np.arange(len(p)), case.y], rtol=1e-6)
    assert (df["lca_distance"].to_numpy() == tax.lca_distance(pred, case.y)).all()
    assert (df["is_mistake"].to_numpy() == (pred != case.y)).all()
    srt = -np.sort(-p, axis=1)
    np.testing.assert_allclose(df[["top1_prob", "top2_prob", "top3_prob"]].to_numpy(), srt[:, :3], rtol=1e-6)
    assert (df["top1_label"] == df["pred_label"]).all()
    assert df.loc[5, "top2_label"] == tax.classes[int(np.argsort(-p[5])[1])]
    np.testing.assert_allclose(df["label_issue_score"], df["p_true"])
    assert df.loc[case.planted, "is_label_issue"].all()
    assert df["item_id"].tolist() == case.catalog["item_id"].tolist()


def test_mispredictions_defaults_to_catalog_labels_and_resolves_aliases(case):
    df = si.mispredictions(case.catalog, case.probs, None, case.taxonomy)
    assert (df["true_index"].to_numpy() == case.y).all()
    # the 3 real "Belts under Apparel > Topwear" rows resolve to the majority class
    belts = case.catalog["label"] == "Apparel > Topwear > Belts"
    assert belts.sum() == 3
    assert set(df.loc[belts.to_numpy(), "true_label"]) == {"Accessories > Belts > Belts"}
    # ... and are not hidden: the catalog's path is kept and they count as label issues
    b = df[belts.to_numpy()]
    assert set(b["given_label"]) == {"Apparel > Topwear > Belts"} and b["label_refiled"].all()
    assert b["is_label_issue"].all() and set(b["suggested_label"]) == {"Accessories > Belts > Belts"}
    other = df[~belts.to_numpy() & ~case.catalog["label"].isin(case.taxonomy.aliases).to_numpy()]
    assert (other["given_label"] == other["true_label"]).all() and not other["label_refiled"].any()
    # y_true given as indices: the catalog's alias path is still shown (it names the same class)
    df2 = si.mispredictions(case.catalog, case.probs, case.y, case.taxonomy)
    assert df2["label_refiled"].tolist() == df["label_refiled"].tolist()
    missing = df[df["item_id"] == MISSING_IMAGE_ID]
    assert len(missing) == 1 and missing["image_path"].iloc[0] is None


def test_mispredictions_only_mistakes_and_top(case):
    df = si.mispredictions(case.catalog, case.probs, case.y, case.taxonomy, top=5, only_mistakes=True)
    assert len(df) == int((case.probs.argmax(1) != case.y).sum())
    assert df["is_mistake"].all() and (df["lca_distance"] >= 1).all()
    assert "top5_label" in df.columns and "top6_label" not in df.columns


def test_mispredictions_bad_input(case):
    cat, p, tax = case.catalog, case.probs, case.taxonomy
    with pytest.raises(ValueError, match="aligned row by row"):
        si.mispredictions(cat.iloc[:10], p, None, tax)
    with pytest.raises(ValueError, match="item_id"):
        si.mispredictions(cat.drop(columns="item_id"), p, None, tax)
    with pytest.raises(ValueError, match="143 classes"):
        si.mispredictions(cat, p[:, :10], None, tax)
    bad = cat.assign(label=cat["label"].where(cat.index != 7, "Apparel > Nope"))
    with pytest.raises(KeyError, match="row 7: 'Apparel > Nope'"):
        si.mispredictions(bad, p, None, tax)
    with pytest.raises(TypeError, match="Taxonomy"):
        si.mispredictions(cat, p, None, None)
    with pytest.raises(ValueError, match="outside"):
        si.mispredictions(cat, p, np.full(len(cat), 500), tax)


# --------------------------------------------------------------------------- neighbours & confusions
def test_neighbor_table_skips_padding_and_marks_parents():
    tax = small_taxonomy()  # A>a>x, A>a>y, A>b>z, B>c>v, B>c>w (sorted)
    assert tax.classes == ["A > a > x", "A > a > y", "A > b > z", "B > c > v", "B > c > w"]
    idx = np.array([[1, 2], [0, -1], [0, 3], [4, -1], [3, 0]])
    sims = np.array([[0.9, 0.5], [0.9, 0.0], [0.5, 0.1], [0.8, 0.0], [0.8, 0.2]])
    df = si.neighbor_table((idx, sims), tax)
    assert len(df) == 8
    assert df[["source", "target"]].values.tolist() == [[0, 1], [0, 2], [1, 0], [2, 0], [2, 3], [3, 4], [4, 3], [4, 0]]
    assert df["same_parent"].tolist() == [True, False, True, False, False, True, True, False]
    assert df["lca_distance"].tolist() == [1, 2, 1, 2, 3, 1, 1, 3]
    assert df["rank"].tolist() == [1, 2, 1, 1, 2, 1, 1, 2]
    one = si.neighbor_table((idx, sims), tax, k=1, cls="A > b > z")
    assert one["target_label"].tolist() == ["A > a > x"]


def test_neighbor_table_on_myntra_matches_neighbors(case):
    nb, tax = case.neighbors, case.taxonomy
    df = si.neighbor_table(nb, tax, k=5)
    assert len(df) == int((nb.indices[:, :5] >= 0).sum())
    parent = {i: tax.parent(i) for i in range(tax.n_classes)}
    assert (df["same_parent"] == [parent[s] == parent[t] for s, t in zip(df["source"], df["target"])]).all()
    row = df[df["source"] == 10]
    assert row["target"].tolist() == nb.indices[10, :5].tolist()
    np.testing.assert_allclose(row["sim"], nb.sims[10, :5], rtol=1e-6)


def test_neighbor_table_bad_input(case):
    tax = case.taxonomy
    with pytest.raises(ValueError, match="143"):
        si.neighbor_table((np.zeros((5, 2), int), np.zeros((5, 2))), tax)
    with pytest.raises(ValueError, match="same"):
        si.neighbor_table((np.zeros((143, 2), int), np.zeros((143, 3))), tax)
    with pytest.raises(TypeError, match="Neighbors"):
        si.neighbor_table("nope", tax)
    with pytest.raises(ValueError, match="-1"):
        si.neighbor_table((np.full((143, 2), -3), np.zeros((143, 2))), tax)


def test_top_confusions_hand_computed():
    tax = small_taxonomy()
    y = np.array([0, 0, 0, 0, 1, 1, 2, 3])
    pred = np.array([0, 1, 1, 3, 0, 1, 0, 3])
    df = si.top_confusions(pred, y, tax, 0)
    # class 0 -> 1 twice, 0 -> 3 once; 1 -> 0 once, 2 -> 0 once
    assert df["other"].tolist() == [1, 3, 2]
    assert df["true_as_other"].tolist() == [2, 1, 0]
    assert df["other_as_true"].tolist() == [1, 0, 1]
    assert df["total"].tolist() == [3, 1, 1]
    assert df["lca_distance"].tolist() == [1, 3, 2]
    # probabilities give the same result as their argmax
    probs = np.eye(5)[pred] * 0.8 + 0.04
    assert si.top_confusions(probs, y, tax, "A > a > x").equals(df)


def test_top_confusions_on_myntra_accounts_for_every_mistake(case):
    tax = case.taxonomy
    c = tax.index_of("Apparel > Topwear > Tshirts")
    df = si.top_confusions(case.probs, case.y, tax, c, n=tax.n_classes)
    pred = case.probs.argmax(1)
    assert df["true_as_other"].sum() == ((case.y == c) & (pred != c)).sum()
    assert df["other_as_true"].sum() == ((pred == c) & (case.y != c)).sum()
    assert (np.diff(df["total"]) <= 0).all()


def test_neighborhood_confusion_hand_computed():
    tax = small_taxonomy()
    y = np.array([0, 0, 0, 0, 1, 1, 2, 3])
    pred = np.array([0, 1, 1, 3, 0, 1, 0, 3])
    idx = np.array([[4, 2], [0, 2], [0, 1], [4, 0], [3, 0]])
    sims = np.full((5, 2), 0.5)
    m = si.neighborhood_confusion(pred, y, tax, 0, neighbors=(idx, sims), size=3)
    # chosen: 0 (selected), then neighbour 4, confusion 1 (interleaved)
    assert list(m.attrs["classes"]) == [0, 4, 1]
    assert m.attrs["roles"] == ["selected", "neighbour", "confusion"]
    assert list(m.columns) == ["A > a > x", "B > c > w", "A > a > y", "(other)"]
    np.testing.assert_allclose(m.iloc[0], [0.25, 0.0, 0.5, 0.25])
    assert m.iloc[1].isna().all()                      # class 4 has no items
    np.testing.assert_allclose(m.iloc[2], [0.5, 0.0, 0.5, 0.0])
    assert m.attrs["counts"].tolist() == [[1, 0, 2, 1], [0, 0, 0, 0], [1, 0, 1, 0]]
    no_nb = si.neighborhood_confusion(pred, y, tax, 0, size=10)
    assert list(no_nb.attrs["classes"]) == [0, 1, 3, 2]   # confusions by total, then count
    with pytest.raises(ValueError, match="size"):
        si.neighborhood_confusion(pred, y, tax, 0, size=0)


def test_neighborhood_confusion_on_myntra(case):
    tax = case.taxonomy
    m = si.neighborhood_confusion(case.probs, case.y, tax, "Tshirts", neighbors=case.neighbors, size=8)
    assert m.shape == (8, 9) and m.index[0] == "Apparel > Topwear > Tshirts"
    has_items = m.attrs["row_totals"] > 0
    np.testing.assert_allclose(m[has_items].sum(axis=1), 1.0)
    assert m.attrs["row_totals"][0] == (case.y == tax.index_of("Apparel > Topwear > Tshirts")).sum()
    nb = set(case.neighbors.indices[tax.index_of("Apparel > Topwear > Tshirts")])
    for j, role in zip(m.attrs["classes"][1:], m.attrs["roles"][1:]):
        assert ("neighbour" in role) == (j in nb)


def test_class_index_forms():
    tax = Taxonomy.from_paths(["A > x > Belts", "B > y > Belts", "A > x > Caps"], on_conflict="keep")
    assert si.class_index("Caps", tax) == tax.index_of("A > x > Caps")
    assert si.class_index(1, tax) == 1
    with pytest.raises(KeyError, match="ambiguous"):
        si.class_index("Belts", tax)
    with pytest.raises(KeyError, match="not a class"):
        si.class_index("Hats", tax)
    with pytest.raises(ValueError, match="outside"):
        si.class_index(3, tax)


# --------------------------------------------------------------------------- severity
def test_severity_table_hand_computed():
    tax = small_taxonomy()
    y = np.array([0, 0, 0, 0, 3])
    pred = np.array([0, 1, 2, 4, 4])           # d = 0, 1, 2, 3, 1
    perfect = np.eye(5)[y]
    t = si.severity_table({"model": (pred, y), "oracle": (perfect, y)}, tax)
    m = t[t["config"] == "model"]
    assert m["distance"].tolist() == [1, 2, 3]
    assert m["count"].tolist() == [2, 1, 1]
    np.testing.assert_allclose(m["fraction"], [0.5, 0.25, 0.25])
    assert (m["n_mistakes"] == 4).all() and (m["n_items"] == 5).all()
    o = t[t["config"] == "oracle"]
    assert o["count"].tolist() == [0, 0, 0] and o["fraction"].tolist() == [0, 0, 0]


def test_severity_table_bad_input(case):
    tax = case.taxonomy
    with pytest.raises(ValueError, match="non-empty dict"):
        si.severity_table({}, tax)
    with pytest.raises(ValueError, match="'a'"):
        si.severity_table({"a": case.probs}, tax)
    with pytest.raises(ValueError, match="must align"):
        si.severity_table({"a": (case.probs, case.y[:-1])}, tax)


# --------------------------------------------------------------------------- projections
def _rotation(d: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


def test_align_weights_recovers_a_rotated_scaled_copy(case):
    E = case.class_emb.astype(np.float64)
    W = 3.0 * E @ _rotation(32, 1) + 0.5          # rotated, scaled, shifted
    _, _, cos = si.align_weights(E, W)
    assert cos.min() > 0.999
    # a distance-preserving map into a larger space (different dimension) is recovered too
    M = _rotation(48, 2)[:32]                       # (32, 48), orthonormal rows
    _, _, cos2 = si.align_weights(E, E @ M)
    assert cos2.min() > 0.999
    # a class whose weight row belongs to another class stands out
    W2 = W.copy()
    a, b = 3, tax_far(case)
    W2[[a, b]] = W2[[b, a]]
    _, _, cos3 = si.align_weights(E, W2)
    assert set(np.argsort(cos3)[:2]) == {a, b}
    assert np.delete(cos3, [a, b]).min() > cos3[[a, b]].max()


def tax_far(case) -> int:
    """A class in another top-level branch than class 3."""
    tax = case.taxonomy
    return next(j for j in range(tax.n_classes) if tax.level(j, 1) != tax.level(3, 1))


def test_project_labels_pca_keeps_tree_structure(case):
    tax = case.taxonomy
    df = si.project_labels(case.class_emb, tax, method="pca")
    assert list(df.columns) == ["index", "path", "name", "group", "x", "y"]
    assert df["path"].tolist() == tax.classes
    assert sorted(df["group"].unique()) == sorted({tax.level(i, 1) for i in range(tax.n_classes)})
    xy = df[["x", "y"]].to_numpy()
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    same = np.equal.outer(df["group"].to_numpy(), df["group"].to_numpy())
    np.fill_diagonal(same, False)
    diff = ~np.equal.outer(df["group"].to_numpy(), df["group"].to_numpy())
    assert d[same].mean() < 0.8 * d[diff].mean()
    df2 = si.project_labels(case.class_emb, tax, method="pca", color_level=2)
    assert df2["group"].nunique() > df["group"].nunique()


def test_project_labels_umap_deterministic_and_with_weights(case):
    tax = case.taxonomy
    W = case.class_emb @ np.random.default_rng(0).normal(size=(32, 24))
    a = si.project_labels(case.class_emb, tax, method="umap", class_weights=W, random_state=3)
    b = si.project_labels(case.class_emb, tax, method="umap", class_weights=W, random_state=3)
    assert {"wx", "wy", "alignment"} <= set(a.columns)
    np.testing.assert_allclose(a[["x", "y", "wx", "wy"]], b[["x", "y", "wx", "wy"]])
    assert np.isfinite(a[["x", "y", "wx", "wy"]].to_numpy()).all()
    assert a["alignment"].between(-1, 1).all()
    # a tiny taxonomy works too (n_neighbors capped at n - 1, random init)
    small = si.project_labels(np.random.default_rng(0).normal(size=(5, 6)), small_taxonomy(), method="umap")
    assert small[["x", "y"]].notna().all().all() and len(small) == 5


def test_project_labels_bad_input(case):
    tax = case.taxonomy
    two = Taxonomy.from_paths(["A > x", "B > y"])
    with pytest.raises(ValueError, match="at least 3 classes.*pca"):
        si.project_labels(np.eye(2), two, method="umap")
    assert len(si.project_labels(np.eye(2), two, method="pca")) == 2
    with pytest.raises(ValueError, match=r"\(143, d\)"):
        si.project_labels(case.class_emb[:10], tax, method="pca")
    with pytest.raises(ValueError, match="class_weights"):
        si.project_labels(case.class_emb, tax, method="pca", class_weights=np.ones((3, 4)))
    with pytest.raises(ValueError, match="'umap' or 'pca'"):
        si.project_labels(case.class_emb, tax, method="tsne")
    with pytest.raises(ValueError, match="color_level"):
        si.project_labels(case.class_emb, tax, method="pca", color_level=4)


# --------------------------------------------------------------------------- histories
def _history(n=4, shift=0.0):
    """Columns as sk.train writes them (TrainRun.history), plus a text column."""
    e = np.arange(1, n + 1)
    return pd.DataFrame({"epoch": e, "alpha": np.linspace(0.2, 0.0, n), "lr": 1e-3 / e, "loss": 3.0 - 0.4 * e,
                         "focal": 2.0 - 0.3 * e + shift, "kl": 1.0 - 0.1 * e, "seconds": 1.5,
                         "val_loss": 2.5 - 0.2 * e, "val_top1": 0.5 + 0.05 * e, "val_top5": 0.8 + 0.02 * e,
                         "val_acc_level_1": 0.9, "val_mistake_severity": 2 - 0.1 * e, "val_hdist@5": 2.2 - 0.05 * e,
                         "val_ece": 0.05, "val_seconds": 0.2, "note": ["x"] * n})


def test_history_frame_panels_and_runs():
    h = _history()
    long = si.history_frame(h)
    assert set(long["metric"]) == {"alpha", "lr", "loss", "focal", "kl", "val_loss", "val_top1", "val_top5",
                                   "val_acc_level_1", "val_mistake_severity", "val_hdist@5", "val_ece"}
    panel = dict(zip(long["metric"], long["panel"]))
    assert panel["focal"] == panel["kl"] == panel["loss"] == panel["val_loss"] == "loss"
    assert panel["val_top1"] == panel["val_top5"] == panel["val_acc_level_1"] == panel["val_ece"] == "accuracy"
    assert panel["val_mistake_severity"] == panel["val_hdist@5"] == "severity"
    assert panel["alpha"] == "alpha" and panel["lr"] == "lr"
    v = long[(long["metric"] == "val_top1")].sort_values("epoch")["value"]
    np.testing.assert_allclose(v, h["val_top1"])

    class Run:  # a TrainRun-like object
        history = _history(3, shift=1.0)

    both = si.history_frame({"a": h, "b": Run()})
    assert both.groupby("run").size().to_dict() == {"a": 48, "b": 36}
    assert both[(both.run == "b") & (both.metric == "focal")]["value"].iloc[0] == 2.7
    only = si.history_frame(h, metrics=["val_top1", "seconds"])
    assert set(only["metric"]) == {"val_top1", "seconds"} and set(only["panel"]) == {"accuracy", "other"}


def test_history_frame_bad_input():
    with pytest.raises(ValueError, match="'epoch'"):
        si.history_frame(pd.DataFrame({"loss": [1.0]}))
    with pytest.raises(ValueError, match="empty"):
        si.history_frame({})
    with pytest.raises(TypeError, match="'x'"):
        si.history_frame({"x": [1, 2]})
    with pytest.raises(ValueError, match="numeric"):
        si.history_frame(pd.DataFrame({"epoch": [0], "note": ["a"]}))
    with pytest.raises(ValueError, match=r"no column\(s\) \['val_f1'\]"):
        si.history_frame(_history(), metrics=["val_f1"])


def test_example_classes_are_chosen_from_the_data():
    """anchor = most products; same branch = nearest sibling; other branch = nearest class in another
    top-level category, else in another sub-branch but never an ancestor of the anchor."""
    import semcat_kit as sk
    from semcat_kit import see as si

    tax = sk.Taxonomy.from_paths(["A > a1", "A > a2", "A", "A > b > x", "B > c"])
    emb = np.array([[1, 0, 0], [0.9, 0.1, 0], [0.95, 0, 0.05], [0.8, 0.3, 0], [0, 0, 1.0]], dtype=np.float32)
    ex = si.example_classes(tax, sk.similarity.label_neighbors(emb, k=3), counts=np.array([1, 5, 1, 1, 1]))
    assert ex["path"].tolist() == ["A > a1", "A > a2", "A > b > x"]
    assert ex["lca_distance"].tolist() == [0, 1, 2] and ex.loc["anchor", "products"] == 5
    assert ex.loc["same branch", "chosen_as"].startswith("its most similar class under the same parent")
    # every neighbour in one top-level category: the other branch is another parent there, and says so
    assert ex.loc["other branch", "chosen_as"].startswith("all of its 3 nearest classes are under 'A'")
    # no neighbour under the anchor's parent: the "same branch" class is a cousin (LCA distance 2), said in words
    t2 = sk.Taxonomy.from_paths(["A > p > x", "A > q > y", "A > r > z", "B > s > w"])
    e2 = np.array([[1, 0, 0], [0.9, 0.1, 0], [0.5, 0.5, 0], [0, 0, 1.0]], dtype=np.float32)
    ex = si.example_classes(t2, sk.similarity.label_neighbors(e2, k=3), cls="A > p > x")
    assert ex.loc["same branch", "lca_distance"] == 2
    assert ex.loc["same branch", "chosen_as"].startswith("none of its 3 nearest classes shares its parent")
    ex = si.example_classes(tax, sk.similarity.label_neighbors(emb, k=4), cls="A > a1")
    assert ex.loc["other branch", "path"] == "B > c"


def test_confused_pairs_graph_neighborhood_and_search():
    import semcat_kit as sk
    from semcat_kit import see as si

    tax = sk.Taxonomy.from_paths(["A > a", "A > b", "B > c", "B > d"])
    y = np.array([0, 0, 0, 1, 1, 2, 3])
    pred = np.array([1, 1, 0, 0, 1, 3, 3])
    pairs = si.confused_pairs(pred, y, tax, n=5)
    assert pairs[["true_label", "pred_label", "count"]].values.tolist() == [
        ["A > a", "A > b", 2], ["A > b", "A > a", 1], ["B > c", "B > d", 1]]
    assert pairs["share_of_true"].iloc[0] == pytest.approx(2 / 3)
    idx = np.array([[1, -1], [0, -1], [3, -1], [2, -1]])
    nb = (idx, np.where(idx >= 0, 0.9, 0.0))
    assert si.graph_neighborhood(nb, tax, 0, k=1).tolist() == [0, 1]          # only its component
    assert si.graph_neighborhood(nb, tax, "B > c", k=1, max_nodes=1).tolist() == [2]
    assert si.search_classes("b", tax)[:2] == ["A > b", "B > c"] and si.search_classes("zz", tax) == []


# --------------------------------------------------------------------------- label graph, search, display tables
def test_cross_branch_pairs_lists_each_pair_once_split_at_the_common_ancestor():
    tax = small_taxonomy()  # A>a>x, A>a>y, A>b>z, B>c>v, B>c>w
    # x <-> z both ways (mutual, sims 0.7 / 0.6), z -> v one way (0.9), x -> y siblings (left out)
    idx = np.array([[1, 2], [0, -1], [0, 3], [4, -1], [3, -1]])
    sims = np.array([[0.95, 0.7], [0.95, 0.0], [0.6, 0.9], [0.8, 0.0], [0.8, 0.0]])
    p = si.cross_branch_pairs((idx, sims), tax, k=2)
    assert p[["a", "b"]].values.tolist() == [[2, 3], [0, 2]]              # by similarity, each pair once
    assert p["sim"].tolist() == [0.9, 0.7] and p["mutual"].tolist() == [False, True]
    assert p["common_ancestor"].tolist() == ["", "A"]
    assert p["a_below"].tolist() == ["A > b > z", "a > x"] and p["b_below"].tolist() == ["B > c > v", "b > z"]
    assert p["lca_distance"].tolist() == [3, 2]
    assert len(si.cross_branch_pairs((idx, sims), tax, k=2, n=1)) == 1
    assert len(si.cross_branch_pairs((idx, sims), tax, k=1)) == 1              # only z -> x among the first neighbours


def test_cross_branch_pairs_on_myntra_agree_with_the_directed_table(case):
    nb, tax = case.neighbors, case.taxonomy
    p = si.cross_branch_pairs(nb, tax, k=5, n=None)
    e = si.neighbor_table(nb, tax, k=5)
    e = e[~e["same_parent"]]
    undirected = {frozenset(x) for x in zip(e["source"], e["target"])}
    assert len(p) == len(undirected) and {frozenset(x) for x in zip(p["a"], p["b"])} == undirected
    assert p["sim"].is_monotonic_decreasing
    full = [f"{anc} > {a}" if anc else a for anc, a in zip(p["common_ancestor"], p["a_below"])]
    assert full == [tax.classes[i] for i in p["a"]]


def test_search_classes_ranks_path_name_prefix_then_words():
    tax = Taxonomy.from_paths(["Shoes > Boots", "Kids > Shoes", "Kids > Shoe Laces", "Home > Shoe Rack > Wood",
                               "Bags > Totes"], on_conflict="keep")
    assert si.search_classes("kids > shoes", tax) == ["Kids > Shoes"]                     # the path itself
    assert si.search_classes("shoes", tax) == ["Kids > Shoes", "Shoes > Boots"]          # its name, then words
    assert si.search_classes("shoe", tax) == ["Kids > Shoe Laces", "Kids > Shoes", "Home > Shoe Rack > Wood",
                                              "Shoes > Boots"]
    assert si.search_classes("  SHOE   rack ", tax) == ["Home > Shoe Rack > Wood"]
    assert si.search_classes("shoe", tax, limit=2) == ["Kids > Shoe Laces", "Kids > Shoes"]
    assert si.search_classes("", tax) == [] and si.search_classes("zz", tax) == []
    assert si.search_classes("laces", ["Kids > Shoe Laces", "Laces"]) == ["Laces", "Kids > Shoe Laces"]


def test_elide_paths_fit_and_stay_unique():
    long = "Arts > Hobbies & Creative Arts > Musical Instrument Accessories > String Accessories > Fittings"
    assert si.elide_paths([long, "A > B"], max_chars=40) == ["Arts > … > String Accessories > Fittings", "A > B"]
    two = ["Home > Kitchen > Tools > Parts", "Home > Garden > Tools > Parts"]
    assert si.elide_paths(two, max_chars=20) == two                        # "Home > … > Parts" twice: kept whole
    assert si.elide_paths(["Top > Mid > A Very Long Leaf Name"], max_chars=5) == ["Top > … > A Very Long Leaf Name"]


def test_html_table_is_whole_padded_and_aligned():
    df = pd.DataFrame({"true_label": ["A > B > C" * 3, None], "share_of_true": [0.12345, np.nan], "count": [3, 12],
                       "same_parent": [True, False], "ids": [["x", "y"], []]})
    h = si.html_table(df, headers={"count": "items"}, digits=2)
    heads = re.findall(r"<th style='([^']*)'>([^<]*)</th>", h)
    assert [t for _, t in heads] == ["true label", "share of true", "items", "same parent", "ids"]
    assert [re.search(r"text-align:(\w+)", st).group(1) for st, _ in heads] == ["left", "right", "right", "left", "left"]
    row0, row1 = re.findall(r"<tr style='[^']*'>(.*?)</tr>", h)
    assert re.findall(r">([^<>]*)</td>", row0)[1:] == ["0.12", "3", "yes", "x; y"]
    assert "A &gt;<wbr> B &gt;<wbr> C" in row0 and "..." not in h       # whole, breakable at the separators
    assert re.findall(r">([^<>]*)</td>", row1) == ["", "", "12", "no", ""]
    assert "semcat-table" in h and "padding:3px 10px" in h
    more = si.html_table(pd.DataFrame({"x": range(5)}), max_rows=2)
    assert more.count("<tr style") == 2 and "3 more rows" in more
    t = si.show_table(df)
    assert t._repr_html_() == si.html_table(df) and "A > B > C" * 3 in repr(t)
    with pytest.raises(TypeError, match="DataFrame"):
        si.show_table([1, 2])
