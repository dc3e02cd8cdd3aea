"""The misprediction table: one row per product with its prediction, top-k, mistake severity (LCA
distance, :meth:`semcat_kit.Taxonomy.lca_distance`: 0 = right, 1 = a sibling, ...) and label-issue
hints; what :class:`semcat_kit.see.widgets.MispredictionBrowser` pages through."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .._core.contracts import as_k
from ..datasets.taxonomy import Taxonomy
from ..judge.metrics import mistake_distances
from ._inputs import check_taxonomy, labels_of, probs_of, top_k
from .label_noise import label_issues

__all__ = ["mispredictions"]


def mispredictions(catalog_df: pd.DataFrame, probs, y_true=None, taxonomy: Taxonomy | None = None,
                   top: int = 3, only_mistakes: bool = False, hedge_threshold=None,
                   issue_probs=None, precision: float = 0.98) -> pd.DataFrame:
    """One row per product with its prediction, top-k, mistake severity and label-issue score.

    Parameters
    ----------
    catalog_df : pandas.DataFrame
        Products aligned with ``probs`` (needs ``item_id``; ``title`` and ``image_path`` are
        used when present).
    probs : array (N, C)
        Predicted probabilities.
    y_true : array (N,) of int or label paths, optional
        Given labels; defaults to ``catalog_df["label"]``.
    taxonomy : Taxonomy
        The taxonomy the model predicts.
    top : int
        How many top predictions to list (``top1_label``, ``top1_prob``, ...).
    only_mistakes : bool
        Keep only the rows whose top prediction differs from the given label.
    hedge_threshold : HedgeCalibration or float, optional
        Also give each product its hedged prediction: with a calibration (``head.hedging``,
        :func:`semcat_kit.calibrate_hedging`) at the threshold and temperature it calibrated for
        ``precision``; with a number, at that threshold on the probabilities themselves
        (:func:`semcat_kit.judge.hedging.hedge`). Columns ``hedged_label`` (the node's path, ``""``
        for the root), ``hedged_prob``, ``hedged_is_leaf``, ``hedged_correct`` (the true class lies
        under it).
    issue_probs : array (N, C), optional
        Out-of-sample probabilities of the same rows for the label-issue columns (e.g. the
        cross-validated ``label_issues(X=..., y=..., cv=5).attrs["probs"]`` of these items);
        default ``probs``.
    precision : float
        The target precision read from a calibration given as ``hedge_threshold`` (default 0.98).

    Returns
    -------
    pandas.DataFrame
        Columns ``row, item_id, title, image_path, true_index, true_label, pred_index,
        pred_label, confidence, p_true, is_mistake, lca_distance, top{j}_label, top{j}_prob,
        given_label, label_refiled, label_issue_score, is_label_issue, suggested_label``.
        ``given_label`` is the catalog's path when the taxonomy re-filed it under another class
        (``label_refiled``; a minority path of a conflict, see ``taxonomy.aliases``), else
        ``true_label``. ``is_label_issue`` is :func:`label_issues`' flag or ``label_refiled``;
        ``suggested_label`` is then its suggestion, or the class the taxonomy filed it under.
    """
    tax = check_taxonomy(taxonomy)
    if not isinstance(catalog_df, pd.DataFrame):
        raise TypeError(f"catalog_df must be a pandas DataFrame, not {type(catalog_df).__name__}")
    if "item_id" not in catalog_df.columns:
        raise ValueError("catalog_df needs an 'item_id' column (as returned by sk.datasets.load_catalog)")
    p = probs_of(probs, tax.n_classes)
    N = len(catalog_df)
    if p.shape[0] != N:
        raise ValueError(f"probs has {p.shape[0]} rows but catalog_df has {N}; they must be aligned row by row")
    if y_true is None:
        if "label" not in catalog_df.columns:
            raise ValueError("pass y_true or give catalog_df a 'label' column")
        y_true = catalog_df["label"].to_numpy()
    y = labels_of(y_true, tax, N)
    top = as_k(top, "top")
    ti, tv = top_k(p, top)
    pred = ti[:, 0] if N else np.zeros(0, dtype=np.int64)
    classes = np.asarray(tax.classes, dtype=object)
    if issue_probs is not None:
        issue_probs = probs_of(issue_probs, tax.n_classes, "issue_probs")
        if len(issue_probs) != N:
            raise ValueError(f"issue_probs has {len(issue_probs)} rows but catalog_df has {N}; they must be aligned "
                             "row by row")
    issues = label_issues(p if issue_probs is None else issue_probs, y)

    def col(name, default):
        return catalog_df[name].to_numpy() if name in catalog_df.columns else np.full(N, default, dtype=object)

    out = {
        "row": np.arange(N),
        "item_id": catalog_df["item_id"].astype(str).to_numpy(),
        "title": pd.Series(col("title", "")).fillna("").astype(str).to_numpy(),
        "image_path": np.array([v if isinstance(v, str) and v else None for v in col("image_path", None)],
                               dtype=object),
        "true_index": y,
        "true_label": classes[y],
        "pred_index": pred,
        "pred_label": classes[pred],
        "confidence": tv[:, 0] if N else np.zeros(0),
        "p_true": p[np.arange(N), y],
        "is_mistake": pred != y,
        "lca_distance": np.asarray(mistake_distances(pred, y, tax), dtype=np.int64).reshape(N),
    }
    for j in range(ti.shape[1]):
        out[f"top{j + 1}_label"] = classes[ti[:, j]]
        out[f"top{j + 1}_prob"] = tv[:, j]
    # the catalog's own path when the taxonomy re-filed it (a minority path of a conflict, e.g.
    # "Apparel > Topwear > Belts" read as "Accessories > Belts > Belts"): label noise too, which
    # the model cannot reveal since the given class was already replaced
    given = classes[y].copy()
    if "label" in catalog_df.columns and tax.aliases:
        raw = catalog_df["label"].reset_index(drop=True)
        hit = (raw.map(lambda v: tax.aliases.get(v) if isinstance(v, str) else None).to_numpy(dtype=object)
               == given)
        given[hit] = raw.to_numpy(dtype=object)[hit]
    refiled = given != classes[y]
    out["given_label"] = given
    out["label_refiled"] = refiled
    out["label_issue_score"] = issues["self_confidence"].to_numpy()
    out["is_label_issue"] = issues["is_issue"].to_numpy() | refiled
    out["suggested_label"] = np.where(refiled & ~issues["is_issue"].to_numpy(), classes[y],
                                      classes[issues["suggested"].to_numpy()])
    if hedge_threshold is not None:
        from ..judge.hedging import HedgeCalibration, hedge

        h = (hedge_threshold.predict(p, tax, precision) if isinstance(hedge_threshold, HedgeCalibration)
             else hedge(p, tax, hedge_threshold))
        out.update(hedged_label=h.path, hedged_prob=h.prob, hedged_is_leaf=h.is_leaf, hedged_correct=h.correct(y))
    df = pd.DataFrame(out)
    # keep None (not NaN) for missing images: pandas >= 3 would infer a string dtype
    df["image_path"] = pd.Series(out["image_path"], dtype=object)
    if only_mistakes:
        df = df[df["is_mistake"]].reset_index(drop=True)
    return df
