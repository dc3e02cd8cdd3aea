"""Metrics per frequency bucket: how a model does on head, torso and tail classes.

Classes are bucketed by their **training** count ``n_c``: by default into thirds of the classes
ranked by ``n_c`` (descending), with two count cut-offs chosen so that classes with equal counts are
never split and the bucket sizes are as close to ``C/3`` as the ties allow (see
:func:`frequency_cutoffs`); or by explicit count thresholds (``thresholds=(t1, t2)``: head
``n_c >= t2``, torso ``t1 <= n_c < t2``, tail ``n_c < t1``; Liu et al. 2019 use 20 and 100).

Per bucket ``b`` (test items whose true class is in ``b``):

* ``top1[b] = mean[pred_n == y_n]`` over those items;
* ``macro_f1[b] = mean_{c in b, present in y} F1_c`` (F1 of each class against all predictions, so a
  tail item predicted as a head class is a miss of the tail class and a false positive of the head
  class);
* ``mistake_severity[b]``: mean LCA distance of the wrong top-1 predictions of those items.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .._core.contracts import as_labels, as_probs

__all__ = ["frequency_buckets", "frequency_cutoffs", "bucket_metrics", "BUCKETS"]

BUCKETS = ("head", "torso", "tail")


def _class_counts(train_labels, n_classes: int) -> np.ndarray:
    y = np.asarray(train_labels)
    if y.ndim != 1 or (len(y) and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes)):
        raise ValueError(f"train_labels must be class indices in [0, {n_classes}) (use taxonomy.index_of)")
    return np.bincount(y, minlength=n_classes)


def frequency_cutoffs(train_labels, n_classes: int) -> tuple[int, int]:
    """Count cut-offs ``(t1, t2)`` of the default thirds: head ``n_c >= t2``, torso ``t1 <= n_c < t2``, tail ``n_c < t1``.

    Classes with equal training counts always share a bucket, so a cut can only fall between two
    distinct counts. Among all such pairs of cuts the one with the bucket sizes ``(h, m, t)`` closest
    to thirds is taken: minimal ``(h - C/3)^2 + (m - C/3)^2 + (t - C/3)^2``, with every bucket
    non-empty whenever there are at least 3 distinct counts (ties in the criterion: the larger head,
    then the larger torso). With 2 distinct counts the larger is head and the smaller tail (torso
    empty); with 1, every class is head. E.g. counts ``[5, 3, 3, 3, 1, 1]``: ``(3, 5)``, head 1, torso
    3, tail 2 classes (a cut at thirds by rank alone would split the three 3s).

    Parameters
    ----------
    train_labels : array (N,) of class indices
    n_classes : int
    """
    counts = _class_counts(train_labels, n_classes)
    vals, sizes = np.unique(counts, return_counts=True)
    vals, sizes = vals[::-1], sizes[::-1]                 # distinct counts, descending
    D = len(vals)
    if D == 0:
        return 0, 0                                       # no classes
    if D == 1:
        return int(vals[0]), int(vals[0])                 # all head (t1 = t2 = the only count)
    if D == 2:
        return int(vals[0]), int(vals[0])                 # head = the larger count, tail = the smaller
    cum = np.concatenate([[0], np.cumsum(sizes)])         # cum[i] = classes in the i largest counts
    best, best_ij = None, None
    for i in range(1, D - 1):                             # head = groups [0, i)
        j = np.arange(i + 1, D)                           # torso = groups [i, j), tail = [j, D)
        h, m, t = cum[i], cum[j] - cum[i], n_classes - cum[j]
        cost = (3 * h - n_classes) ** 2 + (3 * m - n_classes) ** 2 + (3 * t - n_classes) ** 2   # 9x, exact ints
        k = int(np.flatnonzero(cost == cost.min())[-1])   # equal costs: the larger torso
        if best is None or cost[k] <= best:               # equal costs: the larger head (later i)
            best, best_ij = cost[k], (i, int(j[k]))
    i, j = best_ij
    return int(vals[j - 1]), int(vals[i - 1])


def frequency_buckets(train_labels, n_classes: int, thresholds: Sequence[int] | None = None) -> np.ndarray:
    """(C,) array of ``"head" / "torso" / "tail"`` from the training class counts.

    Parameters
    ----------
    train_labels : array (N,) of class indices
    n_classes : int
    thresholds : (t1, t2), optional
        Count thresholds (head ``n_c >= t2``, torso ``t1 <= n_c < t2``, tail ``n_c < t1``); default:
        thirds of the classes by count with ties kept together, :func:`frequency_cutoffs`.
    """
    counts = _class_counts(train_labels, n_classes)
    if thresholds is not None:
        t1, t2 = (int(t) for t in thresholds)
        if not 0 <= t1 <= t2:
            raise ValueError(f"thresholds must be (t1, t2) with 0 <= t1 <= t2, not {thresholds!r}")
    else:
        t1, t2 = frequency_cutoffs(train_labels, n_classes)
    out = np.empty(n_classes, dtype=object)
    out[:] = np.where(counts >= t2, "head", np.where(counts >= t1, "torso", "tail"))
    return out


def bucket_metrics(probs, y_true, taxonomy, buckets: np.ndarray, *, crm: bool = False) -> pd.Series:
    """``top1[<bucket>]``, ``macro_f1[<bucket>]``, ``mistake_severity[<bucket>]`` and ``n[<bucket>]``.

    ``buckets`` is :func:`frequency_buckets` output; ``crm=True`` ranks by CRM like
    :func:`semcat_kit.evaluate`. A bucket without test items gets NaN.
    """
    from sklearn.metrics import f1_score

    C = taxonomy.n_classes
    p = as_probs(probs, C)
    y = as_labels(y_true, p.shape[0], taxonomy)
    buckets = np.asarray(buckets, dtype=object)
    if buckets.shape != (C,):
        raise ValueError(f"buckets must have one entry per class ({C}); got shape {buckets.shape}")
    if crm:
        from .decoding import crm_predict

        pred = crm_predict(p, taxonomy, top_k=1)[0][:, 0]
    else:
        pred = p.argmax(1)
    out = {}
    for b in BUCKETS:
        in_b = buckets[y] == b
        cls = np.unique(y[in_b])
        out[f"n[{b}]"] = float(in_b.sum())
        if not in_b.any():
            out[f"top1[{b}]"] = out[f"macro_f1[{b}]"] = out[f"mistake_severity[{b}]"] = float("nan")
            continue
        out[f"top1[{b}]"] = float((pred[in_b] == y[in_b]).mean())
        out[f"macro_f1[{b}]"] = float(f1_score(y, pred, labels=cls, average="macro", zero_division=0))
        wrong = in_b & (pred != y)
        out[f"mistake_severity[{b}]"] = (float(np.mean(taxonomy.lca_distance(pred[wrong], y[wrong])))
                                         if wrong.any() else float("nan"))
    return pd.Series(out, dtype=float)
