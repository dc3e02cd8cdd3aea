"""Figures sized from their content, widget cosmetics, and the offline HTML reports, checked in
Python (tests/test_browser.py checks the same things on screen)."""
from __future__ import annotations

import html
import json
import re
import sys
from pathlib import Path

import ipywidgets as W
import nbformat
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from _inspection_case import make_case
from semcat_kit import viz, widgets

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def case(myntra_styles, fashion_dir):
    return make_case(myntra_styles, fashion_dir)




# --------------------------------------------------------------------------- sizing
def test_fit_height_formula_and_bounds():
    fig = viz.fit_height(go.Figure(), legend=30)
    assert fig.layout.height == viz.MARGIN_PX + viz.LEGEND_PAD_PX + 30 * viz.LEGEND_ROW_PX
    assert viz.fit_height(go.Figure(), legend=1).layout.height == 450                    # min_height
    assert viz.fit_height(go.Figure(), rows=10, row_px=30, base=230).layout.height == 530
    assert viz.fit_height(go.Figure(), legend=500).layout.height == 1400                 # max_height
    # the most entries that fit under max_height, and one more does not
    n = viz.max_legend(1400)
    assert viz.MARGIN_PX + viz.legend_px(n) <= 1400 < viz.MARGIN_PX + viz.legend_px(n + 1)


def test_every_figure_gets_a_height_that_fits_its_legend(case):
    tax = case.taxonomy
    figs = {
        "label_map": viz.label_map(case.class_emb, tax, method="pca"),
        "label_map level 2": viz.label_map(case.class_emb, tax, method="pca", color_level=2),
        "similarity_graph": viz.similarity_graph(case.neighbors, tax, k=3, layout="circular"),
        "severity_histogram": viz.severity_histogram({"a": (case.probs, case.y), "b": (case.probs, case.y)}, tax),
        "class_sizes": viz.class_sizes(pd.Series(np.bincount(case.y, minlength=tax.n_classes), index=tax.classes)),
    }
    for name, fig in figs.items():
        n_legend = sum(t.showlegend is not False for t in fig.data) if fig.layout.showlegend is not False else 0
        h = fig.layout.height
        assert h is not None and h >= 420, name                       # JupyterLab would give 360 px
        # plotly fits a vertical legend into the plot area (height less the margins)
        assert n_legend <= 1 or h - viz.MARGIN_PX >= viz.legend_px(n_legend), name
    # more legend entries (level 2 has many groups) -> a taller map
    assert figs["label_map level 2"].layout.height > figs["label_map"].layout.height


def test_label_map_names_groups_on_the_map_when_a_legend_cannot_hold_them():
    import semcat_kit as sk

    paths = [f"Top {t:02d} > Group {t:02d}-{g:02d} > Leaf {t}-{g}-{i}" for t in range(8) for g in range(10) for i in range(2)]
    tax = sk.Taxonomy.from_paths(paths)
    emb = np.random.default_rng(0).normal(size=(tax.n_classes, 8))
    fig = viz.label_map(emb, tax, method="pca", color_level=2)            # 80 groups > max_legend()
    assert fig.layout.showlegend is False
    (names,) = [t for t in fig.data if t.mode == "text"]
    assert len(names.text) == 80 and "Top 03 &gt; Group 03-04" not in names.text and "Group 03-04" in names.text
    assert "80 groups" in fig.layout.title.text
    few = viz.label_map(emb, tax, method="pca")                            # 8 groups: a whole legend
    assert few.layout.showlegend is not False and not [t for t in few.data if t.mode == "text"]
    # a branch map says it is one, so it never reads like the full map
    branch = viz.label_map(emb, tax, method="pca", branch="Top 02")
    assert branch.layout.title.text != few.layout.title.text and "branch Top 02" in branch.layout.title.text
    assert "its 20 classes coloured by level 2" in branch.layout.title.text


