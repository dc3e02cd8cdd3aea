"""semcat_kit.see.viz: the figures draw what the inspect tables say (traces, counts, hover, colours)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from _inspection_case import make_case, small_taxonomy
from semcat_kit import Taxonomy, viz
from semcat_kit import see as si


@pytest.fixture(scope="module")
def case(myntra_styles, fashion_dir):
    return make_case(myntra_styles, fashion_dir)


def _traces(fig, mode=None):
    return [t for t in fig.data if mode is None or t.mode == mode]


# --------------------------------------------------------------------------- label_map
def test_label_map_pca_groups_hover_and_colours(case):
    tax = case.taxonomy
    fig = viz.label_map(case.class_emb, tax, method="pca")
    assert isinstance(fig, go.Figure)
    tops = [tax.level(i, 1) for i in range(tax.n_classes)]
    groups = sorted(set(tops))
    assert [t.name for t in fig.data] == groups                          # one trace per top level
    for t in fig.data:
        paths = [c[0] for c in t.customdata]
        assert len(t.x) == tops.count(t.name) == len(paths)
        assert all(p.startswith(t.name + " &gt; ") for p in paths)      # hover = full path (escaped)
        assert "%{customdata[0]}" in t.hovertemplate
    assert len({t.marker.color for t in fig.data}) == len(groups)        # a colour per group
    assert sum(len(t.x) for t in fig.data) == tax.n_classes
    # coordinates are the inspect projection
    ref = si.project_labels(case.class_emb, tax, method="pca")
    acc = fig.data[groups.index("Accessories")]
    ref_acc = ref[ref["group"] == "Accessories"]
    np.testing.assert_allclose(acc.x, ref_acc["x"])


def test_label_map_with_class_weights_overlay(case):
    tax = case.taxonomy
    W = case.class_emb @ np.random.default_rng(1).normal(size=(32, 20))
    fig = viz.label_map(case.class_emb, tax, method="pca", class_weights=W)
    lines = [t for t in fig.data if t.mode == "lines"]
    assert len(lines) == 1 and len(lines[0].x) == 3 * tax.n_classes     # one segment per class
    names = {t.name: t for t in fig.data if t.mode == "markers"}
    for g in {tax.level(i, 1) for i in range(tax.n_classes)}:
        n_pts, w_pts = names[g], names[f"{g} (weights)"]
        assert n_pts.marker.color == w_pts.marker.color                  # same colour, other marker
        assert n_pts.marker.symbol == "circle" and w_pts.marker.symbol == "x"
        assert len(n_pts.x) == len(w_pts.x)
        assert "cosine to name" in w_pts.hovertemplate
        assert [c[0] for c in w_pts.customdata] == [c[0] for c in n_pts.customdata]
    ref = si.project_labels(case.class_emb, tax, method="pca", class_weights=W)
    # segment k joins name point k to weight point k
    k = 7
    assert lines[0].x[3 * k] == pytest.approx(ref["x"][k]) and lines[0].x[3 * k + 1] == pytest.approx(ref["wx"][k])
    assert lines[0].x[3 * k + 2] is None


def test_label_map_small_taxonomy():
    # (a UMAP fit is exercised in test_inspect; its numba compile is too slow to repeat here)
    tax = small_taxonomy()
    emb = np.random.default_rng(0).normal(size=(tax.n_classes, 6))
    fig = viz.label_map(emb, tax, method="pca", color_level=2)
    assert sorted(t.name for t in fig.data) == ["a", "b", "c"]
    assert fig.layout.title.text.startswith("PCA") and fig.layout.legend.title.text == "level 2"
    two = Taxonomy.from_paths(["A > x", "B > y"])
    with pytest.raises(ValueError, match="at least 3 classes"):
        viz.label_map(np.eye(2), two, method="umap")


# --------------------------------------------------------------------------- similarity_graph
def _undirected(nb, tax, k):
    t = si.neighbor_table(nb, tax, k=k)
    pairs = {}
    for s, d, same in zip(t["source"], t["target"], t["same_parent"]):
        pairs[(min(s, d), max(s, d))] = same
    return pairs


def test_similarity_graph_edges_legend_counts_and_hover(case):
    tax, nb = case.taxonomy, case.neighbors
    fig = viz.similarity_graph(nb, tax, k=5, seed=0)
    pairs = _undirected(nb, tax, 5)
    n_same = sum(pairs.values())
    n_diff = len(pairs) - n_same
    assert 0 < n_diff < len(pairs)
    lines = {t.name: t for t in fig.data if t.mode == "lines"}
    assert set(lines) == {f"same parent ({n_same})", f"different parent ({n_diff})"}
    assert len(lines[f"same parent ({n_same})"].x) == 3 * n_same
    assert lines[f"same parent ({n_same})"].line.color == viz.AGREE_COLOR
    assert lines[f"different parent ({n_diff})"].line.color == viz.DISAGREE_COLOR
    mids = {t.name: t for t in fig.data if t.name.endswith(" edges")}
    assert len(mids["different parent edges"].x) == n_diff
    # a disagreeing edge's hover names both full paths
    (a, b) = next(p for p, same in pairs.items() if not same)
    texts = list(mids["different parent edges"].text)
    esc = [tax.classes[i].replace(">", "&gt;") for i in (a, b)]          # hover text is HTML-escaped
    assert any(esc[0] in s and esc[1] in s for s in texts)
    nodes = [t for t in fig.data if t.mode == "markers" and not t.name.endswith(" edges")]
    assert sorted(p for t in nodes for p in t.text) == sorted(viz.plot_text(c) for c in tax.classes)
    assert len({t.marker.color for t in nodes}) == len(nodes)
    assert f"{n_same} of {len(pairs)}" in fig.layout.title.text


def test_similarity_graph_layouts_are_seeded_and_checked():
    tax = small_taxonomy()
    idx = np.array([[1, 2], [0, -1], [0, 3], [4, -1], [3, 0]])
    sims = np.array([[0.9, 0.5], [0.9, 0.0], [0.5, 0.1], [0.8, 0.0], [0.8, 0.2]])
    a = viz.similarity_graph((idx, sims), tax, k=2, seed=4)
    b = viz.similarity_graph((idx, sims), tax, k=2, seed=4)
    assert a.to_dict()["data"] == b.to_dict()["data"]
    # pairs: (0,1) same, (0,2) diff, (2,3) diff, (3,4) same, (0,4) diff
    assert {t.name for t in a.data if t.mode == "lines"} == {"same parent (2)", "different parent (3)"}
    c = viz.similarity_graph((idx, sims), tax, k=2, layout="circular")
    assert len([t for t in c.data if t.mode == "markers"]) >= 2
    with pytest.raises(ValueError, match="layout must be one of"):
        viz.similarity_graph((idx, sims), tax, layout="grid")


def test_similarity_graph_one_branch_and_size_guard(case):
    tax, nb = case.taxonomy, case.neighbors
    fig = viz.similarity_graph(nb, tax, k=3, classes="Apparel > Topwear")
    branch = [i for i, c in enumerate(tax.classes) if c.startswith("Apparel > Topwear > ")]
    t = si.neighbor_table(nb, tax, k=3)
    t = t[t["source"].isin(branch)]
    expect_nodes = {viz.plot_text(tax.classes[i]) for i in set(branch) | set(t["target"])}
    nodes = [p_ for tr in fig.data if tr.mode == "markers" and not tr.name.endswith(" edges") for p_ in tr.text]
    assert set(nodes) == expect_nodes and len(nodes) == len(expect_nodes)
    pairs = {(min(s_, d), max(s_, d)): sp for s_, d, sp in zip(t["source"], t["target"], t["same_parent"])}
    n_same = sum(pairs.values())
    assert {tr.name for tr in fig.data if tr.mode == "lines"} == {f"same parent ({n_same})",
                                                                 f"different parent ({len(pairs) - n_same})"}
    # more nodes than max_nodes: the neighbourhood of a center class, not a refusal
    small = viz.similarity_graph(nb, tax, k=3, max_nodes=50, center="Apparel > Topwear > Tshirts")
    drawn = [p_ for tr in small.data if tr.mode == "markers" and tr.name not in ("center",)
             and not tr.name.endswith(" edges") for p_ in tr.text]
    assert len(drawn) == 50 and viz.plot_text("Apparel > Topwear > Tshirts") in drawn and "nearest to" in small.layout.title.text
    assert len(viz.similarity_graph(nb, tax, k=3, max_nodes=50, layout="spectral").data) > 4
    with pytest.raises(KeyError, match="no class lies in branch"):
        viz.similarity_graph(nb, tax, classes="Spaceships")


# --------------------------------------------------------------------------- confusion_heatmap
def test_confusion_heatmap_matches_neighbourhood_table(case):
    tax = case.taxonomy
    fig = viz.confusion_heatmap(case.probs, case.y, tax, "Apparel > Topwear > Tshirts", neighbors=case.neighbors, size=7)
    (hm,) = fig.data
    ref = si.neighborhood_confusion(case.probs, case.y, tax, "Apparel > Topwear > Tshirts", case.neighbors, size=7)
    np.testing.assert_allclose(np.asarray(hm.z, dtype=float), ref.to_numpy(), equal_nan=True)
    assert np.asarray(hm.text).tolist() == ref.attrs["counts"].tolist()
    assert hm.y[0] == "★ Tshirts" and hm.x[-1] == "(other)" and len(hm.x) == 8 and len(hm.y) == 7
    for lab, role in zip(hm.y[1:], ref.attrs["roles"][1:]):
        assert lab.startswith("~ ") == ("neighbour" in role)
    hover = np.asarray(hm.customdata)
    assert "true: Apparel &gt; Topwear &gt; Tshirts" in hover[0, 0]
    total = ref.attrs["row_totals"][0]
    assert f"{ref.attrs['counts'][0, 0]} of {total} items" in hover[0, 0]
    assert "Confusions around Apparel &gt; Topwear &gt; Tshirts" in fig.layout.title.text


def test_confusion_heatmap_short_labels_stay_unique():
    tax = Taxonomy.from_paths(["A > x > Belts", "B > y > Belts", "A > x > Caps"], on_conflict="keep")
    a, b = tax.index_of(["A > x > Belts", "B > y > Belts"])
    y = np.array([a, a, b])
    pred = np.array([b, a, a])
    fig = viz.confusion_heatmap(pred, y, tax, "A > x > Belts", size=3)
    assert len(set(fig.data[0].y)) == len(fig.data[0].y) == 2
    assert fig.data[0].y[0] == "★ x &gt; Belts" and fig.data[0].y[1] == "y &gt; Belts"   # tick labels escaped


# --------------------------------------------------------------------------- severity_histogram
def test_severity_histogram_fractions_per_config(case):
    tax = case.taxonomy
    pred_model = case.probs.argmax(1)
    rng = np.random.default_rng(0)
    pred_random = rng.integers(tax.n_classes, size=len(case.y))
    fig = viz.severity_histogram({"model": (case.probs, case.y), "random": (pred_random, case.y)}, tax)
    assert [t.name for t in fig.data] == ["model", "random"] and fig.layout.barmode == "group"
    for t, pred in zip(fig.data, (pred_model, pred_random)):
        d = tax.lca_distance(pred, case.y)
        d = d[d > 0]
        expect = np.array([(d == k).mean() for k in (1, 2, 3)])
        assert list(t.x) == [1, 2, 3]
        np.testing.assert_allclose(t.y, expect)
        assert list(t.text) == [int((d == k).sum()) for k in (1, 2, 3)]
        assert int(t.customdata[0][1]) == len(d)
    # the synthetic model errs mostly into siblings, a random guesser mostly across branches
    assert fig.data[0].y[0] > fig.data[1].y[0] and fig.data[1].y[2] > fig.data[0].y[2]


# --------------------------------------------------------------------------- training_curves
def _history(n=5, shift=0.0):
    """Columns as sk.train writes them (TrainRun.history)."""
    e = np.arange(1, n + 1)
    return pd.DataFrame({"epoch": e, "alpha": np.linspace(0.2, 0.0, n), "lr": 1e-3 / e, "loss": 3.0 - 0.4 * e,
                         "focal": 2.0 - 0.3 * e + shift, "kl": 1.0 - 0.1 * e, "seconds": 1.5,
                         "val_loss": 2.5 - 0.2 * e, "val_top1": 0.5 + 0.05 * e,
                         "val_mistake_severity": 2 - 0.1 * e, "val_seconds": 0.2})


def test_training_curves_single_run_subplots():
    h = _history()
    fig = viz.training_curves(h)
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["loss", "validation: accuracy-type", "validation: tree distance", "soft-label alpha",
                      "learning rate"]
    by_name = {t.name: t for t in fig.data}
    assert set(by_name) == {"loss", "focal", "kl", "val_loss", "alpha", "lr", "val_top1", "val_mistake_severity"}
    np.testing.assert_allclose(by_name["val_top1"].y, h["val_top1"])
    assert list(by_name["focal"].x) == list(h["epoch"])
    axes = {n: by_name[n].xaxis for n in by_name}
    assert axes["focal"] == axes["val_loss"] == "x" and axes["val_top1"] == "x2"
    assert axes["val_mistake_severity"] == "x3" and axes["alpha"] == "x4" and axes["lr"] == "x5"
    assert fig.layout.yaxis5.type == "log"                                  # learning rate on a log axis
    assert len({t.line.color for t in fig.data}) == len(fig.data)        # colours = metrics
    assert "focal" in by_name["focal"].hovertemplate


@pytest.mark.filterwarnings("ignore:nbrs@20")  # evaluate notes the 8-neighbour table is short for k=20
def test_figures_on_a_real_training_run(case):
    """sk.train on tiny synthetic-but-structured embeddings of the real products: its history and
    head plug into training_curves and label_map (class-weight overlay)."""
    import semcat_kit as sk

    rng = np.random.default_rng(0)
    X = (case.class_emb[case.y_real] + 0.3 * rng.normal(size=(len(case.y), 32))).astype(np.float32)
    run = sk.train(X[:200], case.y[:200], taxonomy=case.taxonomy, neighbors=case.neighbors,
                   config=sk.TrainConfig(epochs=2, smoothing="semantic", k=8, solver="minibatch"),   # per-epoch curves
                   val=(X[200:], case.y[200:]),
                   progress=False, allow_unseen_val_classes=True)
    fig = viz.training_curves(run)
    by_name = {t.name: t for t in fig.data}
    assert {"loss", "focal", "kl", "val_top1", "val_mistake_severity", "alpha", "lr"} <= set(by_name)
    assert not any("seconds" in n for n in by_name)
    np.testing.assert_allclose(by_name["val_top1"].y, run.history["val_top1"])
    W = si.head_class_weights(run)
    assert W.shape[0] == case.taxonomy.n_classes
    lm = viz.label_map(case.class_emb, case.taxonomy, method="pca", class_weights=W)
    assert sum(len(t.x) for t in lm.data if t.name.endswith("(weights)")) == case.taxonomy.n_classes
    with pytest.raises(TypeError, match="torch module"):
        si.head_class_weights(object(), n_classes=3)
    with pytest.raises(ValueError, match="no Linear layer with 7 outputs"):
        si.head_class_weights(run.model, n_classes=7)


def test_training_curves_compare_runs():
    fig = viz.training_curves({"semantic": _history(), "onehot": _history(4, shift=0.5)},
                              metrics=["focal", "kl", "val_top1"])
    names = [t.name for t in fig.data]
    assert sorted(names) == sorted(f"{r}: {m}" for r in ("semantic", "onehot") for m in ("focal", "kl", "val_top1"))
    col = {t.name: t.line.color for t in fig.data}
    assert col["semantic: focal"] == col["semantic: kl"] != col["onehot: focal"]      # colours = runs
    dash = {t.name: t.line.dash for t in fig.data}
    assert dash["semantic: focal"] == dash["onehot: focal"] != dash["semantic: kl"]   # dashes = metrics
    onehot = next(t for t in fig.data if t.name == "onehot: focal")
    np.testing.assert_allclose(onehot.y, 2.5 - 0.3 * np.arange(1, 5))
    with pytest.raises(ValueError, match="'epoch'"):
        viz.training_curves(pd.DataFrame({"loss": [1.0]}))


@pytest.mark.filterwarnings("ignore:nbrs@20")
def test_class_weights_of_a_codes_head_rank_classes_like_the_head(case):
    """For a binary-codes head, codes @ W are real per-class weights: h @ (codes @ W).T plus the
    per-class bias codes @ b orders the classes exactly as the head's own class scores."""
    import torch

    import semcat_kit as sk

    rng = np.random.default_rng(1)
    X = (case.class_emb[case.y_real] + 0.3 * rng.normal(size=(len(case.y), 32))).astype(np.float32)
    run = sk.train(X, case.y, taxonomy=case.taxonomy, progress=False,
                   config=sk.TrainConfig(epochs=2, label_repr="codes", early_stopping=None))
    W = si.head_class_weights(run)          # codes taken from run.codes
    assert W.shape == (case.taxonomy.n_classes, run.model.mlp[-1].in_features)
    # hidden activations feeding the last layer, in eval mode
    feats = {}
    hook = run.model.mlp[-1].register_forward_hook(lambda m, i, o: feats.update(h=i[0].detach()))
    scores = run.predict_logits(X[:50])
    hook.remove()
    h = feats["h"].numpy().astype(np.float64)
    b = run.codes.astype(np.float64) @ run.model.mlp[-1].bias.detach().numpy().astype(np.float64)
    mine = h @ W.T + b
    # equal up to a per-row constant (the class-independent sum of log sigmoid(-x))
    np.testing.assert_allclose(mine - mine[:, :1], scores - scores[:, :1], atol=1e-3)
    with pytest.raises(ValueError, match="one per taxonomy bit"):
        si.head_class_weights(run.model, codes=np.ones((case.taxonomy.n_classes, 3)))
