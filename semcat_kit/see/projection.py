"""2-D maps of the label space: class-name embeddings, and a trained head's class weights aligned to
them (PCA + orthogonal Procrustes), projected with UMAP or PCA."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..datasets.taxonomy import Taxonomy
from ._inputs import check_taxonomy

__all__ = ["project_labels", "align_weights", "head_class_weights"]


def _as_matrix(x, name: str, n_rows: int) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor (e.g. a head's final weight)
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != n_rows:
        raise ValueError(f"{name} must be a ({n_rows}, d) matrix with one row per taxonomy class, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} has non-finite values (first in row {int(np.argwhere(~np.isfinite(a))[0, 0])})")
    return a


def _unit_cloud(x: np.ndarray) -> np.ndarray:
    """Centre the rows and scale the whole cloud to unit Frobenius norm."""
    x = x - x.mean(0, keepdims=True)
    nrm = np.linalg.norm(x)
    return x / nrm if nrm > 0 else x


def _pca(x: np.ndarray, m: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    m = max(1, min(m, x.shape[0], x.shape[1]))
    return PCA(n_components=m, svd_solver="full").fit_transform(x)


def align_weights(embeddings, class_weights, n_components: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Put a head's class weight vectors into the space of the label-name embeddings.

    Both sets are centred and scaled to unit norm, reduced by PCA to a common
    ``m = min(n_components, d_names, d_weights, C - 1)`` dimensions, and the weights are mapped
    onto the names by an orthogonal Procrustes rotation with the optimal global scale. A
    rotation cannot bend the weight cloud, so a class whose weight row lands far from its name
    is one the model treats differently from what its name suggests.

    Returns
    -------
    names : (C, m) array
        The name embeddings in the common space.
    weights : (C, m) array
        The aligned weight vectors.
    cosine : (C,) array
        Cosine between each class's aligned weight and its name point (1 = same direction).
    """
    from scipy.linalg import orthogonal_procrustes

    E = np.asarray(embeddings, dtype=np.float64)
    W = np.asarray(class_weights, dtype=np.float64)
    C = E.shape[0]
    if W.shape[0] != C:
        raise ValueError(f"class_weights has {W.shape[0]} rows but there are {C} class embeddings")
    m = max(1, min(int(n_components), E.shape[1], W.shape[1], C - 1))
    Ep = _unit_cloud(_pca(_unit_cloud(E), m))
    Wp = _unit_cloud(_pca(_unit_cloud(W), m))
    R, s = orthogonal_procrustes(Wp, Ep)  # s = sum of singular values = optimal scale for unit clouds
    Wa = s * Wp @ R
    num = (Ep * Wa).sum(1)
    den = np.linalg.norm(Ep, axis=1) * np.linalg.norm(Wa, axis=1)
    cos = np.divide(num, den, out=np.zeros(C), where=den > 0)
    return Ep, Wa, cos


def head_class_weights(model_or_run, n_classes: int | None = None, codes=None) -> np.ndarray:
    """The per-class weight rows of a trained head's output layer, as a (C, h) array.

    Takes a :class:`semcat_kit.TrainRun`, an exported head (:func:`semcat_kit.load_head`;
    anything with ``.model``) or a torch module, and returns the weight of its last ``Linear``
    layer with ``C`` outputs, for ``label_map(..., class_weights=...)``.

    A head trained on binary taxonomy codes (``codes``: (C, B), taken from ``run.codes`` when
    present) outputs B bit logits ``x = W h + b``; its class scores
    ``s_c = sum_b log sigmoid(-x_b) + codes[c] . x`` differ between classes only through
    ``codes[c] . W h``, so its per-class weights are ``codes @ W`` (C, h).
    """
    model = getattr(model_or_run, "model", model_or_run)
    if codes is None:
        codes = getattr(model_or_run, "codes", None)
    if n_classes is None:
        tax = getattr(model_or_run, "taxonomy", None)
        n_classes = tax.n_classes if tax is not None else getattr(model, "n_classes", None)
    if n_classes is None and codes is not None:
        n_classes = np.asarray(codes).shape[0]
    if n_classes is None:
        raise ValueError("cannot tell the number of classes: pass n_classes")
    if not hasattr(model, "modules"):
        raise TypeError(f"expected a TrainRun or a torch module, not {type(model).__name__}")
    import torch

    if codes is not None:
        codes = np.asarray(codes, dtype=np.float64)
        if codes.ndim != 2 or codes.shape[0] != n_classes:
            raise ValueError(f"codes must be (C={n_classes}, B); got shape {codes.shape}")
    width = codes.shape[1] if codes is not None else n_classes
    last = None
    for m in model.modules():
        if isinstance(m, torch.nn.Linear) and m.out_features == width:
            last = m
    if last is None:
        what = f"{width} outputs (one per taxonomy bit)" if codes is not None else f"{n_classes} outputs"
        hint = "" if codes is not None else " (for a head trained on taxonomy codes pass codes=run.codes)"
        raise ValueError(f"the model has no Linear layer with {what}{hint}")
    w = last.weight.detach().cpu().numpy().astype(np.float64)
    return codes @ w if codes is not None else w


