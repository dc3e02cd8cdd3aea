"""Judging label-issue finders: injected label noise, detection precision / recall, and cleanlab.

* :func:`inject_label_noise` flips a share of the labels, uniformly to another class or to one of the
  nearest classes in the taxonomy (a sibling: the realistic mistake of a catalog);
* :func:`detection_scores` scores a finder's flags against the flipped rows;
* :func:`cleanlab_issues` runs cleanlab's ``find_label_issues`` / ``get_label_quality_scores`` on the
  same probabilities (the ``[cleanlab]`` extra), so the project's hints
  (:func:`semcat_kit.see.label_noise.label_issues`) can be compared side by side.

``scripts/label_noise_table.py`` uses them for ``docs/label_noise.md``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .._core.contracts import as_labels

__all__ = ["inject_label_noise", "detection_scores", "cleanlab_issues", "NOISE_KINDS"]

NOISE_KINDS = ("uniform", "nearest")


def inject_label_noise(y, n_classes: int, rate: float, *, kind: str = "uniform", taxonomy=None,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Flip ``round(rate * N)`` labels, chosen at random, to another class.

    Parameters
    ----------
    y : array (N,) of int
        Class indices.
    n_classes : int
    rate : float in [0, 1)
        Share of the rows flipped.
    kind : {"uniform", "nearest"}
        ``uniform``: any other class, equally likely. ``nearest``: one of the classes at the smallest
        LCA distance from the true class (``taxonomy.lca_distance``; a sibling leaf where it has one),
        equally likely -- the mistakes a person filing products makes.
    taxonomy : Taxonomy
        Needed by ``nearest``.
    seed : int

    Returns
    -------
    (y_noisy, flipped)
        The labels with the flips, and the boolean mask of the flipped rows.
    """
    y = as_labels(y, name="y", n_classes=n_classes)
    if kind not in NOISE_KINDS:
        raise ValueError(f"kind must be one of {NOISE_KINDS}, not {kind!r}")
    if not (isinstance(rate, (int, float)) and 0 <= rate < 1):
        raise ValueError(f"rate must be a number in [0, 1), not {rate!r}")
    if n_classes < 2:
        raise ValueError("label noise needs at least 2 classes")
    if kind == "nearest" and taxonomy is None:
        raise ValueError("kind='nearest' needs the taxonomy (its LCA distances)")
    rng = np.random.default_rng(seed)
    n_flip = int(round(rate * len(y)))
    rows = rng.choice(len(y), size=n_flip, replace=False)
    out = y.copy()
    if kind == "uniform":
        shift = rng.integers(1, n_classes, size=n_flip)
        out[rows] = (y[rows] + shift) % n_classes
    else:
        allc = np.arange(n_classes)
        nearest: dict[int, np.ndarray] = {}
        for r in rows:
            c = int(y[r])
            if c not in nearest:
                d = np.asarray(taxonomy.lca_distance(np.full(n_classes, c), allc), dtype=np.float64)
                d[c] = np.inf
                nearest[c] = np.flatnonzero(d == d.min())
            out[r] = rng.choice(nearest[c])
    flipped = np.zeros(len(y), dtype=bool)
    flipped[rows] = True
    return out, flipped


def detection_scores(flagged, flipped) -> dict:
    """Precision, recall and F1 of flagging the flipped rows.

    ``precision = |flagged & flipped| / |flagged|``, ``recall = |flagged & flipped| / |flipped|``,
    ``F1 = 2 P R / (P + R)`` (0 when nothing is flagged or nothing was flipped).
    """
    f, t = np.asarray(flagged, dtype=bool), np.asarray(flipped, dtype=bool)
    if f.shape != t.shape:
        raise ValueError(f"flagged has shape {f.shape} but flipped has {t.shape}")
    tp = int((f & t).sum())
    p = tp / f.sum() if f.any() else 0.0
    r = tp / t.sum() if t.any() else 0.0
    return {"flagged": int(f.sum()), "flipped": int(t.sum()), "found": tp, "precision": float(p),
            "recall": float(r), "f1": float(2 * p * r / (p + r)) if p + r else 0.0}


def cleanlab_issues(probs, y, **kwargs) -> pd.DataFrame:
    """cleanlab's verdict on the same out-of-sample probabilities.

    Classes that no item is labelled with are dropped (and the rows renormalised) before calling
    cleanlab, which expects every column to be a class of the labels.

    Parameters
    ----------
    probs : array (N, C)
        Out-of-sample probabilities (e.g. :func:`semcat_kit.learn.estimator.cross_val_proba`).
    y : array (N,) of int
    **kwargs
        Passed to ``cleanlab.filter.find_label_issues`` (e.g. ``filter_by="both"``).

    Returns
    -------
    pandas.DataFrame
        ``cleanlab_issue`` (bool) and ``cleanlab_quality`` (``get_label_quality_scores``,
        self-confidence by default; lower is more suspicious), one row per item.
    """
    from .._core.optional import require

    find_label_issues = require("cleanlab.filter", "cleanlab", "cleanlab_issues").find_label_issues
    get_label_quality_scores = require("cleanlab.rank", "cleanlab", "cleanlab_issues").get_label_quality_scores
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must be (N, C), got shape {p.shape}")
    y = as_labels(y, len(p), name="y", n_classes=p.shape[1])
    present = np.unique(y)
    remap = np.full(p.shape[1], -1, dtype=np.int64)
    remap[present] = np.arange(len(present))
    sub = p[:, present]
    sub = sub / np.clip(sub.sum(1, keepdims=True), 1e-12, None)
    labels = remap[y]
    issue = find_label_issues(labels, sub, **kwargs)
    quality = get_label_quality_scores(labels, sub)
    return pd.DataFrame({"cleanlab_issue": np.asarray(issue, dtype=bool), "cleanlab_quality": quality})
