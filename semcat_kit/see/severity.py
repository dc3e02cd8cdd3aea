"""How bad the mistakes are: the LCA distance of each configuration's mistakes
(:meth:`semcat_kit.Taxonomy.lca_distance`: 1 = a sibling, 2 = a cousin, ...)."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..datasets.taxonomy import Taxonomy
from ..judge.metrics import mistake_distances
from ._inputs import check_taxonomy, labels_of, pred_of

__all__ = ["severity_table"]


def severity_table(results: Mapping[str, tuple[Any, Any]], taxonomy: Taxonomy) -> pd.DataFrame:
    """LCA distance of mistakes per configuration.

    Parameters
    ----------
    results : dict
        ``config name -> (probs or predicted indices, y_true)``.
    taxonomy : Taxonomy

    Returns
    -------
    pandas.DataFrame
        One row per (config, distance) for distances ``1 .. taxonomy.max_depth``: ``config,
        distance, count, fraction`` (of that config's mistakes; 0 when it made none),
        ``n_mistakes, n_items``.
    """
    tax = check_taxonomy(taxonomy)
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be a non-empty dict: config name -> (probs or pred, y_true)")
    dists = np.arange(1, tax.max_depth + 1)
    rows = []
    for name, pair in results.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"results[{name!r}] must be a (probs or pred, y_true) pair")
        pred = pred_of(pair[0], tax, name=f"results[{name!r}][0]")
        y = labels_of(pair[1], tax, len(pred), name=f"results[{name!r}][1]")
        d = np.asarray(mistake_distances(pred, y, tax)).reshape(len(pred))
        d = d[d > 0]
        cnt = np.bincount(d, minlength=tax.max_depth + 1)[1:]
        for dist, n_ in zip(dists, cnt):
            rows.append(dict(config=str(name), distance=int(dist), count=int(n_),
                             fraction=float(n_ / len(d)) if len(d) else 0.0,
                             n_mistakes=int(len(d)), n_items=int(len(pred))))
    return pd.DataFrame(rows)
