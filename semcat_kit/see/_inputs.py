"""The inputs of every view, coerced once: a taxonomy, probabilities, labels, predictions,
neighbours (thin wrappers over :mod:`semcat_kit._core.contracts`, named for what the views take)."""
from __future__ import annotations

import numpy as np

from .._core.contracts import as_labels, as_neighbors, as_probs
from ..datasets.taxonomy import Taxonomy

__all__ = ["check_taxonomy", "probs_of", "labels_of", "pred_of", "neighbors_of", "top_k"]


def check_taxonomy(taxonomy) -> Taxonomy:
    """``taxonomy`` itself when it is a :class:`~semcat_kit.Taxonomy`; else a TypeError."""
    if not isinstance(taxonomy, Taxonomy):
        raise TypeError(f"taxonomy must be a semcat_kit.Taxonomy, not {type(taxonomy).__name__}")
    return taxonomy


def probs_of(probs, n_classes: int | None = None, name: str = "probs") -> np.ndarray:
    """A validated (N, C) probability matrix."""
    return as_probs(probs, n_classes, name=name)


def labels_of(y, taxonomy: Taxonomy, n: int | None = None, name: str = "y_true") -> np.ndarray:
    """Class indices from integer indices or label strings (full paths or aliases)."""
    return as_labels(y, n, taxonomy, name=name, against="the predictions")


def pred_of(pred_or_probs, taxonomy: Taxonomy, name: str = "pred_or_probs") -> np.ndarray:
    """Predicted class indices from a (N,) index array or a (N, C) probability matrix."""
    arr = np.asarray(pred_or_probs)
    if arr.ndim == 2:
        return probs_of(arr, taxonomy.n_classes, name).argmax(1).astype(np.int64)
    if arr.ndim == 1:
        return labels_of(arr, taxonomy, name=name)
    raise ValueError(f"{name} must be predicted class indices (N,) or probabilities (N, C), got shape {arr.shape}")


def neighbors_of(neighbors, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, sims) from a :class:`semcat_kit.labels.similarity.Neighbors` or an ``(indices, sims)`` pair."""
    return as_neighbors(neighbors, n_classes)


def top_k(p: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k largest entries per row, largest first (ties: lower index)."""
    from ..judge.metrics import topk

    idx = topk(p, k)
    return idx, np.take_along_axis(p, idx, 1)