def test_class_sizes_long_tail():
    counts = pd.Series([5, 0, 120, 1, 7], index=["A > a", "A > b", "B > c", "B > d", "C > e"])
    fig = viz.class_sizes(counts)
    (bar,) = fig.data
    assert list(bar.y) == [120, 7, 5, 1] and list(bar.x) == [1, 2, 3, 4]
    assert list(bar.customdata) == ["B &gt; c", "C &gt; e", "A &gt; a", "B &gt; d"]
    assert fig.layout.yaxis.type == "log" and fig.layout.height - viz.MARGIN_PX >= 300     # a usable plot area
    assert "4 of 5 classes have products" in fig.layout.title.text
    with pytest.raises(TypeError, match="Series"):
        viz.class_sizes([1, 2])
    with pytest.raises(ValueError, match="all 0"):
        viz.class_sizes(pd.Series([0, 0], index=["a", "b"]))


def test_confusion_heatmap_height_grows_with_its_rows(case):
    small = viz.confusion_heatmap(case.probs, case.y, case.taxonomy, "Tshirts", neighbors=case.neighbors, size=4)
    big = viz.confusion_heatmap(case.probs, case.y, case.taxonomy, "Tshirts", neighbors=case.neighbors, size=14)
    assert len(big.data[0].y) > len(small.data[0].y) == 4
    assert big.layout.height - viz.MARGIN_PX >= 30 * len(big.data[0].y) and big.layout.height > small.layout.height
    assert small.layout.height - viz.MARGIN_PX >= 300                        # a usable plot area


# --------------------------------------------------------------------------- cosmetics
def test_range_slider_readouts_get_room(case):
    b = widgets.MispredictionBrowser(case.catalog, case.probs, None, case.taxonomy)
    assert "semcat-range" in b.confidence._dom_classes and "semcat-range" in b.severity._dom_classes
    style = b.widget.children[0]
    assert isinstance(style, W.HTML) and ".semcat-range .widget-readout" in style.value
    assert "max-width:none" in style.value


def test_empty_result_message_spans_the_grid(case):
    b = widgets.MispredictionBrowser(case.catalog, case.probs, None, case.taxonomy)
    b.true_filter.value = "no such class anywhere"
    (msg,) = b.grid.children
    # all columns of the first row (grid_area: a grid_column alone is dropped in the browser, see
    # tests/test_browser.py, which measures the message on screen)
    assert "no items match" in msg.value and msg.layout.grid_area == "1 / 1 / 2 / -1"


def test_export_message_is_pluralised(case, tmp_path):
    b = widgets.MispredictionBrowser(case.catalog, case.probs, None, case.taxonomy)
    ids = list(b.flag_buttons())
    b.flag_buttons()[ids[0]].value = True
    b.export_path.value = str(tmp_path / "one.csv")
    b.export_button.click()
    assert "wrote 1 item to" in b.status.value
    b.flag_buttons()[ids[1]].value = True
    b.export_button.click()
    assert "wrote 2 items to" in b.status.value


def test_neighbourhood_header_names_the_class_shown_and_the_box_starts_empty(case):
    tax = case.taxonomy
    w = widgets.ConfusionNeighborhood(case.probs, case.y, tax, case.neighbors, cls="Tshirts")
    assert "Apparel &gt; Topwear &gt; Tshirts</h4>" in w.header.value and w.picker.value == ""
    w.select("Jeans")
    assert "Apparel &gt; Bottomwear &gt; Jeans</h4>" in w.header.value and w.picker.value == ""
    default = widgets.ConfusionNeighborhood(case.probs, case.y, tax, case.neighbors)  # the most confused class
    assert html.escape(tax.classes[default.selected]) + "</h4>" in default.header.value
    w.picker.value = "Shoe"                        # typing searches; the box keeps the text
    assert "classes match" in w.message.value and w.picker.value == "Shoe"
    # the message sits under the box (in the search column), never beside it
    assert w.message in w.search.widget.children and w.search.widget.children.index(w.message) == 1


def test_neighbourhood_tables_have_readable_headers(case):
    w = widgets.ConfusionNeighborhood(case.probs, case.y, case.taxonomy, case.neighbors, cls="Tshirts")
    for table, headers in ((w.pairs_html, ["true class", "predicted as", "items", "share of the true class",
                                           "LCA distance"]),
                           (w.neighbors_html, ["rank", "neighbour", "similarity", "same parent"]),
                           (w.confusions_html, ["class", "selected → it", "it → selected", "LCA distance"])):
        heads = re.findall(r"<th style='([^']*)'>([^<]*)</th>", table.value)
        assert [h for _, h in heads] == [html.escape(x, quote=False) for x in headers]
        assert all("padding:3px 10px" in st for st, _ in heads)           # cells padded apart
        # a header is aligned like its values (numbers right, text left)
        first_row = re.search(r"<tbody><tr[^>]*>(.*?)</tr>", table.value).group(1)
        cells = re.findall(r"<td style='[^']*text-align:(\w+)'>", first_row)
        assert [re.search(r"text-align:(\w+)", st).group(1) for st, _ in heads] == cells


