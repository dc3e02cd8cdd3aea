"""Plotly figures for inspecting label spaces, confusions, mistake severity and training.

Each function returns a :class:`plotly.graph_objects.Figure`; the tables behind them come from the
concept modules of :mod:`semcat_kit.see` (``projection``, ``label_graph``, ``confusions``,
``severity``, ``histories``), so the figures only draw.
"""
from __future__ import annotations

import html
from typing import Any, Mapping, Sequence

import numpy as np

from .._core.optional import require

go = require("plotly.graph_objects", "viz", "semcat_kit.see.viz (plotly figures)")
pcolors = require("plotly.colors", "viz", "semcat_kit.see.viz (plotly figures)")
make_subplots = require("plotly.subplots", "viz", "semcat_kit.see.viz (plotly figures)").make_subplots

from .classes import class_index, select_classes, short_labels  # noqa: E402
from .confusions import neighborhood_confusion  # noqa: E402
from .histories import PANELS, history_frame  # noqa: E402
from .label_graph import graph_neighborhood, neighbor_table  # noqa: E402
from .projection import project_labels  # noqa: E402
from .severity import severity_table  # noqa: E402
from ..datasets.taxonomy import Taxonomy  # noqa: E402

__all__ = ["label_map", "class_sizes", "similarity_graph", "confusion_heatmap", "severity_histogram",
           "precision_specificity_curves", "training_curves", "group_colors", "plot_text", "fit_height", "legend_px",
           "max_legend"]

AGREE_COLOR = "#2ca02c"     # neighbour shares the parent
DISAGREE_COLOR = "#d62728"  # neighbour sits under another parent
LINK_COLOR = "rgba(120,120,120,0.45)"


def plot_text(s) -> str:
    """A category name, path or run name as plotly shows it verbatim.

    Plotly renders a subset of HTML (``<b>``, ``<a href>``, ``<br>`` ...) in hover text, tick
    labels, legend entries and titles, and substitutes ``%{...}`` in hover templates. Every name
    drawn by this module goes through this one helper: ``&``, ``<``, ``>`` become entities and
    ``%`` becomes ``&#37;``; plotly decodes them back, so the name is shown as written and never
    interpreted. (Not ``&quot;``: plotly does not decode it, so quotes are left as they are.)
    """
    return html.escape(str(s), quote=False).replace("%", "&#37;")


def group_colors(groups: Sequence[str]) -> dict[str, str]:
    """Stable colour per group name (sorted order, plotly qualitative palettes, cycled)."""
    palette = list(pcolors.qualitative.Plotly) + list(pcolors.qualitative.Dark24)
    uniq = sorted({str(g) for g in groups})
    return {g: palette[i % len(palette)] for i, g in enumerate(uniq)}


# --------------------------------------------------------------------------- sizing
LEGEND_ROW_PX = 19   # one legend entry at plotly's default 12 px font (measured in chromium)
LEGEND_PAD_PX = 40   # the legend's title and padding, with a little room to spare
MARGIN_PX = 180      # plotly's default top (100) and bottom (80) margins: a vertical legend gets the plot area


def legend_px(entries: int) -> int:
    """Height a vertical legend of ``entries`` entries needs: ``LEGEND_PAD_PX + entries * LEGEND_ROW_PX``."""
    return LEGEND_PAD_PX + int(entries) * LEGEND_ROW_PX


def max_legend(max_height: int = 1400) -> int:
    """The most legend entries a figure at most ``max_height`` px tall shows without a scrollbar."""
    return (int(max_height) - MARGIN_PX - LEGEND_PAD_PX) // LEGEND_ROW_PX


