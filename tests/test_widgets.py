"""semcat_kit.see.widgets driven without a browser: set filter values, click buttons, toggle flags,
export, pick classes; check what the widgets show (real Myntra products, synthetic outputs)."""
from __future__ import annotations

import html
import os

import ipywidgets as W
import numpy as np
import pandas as pd
import pytest

from _inspection_case import MISSING_IMAGE_ID, make_case
from semcat_kit import widgets
from semcat_kit import see as si


@pytest.fixture(scope="module")
def case(myntra_styles, fashion_dir):
    return make_case(myntra_styles, fashion_dir)


@pytest.fixture
def browser(case):
    return widgets.MispredictionBrowser(case.catalog, case.probs, None, case.taxonomy, page_size=12)


def _card_html(card) -> str:
    return card.children[0].children[1].value


def _card_image(card) -> W.Image:
    return card.children[0].children[0]


# --------------------------------------------------------------------------- browser: paging
def test_browser_initial_page_shows_mistakes_most_confident_first(case, browser):
    n_mistakes = int((case.probs.argmax(1) != case.y).sum())
    assert len(browser.filtered) == n_mistakes and browser.filtered["is_mistake"].all()
    assert browser.n_pages == -(-n_mistakes // 12)
    assert browser.page_label.value == f"page 1 / {browser.n_pages} · {n_mistakes} items · 0 flagged"
    assert len(browser.cards) == 12 and len(browser.grid.children) == 12
    assert (np.diff(browser.filtered["confidence"]) <= 0).all()
    for card, (_, row) in zip(browser.cards, browser.filtered.head(12).iterrows()):
        text = _card_html(card)
        assert html.escape(row["title"]) in text
        assert f"true: {html.escape(row['true_label'])}" in text
        assert f"LCA distance {row['lca_distance']}" in text
        assert f"{html.escape(row['top1_label'])}: {row['top1_prob']:.2f}" in text
        assert f"{html.escape(row['top3_label'])}: {row['top3_prob']:.2f}" in text
    assert browser.prev_button.disabled and not browser.next_button.disabled
    assert isinstance(browser.widget, W.VBox)
    assert "application/vnd.jupyter.widget-view+json" in browser._repr_mimebundle_()


def test_browser_next_prev_and_last_page(browser):
    second = browser.filtered.iloc[12:24]
    browser.next_button.click()
    assert browser.page == 1 and browser.page_label.value.startswith(f"page 2 / {browser.n_pages}")
    assert [html.escape(t) in _card_html(c) for c, t in zip(browser.cards, second["title"])] == [True] * 12
    browser.prev_button.click()
    assert browser.page == 0
    for _ in range(browser.n_pages + 3):                    # clicking past the end stays on the last page
        browser.next_button.click()
    last = browser.n_pages - 1
    assert browser.page == last and browser.next_button.disabled
    assert len(browser.cards) == len(browser.filtered) - 12 * last


# --------------------------------------------------------------------------- browser: filters & sorts
def test_browser_filters(case, browser):
    t = browser.table
    browser.mode.value = "all"
    assert len(browser.filtered) == len(case.catalog) and browser.page == 0
    browser.true_filter.value = "topwear"                   # case-insensitive substring of the path
    assert len(browser.filtered) == t["true_label"].str.contains("Topwear").sum() > 0
    browser.pred_filter.value = "Apparel > Topwear > Tshirts"
    f = browser.filtered
    assert len(f) == ((t["true_label"].str.contains("Topwear")) & (t["pred_label"] == "Apparel > Topwear > Tshirts")).sum()
    assert len(f) > 0 and (f["pred_label"] == "Apparel > Topwear > Tshirts").all()
    browser.true_filter.value = ""
    browser.pred_filter.value = ""
    browser.mode.value = "only mistakes"
    browser.severity.value = (1, 1)                         # sibling mistakes only
    assert len(browser.filtered) == ((t["lca_distance"] == 1)).sum() and (browser.filtered["lca_distance"] == 1).all()
    browser.severity.value = (2, 3)
    browser.confidence.value = (0.0, 0.8)
    f = browser.filtered
    assert len(f) == ((t["lca_distance"] >= 2) & (t["confidence"] <= 0.8)).sum()
    assert (f["confidence"] <= 0.8).all() and (f["lca_distance"] >= 2).all()
    browser.confidence.value = (0.0, 0.01)                  # nothing left: an empty page
    assert len(browser.filtered) == 0 and browser.cards == [] and browser.n_pages == 1
    shown = browser.grid.children                            # not a blank area: say why and what to do
    assert len(shown) == 1 and "no items match these filters" in shown[0].value
    assert browser.page_label.value.startswith("page 1 / 1 · 0 items")


def test_browser_sorts_and_label_issue_mode(case, browser):
    browser.sort.value = "severity: worst first"
    assert (np.diff(browser.filtered["lca_distance"]) <= 0).all()
    browser.sort.value = "confidence: least confident first"
    assert (np.diff(browser.filtered["confidence"]) >= 0).all()
    browser.mode.value = "all"
    browser.sort.value = "label-issue score: most suspicious first"
    first = browser.filtered.head(len(case.planted))
    assert set(first["row"]) == set(case.planted)           # planted noise surfaces first
    browser.mode.value = "label issues"
    assert browser.filtered["is_label_issue"].all() and set(case.planted) <= set(browser.filtered["row"])
    # the cards of suspicious items carry the badge with the suggestion; others do not
    for card, (_, row) in zip(browser.cards, browser.filtered.iterrows()):
        text = _card_html(card)
        assert "possible label issue" in text
        assert html.escape(row["suggested_label"]) in text
    # catalog paths the taxonomy re-filed (the real "Belts under Apparel > Topwear") surface too
    browser.true_filter.value = "Belts"
    belts = browser.filtered[browser.filtered["given_label"] == "Apparel > Topwear > Belts"]
    assert len(belts) == 3
    for card, (_, row) in zip(browser.cards, browser.filtered.iterrows()):
        if row["label_refiled"]:
            text = _card_html(card)
            assert "catalog: Apparel &gt; Topwear &gt; Belts" in text and "possible label issue" in text
    browser.true_filter.value = ""
    browser.mode.value = "all"
    browser.sort.value = "confidence: most confident first"
    clean = [c for c, (_, r) in zip(browser.cards, browser.filtered.iterrows()) if not r["is_label_issue"]]
    assert clean and all("possible label issue" not in _card_html(c) for c in clean)


def test_browser_thumbnails_and_missing_image_placeholder(case, browser):
    browser.mode.value = "all"
    label = browser.table.loc[browser.table["item_id"] == MISSING_IMAGE_ID, "true_label"].iloc[0]
    browser.true_filter.value = label
    row = browser.filtered.index[browser.filtered["item_id"] == MISSING_IMAGE_ID][0]
    browser.go(row // browser.page_size)
    card = browser.cards[row % browser.page_size]
    img = _card_image(card)
    assert img.value == widgets.placeholder_image() and img.format == "png"
    other = next(i for i, (_, r) in enumerate(browser.filtered.iloc[browser.page * 12:].iterrows())
                 if r["image_path"] is not None)
    img2 = _card_image(browser.cards[other])
    path = browser.filtered.iloc[browser.page * 12 + other]["image_path"]
    assert img2.value == open(path, "rb").read() and img2.format == "jpeg"


# --------------------------------------------------------------------------- browser: flags & export
def test_browser_flag_across_pages_and_export(tmp_path, browser):
    ids_p1 = list(browser.flag_buttons())
    browser.flag_buttons()[ids_p1[2]].value = True
    browser.next_button.click()
    ids_p2 = list(browser.flag_buttons())
    browser.flag_buttons()[ids_p2[0]].value = True
    browser.flag_buttons()[ids_p2[5]].value = True
    browser.flag_buttons()[ids_p2[5]].value = False          # un-flag
    assert browser.flagged == [ids_p1[2], ids_p2[0]]
    assert browser.page_label.value.endswith("· 2 flagged")
    browser.prev_button.click()                              # flags persist when a page is rebuilt
    assert browser.flag_buttons()[ids_p1[2]].value is True
    assert sum(b.value for b in browser.flag_buttons().values()) == 1
    out = tmp_path / "review" / "flagged.csv"
    browser.export_path.value = str(out)
    browser.export_button.click()
    assert "wrote 2 items" in browser.status.value and str(out) in browser.status.value
    got = pd.read_csv(out, dtype={"item_id": str})
    assert got["item_id"].tolist() == [ids_p1[2], ids_p2[0]]
    ref = browser.table.set_index("item_id").loc[[ids_p1[2], ids_p2[0]]]
    assert got["title"].tolist() == ref["title"].tolist()
    assert got["pred_label"].tolist() == ref["pred_label"].tolist()
    np.testing.assert_allclose(got["confidence"], ref["confidence"])
    assert {"true_label", "lca_distance", "top3_label", "label_issue_score", "suggested_label"} <= set(got.columns)
    assert os.listdir(out.parent) == ["flagged.csv"]        # atomic: no temp files left
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask     # not the temp file's private 0600


def test_browser_export_errors_show_in_status(tmp_path, browser):
    browser.export_path.value = str(tmp_path / "x.csv")
    browser.export_button.click()
    assert "export failed" in browser.status.value and "no items flagged" in browser.status.value
    assert not (tmp_path / "x.csv").exists()
    next(iter(browser.flag_buttons().values())).value = True
    browser.export_path.value = "  "
    browser.export_button.click()
    assert "path is empty" in browser.status.value
    browser.export_path.value = str(tmp_path)
    browser.export_button.click()
    assert "is a folder" in browser.status.value
    with pytest.raises(ValueError, match="page_size"):
        widgets.MispredictionBrowser(browser.table, np.zeros((1, 1)), None, browser.taxonomy, page_size=0)


def test_browser_bad_input(case):
    with pytest.raises(ValueError, match="aligned"):
        widgets.MispredictionBrowser(case.catalog.iloc[:5], case.probs, None, case.taxonomy)
    with pytest.raises(TypeError, match="Taxonomy"):
        widgets.MispredictionBrowser(case.catalog, case.probs, None, "tax")
    dup = case.catalog.assign(item_id=case.catalog["item_id"].where(case.catalog.index != 4, case.catalog["item_id"][3]))
    with pytest.raises(ValueError, match=f"repeats id '{case.catalog['item_id'][3]}'.*keyed by item_id"):
        widgets.MispredictionBrowser(dup, case.probs, None, case.taxonomy)


# --------------------------------------------------------------------------- confusion neighbourhood
def test_neighborhood_default_class_and_tables(case):
    tax = case.taxonomy
    w = widgets.ConfusionNeighborhood(case.probs, case.y, tax, case.neighbors, catalog_df=case.catalog, k=6)
    pred = case.probs.argmax(1)
    errs = np.bincount(case.y[pred != case.y], minlength=tax.n_classes)
    c = int(errs.argmax())
    assert w.selected == c and html.escape(tax.classes[c]) in w.header.value
    assert w.neighbors_table["class"].tolist() == case.neighbors.indices[c, :6].tolist()
    assert w.neighbors_table["same_parent"].tolist() == [tax.parent(int(j)) == tax.parent(c)
                                                        for j in case.neighbors.indices[c, :6]]
    for name in w.neighbors_table["neighbour"]:               # paths may wrap at their separators (<wbr>)
        assert html.escape(name) in w.neighbors_html.value.replace("<wbr>", "")
    conf = si.top_confusions(case.probs, case.y, tax, c, n=6)
    assert w.confusions_table.equals(conf)
    assert html.escape(conf["other_label"].iloc[0]) in w.confusions_html.value.replace("<wbr>", "")
    # heatmap figure in the Output, as plotly JSON
    data = w.heatmap.outputs[0]["data"]
    assert "application/vnd.plotly.v1+json" in data
    z = np.asarray(w.heatmap_figure.data[0].z, dtype=float)
    ref = si.neighborhood_confusion(case.probs, case.y, tax, c, case.neighbors, size=10)
    np.testing.assert_allclose(z, ref.to_numpy(), equal_nan=True)
    # examples: this class's mispredictions in either direction, with catalog titles, as cards
    ex = w.examples
    assert len(ex) == min(6, ((pred != case.y) & ((case.y == c) | (pred == c))).sum()) > 0
    assert (ex["is_mistake"]).all() and ((ex["true_index"] == c) | (ex["pred_index"] == c)).all()
    grid = w.examples_box.children[0]
    assert len(grid.children) == len(ex)
    assert html.escape(ex["title"].iloc[0]) in _card_html(grid.children[0])


def test_neighborhood_picker(case):
    tax = case.taxonomy
    w = widgets.ConfusionNeighborhood(case.probs, case.y, tax, case.neighbors, catalog_df=case.catalog,
                                      cls="Apparel > Topwear > Tshirts")
    assert tax.classes[w.selected] == "Apparel > Topwear > Tshirts"
    assert w.picker.value == "" and w.message.value == ""      # the box starts empty: a click and typing search
    assert "<h4" in w.header.value and "Apparel &gt; Topwear &gt; Tshirts</h4>" in w.header.value
    w.picker.value = "Footwear > Shoes > Casual Shoes"      # full path
    assert tax.classes[w.selected] == "Footwear > Shoes > Casual Shoes"
    assert "Casual Shoes" in w.header.value
    nb = case.neighbors.indices[w.selected]
    assert w.neighbors_table["class"].tolist() == nb[nb >= 0][:10].tolist()
    w.picker.value = "kurtas"                                # a class's own name, any case
    assert tax.classes[w.selected] == "Apparel > Topwear > Kurtas"
    before = w.selected
    w.picker.value = "Shoe"                                  # ambiguous: stays, says how many match, lists them
    hits = w.search.hits
    assert w.selected == before and len(hits) == 7
    assert "7 classes match 'Shoe': pick one below" in w.message.value
    assert [v for _, v in w.search.matches.options] == hits
    w.search.matches.value = hits[2]                         # choosing one selects it; the box keeps the text
    assert w.selected == tax.index_of(hits[2]) and w.picker.value == "Shoe"
    assert w.search.matches.value == hits[2]                 # and the list shows which one is shown
    w.picker.value = "zzz"
    assert w.selected == tax.index_of(hits[2]) and "no class matches 'zzz'" in w.message.value
    assert w.search.matches.options == ()
    w.picker.value = "Jeans"
    assert tax.classes[w.selected] == "Apparel > Bottomwear > Jeans"
    w.select("Tshirts")                                      # selecting in code leaves the box as typed
    assert w.picker.value == "Jeans" and tax.classes[w.selected] == "Apparel > Topwear > Tshirts"


def test_neighborhood_picker_typed_letter_by_letter(case):
    """What a person does: click into the box and type. The box holds exactly the letters typed at
    every step (the kernel never rewrites it mid-word), and the class is found by the end."""
    tax = case.taxonomy
    w = widgets.ConfusionNeighborhood(case.probs, case.y, tax, case.neighbors, cls="Apparel > Topwear > Tshirts")
    typed = ""
    for ch in "formal shoes":
        typed += ch
        w.picker.value = typed
        assert w.picker.value == typed
    assert tax.classes[w.selected] == "Footwear > Shoes > Formal Shoes"
    assert w.search.matches.options == () or "Footwear > Shoes > Formal Shoes" in [v for _, v in w.search.matches.options]


def test_class_search_lists_what_it_counts_and_elides_long_paths():
    long = ["Arts & Entertainment > Hobbies & Creative Arts > Musical Instrument & Orchestra Accessories > "
            f"String Instrument Accessories > Orchestral String Instrument Accessories > Part {i:02d}" for i in range(30)]
    s = widgets.ClassSearch(long + ["Toys > Part 99"], width="420px")
    assert s.max_chars == (420 - 30) // 7
    s.text.value = "part"
    assert len(s.hits) == 31 and len(s.matches.options) == 20
    assert "31 classes match 'part': the first 20 are listed" in s.count.value
    labels = [label for label, _ in s.matches.options]
    assert all(len(label) <= s.max_chars for label in labels) and len(set(labels)) == 20
    assert labels[0] == "Arts & Entertainment > … > Part 00" and s.matches.options[0][1] == long[0]
    s.matches.value = long[5]                                # no on_choose: the choice fills the box (a filter)
    assert s.text.value == long[5] and s.matches.options == () and s.count.value == ""
    quiet = widgets.ClassSearch(long, show_count=False)
    quiet.text.value = "part"
    assert quiet.count.value == "" and len(quiet.matches.options) == 20


def test_neighborhood_without_catalog_and_errors(case):
    tax = case.taxonomy
    pred = case.probs.argmax(1)
    w = widgets.ConfusionNeighborhood(pred, case.y, tax, case.neighbors, cls="Tshirts", n_examples=3)
    c = tax.index_of("Apparel > Topwear > Tshirts")
    ex = w.examples
    assert len(ex) == 3 and list(ex.columns) == ["row", "true_label", "pred_label"]
    assert all((case.y[r] == c) or (pred[r] == c) for r in ex["row"])
    assert "<table" in w.examples_box.children[0].value
    with pytest.raises(ValueError, match="aligned"):
        widgets.ConfusionNeighborhood(case.probs, case.y, tax, case.neighbors, catalog_df=case.catalog.iloc[:3])
    with pytest.raises(ValueError, match="need probabilities"):
        widgets.ConfusionNeighborhood(pred, case.y, tax, case.neighbors, catalog_df=case.catalog)
    with pytest.raises(ValueError, match="143"):
        widgets.ConfusionNeighborhood(case.probs, case.y, tax, (np.zeros((3, 2), int), np.zeros((3, 2))))
    with pytest.raises(KeyError, match="not a class"):
        widgets.ConfusionNeighborhood(case.probs, case.y, tax, case.neighbors, cls="Spaceships")


def test_figure_output_bundle():
    import plotly.graph_objects as go

    fig = go.Figure(go.Bar(x=["a"], y=[3]))
    out = widgets.figure_output(fig)
    data = out.outputs[0]["data"]
    assert data["application/vnd.plotly.v1+json"]["data"][0]["y"] == [3]
    # the HTML fallback brings no plotly.js (no CDN): it waits for the page's window.Plotly
    fallback = data["text/html"]
    assert "cdn.plot.ly" not in fallback and "<script src" not in fallback
    assert "window.Plotly.newPlot" in fallback and '"y":[3]' in fallback.replace(" ", "")