def test_cards_break_long_ids_and_paths(case):
    row = pd.Series({"item_id": "eac7efa5dbd3d667f26eb3d3ab504464", "title": "t", "image_path": None,
                     "true_label": "A > B", "is_mistake": True, "lca_distance": 2, "top1_label": "A > C",
                     "top1_prob": 0.9, "given_label": "A > B", "label_refiled": False, "is_label_issue": False})
    card = widgets.product_card(row, top=1)
    text = card.children[0].children[1]
    assert "overflow-wrap:anywhere" in text.value and text.layout.min_width == "0"
    assert "semcat-card" in card._dom_classes and card.layout.min_width == "0"
    b_style = widgets.STYLE
    assert ".semcat-card .semcat-card-text .widget-html-content{min-width:0;overflow-wrap:anywhere" in b_style
    grid = widgets.MispredictionBrowser(case.catalog, case.probs, None, case.taxonomy, columns=4).grid
    assert grid.layout.grid_template_columns == "repeat(4, minmax(0, 1fr))"   # columns may shrink below a word


# --------------------------------------------------------------------------- reports
def _widget_notebook(case) -> nbformat.NotebookNode:
    """An executed notebook made in-process: a figure output and a widget state holding a figure."""
    fig = viz.confusion_heatmap(case.probs, case.y, case.taxonomy, "Tshirts", neighbors=case.neighbors, size=5)
    out = widgets.figure_output(fig)
    spec = json.loads(fig.to_json())
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("fig")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"application/vnd.plotly.v1+json": spec})]
    wcell = nbformat.v4.new_code_cell("out")
    wcell.outputs = [nbformat.v4.new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {
        "model_id": out.model_id, "version_major": 2, "version_minor": 0}})]
    nb.cells = [cell, wcell]
    state = out.get_state()
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {
        "state": {out.model_id: {"model_name": "OutputModel", "model_module": "@jupyter-widgets/output",
                                 "model_module_version": "1.0.0", "state": json.loads(json.dumps(state))}},
        "version_major": 2, "version_minor": 0}}
    return nb


def test_report_html_has_local_scripts_only(case, run_notebooks, tmp_path):
    nb = _widget_notebook(case)
    path = tmp_path / "r.ipynb"
    nbformat.write(nb, path)
    res = run_notebooks.write_static(tmp_path)
    html = run_notebooks.to_html(path, res).read_text()
    assert (tmp_path / "_static" / "plotly.min.js").stat().st_size > 1_000_000
    assert '<script src="_static/plotly.min.js">' in html
    assert "application/vnd.jupyter.widget-state+json" in html
    if res["semcat_widgets_js"]:                     # npm reachable: the widget manager is local too
        assert (tmp_path / res["semcat_widgets_js"]).stat().st_size > 500_000
        assert f'<script src="{res["semcat_widgets_js"]}">' in html
        assert "unpkg.com" not in html and "require.min.js" not in html
    # no MathJax, plotly or require.js from a CDN (mermaid's loader only runs for mermaid diagrams)
    assert '<script src="http' not in html and "cdn.plot.ly" not in html and "mathjax" not in html.lower()
    assert html.count("Plotly.newPlot") >= 2                             # the cell figure and the widget's