def fit_height(fig: go.Figure, rows: int = 0, row_px: int = 0, legend: int = 0, base: int = 160,
               min_height: int = 450, max_height: int = 1400) -> go.Figure:
    """Give ``fig`` a height that fits its content, so JupyterLab does not squash it.

    Without a height JupyterLab's plotly renderer uses 360 px (a ~180 px plot area once title and
    axes are drawn, and a legend cut off behind a scrollbar). Plotly fits a vertical legend into
    the plot area (the height less the margins), so the height is::

        clip(max(base + rows * row_px, MARGIN_PX + legend_px(legend)), min_height, max_height)

    where ``rows`` counts the rows of the plot itself (e.g. heatmap rows) and ``legend`` the legend
    entries (at most :func:`max_legend` entries fit under ``max_height``; a figure with more needs
    another way to name its groups, as :func:`label_map` does). A figure with a legend gets
    ``legend.tracegroupgap = 0``: plotly puts 10 px between legend groups, so a figure with one
    ``legendgroup`` per trace would need 29 px an entry instead of ``LEGEND_ROW_PX``. Width stays
    automatic (the figure fills its cell). Returns ``fig``.
    """
    h = max(base + int(rows) * int(row_px), MARGIN_PX + legend_px(legend) if legend else 0)
    fig.update_layout(height=int(min(max(h, min_height), max_height)))
    if legend:   # one entry per row: plotly otherwise puts 10 px between legend groups (29 px an entry)
        fig.update_layout(legend_tracegroupgap=0)
    return fig


def _n_legend(fig: go.Figure) -> int:
    return sum(1 for t in fig.data if t.showlegend is not False)


# --------------------------------------------------------------------------- class sizes
def class_sizes(counts, title: str | None = None, log: bool = True) -> go.Figure:
    """The long tail of a catalog: products per class, largest first (classes without products left out).

    Parameters
    ----------
    counts : pandas.Series
        Products per class, indexed by class path (``Workspace.class_counts()``).
    log : bool
        Logarithmic product axis (a long tail spans orders of magnitude).

    Returns
    -------
    plotly.graph_objects.Figure
        One bar per class with products (x = rank, 1 = the largest), its path and count in the hover.
    """
    import pandas as pd

    if not isinstance(counts, pd.Series):
        raise TypeError(f"counts must be a pandas Series indexed by class path (ws.class_counts()), "
                        f"not {type(counts).__name__}")
    c = pd.to_numeric(counts, errors="raise")
    sizes = c[c > 0].sort_values(ascending=False, kind="stable")
    if not len(sizes):
        raise ValueError("no class has products: counts are all 0")
    rank = np.arange(1, len(sizes) + 1)
    fig = go.Figure(go.Bar(x=rank, y=sizes.to_numpy(), marker_color="#4c78a8",
                           customdata=[plot_text(p) for p in sizes.index],
                           hovertemplate="%{customdata}<br>rank %{x}: %{y:,} products<extra></extra>"))
    fig.update_layout(
        title=title or (f"Long tail: products per class<br><sup>{len(sizes):,} of {len(c):,} classes have products; "
                        f"the largest has {int(sizes.iloc[0]):,}, the median {int(sizes.median()):,}</sup>"),
        template="plotly_white", bargap=0,
        xaxis=dict(title="class rank (1 = most products)"),
        yaxis=dict(title="products" + (" (log scale)" if log else ""), type="log" if log else "linear",
                   dtick=1 if log else None))   # log: a tick at each power of ten, no minor labels
    return fit_height(fig, min_height=520)   # a 340 px plot area under the two-line title