def _project_2d(x: np.ndarray, method: str, n_neighbors: int, random_state: int) -> np.ndarray:
    n = x.shape[0]
    if method == "pca":
        if n < 2:
            raise ValueError("a PCA map needs at least 2 classes")
        xy = _pca(x, 2)
        if xy.shape[1] < 2:
            xy = np.column_stack([xy, np.zeros(n)])
        return xy
    import warnings

    from .._core.optional import require

    umap = require("umap", "viz", "a UMAP map (method='umap'; method='pca' needs nothing)")

    nn = max(2, min(int(n_neighbors), n - 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs/random_state and small-graph notices
        reducer = umap.UMAP(n_components=2, n_neighbors=nn, random_state=random_state,
                            init="spectral" if n > 10 else "random", min_dist=0.1)
        return np.asarray(reducer.fit_transform(x), dtype=np.float64)


def project_labels(embeddings, taxonomy: Taxonomy, method: str = "umap", color_level: int = 1,
                   class_weights=None, n_neighbors: int = 15, random_state: int = 0,
                   n_components: int = 50) -> pd.DataFrame:
    """2-D coordinates of the label (class-name) embeddings, optionally with the class weights.

    Parameters
    ----------
    embeddings : array (C, d)
        One embedding per class of ``taxonomy`` (e.g. the text encoder on the class names).
    taxonomy : Taxonomy
    method : {"umap", "pca"}
        UMAP (umap-learn, fixed ``random_state``; ``n_neighbors`` capped at the number of
        points - 1; needs at least 3 classes) or PCA.
    color_level : int
        Taxonomy level that defines the ``group`` column (1 = top level).
    class_weights : array (C, h), optional
        Per-class weight vectors of a trained head (e.g. its final layer's weight rows). They
        are aligned to the names with :func:`align_weights` and projected together with them.

    Returns
    -------
    pandas.DataFrame
        ``index, path, name, group, x, y``; with ``class_weights`` also ``wx, wy`` (the
        weight point) and ``alignment`` (cosine between the aligned weight and the name).
    """
    tax = check_taxonomy(taxonomy)
    C = tax.n_classes
    if method not in ("umap", "pca"):
        raise ValueError(f"method must be 'umap' or 'pca', not {method!r}")
    if method == "umap" and C < 3:
        raise ValueError(f"a UMAP map needs at least 3 classes, this taxonomy has {C}; use method='pca'")
    if not 1 <= int(color_level) <= tax.max_depth:
        raise ValueError(f"color_level must be between 1 and {tax.max_depth} (the taxonomy depth), got {color_level}")
    E = _as_matrix(embeddings, "embeddings", C)
    if class_weights is not None:
        W = _as_matrix(class_weights, "class_weights", C)
        Ep, Wa, cos = align_weights(E, W, n_components=n_components)
        X = np.vstack([Ep, Wa])
    else:
        X = _unit_cloud(E)
        cos = None
    xy = _project_2d(X, method, n_neighbors, random_state)
    idx = np.arange(C)
    df = pd.DataFrame({"index": idx, "path": tax.classes, "name": tax.names,
                       "group": np.asarray(tax.level(idx, int(color_level))).astype(str),
                       "x": xy[:C, 0], "y": xy[:C, 1]})
    if cos is not None:
        df["wx"], df["wy"], df["alignment"] = xy[C:, 0], xy[C:, 1], cos
    return df