# --------------------------------------------------------------------------- merges, progress bars, saved notebooks
def test_validate_reports_merges_as_one_collapsed_line(tmp_path):
    import warnings

    import semcat_kit as sk

    ws = sk.Workspace(tmp_path / "work", catalog="tutorial", image_encoder=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", sk.taxonomy.TaxonomyMergeWarning)   # not one warning on the way
        v = ws.validate()
    merges = ws.taxonomy().merges()
    assert len(merges) > 1 and v.merges.equals(merges) and ws.merges().equals(merges)
    assert v["classes"] == ws.taxonomy().n_classes and v.summary["products"] == 3000
    page = v._repr_html_()
    assert page.count("<details") == 1 and "<details class='semcat-merges'" in page and " open" not in page
    summary = re.search(r"<summary[^>]*>(.*?)</summary>", page).group(1)
    assert f"{len(merges)} category paths merged" in summary and "<br" not in summary   # one line
    listed = page[page.index("</summary>"):]
    assert listed.count("<tr style") == len(merges)                           # the list, one row a merge
    assert html.escape(merges["path"].iloc[0]).replace(" &gt; ", " &gt;<wbr> ") in listed
    assert f"{len(merges)} category paths merged" in repr(v) and "ws.merges()" in repr(v)


def _run_cells(tmp_path, cells: list[str]) -> dict:
    """Execute ``cells`` in a fresh kernel (papermill, as scripts/run_notebooks.py does); the executed notebook."""
    import papermill as pm

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "in.ipynb")
    pm.execute_notebook(str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3",
                        progress_bar=False, log_output=False, cwd=str(ROOT))
    return json.loads((tmp_path / "out.ipynb").read_text())


def test_a_bar_that_does_not_stay_leaves_no_widget_output(tmp_path):
    """The output of a closed widget is what a saved notebook shows as "model not found" when reopened:
    a leave=False bar replaces its own output with an empty one when it ends (checked in JupyterLab,
    saved and reopened, by tests/test_browser.py)."""
    # internal: _core.progress is the one progress-bar factory every layer uses (no public name)
    out = _run_cells(tmp_path, [
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nfrom semcat_kit._core.progress import progress",
        "for _ in progress(range(5), desc='stays'):\n    pass",
        "import time\nfor _ in progress(range(4), desc='goes', leave=False, mininterval=0):\n    time.sleep(0.3)",
        "b = progress(total=5, desc='stopped', leave=False)\nb.update(2)\nb.close()",
        "import tqdm.auto\nprint(type(progress(range(2), leave=False, disable=True)) is tqdm.auto.tqdm)",
        "for _ in progress(range(5), desc='quick', leave=False):\n    pass",
    ])
    view = "application/vnd.jupyter.widget-view+json"
    outs = [c["outputs"] for c in out["cells"]]
    assert [view in o["data"] for o in outs[1]] == [True]                   # a bar that stays is kept
    # the one that went was shown (it ran past the delay), then its output emptied before its widget closed
    assert [list(o.get("data", {})) for o in outs[2]] == [["text/plain"]], outs[2]
    assert "".join(outs[2][0]["data"]["text/plain"]) == ""
    assert view in outs[3][0]["data"]                                        # stopped early: stays, red
    assert "".join(outs[4][0]["text"]).strip() == "True"                     # disabled: plain tqdm.auto
    assert outs[5] == []           # quicker than the delay: never displayed, no widget to race its view


def test_executed_notebooks_are_trusted_and_hold_no_dangling_widget(tmp_path, run_notebooks):
    from nbformat.sign import NotebookNotary

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    view = "application/vnd.jupyter.widget-view+json"
    cell.outputs = [nbformat.v4.new_output("display_data", data={view: {"model_id": "kept", "version_major": 2,
                                                                        "version_minor": 0}, "text/plain": "a"}),
                    nbformat.v4.new_output("display_data", data={view: {"model_id": "gone", "version_major": 2,
                                                                        "version_minor": 0}, "text/plain": "b"}),
                    nbformat.v4.new_output("stream", name="stdout", text="hello\n")]
    nb.cells = [cell]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {
        "state": {"kept": {"model_name": "HTMLModel", "model_module": "@jupyter-widgets/controls",
                           "model_module_version": "2.0.0", "state": {}}}, "version_major": 2, "version_minor": 0}}
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    assert not NotebookNotary().check_signature(nbformat.read(path, as_version=4))
    assert run_notebooks.finish_notebook(path) == 1
    done = nbformat.read(path, as_version=4)
    assert [o.get("data", {}).get(view, {}).get("model_id") for o in done.cells[0].outputs] == ["kept", None]
    assert NotebookNotary().check_signature(done)               # JupyterLab draws its widgets, not their text