# --------------------------------------------------------------------------- label map
def label_map(embeddings, taxonomy: Taxonomy, method: str = "umap", color_level: int = 1,
              class_weights=None, n_neighbors: int = 15, random_state: int = 0,
              title: str | None = None, marker_size: int = 8, branch: str | None = None,
              webgl_above: int = 1000) -> go.Figure:
    """Interactive 2-D map of the label (class-name) embeddings, coloured by category.

    Readable at thousands of classes: every point has its full path in the hover, plotly zooms
    and pans, a click on a legend entry hides that group, ``branch=`` keeps one branch in
    colour, and above ``webgl_above`` points the traces are WebGL (``Scattergl``).

    Parameters
    ----------
    embeddings : array (C, d)
        One embedding per class (e.g. ``text_enc.encode_texts(tax.names)``).
    taxonomy : Taxonomy
    method : {"umap", "pca"}
        Projection (see :func:`semcat_kit.see.projection.project_labels`); UMAP needs >= 3 classes.
    color_level : int
        Taxonomy level whose names colour the points (1 = top level); one legend entry each.
    class_weights : array (C, h), optional
        A trained head's per-class weight rows (e.g. its final ``Linear.weight``). They are
        aligned to the name embeddings by orthogonal Procrustes after PCA to a common dimension
        (:func:`semcat_kit.see.projection.align_weights`), projected together with the names, drawn as
        ``x`` markers in the class's colour and joined to their class's name point by a thin
        line; the hover shows the cosine between the aligned weight and the name (low = the
        model places the class away from where its name sits).
    branch : str, optional
        A node path (e.g. a top-level category): its classes are coloured by the level below
        it, every other class is one small grey trace ``"other classes"`` (still hoverable).
    webgl_above : int
        Use WebGL traces when the taxonomy has more classes than this.

    Returns
    -------
    plotly.graph_objects.Figure
        One scatter trace per group (names), one per group for weights, and one line trace.
    """
    df = project_labels(embeddings, taxonomy, method=method, color_level=color_level,
                        class_weights=class_weights, n_neighbors=n_neighbors, random_state=random_state)
    Sc = go.Scattergl if taxonomy.n_classes > int(webgl_above) else go.Scatter
    fig = go.Figure()
    legend_title = f"level {color_level}"
    lvl, n_inside = int(color_level), taxonomy.n_classes
    if branch is not None:
        inside = select_classes(branch, taxonomy)
        mask = np.isin(df["index"].to_numpy(), inside)
        rest = df[~mask]
        df = df[mask].copy()
        lvl = min(len(str(branch).strip().split(taxonomy.sep.strip())) + 1, taxonomy.max_depth)
        df["group"] = np.asarray(taxonomy.level(df["index"].to_numpy(), lvl)).astype(str)
        legend_title = f"{plot_text(branch)}: level {lvl}"
        n_inside = len(df)
        if len(rest):
            fig.add_trace(Sc(x=rest["x"], y=rest["y"], mode="markers", name="other classes",
                             marker=dict(color="rgba(170,170,170,0.35)", size=max(3, marker_size // 2)),
                             text=[plot_text(p) for p in rest["path"]], hovertemplate="%{text}<extra></extra>"))
    colors = group_colors(df["group"])
    has_w = "wx" in df.columns
    if has_w:
        n = len(df)
        xs, ys = np.full(3 * n, None, dtype=object), np.full(3 * n, None, dtype=object)
        xs[0::3], xs[1::3] = df["x"].to_numpy(), df["wx"].to_numpy()
        ys[0::3], ys[1::3] = df["y"].to_numpy(), df["wy"].to_numpy()
        fig.add_trace(Sc(x=list(xs), y=list(ys), mode="lines", name="weight ↔ name", connectgaps=False,
                         line=dict(color=LINK_COLOR, width=1), hoverinfo="skip"))
    # more groups than a legend can show whole (see max_legend): the groups are named on the map
    # instead, at their median point, and the legend is left out
    on_map = df["group"].nunique() > max_legend() - (1 if branch is not None else 0) - (1 if has_w else 0)
    for g, sub in df.groupby("group", sort=True):
        paths = [plot_text(p) for p in sub["path"]]
        fig.add_trace(Sc(
            x=sub["x"], y=sub["y"], mode="markers", name=plot_text(g), legendgroup=g, showlegend=not on_map,
            marker=dict(color=colors[g], size=marker_size, symbol="circle", line=dict(width=0.5, color="white")),
            customdata=np.column_stack([paths, sub["index"]]),
            hovertemplate="%{customdata[0]}<br>class %{customdata[1]}<extra>name</extra>",
        ))
        if has_w:
            fig.add_trace(Sc(
                x=sub["wx"], y=sub["wy"], mode="markers", name=f"{plot_text(g)} (weights)", legendgroup=g,
                showlegend=False, marker=dict(color=colors[g], size=max(4, marker_size - 2), symbol="x"),
                customdata=np.column_stack([paths, sub["alignment"].round(3)]),
                hovertemplate="weights of %{customdata[0]}<br>cosine to name: %{customdata[1]}<extra>weights</extra>",
            ))
    if on_map:
        med = df.groupby("group", sort=True)[["x", "y"]].median()
        fig.add_trace(go.Scatter(x=med["x"], y=med["y"], mode="text", name="group names", showlegend=False,
                                 text=[plot_text(g) for g in med.index],
                                 textfont=dict(size=10, color="#222", shadow="auto"),   # a halo over the markers
                                 hoverinfo="skip"))
    what = "label embeddings" + (" and class weights" if has_w else "")
    C = taxonomy.n_classes
    if title is None and branch is not None:
        title = (f"{method.upper()} map of {what}: branch {plot_text(str(branch).strip())}<br><sup>its {n_inside:,} "
                 f"classes coloured by level {lvl} (of {C:,} classes; the others grey)</sup>")
    elif title is None:
        title = f"{method.upper()} map of {what} ({C:,} classes, coloured by level {lvl})"
    if on_map:
        title += f"<br><sup>{df['group'].nunique()} groups: too many for a legend, each is named on the map</sup>"
    fig.update_layout(title=title, showlegend=not on_map or branch is not None or has_w,
                      legend_title_text=legend_title, template="plotly_white",
                      xaxis=dict(showticklabels=False, title=""), yaxis=dict(showticklabels=False, title=""))
    return fit_height(fig, legend=_n_legend(fig), min_height=560)


# --------------------------------------------------------------------------- similarity graph
_LAYOUTS = ("spring", "kamada_kawai", "circular", "spectral")


def similarity_graph(neighbors, taxonomy: Taxonomy, k: int = 5, layout: str = "spring", seed: int = 0,
                     color_level: int = 1, classes=None, max_nodes: int | None = 400, center=None,
                     title: str | None = None) -> go.Figure:
    """Label similarity graph: k-NN edges coloured by whether the neighbour shares the parent.

    Parameters
    ----------
    neighbors : Neighbors or (indices, sims)
        Top-k label neighbours (``sk.similarity.label_neighbors``).
    taxonomy : Taxonomy
    k : int
        Neighbours per class drawn (mutual pairs become one edge, keeping the higher similarity).
    layout : {"spring", "kamada_kawai", "circular", "spectral"}
        networkx layout (``spring`` is weighted by similarity and seeded with ``seed``).
    color_level : int
        Taxonomy level colouring the nodes.
    classes : str or list, optional
        Draw only the edges of these classes: a node path (every class in that branch, e.g.
        ``"Apparel > Topwear"``) or a list of class indices / paths. Their neighbours are drawn
        too, wherever they sit in the tree.
    max_nodes : int or None
        At most this many nodes are drawn (a spring layout of thousands of classes takes
        minutes and draws a hairball). When the graph (or the ``classes`` branch) is larger, the
        figure shows the neighbourhood of ``center`` instead: the classes within the fewest k-NN
        hops of it (:func:`semcat_kit.see.label_graph.graph_neighborhood`), and says so in its title.
        ``None`` draws everything.
    center : int or str, optional
        The class whose neighbourhood is drawn when there are too many nodes (default: the first
        class of ``classes``, else the class listed as a neighbour by the most classes).

    Returns
    -------
    plotly.graph_objects.Figure
        Two edge traces named ``"same parent (n)"`` (green) and ``"different parent (n)"`` (red)
        with edge counts, matching hover-only midpoint traces ("A ↔ B, sim"), and one node trace
        per group with the full path in the hover.
    """
    import networkx as nx

    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {_LAYOUTS}, not {layout!r}")
    edges = neighbor_table(neighbors, taxonomy, k=k)
    C = taxonomy.n_classes
    if classes is not None:
        chosen = select_classes(classes, taxonomy)
        edges = edges[np.isin(edges["source"], chosen)]
        nodes = np.union1d(chosen, edges["target"].to_numpy())
    else:
        nodes = np.arange(C)
    around = None
    if max_nodes is not None and len(nodes) > int(max_nodes):
        if center is None:
            if classes is not None:
                center = int(chosen[0])
            else:
                tgt = edges["target"].to_numpy()
                center = int(np.bincount(tgt, minlength=C).argmax()) if len(tgt) else 0
        around = class_index(center, taxonomy)
        keep = graph_neighborhood(neighbors, taxonomy, around, k=k, max_nodes=int(max_nodes))
        if classes is not None:
            keep = keep[np.isin(keep, nodes)]
        nodes = np.sort(keep)
        edges = edges[np.isin(edges["source"], nodes) & np.isin(edges["target"], nodes)]
    a = np.minimum(edges["source"], edges["target"])
    b = np.maximum(edges["source"], edges["target"])
    edges = (edges.assign(a=a, b=b).sort_values("sim", ascending=False)
             .drop_duplicates(["a", "b"]).reset_index(drop=True))
    g = nx.Graph()
    g.add_nodes_from(int(i) for i in nodes)
    g.add_weighted_edges_from(zip(edges["a"], edges["b"], np.clip(edges["sim"], 1e-3, None)))
    if layout == "spring":
        pos = nx.spring_layout(g, seed=seed, weight="weight")
    elif layout == "kamada_kawai":
        pos = nx.kamada_kawai_layout(g)
    elif layout == "circular":
        pos = nx.circular_layout(g)
    else:
        pos = nx.spectral_layout(g)
    xy = np.full((C, 2), np.nan)
    for i, v in pos.items():
        xy[i] = v
    fig = go.Figure()
    for same, color, label in ((True, AGREE_COLOR, "same parent"), (False, DISAGREE_COLOR, "different parent")):
        sub = edges[edges["same_parent"] == same]
        xs, ys = [], []
        for s_, t_ in zip(sub["a"], sub["b"]):
            xs += [xy[s_, 0], xy[t_, 0], None]
            ys += [xy[s_, 1], xy[t_, 1], None]
        name = f"{label} ({len(sub)})"
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=name, legendgroup=label,
                                 line=dict(color=color, width=1), hoverinfo="skip"))
        mid = (xy[sub["a"].to_numpy()] + xy[sub["b"].to_numpy()]) / 2 if len(sub) else np.zeros((0, 2))
        fig.add_trace(go.Scatter(
            x=mid[:, 0], y=mid[:, 1], mode="markers", name=f"{label} edges", legendgroup=label,
            showlegend=False, marker=dict(color=color, size=4, opacity=0.4),
            text=[f"{plot_text(s)}<br>↔ {plot_text(t)}<br>sim {v:.3f}, LCA distance {d}"
                  for s, t, v, d in zip(sub["source_label"], sub["target_label"], sub["sim"], sub["lca_distance"])],
            hovertemplate="%{text}<extra>" + label + "</extra>",
        ))
    groups = np.asarray(taxonomy.level(nodes, color_level)).astype(str)
    colors = group_colors(groups)
    deg = np.zeros(C, dtype=np.int64)
    for i in nodes:
        deg[i] = g.degree(int(i))
    for grp in sorted(colors):
        idx = nodes[groups == grp]
        fig.add_trace(go.Scatter(
            x=xy[idx, 0], y=xy[idx, 1], mode="markers", name=plot_text(grp), legendgroup=f"node:{grp}",
            marker=dict(color=colors[grp], size=9, line=dict(width=0.5, color="white")),
            text=[plot_text(taxonomy.classes[i]) for i in idx], customdata=deg[idx],
            hovertemplate="%{text}<br>%{customdata} edges<extra></extra>",
        ))
    if around is not None:
        fig.add_trace(go.Scatter(x=[xy[around, 0]], y=[xy[around, 1]], mode="markers", name="center",
                                 marker=dict(symbol="star", size=16, color="black"),
                                 text=[plot_text(taxonomy.classes[around])], hovertemplate="%{text}<extra>center</extra>"))
    n_same = int(edges["same_parent"].sum())
    fig.update_layout(
        title=title or (f"Label similarity graph (k={k}): {n_same} of {len(edges)} edges stay under "
                        "the same parent" + ("" if around is None else
                                             f"<br><sup>the {len(nodes)} classes nearest to "
                                             f"{plot_text(taxonomy.classes[around])} (of {C})</sup>")),
        template="plotly_white", hovermode="closest",
        xaxis=dict(showticklabels=False, showgrid=False, zeroline=False),
        yaxis=dict(showticklabels=False, showgrid=False, zeroline=False))
    return fit_height(fig, legend=_n_legend(fig), min_height=560)


