"""ipywidgets explorers: browse mispredictions and a class's confusion neighbourhood.

Both are thin: their tables come from :mod:`semcat_kit.see.mistakes`,
:mod:`semcat_kit.see.confusions` and :mod:`semcat_kit.see.label_graph`, their figures from
:mod:`semcat_kit.see.viz`, their class boxes search with :func:`semcat_kit.see.classes.search_classes`. Display one in a notebook by making it the last expression of a cell
(or ``display(browser.widget)``). Their state (``.filtered``, ``.page``, ``.flagged``,
``.selected``, ...) is plain Python, so the logic runs and is tested without a browser.
"""
from __future__ import annotations

import functools
import html
import io
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .._core.optional import require

W = require("ipywidgets", "notebooks", "semcat_kit.see.widgets (ipywidgets explorers)")
go = require("plotly.graph_objects", "viz", "semcat_kit.see.widgets (plotly figures)")

from . import viz  # noqa: E402
from ._inputs import check_taxonomy, labels_of, neighbors_of, pred_of  # noqa: E402
from .classes import class_index, elide_paths, search_classes  # noqa: E402
from .confusions import confused_pairs, top_confusions  # noqa: E402
from .label_graph import neighbor_table  # noqa: E402
from .mistakes import mispredictions  # noqa: E402
from .tables import html_table  # noqa: E402
from .._core.io import atomic_path  # noqa: E402
from ..datasets.images import ImageError, read_image_bytes  # noqa: E402
from ..datasets.taxonomy import Taxonomy  # noqa: E402

__all__ = ["MispredictionBrowser", "ConfusionNeighborhood", "ClassSearch", "product_card", "figure_output"]

BADGE_STYLE = "background:#fde2e1;color:#a4000f;border-radius:4px;padding:1px 4px;font-size:11px"
# page-wide CSS shipped inside each explorer (an HTML widget; <style> in widget HTML applies in JupyterLab
# and in the HTML reports):
# - a range slider's readout ("0.00 – 1.00") is wider than the 64 px ipywidgets allows and spilled over
#   the next control;
# - card text: a 32-character id or a long path has no break point, and a flex/grid item will not
#   shrink below its longest word, so it was cut at the card's right edge: break anywhere, and let the
#   grid columns and the card's text shrink (min-width 0);
# - class boxes: the message under a box wraps instead of squeezing the box beside it.
STYLE = ("<style>.semcat-range .widget-readout{max-width:none;min-width:7.5em;overflow:visible}"
         ".semcat-card .semcat-card-text{min-width:0;flex:1 1 auto}"
         ".semcat-card .semcat-card-text .widget-html-content{min-width:0;overflow-wrap:anywhere;line-height:1.25}"
         ".semcat-card{min-width:0}"
         ".semcat-search .widget-html-content{line-height:1.3;white-space:normal}"
         ".semcat-search select{font-size:12px}"
         ".semcat-wrap .widget-html-content{min-width:0;overflow-wrap:anywhere;line-height:1.3}"
         "</style>")


