"""What an analyst looks at: tables behind the figures, plotly figures, ipywidgets explorers.

One concept per module (arrows point down the list):

==================  ===========================================================================
``_inputs``         the views' inputs coerced once (taxonomy, probabilities, labels, neighbours)
``classes``         a class from what a person types, a branch's classes, short names, search
``label_noise``     confident-learning hints that a given label is wrong (``label_issues``, with
                    out-of-sample probabilities from ``learn``'s cross-validated estimator)
``mistakes``        one row per product: prediction, top-k, LCA distance, label-issue hints
                    (``mispredictions``)
``label_graph``     the k-NN label graph as edges, neighbourhoods in hops, example classes,
                    cross-branch pairs (each pair once)
``confusions``      a class's confusions, its neighbourhood confusion matrix, top confused pairs
``severity``        LCA distance of each configuration's mistakes
``projection``      2-D maps of class-name embeddings and aligned class weights
``histories``       training histories in long form, by panel
``tables``          DataFrames shown whole, readable, in notebooks and widgets
``viz``             plotly figures (``sk.viz``)
``widgets``         ``MispredictionBrowser``, ``ConfusionNeighborhood``, ``ClassSearch`` (``sk.widgets``)
==================  ===========================================================================

Every public function and class is reachable as ``sk.see.<name>`` (imported on first use, PEP 562),
e.g. ``sk.see.mispredictions(...)``, ``sk.see.neighbor_table(...)``, ``sk.see.show_table(df)``.
May import: ``_core``, ``datasets``, ``labels``, ``judge``, ``learn``.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

#: the concept modules, reachable as ``sk.see.<module>``
_MODULES = ("classes", "label_noise", "mistakes", "label_graph", "confusions", "severity", "projection",
            "histories", "tables", "viz", "widgets")
#: public names -> the module that defines them
_NAMES = {
    "class_index": "classes", "select_classes": "classes", "short_labels": "classes",
    "search_classes": "classes", "elide_paths": "classes",
    "label_issues": "label_noise",
    "mispredictions": "mistakes",
    "neighbor_table": "label_graph", "graph_neighborhood": "label_graph", "example_classes": "label_graph",
    "cross_branch_pairs": "label_graph",
    "top_confusions": "confusions", "neighborhood_confusion": "confusions", "confused_pairs": "confusions",
    "severity_table": "severity",
    "project_labels": "projection", "align_weights": "projection", "head_class_weights": "projection",
    "history_frame": "histories",
    "Table": "tables", "show_table": "tables", "html_table": "tables",
    "MispredictionBrowser": "widgets", "ConfusionNeighborhood": "widgets", "ClassSearch": "widgets",
}
__all__ = [*_NAMES]


def __getattr__(name: str):
    """Import a public name or a concept module on first use (PEP 562)."""
    if name in _NAMES:
        value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    elif name in _MODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'semcat_kit.see' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(_MODULES))


if TYPE_CHECKING:  # what static tools and IDEs see; nothing here runs
    from .classes import class_index, elide_paths, search_classes, select_classes, short_labels  # noqa: F401
    from .confusions import confused_pairs, neighborhood_confusion, top_confusions  # noqa: F401
    from .histories import history_frame  # noqa: F401
    from .label_graph import cross_branch_pairs, example_classes, graph_neighborhood, neighbor_table  # noqa: F401
    from .label_noise import label_issues  # noqa: F401
    from .mistakes import mispredictions  # noqa: F401
    from .projection import align_weights, head_class_weights, project_labels  # noqa: F401
    from .severity import severity_table  # noqa: F401
    from .tables import Table, html_table, show_table  # noqa: F401
    from .widgets import ClassSearch, ConfusionNeighborhood, MispredictionBrowser  # noqa: F401