# --------------------------------------------------------------------------- confusion heatmap
def confusion_heatmap(pred_or_probs, y_true, taxonomy: Taxonomy, cls, neighbors=None, size: int = 10,
                      title: str | None = None) -> go.Figure:
    """Neighbourhood confusion heatmap for one class.

    Rows are true classes, columns predicted classes: ``cls``, its semantic neighbours and its
    most frequent confusions (see :func:`semcat_kit.see.confusions.neighborhood_confusion`), plus an
    ``(other)`` column; cells are row-normalised counts, annotated with the raw count.

    Parameters
    ----------
    pred_or_probs : array (N,) or (N, C)
    y_true : array (N,) of int or label paths
    taxonomy : Taxonomy
    cls : int or str
        The class to inspect (index, full path, or a unique name).
    neighbors : Neighbors, optional
        Label neighbours; without them only confusions are shown.
    size : int
        Number of classes on each axis.
    """
    m = neighborhood_confusion(pred_or_probs, y_true, taxonomy, cls, neighbors=neighbors, size=size)
    counts = m.attrs["counts"]
    idx = m.attrs["classes"]
    roles = m.attrs["roles"]
    marks = {"selected": "★ ", "neighbour": "~ ", "confusion": "", "neighbour+confusion": "~ "}
    short = short_labels(taxonomy, idx)
    # long names (thousands of classes: "Baby & Toddler Clothing Accessories") wrap onto lines of
    # ~24 characters, so the slanted column labels do not eat the plot area
    ylab = [_wrap(f"{marks[r]}{plot_text(s)}") for r, s in zip(roles, short)]
    xlab = ylab + ["(other)"]
    full_x = list(m.columns)
    hover = [[f"true: {plot_text(t)} ({roles[i]})<br>predicted: {plot_text(full_x[j])}<br>"
              f"{counts[i, j]} of {m.attrs['row_totals'][i]} items"
              for j in range(len(full_x))] for i, t in enumerate(m.index)]
    fig = go.Figure(go.Heatmap(
        z=m.to_numpy(), x=xlab, y=ylab, zmin=0, zmax=1, colorscale="Blues",
        text=counts, texttemplate="%{text}", customdata=np.array(hover, dtype=object),
        hovertemplate="%{customdata}<br>fraction of row: %{z:.2f}<extra></extra>",
        colorbar=dict(title="fraction<br>of row"),
    ))
    c = taxonomy.classes[int(idx[0])]
    fig.update_layout(
        title=title or f"Confusions around {plot_text(c)}<br><sup>★ selected, ~ semantic neighbour; rows: true, "
                       "columns: predicted; cell text: count</sup>",
        template="plotly_white", xaxis=dict(title="predicted", tickangle=-35),
        yaxis=dict(title="true", autorange="reversed"))
    # rows of ~30 px (a 300 px plot area at least), the two-line title, and the slanted column labels:
    # about 3.7 px of height per character of their longest line (sin 35° of ~6.5 px) and 12 px a line
    lines = [lab.split("<br>") for lab in xlab]
    bottom = 50 + int(3.7 * max(len(x) for ls in lines for x in ls) + 12 * (max(len(ls) for ls in lines) - 1))
    return fit_height(fig, rows=len(ylab), row_px=30, base=110 + bottom, min_height=110 + 300 + bottom)


