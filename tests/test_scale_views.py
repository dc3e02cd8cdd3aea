"""Every view at 5,595 classes (the real Google Product Taxonomy) with generated predictions:
each one builds within a time bound and draws a bounded number of elements."""
from __future__ import annotations

import time

import html

import numpy as np
import pytest

from _views_case import google_case
from semcat_kit import see as si
from semcat_kit import viz, widgets

N_ITEMS = 1500


def _n_points(fig) -> int:
    n = 0
    for tr in fig.data:
        if getattr(tr, "z", None) is not None:
            n += int(np.size(tr.z))
        elif getattr(tr, "x", None) is not None:
            n += len(tr.x)
    return n


class Timer:
    def __init__(self, limit: float):
        self.limit = limit

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        assert exc[0] is not None or self.seconds < self.limit, f"took {self.seconds:.1f} s (bound {self.limit} s)"


@pytest.fixture(scope="module")
def big(google_taxonomy_file):
    """The Google taxonomy with generated embeddings, neighbours, labels and predictions
    (tests/_views_case.py)."""
    c = google_case(google_taxonomy_file, n_items=N_ITEMS)
    return c.taxonomy, c.class_emb, c.neighbors, c.probs, c.y, c.catalog


def test_google_taxonomy_size(big):
    assert big[0].n_classes == 5595


def test_similarity_graph_shows_a_neighbourhood(big):
    tax, emb, nbrs, *_ = big
    ex = si.example_classes(tax, nbrs, counts=np.bincount(big[4], minlength=tax.n_classes))
    with Timer(30):
        fig = viz.similarity_graph(nbrs, tax, k=5, center=int(ex.loc["anchor", "class"]))
    nodes = [t for tr in fig.data if tr.mode == "markers" and tr.name != "center" and not tr.name.endswith(" edges")
             for t in tr.text]
    assert 50 <= len(nodes) <= 400 and viz.plot_text(tax.classes[int(ex.loc["anchor", "class"])]) in nodes
    assert _n_points(fig) < 400 * 5 * 3 * 2 + 800
    with Timer(30):   # a branch larger than max_nodes: the neighbourhood inside that branch
        fig = viz.similarity_graph(nbrs, tax, k=5, classes="Home & Garden", max_nodes=200)
    drawn = [t for tr in fig.data if tr.mode == "markers" and tr.name != "center" and not tr.name.endswith(" edges")
             for t in tr.text]
    assert len(drawn) <= 200 and all(t.startswith(viz.plot_text("Home & Garden")) for t in drawn)


def test_label_map_hover_branch_filter_webgl(big):
    tax, emb, *_ = big
    with Timer(20):
        fig = viz.label_map(emb, tax, method="pca")
    assert all(tr.type == "scattergl" for tr in fig.data)
    assert _n_points(fig) == tax.n_classes and len(fig.data) == 21        # one trace per top-level category
    with Timer(20):
        fig = viz.label_map(emb, tax, method="pca", branch="Apparel & Accessories")
    other = [tr for tr in fig.data if tr.name == "other classes"][0]
    n_branch = sum(c.startswith("Apparel & Accessories > ") or c == "Apparel & Accessories" for c in tax.classes)
    assert len(other.x) == tax.n_classes - n_branch and _n_points(fig) == tax.n_classes
    W = np.random.default_rng(1).normal(size=(tax.n_classes, 16))
    with Timer(30):
        fig = viz.label_map(emb, tax, method="pca", class_weights=W)
    assert _n_points(fig) == 5 * tax.n_classes                            # names, weights, 3 per link


def test_confusion_views_show_top_pairs(big):
    tax, emb, nbrs, probs, y, cat = big
    with Timer(10):
        pairs = si.confused_pairs(probs, y, tax, n=15)
    assert len(pairs) == 15 and pairs["count"].is_monotonic_decreasing
    pred = probs.argmax(1)
    t, p_ = pairs.iloc[0][["true", "pred"]]
    assert pairs["count"].iloc[0] == int(((y == t) & (pred == p_)).sum())
    with Timer(10):
        fig = viz.confusion_heatmap(probs, y, tax, int(t), neighbors=nbrs, size=10)
    assert _n_points(fig) <= 10 * 11
    # long names wrap onto short lines (slanted labels would eat the plot area), and the height makes room
    lines = [line for lab in fig.data[0].x for line in lab.split("<br>")]
    assert max(len(line) for line in lines) <= 40 and fig.layout.height >= 110 + 300 + 50
    with Timer(10):
        fig = viz.severity_histogram({"generated": (probs, y)}, tax)
    assert _n_points(fig) <= tax.max_depth


def test_widgets_search_instead_of_listing_every_class(big):
    tax, emb, nbrs, probs, y, cat = big
    with Timer(60):
        cn = widgets.ConfusionNeighborhood(probs, y, tax, nbrs, catalog_df=cat)
    assert len(cn.pairs_table) == 10 and len(cn.search.matches.options) == 0
    errs = np.bincount(y[probs.argmax(1) != y], minlength=tax.n_classes)
    assert cn.selected == int(errs.argmax())                              # the most-confused class
    cn.picker.value = "shoe"
    n = len(cn.search.hits)
    assert n > 20 and len(cn.search.matches.options) == 20                # the list holds 20, the line says how many
    assert f"{n} classes match 'shoe': the first 20 are listed" in cn.message.value
    assert all(len(label) <= cn.search.max_chars for label, _ in cn.search.matches.options)
    chosen = cn.search.matches.options[3][1]
    cn.search.matches.value = chosen                                        # choosing a match selects it
    assert cn.selected == tax.index_of(chosen) and html.escape(chosen) in cn.header.value
    assert cn.picker.value == "shoe" and len(cn.search.matches.options) == 20   # the box keeps what was typed
    with Timer(60):
        br = widgets.MispredictionBrowser(cat, probs, y, tax, page_size=8)
    assert len(br.cards) <= 8
    br.true_filter.value = "garden"
    assert len(br.true_search.matches.options) <= 20
    assert br.filtered["true_label"].str.lower().str.contains("garden").all()
