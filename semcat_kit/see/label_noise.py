"""Hints that a given label is wrong: confident-learning self-confidence (Northcutt et al., 2021)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .._core.contracts import as_labels
from ._inputs import probs_of

__all__ = ["label_issues"]


def label_issues(probs=None, y=None, *, X=None, cv: int | None = None, estimator=None, taxonomy=None,
                 cleanlab: bool = False, random_state: int = 0, progress: bool = False) -> pd.DataFrame:
    """Flag items whose given label looks wrong (self-confidence, as in confident learning).

    The threshold of class ``c`` is ``t_c = mean p(c | x)`` over the items labelled ``c``
    (Northcutt et al., 2021). An item labelled ``g`` is a likely label issue when
    ``p(g | x) < t_g`` and some other class ``j`` reaches its own threshold ``p(j | x) >= t_j``,
    and the model's top prediction is not ``g`` (as cleanlab's ``find_label_issues`` does: an item
    whose given label is still the most probable one is never flagged, however a sharp model sets
    ``t_g``).

    The probabilities must be out-of-sample (a model has learnt its own training labels, noise
    included). Give them (``probs``), or give the embeddings ``X`` and ``cv``: each row's
    probabilities then come from a :class:`semcat_kit.SemcatClassifier` trained on the ``cv - 1``
    folds that do not hold it (:func:`semcat_kit.learn.estimator.cross_val_proba`).

    Parameters
    ----------
    probs : array (N, C), optional
        Predicted probabilities (out-of-sample); not with ``cv``.
    y : array (N,) of int (or label paths with ``taxonomy``)
        Given class of each item.
    X : Embeddings or array, optional
        With ``cv``: the items' embeddings.
    cv : int >= 2, optional
        Folds of the cross-validation that produces ``probs``.
    estimator : SemcatClassifier, optional
        Trained on each fold (default ``SemcatClassifier(taxonomy=taxonomy)``).
    taxonomy : Taxonomy, optional
        The classes (needed with ``cv`` unless ``estimator`` has it; maps label paths in ``y``).
    cleanlab : bool
        Also run cleanlab on the same probabilities (the ``[cleanlab]`` extra): columns
        ``cleanlab_issue`` and ``cleanlab_quality`` (:func:`semcat_kit.judge.label_noise.cleanlab_issues`).
    random_state : int
        Seed of the folds.
    progress : bool
        A progress bar over the folds.

    Returns
    -------
    pandas.DataFrame
        One row per item: ``index`` (row position), ``given``, ``suggested`` (the most probable
        other class at or above its threshold; the most probable other class when none is),
        ``self_confidence`` (``p(given)``; lower is more suspicious) and ``is_issue`` (plus the
        cleanlab columns). With ``cv``, ``attrs["probs"]`` holds the out-of-sample probabilities.
    """
    oos = None
    if cv is not None:
        from ..learn.estimator import SemcatClassifier, cross_val_proba

        if probs is not None:
            raise ValueError("give probs or (X, cv), not both: with cv the probabilities are cross-validated")
        if X is None:
            raise ValueError("label_issues(cv=...) needs the embeddings X of the items")
        if estimator is None:
            if taxonomy is None:
                raise ValueError("label_issues(cv=...) needs taxonomy= (or an estimator with one)")
            estimator = SemcatClassifier(taxonomy=taxonomy)
        elif taxonomy is not None and estimator.taxonomy is None:
            estimator = estimator.set_params(taxonomy=taxonomy)
        taxonomy = estimator.taxonomy
        probs = oos = cross_val_proba(estimator, X, y, cv=cv, random_state=random_state, progress=progress)
    elif probs is None:
        raise ValueError("label_issues needs out-of-sample probs, or the embeddings X and cv=<folds>")
    if y is None:
        raise ValueError("label_issues needs the given labels y")
    p = probs_of(probs)
    N, C = p.shape
    y = as_labels(y, N, taxonomy, name="y", n_classes=C)
    counts = np.bincount(y, minlength=C)
    sums = np.zeros(C)
    np.add.at(sums, y, p[np.arange(N), y])
    # a class nobody is labelled with has no threshold: it can never be "confidently" suggested
    t = np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)
    rows = np.arange(N)
    self_conf = p[rows, y].astype(np.float64)
    suggested = np.empty(N, dtype=np.int64)
    has_other = np.zeros(N, dtype=bool)
    top_is_given = np.zeros(N, dtype=bool)
    step = max(1, 4_000_000 // max(C, 1))  # rows per block: bounded temporaries at large C
    for a in range(0, N, step):
        pb, yb = p[a:a + step], y[a:a + step]
        r = np.arange(len(pb))
        above = pb >= t[None, :]
        above[r, yb] = False
        has_other[a:a + step] = above.any(1)
        top_is_given[a:a + step] = pb.argmax(1) == yb
        conf_pick = np.where(above, pb, -np.inf).argmax(1)
        other = pb.astype(np.float64, copy=True)
        other[r, yb] = -np.inf
        any_pick = other.argmax(1) if C > 1 else yb
        suggested[a:a + step] = np.where(has_other[a:a + step], conf_pick, any_pick)
    # the given label is the top prediction: not an issue (a sharp model puts t_g near 1, so
    # p(g) = 0.998 would otherwise be flagged as "very low")
    is_issue = (self_conf < t[y]) & has_other & ~top_is_given
    out = pd.DataFrame({"index": rows, "given": y, "suggested": suggested,
                        "self_confidence": self_conf, "is_issue": is_issue})
    if cleanlab:
        from ..judge.label_noise import cleanlab_issues

        out = pd.concat([out, cleanlab_issues(p, y)], axis=1)
    if oos is not None:
        out.attrs["probs"] = oos
    return out