def _wrap(label: str, width: int = 24) -> str:
    """A tick label on lines of about ``width`` characters (plotly's ``<br>``), broken at spaces."""
    import textwrap

    return "<br>".join(textwrap.wrap(label, width=width, break_long_words=False)) if len(label) > width else label


# --------------------------------------------------------------------------- severity
def severity_histogram(results: Mapping[str, tuple[Any, Any]], taxonomy: Taxonomy,
                       title: str | None = None) -> go.Figure:
    """Grouped bars: fraction of each configuration's mistakes at each LCA distance.

    ``results`` (``config name -> (probs or predicted indices, y_true)``) and ``taxonomy`` are those
    of :func:`~semcat_kit.see.severity.severity_table`, which computes the bars.

    Returns
    -------
    plotly.graph_objects.Figure
        One bar trace per configuration (x = LCA distance 1..depth, y = fraction of mistakes,
        bar text = count).
    """
    t = severity_table(results, taxonomy)
    fig = go.Figure()
    for name, sub in t.groupby("config", sort=False):
        n_m, n = int(sub["n_mistakes"].iloc[0]), int(sub["n_items"].iloc[0])
        fig.add_trace(go.Bar(
            x=sub["distance"], y=sub["fraction"], name=plot_text(name), text=sub["count"], textposition="outside",
            customdata=np.column_stack([sub["count"], np.full(len(sub), n_m), np.full(len(sub), n)]),
            hovertemplate=(f"{plot_text(name)}<br>LCA distance %{{x}}: %{{customdata[0]}} of "
                           "%{customdata[1]} mistakes (%{y:.1%})<br>%{customdata[2]} items<extra></extra>"),
        ))
    fig.update_layout(
        barmode="group", template="plotly_white",
        title=title or "How bad are the mistakes? (LCA distance; 1 = sibling category)",
        xaxis=dict(title="LCA distance between predicted and true class", dtick=1),
        yaxis=dict(title="fraction of mistakes", tickformat=".0%", rangemode="tozero"),
        legend_title_text="configuration")
    return fit_height(fig, legend=_n_legend(fig), min_height=420)


