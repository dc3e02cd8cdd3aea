"""Metrics per frequency bucket: how a model does on head, torso and tail classes.

Classes are bucketed by their **training** count ``n_c``: by default into thirds of the classes
ranked by ``n_c`` (descending; classes with equal counts share a bucket, so the thirds are
approximate), or by explicit count thresholds (``thresholds=(t1, t2)``: head ``n_c >= t2``, torso
``t1 <= n_c < t2``, tail ``n_c < t1``; Liu et al. 2019 use 20 and 100).

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

from .contracts import as_labels, as_probs

__all__ = ["frequency_buckets", "bucket_metrics", "BUCKETS"]

BUCKETS = ("head", "torso", "tail")


def frequency_buckets(train_labels, n_classes: int, thresholds: Sequence[int] | None = None) -> np.ndarray:
    """(C,) array of ``"head" / "torso" / "tail"`` from the training class counts.

    Parameters
    ----------
    train_labels : array (N,) of class indices
    n_classes : int
    thresholds : (t1, t2), optional
        Count thresholds (head ``>= t2``, tail ``< t1``); default: thirds of the classes by count.
    """
    y = np.asarray(train_labels)
    if y.ndim != 1 or (len(y) and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes)):
        raise ValueError(f"train_labels must be class indices in [0, {n_classes}) (use taxonomy.index_of)")
    counts = np.bincount(y, minlength=n_classes)
    out = np.empty(n_classes, dtype=object)
    if thresholds is not None:
        t1, t2 = (int(t) for t in thresholds)
        if not 0 <= t1 <= t2:
            raise ValueError(f"thresholds must be (t1, t2) with 0 <= t1 <= t2, not {thresholds!r}")
        out[:] = np.where(counts >= t2, "head", np.where(counts >= t1, "torso", "tail"))
        return out
    # thirds of the classes by count; a count straddling a cut goes wholly to the bucket its first class is in
    order = np.argsort(-counts, kind="stable")
    rank_bucket = np.minimum((np.arange(n_classes) * 3) // max(n_classes, 1), 2)
    first_rank = {}
    for r, c in enumerate(order):
        first_rank.setdefault(counts[c], r)
    for c in range(n_classes):
        out[c] = BUCKETS[rank_bucket[first_rank[counts[c]]]]
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
