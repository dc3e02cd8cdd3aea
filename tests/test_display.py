"""Figures sized from their content, widget cosmetics, and the offline HTML reports, checked in
Python (tests/test_browser.py checks the same things on screen)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import ipywidgets as W
import nbformat
import numpy as np
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
    assert fig.layout.height == 160 + 30 * viz.LEGEND_ROW_PX
    assert viz.fit_height(go.Figure(), legend=1).layout.height == 450                    # min_height
    assert viz.fit_height(go.Figure(), rows=10, row_px=30, base=230).layout.height == 530
    assert viz.fit_height(go.Figure(), legend=500).layout.height == 1400                 # max_height


def test_every_figure_gets_a_height_that_fits_its_legend(case):
    tax = case.taxonomy
    figs = {
        "label_map": viz.label_map(case.class_emb, tax, method="pca"),
        "label_map level 2": viz.label_map(case.class_emb, tax, method="pca", color_level=2),
        "similarity_graph": viz.similarity_graph(case.neighbors, tax, k=3, layout="circular"),
        "severity_histogram": viz.severity_histogram({"a": (case.probs, case.y), "b": (case.probs, case.y)}, tax),
    }
    for name, fig in figs.items():
        n_legend = sum(t.showlegend is not False for t in fig.data)
        h = fig.layout.height
        assert h is not None and h >= 420, name                       # JupyterLab would give 360 px
        assert h >= 160 + n_legend * viz.LEGEND_ROW_PX or h == 1400, name
    # more legend entries (level 2 has many groups) -> a taller map
    assert figs["label_map level 2"].layout.height > figs["label_map"].layout.height


def test_confusion_heatmap_height_grows_with_its_rows(case):
    small = viz.confusion_heatmap(case.probs, case.y, case.taxonomy, "Tshirts", neighbors=case.neighbors, size=4)
    big = viz.confusion_heatmap(case.probs, case.y, case.taxonomy, "Tshirts", neighbors=case.neighbors, size=14)
    assert len(big.data[0].y) > len(small.data[0].y)
    assert big.layout.height == 230 + 30 * len(big.data[0].y)
    assert small.layout.height >= 420


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
    b._on_export()
    assert "wrote 1 item to" in b.status.value
    b.flag_buttons()[ids[1]].value = True
    b._on_export()
    assert "wrote 2 items to" in b.status.value


def test_neighbourhood_class_box_names_the_class_shown(case):
    tax = case.taxonomy
    w = widgets.ConfusionNeighborhood(case.probs, case.y, tax, case.neighbors, cls="Tshirts")
    assert w.picker.value == "Apparel > Topwear > Tshirts"
    w.select("Jeans")
    assert w.picker.value == "Apparel > Bottomwear > Jeans" and w.message.value == ""
    default = widgets.ConfusionNeighborhood(case.probs, case.y, tax, case.neighbors)  # the most confused class
    assert default.picker.value == tax.classes[default.selected]
    w.picker.value = "Shoe"                        # typing still searches; the box keeps the text
    assert "classes match" in w.message.value and w.picker.value == "Shoe"


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