# --------------------------------------------------------------------------- hedged decoding
_SPECIFICITY = {"leaf_coverage": ("share of products given a single class (leaf coverage)", ".0%"),
                "mean_depth": ("mean depth of the hedged node (0 = root)", ".2f"),
                "mean_bits": ("mean information of the hedged node (bits)", ".2f")}


def precision_specificity_curves(results: Mapping[str, tuple[Any, Any]], taxonomy: Taxonomy,
                                 specificity: str = "leaf_coverage", targets: Sequence[float] = (0.95, 0.98, 0.99),
                                 calibrations: Mapping[str, Any] | None = None, title: str | None = None) -> go.Figure:
    """Precision against specificity of hedged decoding, one line per configuration.

    Each line sweeps the threshold lambda of the threshold rule
    (:func:`semcat_kit.judge.hedging.precision_specificity_curve`): lambda = 0 names a class for every
    product (right, far); lambda = 1 names the root (top, left: precision 1). The further up and right a
    line runs, the more products a model commits to at a given precision.

    Parameters
    ----------
    results : dict
        ``config name -> (probs, y_true)`` (e.g. test probabilities of a suite).
    taxonomy : Taxonomy
    specificity : {"leaf_coverage", "mean_depth", "mean_bits"}
        The x axis.
    targets : sequence of float
        Target precisions drawn as dotted horizontal lines.
    calibrations : dict, optional
        ``config name -> HedgeCalibration`` (calibrated on a validation split): its thresholds for
        ``targets`` are marked beside that configuration's line (a threshold calibrated at a
        temperature T != 1 is a point of that temperature's curve, so it may lie off the line).

    Returns
    -------
    plotly.graph_objects.Figure
    """
    import pandas as pd

    from ..judge.hedging import precision_specificity_curve, temper

    if specificity not in _SPECIFICITY:
        raise ValueError(f"specificity must be one of {list(_SPECIFICITY)}, not {specificity!r}")
    if not results:
        raise ValueError("results is empty: give {config name: (probs, y_true)}")
    xtitle, xfmt = _SPECIFICITY[specificity]
    colors = group_colors(list(results))
    fig = go.Figure()
    lo = 1.0
    for name, (probs, y) in results.items():
        c = precision_specificity_curve(probs, y, taxonomy)
        lo = min(lo, float(c["precision"].min()))
        label = plot_text(name)
        fig.add_trace(go.Scatter(
            x=c[specificity], y=c["precision"], mode="lines", name=label, line=dict(color=colors[str(name)]),
            legendgroup=label,
            customdata=np.column_stack([c["threshold"], c["leaf_coverage"], c["mean_depth"], c["review_share"]]),
            hovertemplate=(f"{label}<br>threshold %{{customdata[0]:.4f}}<br>precision %{{y:.2%}}<br>leaves "
                           "%{customdata[1]:.1%}, mean depth %{customdata[2]:.2f}<br>needs review "
                           "%{customdata[3]:.1%}<extra></extra>")))
        cal = (calibrations or {}).get(name)
        if cal is not None:
            ps = [q for q in targets if any(abs(q - k) < 1e-9 for k in cal.thresholds)]
            if ps:
                pts = pd.concat([precision_specificity_curve(temper(probs, cal.temperature(q)), y, taxonomy,
                                                             [cal.threshold(q)]) for q in ps], ignore_index=True)
                fig.add_trace(go.Scatter(
                    x=pts[specificity], y=pts["precision"], mode="markers", marker=dict(color=colors[str(name)], size=9,
                                                                                      symbol="diamond"),
                    name=f"{label}: calibrated", legendgroup=label, showlegend=False,
                    customdata=np.column_stack([ps, pts["threshold"], [cal.temperature(q) for q in ps]]),
                    hovertemplate=(f"{label}<br>calibrated for %{{customdata[0]:.1%}}: threshold "
                                   "%{customdata[1]:.4f} at temperature %{customdata[2]:g}<br>precision %{y:.2%}"
                                   "<extra></extra>")))
    for q in targets:
        fig.add_hline(y=q, line=dict(color="#999", dash="dot", width=1), annotation_text=f"{q:.0%}" if q * 100 % 1 == 0
                      else f"{q:.1%}", annotation_position="bottom left")
    fig.update_layout(
        template="plotly_white", title=title or "Hedged predictions: precision against specificity",
        xaxis=dict(title=xtitle, tickformat=xfmt, rangemode="tozero"),
        yaxis=dict(title="precision (true class under the predicted node)", tickformat=".0%",
                   range=[max(0.0, min(lo, min(targets, default=1.0)) - 0.02), 1.005]),
        legend_title_text="configuration")
    return fit_height(fig, legend=_n_legend(fig), min_height=450)


