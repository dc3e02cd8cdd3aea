"""Which classes the model mixes up: a class's confusions in both directions, its neighbourhood
confusion matrix (semantic neighbours and confusions interleaved), and the top confused pairs over all
classes (counted over the mistakes only, never a C x C matrix)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .._core.contracts import as_k
from ..datasets.taxonomy import Taxonomy
from ._inputs import check_taxonomy, labels_of, pred_of
from .classes import class_index
from .label_graph import neighbor_table

__all__ = ["top_confusions", "neighborhood_confusion", "confused_pairs"]


def top_confusions(pred_or_probs, y_true, taxonomy: Taxonomy, cls, n: int = 10) -> pd.DataFrame:
    """The classes most often confused with ``cls``, in either direction.

    Returns
    -------
    pandas.DataFrame
        ``other, other_label, true_as_other`` (items of ``cls`` predicted as ``other``),
        ``other_as_true`` (items of ``other`` predicted as ``cls``), ``total``, ``lca_distance``,
        sorted by ``total`` (then ``true_as_other``), at most ``n`` rows.
    """
    tax = check_taxonomy(taxonomy)
    pred = pred_of(pred_or_probs, tax)
    y = labels_of(y_true, tax, len(pred))
    c = class_index(cls, tax)
    C = tax.n_classes
    out_c = np.bincount(pred[(y == c) & (pred != c)], minlength=C)
    in_c = np.bincount(y[(pred == c) & (y != c)], minlength=C)
    total = out_c + in_c
    others = np.flatnonzero(total > 0)
    order = np.lexsort((others, -out_c[others], -total[others]))[: int(n)]
    others = others[order]
    return pd.DataFrame({
        "other": others.astype(np.int64),
        "other_label": [tax.classes[o] for o in others],
        "true_as_other": out_c[others].astype(np.int64),
        "other_as_true": in_c[others].astype(np.int64),
        "total": total[others].astype(np.int64),
        "lca_distance": np.asarray(tax.lca_distance(np.full(len(others), c), others), dtype=np.int64).reshape(len(others)),
    })


def neighborhood_confusion(pred_or_probs, y_true, taxonomy: Taxonomy, cls, neighbors=None,
                           size: int = 10) -> pd.DataFrame:
    """Row-normalised confusion matrix restricted to a class's neighbourhood.

    The classes are ``cls`` first, then its semantic neighbours and its most frequent
    confusions, interleaved (nearest neighbour, top confusion, second neighbour, ...), without
    repeats, up to ``size``. Rows are true classes, columns predicted classes plus a final
    ``"(other)"`` column with everything predicted outside the neighbourhood, so each row with
    items sums to 1 (rows of classes without items are NaN).

    Returns
    -------
    pandas.DataFrame
        ``(size, size + 1)`` fractions indexed by full class path. ``attrs`` holds ``counts``
        (the raw counts, same shape), ``classes`` (the class indices), ``roles`` (``"selected"``,
        ``"neighbour"``, ``"confusion"`` or ``"neighbour+confusion"``) and ``row_totals``.
    """
    tax = check_taxonomy(taxonomy)
    pred = pred_of(pred_or_probs, tax)
    y = labels_of(y_true, tax, len(pred))
    c = class_index(cls, tax)
    size = as_k(size, "size")
    nb = []
    if neighbors is not None:
        nb = neighbor_table(neighbors, tax, cls=c)["target"].tolist()
    conf = top_confusions(pred, y, tax, c, n=tax.n_classes)["other"].tolist()
    chosen: list[int] = [c]
    for pair in _interleave(nb, conf):
        if len(chosen) >= size:
            break
        if pair not in chosen:
            chosen.append(pair)
    roles = []
    for j in chosen:
        r = "selected" if j == c else "+".join(x for x, s in (("neighbour", nb), ("confusion", conf)) if j in s)
        roles.append(r)
    pos = {j: a for a, j in enumerate(chosen)}
    m = len(chosen)
    counts = np.zeros((m, m + 1), dtype=np.int64)
    in_rows = np.isin(y, chosen)
    for t, p_ in zip(y[in_rows], pred[in_rows]):
        counts[pos[int(t)], pos.get(int(p_), m)] += 1
    totals = counts.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(totals[:, None] > 0, counts / np.maximum(totals, 1)[:, None], np.nan)
    labels = [tax.classes[j] for j in chosen]
    df = pd.DataFrame(frac, index=labels, columns=labels + ["(other)"])
    df.index.name, df.columns.name = "true", "predicted"
    df.attrs.update(counts=counts, classes=np.array(chosen, dtype=np.int64), roles=roles, row_totals=totals)
    return df


def _interleave(a: list, b: list) -> list:
    out = []
    for i in range(max(len(a), len(b))):
        if i < len(a):
            out.append(int(a[i]))
        if i < len(b):
            out.append(int(b[i]))
    return out


def confused_pairs(pred_or_probs, y_true, taxonomy: Taxonomy, n: int = 20) -> pd.DataFrame:
    """The ``n`` most frequent (true, predicted) confusions over all classes.

    Counting is one ``np.unique`` over the mistakes, so it needs memory for the mistakes only,
    never a C x C matrix (fine at tens of thousands of classes).

    Returns
    -------
    pandas.DataFrame
        ``true, pred, true_label, pred_label, count, share_of_true`` (count / items of the true
        class), ``lca_distance``; sorted by ``count`` (then class indices), at most ``n`` rows.
    """
    tax = check_taxonomy(taxonomy)
    pred = pred_of(pred_or_probs, tax)
    y = labels_of(y_true, tax, len(pred))
    wrong = pred != y
    C = tax.n_classes
    key, cnt = np.unique(y[wrong].astype(np.int64) * C + pred[wrong], return_counts=True)
    order = np.lexsort((key, -cnt))[: as_k(n, "n")]
    key, cnt = key[order], cnt[order]
    t, p_ = key // C, key % C
    support = np.bincount(y, minlength=C)
    classes = np.asarray(tax.classes, dtype=object)
    return pd.DataFrame({"true": t, "pred": p_, "true_label": classes[t], "pred_label": classes[p_],
                         "count": cnt.astype(np.int64), "share_of_true": cnt / np.maximum(support[t], 1),
                         "lca_distance": np.asarray(tax.lca_distance(t, p_), dtype=np.int64).reshape(len(t))})