# --------------------------------------------------------------------------- helpers
@functools.lru_cache(maxsize=None)
def placeholder_image(width: int = 60, height: int = 80) -> bytes:
    """PNG bytes of a grey 'no image' tile (shown when a product's image file is missing)."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (width, height), (225, 225, 225))
    d = ImageDraw.Draw(im)
    d.line([(0, 0), (width - 1, height - 1)], fill=(170, 170, 170))
    d.line([(0, height - 1), (width - 1, 0)], fill=(170, 170, 170))
    d.text((6, height // 2 - 6), "no image", fill=(90, 90, 90))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _image_widget(path, width: int) -> W.Image:
    if isinstance(path, str) and path:
        try:
            data = read_image_bytes(path)   # a regular file of bounded size (never a FIFO or a device)
            fmt = Path(path).suffix.lower().lstrip(".") or "jpeg"
            return W.Image(value=data, format="jpeg" if fmt == "jpg" else fmt, width=width)
        except (OSError, ImageError):
            pass
    img = W.Image(value=placeholder_image(), format="png", width=width)
    img.add_class("semcat-missing-image")
    return img


def _card_html(row: pd.Series, top: int) -> str:
    e = html.escape
    status = ("<span style='color:#2ca02c'>✓ correct</span>" if not row["is_mistake"]
              else f"<span style='color:#d62728'>✗ mistake, LCA distance {int(row['lca_distance'])}</span>")
    preds = "".join(
        f"<li>{e(str(row[f'top{j}_label']))}: {row[f'top{j}_prob']:.2f}</li>"
        for j in range(1, top + 1) if f"top{j}_label" in row.index)
    badge = ""
    refiled = bool(row.get("label_refiled", False))
    if row.get("is_label_issue", False):
        why = (f"catalog path {e(str(row['given_label']))} filed by the taxonomy under the majority path"
               if refiled and row["suggested_label"] == row["true_label"]
               else f"p(given)={row['label_issue_score']:.3f}")
        badge = (f"<div><span class='label-issue' style='{BADGE_STYLE}'>⚑ possible label issue "
                 f"({why}); maybe {e(str(row['suggested_label']))}</span></div>")
    given = f" <span class='given' style='color:#888'>(catalog: {e(str(row['given_label']))})</span>" if refiled else ""
    hedged = ""
    if "hedged_label" in row.index:     # the hedged prediction beside the top-1 (mispredictions(hedge_threshold=))
        ok = "#2ca02c" if row["hedged_correct"] else "#d62728"
        what = e(str(row["hedged_label"])) if row["hedged_label"] else "<i>root: needs review</i>"
        hedged = (f"<br><span class='hedged' style='color:{ok}'>hedged: {what} ({row['hedged_prob']:.2f}"
                  f"{', leaf' if row['hedged_is_leaf'] else ''})</span>")
    title = e(str(row["title"])) if row["title"] else "<i>(no title)</i>"
    return (f"<div style='font-size:12px;line-height:1.25;overflow-wrap:anywhere'>"
            f"<b class='title'>{title}</b> <span style='color:#888'>#{e(str(row['item_id']))}</span><br>"
            f"<span class='true'>true: {e(str(row['true_label']))}</span>{given}<br>{status}{hedged}"
            f"<ol class='preds' style='margin:2px 0 2px 16px;padding:0'>{preds}</ol>{badge}</div>")


def product_card(row: pd.Series, top: int = 3, thumb_width: int = 60, flag: W.ToggleButton | None = None) -> W.VBox:
    """One product card: thumbnail (placeholder when missing), title, true path, top predictions,
    LCA distance and a label-issue badge; ``row`` is a row of :func:`semcat_kit.see.mistakes.mispredictions`.

    Text breaks anywhere rather than run past the card's edge (a 32-character id, a long path)."""
    img = _image_widget(row.get("image_path"), thumb_width)
    img.layout.flex = "0 0 auto"
    info = W.HTML(_card_html(row, top), layout=W.Layout(min_width="0", flex="1 1 auto"))
    info.add_class("semcat-card-text")
    kids = [W.HBox([img, info], layout=W.Layout(align_items="flex-start", overflow="hidden", min_width="0"))]
    if flag is not None:
        kids.append(flag)
    card = W.VBox(kids, layout=W.Layout(border="1px solid #ddd", padding="4px", margin="2px", min_width="0",
                                        overflow="hidden"))
    card.add_class("semcat-card")
    return card


def _grid_columns(n: int) -> str:
    """``n`` equal columns that may shrink below their content's longest word (``1fr`` alone may not)."""
    return f"repeat({int(n)}, minmax(0, 1fr))"


def figure_output(fig: go.Figure, out: W.Output | None = None) -> W.Output:
    """Show a plotly figure in an ``ipywidgets.Output`` (no ``FigureWidget``: plotly >= 6 needs
    ``anywidget`` for that). The output holds plotly's JSON mimetype, rendered by JupyterLab /
    VS Code, plus an HTML fallback for pages without plotly's renderer (the HTML reports): it
    carries no plotly.js of its own but draws with the page's ``window.Plotly`` once that is
    loaded (``scripts/run_notebooks.py`` puts a local copy in every report's head)."""
    out = out if out is not None else W.Output()
    import plotly.io as pio

    bundle = dict(pio.renderers["plotly_mimetype"].to_mimebundle(fig.to_dict()))
    bundle["text/html"] = _fallback_html(fig)
    out.outputs = ({"output_type": "display_data", "data": bundle, "metadata": {}},)
    return out