# --------------------------------------------------------------------------- training curves
_PANEL_TITLES = {"loss": "loss", "accuracy": "validation: accuracy-type", "severity": "validation: tree distance",
                 "alpha": "soft-label alpha", "lr": "learning rate", "other": "other"}
_DASHES = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"]


def training_curves(history, metrics: Sequence[str] | None = None, title: str | None = None,
                    max_cols: int = 3) -> go.Figure:
    """Loss parts, validation metrics and schedules per epoch, one subplot per kind.

    Parameters
    ----------
    history : DataFrame, TrainRun, or dict name -> DataFrame/TrainRun
        ``TrainRun.history`` (columns ``epoch, alpha, lr, loss, focal, kl, val_loss, val_top1,
        val_mistake_severity, ...``).
    metrics : list of str, optional
        Columns to draw (default: all numeric ones except timings).
    max_cols : int
        Subplots per row.

    Returns
    -------
    plotly.graph_objects.Figure
        Subplots in the order loss, validation accuracy-type metrics, validation tree distances
        (mistake severity, hdist@k), alpha, learning rate, other (only those present; see
        :func:`semcat_kit.see.histories.history_frame`); one line per (run, metric). With one run
        colours tell metrics apart; with several, colours are runs and dash styles metrics.
    """
    long = history_frame(history, metrics=metrics)
    panels = [p for p in PANELS if (long["panel"] == p).any()]
    ncol = max(1, min(int(max_cols), len(panels)))
    nrow = -(-len(panels) // ncol)
    fig = make_subplots(rows=nrow, cols=ncol, subplot_titles=[_PANEL_TITLES[p] for p in panels],
                        horizontal_spacing=0.07, vertical_spacing=0.15)
    runs = list(dict.fromkeys(long["run"]))
    run_col = group_colors(runs) if len(runs) > 1 else {}
    metric_col = group_colors(long["metric"])
    for k, panel in enumerate(panels):
        row, col = k // ncol + 1, k % ncol + 1
        sub = long[long["panel"] == panel]
        names = list(dict.fromkeys(sub["metric"]))
        for run in runs:
            for mi, metric in enumerate(names):
                s = sub[(sub["run"] == run) & (sub["metric"] == metric)].sort_values("epoch")
                if s.empty:
                    continue
                multi = len(runs) > 1
                name = plot_text(f"{run}: {metric}" if multi else metric)
                line = dict(color=run_col[run], dash=_DASHES[mi % len(_DASHES)]) if multi else \
                    dict(color=metric_col[metric])
                fig.add_trace(go.Scatter(
                    x=s["epoch"], y=s["value"], mode="lines+markers", name=name, line=line,
                    marker=dict(size=4), legendgroup=run if multi else metric,
                    hovertemplate=f"{name}<br>epoch %{{x}}: %{{y:.4g}}<extra></extra>",
                ), row=row, col=col)
        fig.update_xaxes(title_text="epoch", row=row, col=col)
        if panel == "lr":
            fig.update_yaxes(type="log", row=row, col=col)
    fig.update_layout(title=title or "Training curves", template="plotly_white",
                      width=max(600, 420 * ncol))
    return fit_height(fig, rows=nrow, row_px=340, base=40, legend=_n_legend(fig), min_height=380)