def _fallback_html(fig: go.Figure) -> str:
    """A div and a script that plots ``fig`` as soon as ``window.Plotly`` exists (polls 20 s, then
    says why the figure is missing). ``include_plotlyjs="cdn"`` here plotted before the script
    tag had loaded ("Plotly is not defined") and needed a network."""
    import uuid

    import plotly.io as pio

    div = f"semcat-fig-{uuid.uuid4().hex}"
    spec = pio.to_json(fig, validate=False).replace("</", "<\\/")
    return (f"<div id='{div}' class='semcat-figure' style='width:100%;height:{fig.layout.height or 450}px'></div>"
            "<script type='text/javascript'>(function(){var id='" + div + "',spec=" + spec + ",t=0;"
            "function draw(){var el=document.getElementById(id);if(!el){return;}"
            "if(window.Plotly){window.Plotly.newPlot(el,spec.data,spec.layout,{responsive:true});return;}"
            "if((t+=100)>20000){el.textContent='plotly.js is not loaded on this page: open the notebook in "
            "JupyterLab, or build the report with scripts/run_notebooks.py';return;}setTimeout(draw,100);}"
            "draw();})();</script>")


class ClassSearch:
    """Find a class by typing: a ``Text`` box, a line saying how many classes match, and a list of
    at most ``limit`` of them, best first (:func:`semcat_kit.see.classes.search_classes`).

    Scales to any number of classes: the page holds at most ``limit`` paths at a time, not the
    whole class list (a ``Combobox`` with 5,000 options is a 5,000-entry datalist). Long paths are
    listed with their middle levels elided so each fits the list's width
    (:func:`~semcat_kit.see.classes.elide_paths`); the option's value is the full path.

    Parameters
    ----------
    classes : Taxonomy or list of str
        The classes to search.
    on_choose : callable, optional
        Called with the full path of a match the user chooses. Without it, choosing a match writes
        its path into the box (a filter box: the box *is* the filter).
    show_count : bool
        Show the line "N classes match ..." under the box.

    ``text`` is the box (read or set its ``value``), ``count`` the line, ``matches`` the list,
    ``hits`` every match of the current text, ``widget`` all three.
    """

    def __init__(self, classes, description: str = "class", placeholder: str = "type to search…",
                 limit: int = 20, width: str = "420px", on_choose=None, show_count: bool = True,
                 max_chars: int | None = None):
        self.classes = classes if isinstance(classes, Taxonomy) else list(classes)
        self._paths = set(self.classes.classes if isinstance(classes, Taxonomy) else self.classes)
        self.limit = int(limit)
        self.on_choose, self.show_count = on_choose, bool(show_count)
        px = re.fullmatch(r"\s*(\d+)px\s*", str(width))
        # ~7 px per character of the list's 12 px font, less the select's padding and scrollbar
        self.max_chars = int(max_chars) if max_chars else (max(30, (int(px.group(1)) - 30) // 7) if px else 90)
        box = W.Layout(width=width, max_width="100%")
        self.text = W.Text(placeholder=placeholder, description=description, layout=box)
        self.count = W.HTML(layout=W.Layout(width=width, max_width="100%", min_width="0"))
        self.matches = W.Select(options=[], rows=8, layout=W.Layout(width=width, max_width="100%", display="none"))
        self.hits: list[str] = []
        self.text.observe(self._on_text, names="value")
        self.matches.observe(self._on_choose, names="value")
        self.widget = W.VBox([self.text, self.count, self.matches], layout=W.Layout(min_width="0"))
        self.widget.add_class("semcat-search")

    def search(self, text: str) -> list[str]:
        """Every class matching ``text``, best first (the list shows the first ``limit``)."""
        return search_classes(text, self.classes, limit=None)

    def message(self, text: str, n: int) -> str:
        """The line under the box for ``n`` matches of ``text``."""
        q = html.escape(repr(" ".join(str(text).split())), quote=False)
        if n == 0:
            return f"<span style='color:#a4000f'>no class matches {q}</span>"
        if n == 1:
            return f"<span style='color:#666'>1 class matches {q}</span>"
        if n <= self.limit:
            return f"<span style='color:#666'>{n} classes match {q}: pick one below</span>"
        return (f"<span style='color:#666'>{n} classes match {q}: the first {self.limit} are listed, "
                "type more to narrow</span>")

    def _on_text(self, change) -> None:
        text = change["new"]
        self.hits = self.search(text)
        chosen = text in self._paths              # a full path: nothing left to pick
        shown = [] if chosen else self.hits[: self.limit]
        self.matches.unobserve(self._on_choose, names="value")
        try:
            self.matches.options = list(zip(elide_paths(shown, self.max_chars), shown))
            self.matches.value = None
            self.matches.rows = max(2, min(8, len(shown)))
        finally:
            self.matches.observe(self._on_choose, names="value")
        self.matches.layout.display = None if shown else "none"
        self.count.value = self.message(text, len(self.hits)) if self.show_count and text.strip() and not chosen else ""

    def mark(self, path: str | None) -> None:
        """Highlight ``path`` in the list when it is listed (nothing else happens)."""
        values = [v for _, v in self.matches.options]
        self.matches.unobserve(self._on_choose, names="value")
        try:
            self.matches.value = path if path in values else None
        finally:
            self.matches.observe(self._on_choose, names="value")

    def _on_choose(self, change) -> None:
        if not change["new"]:
            return
        if self.on_choose is not None:
            self.on_choose(change["new"])
        else:
            self.text.value = change["new"]


# --------------------------------------------------------------------------- browser
SORTS = {
    "confidence: most confident first": ("confidence", False),
    "confidence: least confident first": ("confidence", True),
    "severity: worst first": ("lca_distance", False),
    "label-issue score: most suspicious first": ("label_issue_score", True),
}
MODES = ("only mistakes", "all", "label issues")


class MispredictionBrowser:
    """Page through products with their predictions; filter, sort, flag and export.

    Parameters
    ----------
    catalog_df : pandas.DataFrame
        Products aligned with ``probs`` (``item_id``, ``title``, ``image_path``, ``label``).
    probs : array (N, C)
        Predicted probabilities.
    y_true : array (N,) of int or label paths, optional
        Given labels (default ``catalog_df["label"]``).
    taxonomy : Taxonomy
    page_size : int
        Cards per page.
    columns : int
        Cards per grid row.
    top : int
        Predictions listed per card.
    thumb_width : int
        Thumbnail width in pixels.
    export_path : str
        Initial CSV path of the export box.
    hedge_threshold : HedgeCalibration or float, optional
        Show each product's hedged prediction beside the top-1: a calibration (``head.hedging``)
        hedges at what it calibrated for ``precision``; a number is a threshold on the probabilities
        themselves (:func:`semcat_kit.see.mistakes.mispredictions`).
    precision : float
        Target precision read from a calibration (default 0.98).
    issue_probs : array (N, C), optional
        Cross-validated probabilities of the same items
        (``sk.see.label_issues(X=..., y=..., cv=5).attrs["probs"]``): the "label issues" mode
        and the label-issue score use them instead of ``probs``.

    Attributes
    ----------
    table : DataFrame
        :func:`semcat_kit.see.mistakes.mispredictions` for all items.
    filtered : DataFrame
        The rows passing the filters, in display order.
    page : int
        Current page (0-based); ``n_pages`` pages.
    flagged : list[str]
        Item ids flagged for export, in flagging order.
    cards : list[ipywidgets.VBox]
        Cards on the current page; ``widget`` is the whole explorer.
    """

    def __init__(self, catalog_df: pd.DataFrame, probs, y_true=None, taxonomy: Taxonomy | None = None,
                 page_size: int = 12, columns: int = 4, top: int = 3, thumb_width: int = 60,
                 export_path: str = "flagged_items.csv", hedge_threshold=None, issue_probs=None,
                 precision: float = 0.98):
        if int(page_size) < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        self.taxonomy = check_taxonomy(taxonomy)
        self.table = mispredictions(catalog_df, probs, y_true, self.taxonomy, top=top, hedge_threshold=hedge_threshold,
                                    issue_probs=issue_probs, precision=precision)
        from .._core.contracts import check_unique_ids

        check_unique_ids(self.table["item_id"].to_numpy(), where="catalog_df",
                         hint="flags and exports are keyed by item_id, so make them unique")
        self.page_size, self.top, self.thumb_width = int(page_size), int(top), int(thumb_width)
        self.flagged: list[str] = []
        self.page = 0
        self.cards: list[W.VBox] = []
        self._flag_buttons: dict[str, W.ToggleButton] = {}
        classes_true = sorted(self.table["true_label"].unique())
        classes_pred = sorted(self.table["pred_label"].unique())
        D = int(self.taxonomy.max_depth)
        # type a substring (filters at once) or pick a full path from the short list of matches
        self.true_search = ClassSearch(classes_true, "true", "true class contains…", width="360px", show_count=False)
        self.pred_search = ClassSearch(classes_pred, "predicted", "predicted class contains…", width="360px",
                                       show_count=False)
        self.true_filter, self.pred_filter = self.true_search.text, self.pred_search.text
        self.severity = W.IntRangeSlider(value=(0, D), min=0, max=D, step=1, description="LCA dist.")
        self.confidence = W.FloatRangeSlider(value=(0.0, 1.0), min=0.0, max=1.0, step=0.01,
                                             description="confidence", readout_format=".2f")
        for s_ in (self.severity, self.confidence):
            s_.add_class("semcat-range")  # readout widened by STYLE (ipywidgets caps it at 64 px)
        self.mode = W.ToggleButtons(options=list(MODES), value="only mistakes")
        self.sort = W.Dropdown(options=list(SORTS), value="confidence: most confident first", description="sort")
        self.prev_button = W.Button(description="◀ prev", layout=W.Layout(width="80px"))
        self.next_button = W.Button(description="next ▶", layout=W.Layout(width="80px"))
        self.page_label = W.HTML()
        self.grid = W.GridBox(layout=W.Layout(grid_template_columns=_grid_columns(columns)))
        self.export_path = W.Text(value=export_path, description="CSV path")
        self.export_button = W.Button(description="export flagged", icon="download")
        self.status = W.HTML()
        for w in (self.true_filter, self.pred_filter, self.severity, self.confidence, self.mode, self.sort):
            w.observe(self._on_filter, names="value")
        self.prev_button.on_click(lambda _: self.go(self.page - 1))
        self.next_button.on_click(lambda _: self.go(self.page + 1))
        self.export_button.on_click(self._on_export)
        self.widget = W.VBox([
            W.HTML(STYLE),
            W.HBox([self.true_search.widget, self.pred_search.widget]),
            W.HBox([self.severity, self.confidence]),
            W.HBox([self.mode, self.sort]),
            W.HBox([self.prev_button, self.page_label, self.next_button]),
            self.grid,
            W.HBox([self.export_path, self.export_button]),
            self.status,
        ])
        self.refresh()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # ------------------------------------------------------------------ filtering
    def _apply_filters(self) -> pd.DataFrame:
        t = self.table
        keep = np.ones(len(t), dtype=bool)
        if self.mode.value == "only mistakes":
            keep &= t["is_mistake"].to_numpy()
        elif self.mode.value == "label issues":
            keep &= t["is_label_issue"].to_numpy()
        for box, col in ((self.true_filter, "true_label"), (self.pred_filter, "pred_label")):
            txt = box.value.strip().lower()
            if txt:
                keep &= t[col].str.lower().str.contains(txt, regex=False).to_numpy()
        lo, hi = self.severity.value
        keep &= t["lca_distance"].between(lo, hi).to_numpy()
        clo, chi = self.confidence.value
        keep &= t["confidence"].between(clo - 1e-9, chi + 1e-9).to_numpy()
        col, asc = SORTS[self.sort.value]
        return t[keep].sort_values([col, "row"], ascending=[asc, True], kind="stable").reset_index(drop=True)

    def _on_filter(self, change=None) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Re-apply the filters and sort, and show the first page."""
        self.filtered = self._apply_filters()
        self.go(0)

    @property
    def n_pages(self) -> int:
        return max(1, -(-len(self.filtered) // self.page_size))

    def go(self, page: int) -> None:
        """Show page ``page`` (clipped to the valid range)."""
        self.page = int(min(max(page, 0), self.n_pages - 1))
        rows = self.filtered.iloc[self.page * self.page_size:(self.page + 1) * self.page_size]
        self._flag_buttons = {}
        cards = []
        for _, row in rows.iterrows():
            iid = str(row["item_id"])
            tb = W.ToggleButton(value=iid in self.flagged, description="flag", icon="flag",
                                tooltip=f"flag item {iid} for export", layout=W.Layout(width="90px"))
            tb.observe(functools.partial(self._on_flag, iid), names="value")
            self._flag_buttons[iid] = tb
            cards.append(product_card(row, self.top, self.thumb_width, flag=tb))
        self.cards = cards
        # the message spans the grid's row: grid_area, not grid_column (the widget manager also
        # applies the null grid_area, and removing that shorthand drops any grid-column with it)
        self.grid.children = tuple(cards) if cards else (W.HTML(
            "<i class='semcat-empty'>no items match these filters: widen the LCA distance or confidence "
            "range, clear the class boxes, or switch to 'all'</i>", layout=W.Layout(grid_area="1 / 1 / 2 / -1")),)
        self._update_label()
        self.prev_button.disabled = self.page == 0
        self.next_button.disabled = self.page >= self.n_pages - 1

    # ------------------------------------------------------------------ flags & export
    def _on_flag(self, item_id: str, change) -> None:
        if change["new"] and item_id not in self.flagged:
            self.flagged.append(item_id)
        elif not change["new"] and item_id in self.flagged:
            self.flagged.remove(item_id)
        self._update_label()

    def _update_label(self) -> None:
        n = len(self.filtered)
        self.page_label.value = (f"page {self.page + 1} / {self.n_pages} · {n} item{'' if n == 1 else 's'}"
                                 f" · {len(self.flagged)} flagged")

    def flag_buttons(self) -> dict[str, W.ToggleButton]:
        """The flag toggle of each item id on the current page."""
        return dict(self._flag_buttons)

    def flagged_table(self) -> pd.DataFrame:
        """Rows of :attr:`table` for the flagged items, in flagging order."""
        pos = {iid: k for k, iid in enumerate(self.flagged)}
        sub = self.table[self.table["item_id"].isin(pos)]
        return sub.iloc[np.argsort(sub["item_id"].map(pos).to_numpy(), kind="stable")].reset_index(drop=True)

    def export(self, path: str | Path) -> Path:
        """Write the flagged items to CSV atomically; raises ValueError when nothing is flagged."""
        if not self.flagged:
            raise ValueError("no items flagged: click 'flag' on the cards to export first")
        if not str(path).strip():
            raise ValueError("the CSV path is empty: type a file name such as flagged_items.csv")
        path = Path(str(path).strip()).expanduser()
        if path.is_dir():
            raise ValueError(f"{path} is a folder: give a file name such as {path / 'flagged_items.csv'}")
        cols = ["item_id", "title", "image_path", "true_label", "pred_label", "confidence", "lca_distance"]
        cols += [c for c in self.table.columns if c.startswith("top")]
        cols += ["given_label", "label_refiled", "label_issue_score", "is_label_issue", "suggested_label"]
        with atomic_path(path) as tmp:
            self.flagged_table()[cols].to_csv(tmp, index=False)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # the temporary file is private (0600); the export is not
        return path

    def _on_export(self, _=None) -> None:
        try:
            p = self.export(self.export_path.value)
        except (ValueError, OSError) as e:
            self.status.value = f"<span style='color:#d62728'>export failed: {html.escape(str(e))}</span>"
            return
        n = len(self.flagged)
        self.status.value = (f"<span style='color:#2ca02c'>wrote {n} item{'' if n == 1 else 's'} to "
                             f"{html.escape(str(p))}</span>")


# --------------------------------------------------------------------------- confusion neighbourhood
PAIR_HEADERS = {"true_label": "true class", "pred_label": "predicted as", "count": "items",
                "share_of_true": "share of the true class", "lca_distance": "LCA distance"}
NEIGHBOUR_HEADERS = {"rank": "rank", "neighbour": "neighbour", "sim": "similarity", "same_parent": "same parent"}
CONFUSION_HEADERS = {"other_label": "class", "true_as_other": "selected → it", "other_as_true": "it → selected",
                     "lca_distance": "LCA distance"}


class ConfusionNeighborhood:
    """Pick a class and see its semantic neighbours, its confusions, a heatmap and examples.

    Parameters
    ----------
    probs : array (N, C) or predicted indices (N,)
    y_true : array (N,) of int or label paths
    taxonomy : Taxonomy
    neighbors : Neighbors or (indices, sims)
        Label neighbours (``sk.similarity.label_neighbors``).
    catalog_df : DataFrame, optional
        Products aligned with ``probs``; when given, example mispredictions are shown as cards.
    k : int
        Neighbours listed.
    size : int
        Classes per heatmap axis.
    n_examples : int
        Example mispredictions shown.
    cls : int or str, optional
        Initial class (default: the class with the most confusions).

    The picker is a search box (:class:`ClassSearch`): it starts empty, so clicking into it and
    typing searches; a full path or a class's own name selects at once, otherwise the matches are
    listed (at most 20, with how many match in all) and choosing one selects it. The class shown is
    named in the header above the tables, never in the box. The top confused pairs over all classes
    are listed above it (``pairs_table``), so the widget stays usable with thousands of classes.

    Attributes
    ----------
    selected : int
        Selected class index; change it with :meth:`select`, the ``picker`` box or the match list.
    neighbors_table, confusions_table, examples : DataFrame
        What is displayed for the selected class.
    heatmap_figure : plotly Figure
    """

    def __init__(self, probs, y_true, taxonomy: Taxonomy, neighbors, catalog_df: pd.DataFrame | None = None,
                 k: int = 10, size: int = 10, n_examples: int = 6, cls=None):
        self.taxonomy = tax = check_taxonomy(taxonomy)
        self.pred = pred_of(probs, tax, name="probs")
        self.y = labels_of(y_true, tax, len(self.pred))
        self.probs = np.asarray(probs) if np.ndim(probs) == 2 else None
        neighbors_of(neighbors, tax.n_classes)  # validate early
        self.neighbors = neighbors
        self.k, self.size, self.n_examples = int(k), int(size), int(n_examples)
        if catalog_df is not None:
            if len(catalog_df) != len(self.pred):
                raise ValueError(f"catalog_df has {len(catalog_df)} rows but there are {len(self.pred)} "
                                 "predictions; they must be aligned")
            if self.probs is None:
                raise ValueError("example cards need probabilities: pass probs (N, C), not predicted indices")
            self.table = mispredictions(catalog_df, self.probs, self.y, tax)
        else:
            self.table = None
        self.search = ClassSearch(tax, "class", "type to search a class…", width="760px", on_choose=self.select)
        self.picker = self.search.text
        self.message = self.search.count
        self.n_pairs = 10
        self.pairs_table = confused_pairs(self.pred, self.y, tax, n=self.n_pairs)
        self.pairs_html = W.HTML(self._html_table(
            self.pairs_table[["true_label", "pred_label", "count", "share_of_true", "lca_distance"]],
            "pairs", PAIR_HEADERS))
        self.header = W.HTML()
        self.neighbors_html = W.HTML()
        self.confusions_html = W.HTML()
        for w in (self.pairs_html, self.header, self.neighbors_html, self.confusions_html):
            w.add_class("semcat-wrap")
            w.layout.min_width = "0"
        self.heatmap = W.Output()
        self.examples_box = W.VBox()
        self.picker.observe(self._on_pick, names="value")
        half = W.Layout(flex="1 1 0", min_width="0")
        self.widget = W.VBox([
            W.HTML(STYLE),
            W.HTML(f"<b>top {self.n_pairs} confused pairs</b> (of all {tax.n_classes:,} classes)"), self.pairs_html,
            self.search.widget, self.header,
            W.HBox([W.VBox([W.HTML("<b>semantic neighbours</b>"), self.neighbors_html], layout=half),
                    W.VBox([W.HTML("<b>most frequent confusions</b> (items, either way)"), self.confusions_html],
                           layout=half)], layout=W.Layout(width="100%")),
            self.heatmap, W.HTML("<b>example mispredictions</b>"), self.examples_box,
        ])
        if cls is None:
            errs = np.bincount(self.y[self.pred != self.y], minlength=tax.n_classes)
            cls = int(errs.argmax()) if errs.any() else int(np.bincount(self.y, minlength=tax.n_classes).argmax())
        self.select(cls)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def _on_pick(self, change) -> None:
        """Typing selects a full path, a class's own name when one class has it, or the only match."""
        t = " ".join(str(change["new"]).lower().split())
        hits = self.search.hits
        if not t or not hits:
            return
        tax = self.taxonomy
        exact = [h for h in hits if " ".join(h.lower().split()) == t]
        named = [h for h in hits if tax.names[tax.index_of(h)].lower() == t]
        pick = exact[0] if exact else named[0] if len(named) == 1 else hits[0] if len(hits) == 1 else None
        if pick is not None:
            self.select(pick)

    def select(self, cls) -> None:
        """Show class ``cls`` (index, full path, or a unique name); the search box is left as typed."""
        tax = self.taxonomy
        c = class_index(cls, tax)
        self.selected = c
        self.search.mark(tax.classes[c])
        n_items = int((self.y == c).sum())
        n_right = int(((self.y == c) & (self.pred == c)).sum())
        self.header.value = (f"<h4 style='margin:6px 0 2px 0;overflow-wrap:anywhere'>{html.escape(tax.classes[c])}</h4>"
                             f"{n_items} items, {n_right} predicted right; parent: "
                             f"{html.escape(tax.parent(c) or '(top level)')}")
        nb = neighbor_table(self.neighbors, tax, k=self.k, cls=c)
        self.neighbors_table = nb[["rank", "target", "target_label", "sim", "same_parent", "lca_distance"]] \
            .rename(columns={"target": "class", "target_label": "neighbour"}).reset_index(drop=True)
        self.neighbors_html.value = self._html_table(
            self.neighbors_table[["rank", "neighbour", "sim", "same_parent"]], "neighbours", NEIGHBOUR_HEADERS)
        self.confusions_table = top_confusions(self.pred, self.y, tax, c, n=self.k)
        self.confusions_html.value = self._html_table(
            self.confusions_table[["other_label", "true_as_other", "other_as_true", "lca_distance"]],
            "confusions", CONFUSION_HEADERS)
        self.heatmap_figure = viz.confusion_heatmap(self.pred, self.y, tax, c, neighbors=self.neighbors,
                                                    size=self.size)
        figure_output(self.heatmap_figure, self.heatmap)
        self._show_examples(c)

    def _show_examples(self, c: int) -> None:
        wrong = np.flatnonzero((self.pred != self.y) & ((self.y == c) | (self.pred == c)))
        if self.table is not None:
            ex = self.table.iloc[wrong].sort_values("confidence", ascending=False, kind="stable").head(self.n_examples)
            self.examples = ex.reset_index(drop=True)
            cards = [product_card(r) for _, r in self.examples.iterrows()]
            self.examples_box.children = (W.GridBox(cards, layout=W.Layout(
                grid_template_columns=_grid_columns(3))),) if cards else (W.HTML("<i>no mispredictions</i>"),)
        else:
            ex = pd.DataFrame({"row": wrong[: self.n_examples],
                               "true_label": [self.taxonomy.classes[i] for i in self.y[wrong[: self.n_examples]]],
                               "pred_label": [self.taxonomy.classes[i] for i in self.pred[wrong[: self.n_examples]]]})
            self.examples = ex
            box = W.HTML(self._html_table(ex, "examples", {"true_label": "true class", "pred_label": "predicted as"}))
            box.add_class("semcat-wrap")
            self.examples_box.children = (box,)

    @staticmethod
    def _html_table(df: pd.DataFrame, what: str, headers: dict | None = None) -> str:
        if df.empty:
            return f"<i>no {what}</i>"
        return html_table(df, headers, css_class=f"semcat-{what}")
