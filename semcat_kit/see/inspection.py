"""Data preparation for inspecting a model: tables behind the figures (:mod:`semcat_kit.see.viz`)
and the explorers (:mod:`semcat_kit.see.widgets`).

Everything here is plain numpy / pandas so it can be tested and reused without a browser:

* :func:`label_issues` - confident-learning style hints that a given label is wrong;
* :func:`mispredictions` - one row per product with its prediction, top-k, severity, issue score;
* :func:`neighbor_table`, :func:`top_confusions`, :func:`neighborhood_confusion` - a class's
  semantic neighbours and confusions;
* :func:`severity_table` - LCA distance of mistakes per configuration;
* :func:`example_classes`, :func:`confused_pairs`, :func:`graph_neighborhood`,
  :func:`search_classes` - what to show when there are thousands of classes: examples chosen
  from the data, the top confused pairs, a class's neighbourhood, classes found by typing;
* :func:`project_labels` - 2-D maps of label embeddings (and of a head's class weights);
* :func:`history_frame` - training histories in long form.

Mistake severity is the LCA distance of :meth:`semcat_kit.Taxonomy.lca_distance`
(0 = right, 1 = a sibling, ...).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .._core.contracts import as_k, as_labels, as_neighbors, as_probs
from ..judge.metrics import metric_info, mistake_distances
from ..datasets.taxonomy import Taxonomy

__all__ = [
    "label_issues",
    "mispredictions",
    "neighbor_table",
    "top_confusions",
    "neighborhood_confusion",
    "severity_table",
    "project_labels",
    "align_weights",
    "head_class_weights",
    "history_frame",
    "class_index",
    "select_classes",
    "example_classes",
    "confused_pairs",
    "graph_neighborhood",
    "search_classes",
]


# --------------------------------------------------------------------------- input checks
def _check_taxonomy(taxonomy) -> Taxonomy:
    if not isinstance(taxonomy, Taxonomy):
        raise TypeError(f"taxonomy must be a semcat_kit.Taxonomy, not {type(taxonomy).__name__}")
    return taxonomy


def _as_probs(probs, n_classes: int | None = None, name: str = "probs") -> np.ndarray:
    return as_probs(probs, n_classes, name=name)


def _as_labels(y, taxonomy: Taxonomy, n: int | None = None, name: str = "y_true") -> np.ndarray:
    """Class indices from integer indices or label strings (full paths or aliases)."""
    return as_labels(y, n, taxonomy, name=name, against="the predictions")


def _as_pred(pred_or_probs, taxonomy: Taxonomy, name: str = "pred_or_probs") -> np.ndarray:
    """Predicted class indices from a (N,) index array or a (N, C) probability matrix."""
    arr = np.asarray(pred_or_probs)
    if arr.ndim == 2:
        return _as_probs(arr, taxonomy.n_classes, name).argmax(1).astype(np.int64)
    if arr.ndim == 1:
        return _as_labels(arr, taxonomy, name=name)
    raise ValueError(f"{name} must be predicted class indices (N,) or probabilities (N, C), got shape {arr.shape}")


def _as_neighbors(neighbors, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, sims) from a :class:`semcat_kit.labels.similarity.Neighbors` or an ``(indices, sims)`` pair."""
    return as_neighbors(neighbors, n_classes)


def class_index(cls, taxonomy: Taxonomy) -> int:
    """Index of a class given as an index, a full path / alias, or a unique short name."""
    C = taxonomy.n_classes
    if isinstance(cls, (int, np.integer)):
        if not 0 <= int(cls) < C:
            raise ValueError(f"class index {cls} is outside [0, {C})")
        return int(cls)
    if not isinstance(cls, str):
        raise TypeError(f"cls must be a class index or a label path, not {type(cls).__name__}")
    try:
        return int(taxonomy.index_of(cls))
    except KeyError:
        pass
    hits = [i for i, n in enumerate(taxonomy.names) if n == cls]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise KeyError(f"class name {cls!r} is ambiguous: {[taxonomy.classes[i] for i in hits]}; give the full path")
    raise KeyError(f"{cls!r} is not a class of this taxonomy; give a full path like {taxonomy.classes[0]!r}")


def select_classes(classes, taxonomy: Taxonomy) -> np.ndarray:
    """Class indices from a node path (all classes in that branch) or a list of indices / paths."""
    tax = _check_taxonomy(taxonomy)
    if isinstance(classes, str):
        pre = classes.strip()
        out = [i for i, c in enumerate(tax.classes) if c == pre or c.startswith(pre + tax.sep)]
        if not out:
            raise KeyError(f"no class lies in branch {classes!r}; give a node path like "
                           f"{tax.sep.join(tax.classes[0].split(tax.sep)[:1])!r}")
        return np.array(out, dtype=np.int64)
    out = [class_index(c, tax) for c in classes]
    if not out:
        raise ValueError("classes is empty: give a branch path or some class indices / paths")
    return np.unique(np.array(out, dtype=np.int64))


def _short_labels(taxonomy: Taxonomy, idx: Sequence[int]) -> list[str]:
    """Short display names, made unique by prefixing parents where names repeat."""
    idx = [int(i) for i in idx]
    labels = [taxonomy.names[i] for i in idx]
    for depth in range(2, taxonomy.max_depth + 1):
        dup = {lab for lab in labels if labels.count(lab) > 1}
        if not dup:
            break
        labels = [taxonomy.sep.join(taxonomy.classes[i].split(taxonomy.sep)[-depth:]) if lab in dup else lab
                  for lab, i in zip(labels, idx)]
    return labels


def _topk(p: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k largest entries per row, largest first (ties: lower index)."""
    from ..judge.metrics import topk

    idx = topk(p, k)
    return idx, np.take_along_axis(p, idx, 1)


# --------------------------------------------------------------------------- label issues
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
        Trained on each fold (default ``SemcatClassifier(taxonomy=taxonomy, data_defaults=True)``).
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
            estimator = SemcatClassifier(taxonomy=taxonomy, data_defaults=True)
        elif taxonomy is not None and estimator.taxonomy is None:
            estimator = estimator.set_params(taxonomy=taxonomy)
        taxonomy = estimator.taxonomy
        probs = oos = cross_val_proba(estimator, X, y, cv=cv, random_state=random_state, progress=progress)
    elif probs is None:
        raise ValueError("label_issues needs out-of-sample probs, or the embeddings X and cv=<folds>")
    if y is None:
        raise ValueError("label_issues needs the given labels y")
    p = _as_probs(probs)
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


# --------------------------------------------------------------------------- misprediction table
def mispredictions(catalog_df: pd.DataFrame, probs, y_true=None, taxonomy: Taxonomy | None = None,
                   top: int = 3, only_mistakes: bool = False, hedge_threshold: float | None = None,
                   issue_probs=None) -> pd.DataFrame:
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
    hedge_threshold : float, optional
        Also give each product its hedged prediction at this threshold (e.g.
        ``head.hedging.threshold(0.98)``; :func:`semcat_kit.judge.hedging.hedge`): columns
        ``hedged_label`` (the node's path, ``""`` for the root), ``hedged_prob``, ``hedged_is_leaf``,
        ``hedged_correct`` (the true class lies under it).
    issue_probs : array (N, C), optional
        Out-of-sample probabilities of the same rows for the label-issue columns (e.g. the
        cross-validated ``label_issues(X=..., y=..., cv=5).attrs["probs"]`` of these items);
        default ``probs``.

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
    tax = _check_taxonomy(taxonomy)
    if not isinstance(catalog_df, pd.DataFrame):
        raise TypeError(f"catalog_df must be a pandas DataFrame, not {type(catalog_df).__name__}")
    if "item_id" not in catalog_df.columns:
        raise ValueError("catalog_df needs an 'item_id' column (as returned by sk.datasets.load_catalog)")
    p = _as_probs(probs, tax.n_classes)
    N = len(catalog_df)
    if p.shape[0] != N:
        raise ValueError(f"probs has {p.shape[0]} rows but catalog_df has {N}; they must be aligned row by row")
    if y_true is None:
        if "label" not in catalog_df.columns:
            raise ValueError("pass y_true or give catalog_df a 'label' column")
        y_true = catalog_df["label"].to_numpy()
    y = _as_labels(y_true, tax, N)
    top = as_k(top, "top")
    ti, tv = _topk(p, top)
    pred = ti[:, 0] if N else np.zeros(0, dtype=np.int64)
    classes = np.asarray(tax.classes, dtype=object)
    if issue_probs is not None:
        issue_probs = _as_probs(issue_probs, tax.n_classes, "issue_probs")
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
        from ..judge.hedging import hedge

        h = hedge(p, tax, hedge_threshold)
        out.update(hedged_label=h.path, hedged_prob=h.prob, hedged_is_leaf=h.is_leaf, hedged_correct=h.correct(y))
    df = pd.DataFrame(out)
    # keep None (not NaN) for missing images: pandas >= 3 would infer a string dtype
    df["image_path"] = pd.Series(out["image_path"], dtype=object)
    if only_mistakes:
        df = df[df["is_mistake"]].reset_index(drop=True)
    return df


# --------------------------------------------------------------------------- neighbours & confusions
def neighbor_table(neighbors, taxonomy: Taxonomy, k: int | None = None, cls=None) -> pd.DataFrame:
    """The k-NN label graph as an edge list.

    Parameters
    ----------
    neighbors : Neighbors or (indices, sims)
        Top-k neighbours per class (padding ``-1``), as from ``sk.similarity.label_neighbors``.
    taxonomy : Taxonomy
    k : int, optional
        Keep the first ``k`` neighbours of each class (all when None).
    cls : int or str, optional
        Only the neighbours of this class.

    Returns
    -------
    pandas.DataFrame
        ``source, target, rank`` (1 = nearest), ``sim, source_label, target_label,
        same_parent, lca_distance``.
    """
    tax = _check_taxonomy(taxonomy)
    idx, sims = _as_neighbors(neighbors, tax.n_classes)
    if k is not None:
        k = as_k(k)
        idx, sims = idx[:, :k], sims[:, :k]
    rows = np.arange(tax.n_classes) if cls is None else np.array([class_index(cls, tax)])
    src = np.repeat(rows, idx.shape[1])
    tgt = idx[rows].ravel()
    sim = sims[rows].ravel()
    rank = np.tile(np.arange(1, idx.shape[1] + 1), len(rows))
    keep = (tgt >= 0) & (tgt != src)
    src, tgt, sim, rank = src[keep], tgt[keep], sim[keep], rank[keep]
    classes = np.asarray(tax.classes, dtype=object)
    parent = np.array([tax.node_parent[v] for v in tax.class_nodes], dtype=np.int64)
    dist = np.asarray(tax.lca_distance(src, tgt), dtype=np.int64).reshape(len(src))
    return pd.DataFrame({"source": src, "target": tgt, "rank": rank, "sim": sim,
                         "source_label": classes[src], "target_label": classes[tgt],
                         "same_parent": parent[src] == parent[tgt], "lca_distance": dist})


def top_confusions(pred_or_probs, y_true, taxonomy: Taxonomy, cls, n: int = 10) -> pd.DataFrame:
    """The classes most often confused with ``cls``, in either direction.

    Returns
    -------
    pandas.DataFrame
        ``other, other_label, true_as_other`` (items of ``cls`` predicted as ``other``),
        ``other_as_true`` (items of ``other`` predicted as ``cls``), ``total``, ``lca_distance``,
        sorted by ``total`` (then ``true_as_other``), at most ``n`` rows.
    """
    tax = _check_taxonomy(taxonomy)
    pred = _as_pred(pred_or_probs, tax)
    y = _as_labels(y_true, tax, len(pred))
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
    tax = _check_taxonomy(taxonomy)
    pred = _as_pred(pred_or_probs, tax)
    y = _as_labels(y_true, tax, len(pred))
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
    tax = _check_taxonomy(taxonomy)
    pred = _as_pred(pred_or_probs, tax)
    y = _as_labels(y_true, tax, len(pred))
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


def example_classes(taxonomy: Taxonomy, neighbors, counts=None, cls=None) -> pd.DataFrame:
    """Classes to show as examples, chosen from the data (no class names written in code).

    ``anchor`` is ``cls`` or else the class with most products (``counts``; the first class
    without counts); ``same branch`` is its most similar neighbour under the same parent (else
    under the same top-level category); ``other branch`` its most similar neighbour under another
    top-level category (else under another parent, never an ancestor or descendant of the
    anchor). A role without a candidate is left out.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``role``: ``class, path, products, sim, lca_distance``.
    """
    tax = _check_taxonomy(taxonomy)
    if counts is not None:
        counts = np.asarray(counts.reindex(tax.classes).fillna(0) if isinstance(counts, pd.Series) else counts)
        if counts.shape != (tax.n_classes,):
            raise ValueError(f"counts must have one entry per class ({tax.n_classes}), got shape {counts.shape}")
    a = class_index(cls, tax) if cls is not None else int(np.argmax(counts)) if counts is not None else 0
    nb = neighbor_table(neighbors, tax, cls=a).sort_values(["sim", "rank"], ascending=[False, True], kind="stable")
    top = np.asarray(tax.level(nb["target"].to_numpy(), 1)).astype(str)
    my_top = str(tax.level(np.array([a]), 1)[0])
    rows = [("anchor", a, np.nan)]
    same = nb[nb["same_parent"].to_numpy()]
    if not len(same):
        same = nb[top == my_top]
    if len(same):
        rows.append(("same branch", int(same["target"].iloc[0]), float(same["sim"].iloc[0])))
    other = nb[top != my_top]
    if not len(other):   # all neighbours in one top-level branch: the nearest in another sub-branch,
        t = nb["target"].to_numpy()   # never an ancestor or descendant of the anchor
        lca = np.asarray(tax.lca_depth(np.full(len(t), a), t)).reshape(len(t))
        lineage = lca >= np.minimum(tax.depth(np.full(len(t), a)), tax.depth(t))
        other = nb[~nb["same_parent"].to_numpy() & ~lineage]
    if len(other):
        rows.append(("other branch", int(other["target"].iloc[0]), float(other["sim"].iloc[0])))
    idx = np.array([r[1] for r in rows], dtype=np.int64)
    return pd.DataFrame({"class": idx, "path": [tax.classes[i] for i in idx],
                         "products": counts[idx].astype(np.int64) if counts is not None else np.nan,
                         "sim": [r[2] for r in rows],
                         "lca_distance": np.asarray(tax.lca_distance(np.full(len(idx), a), idx)).reshape(len(idx))},
                        index=pd.Index([r[0] for r in rows], name="role"))


def graph_neighborhood(neighbors, taxonomy: Taxonomy, center, k: int = 5, max_nodes: int = 300,
                       hops: int | None = None) -> np.ndarray:
    """Classes within a few k-NN hops of ``center`` (breadth first, at most ``max_nodes``).

    Edges are followed both ways (a class's neighbours and the classes that list it). ``hops``
    limits the depth (default: as deep as ``max_nodes`` allows). Returns class indices, the
    center first, then by hop distance.
    """
    tax = _check_taxonomy(taxonomy)
    idx, _ = _as_neighbors(neighbors, tax.n_classes)
    idx = idx[:, : as_k(k)]
    c = class_index(center, tax)
    src = np.repeat(np.arange(tax.n_classes), idx.shape[1])
    tgt = idx.ravel()
    ok = tgt >= 0
    import scipy.sparse as sp

    A = sp.csr_matrix((np.ones(int(ok.sum()), dtype=np.int8), (src[ok], tgt[ok])), shape=(tax.n_classes,) * 2)
    A = (A + A.T).tocsr()
    seen = {c: 0}
    order = [c]
    frontier = [c]
    depth = 0
    while frontier and len(order) < max_nodes and (hops is None or depth < hops):
        depth += 1
        nxt = []
        for v in frontier:
            for u in A.indices[A.indptr[v]:A.indptr[v + 1]]:
                u = int(u)
                if u not in seen and len(order) < max_nodes:
                    seen[u] = depth
                    order.append(u)
                    nxt.append(u)
        frontier = nxt
    return np.array(order, dtype=np.int64)


def search_classes(text: str, taxonomy: Taxonomy, limit: int = 20) -> list[str]:
    """Class paths matching typed text: exact path, then paths whose name starts with it, then
    paths containing it (case-insensitive; every word must appear). At most ``limit`` paths."""
    tax = _check_taxonomy(taxonomy)
    t = " ".join(str(text).lower().split())
    if not t:
        return list(tax.classes[:limit])
    words = t.split(" ")
    exact, start, contain = [], [], []
    for c, nm in zip(tax.classes, tax.names):
        lc = c.lower()
        if lc == t:
            exact.append(c)
        elif nm.lower().startswith(t):
            start.append(c)
        elif all(w in lc for w in words):
            contain.append(c)
        if len(exact) + len(start) >= limit:
            break
    return (exact + start + contain)[:limit]


def _interleave(a: list, b: list) -> list:
    out = []
    for i in range(max(len(a), len(b))):
        if i < len(a):
            out.append(int(a[i]))
        if i < len(b):
            out.append(int(b[i]))
    return out


# --------------------------------------------------------------------------- severity
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
    tax = _check_taxonomy(taxonomy)
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be a non-empty dict: config name -> (probs or pred, y_true)")
    dists = np.arange(1, tax.max_depth + 1)
    rows = []
    for name, pair in results.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"results[{name!r}] must be a (probs or pred, y_true) pair")
        pred = _as_pred(pair[0], tax, name=f"results[{name!r}][0]")
        y = _as_labels(pair[1], tax, len(pred), name=f"results[{name!r}][1]")
        d = np.asarray(mistake_distances(pred, y, tax)).reshape(len(pred))
        d = d[d > 0]
        cnt = np.bincount(d, minlength=tax.max_depth + 1)[1:]
        for dist, n_ in zip(dists, cnt):
            rows.append(dict(config=str(name), distance=int(dist), count=int(n_),
                             fraction=float(n_ / len(d)) if len(d) else 0.0,
                             n_mistakes=int(len(d)), n_items=int(len(pred))))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- projections
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
    tax = _check_taxonomy(taxonomy)
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


# --------------------------------------------------------------------------- histories
_LOSS = {"focal", "kl", "total", "loss", "bce", "train_loss", "val_loss"}
PANELS = ("loss", "accuracy", "severity", "alpha", "lr", "other")


def _panel(metric: str) -> str:
    if metric in _LOSS or metric.endswith("_loss"):
        return "loss"
    if metric in ("alpha", "lr"):
        return metric
    if metric.startswith("val_"):   # panels by the registry's kind: tree distances apart
        try:
            return "severity" if metric_info(metric).kind == "tree distance" else "accuracy"
        except KeyError:
            return "accuracy"
    return "other"


def history_frame(history, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Training histories in long form for plotting.

    Parameters
    ----------
    history : DataFrame, TrainRun, or dict name -> DataFrame/TrainRun
        Per-epoch rows with an ``epoch`` column (``TrainRun.history``).
    metrics : list of str, optional
        Columns to keep (default: every numeric column except timings ``*seconds``).

    Returns
    -------
    pandas.DataFrame
        ``run, epoch, metric, value, panel`` where ``panel`` is ``"loss"`` (loss, focal, kl, bce,
        total, ``*_loss`` incl. ``val_loss``), ``"accuracy"`` (other ``val_*``: top-k, F1,
        level accuracies, ``nbrs@k``, ECE, ...), ``"severity"`` (``val_mistake_severity``,
        ``val_hdist@k``: tree distances), ``"alpha"``, ``"lr"`` or ``"other"``; missing values dropped.
    """
    if isinstance(history, Mapping):
        items = list(history.items())
        if not items:
            raise ValueError("history dict is empty: give name -> TrainRun.history")
    else:
        items = [("run", history)]
    frames = []
    for name, h in items:
        h = getattr(h, "history", h)
        if not isinstance(h, pd.DataFrame):
            raise TypeError(f"history {name!r} must be a DataFrame (TrainRun.history), not {type(h).__name__}")
        if "epoch" not in h.columns:
            raise ValueError(f"history {name!r} has no 'epoch' column; columns are {list(h.columns)}")
        if metrics is not None:
            missing = [m for m in metrics if m not in h.columns]
            if missing:
                raise ValueError(f"history {name!r} has no column(s) {missing}; it has {list(h.columns)}")
            num = [m for m in metrics if m != "epoch"]
        else:
            num = [c for c in h.columns if c != "epoch" and not str(c).endswith("seconds")
                   and pd.api.types.is_numeric_dtype(h[c]) and not pd.api.types.is_bool_dtype(h[c])]
        if not num:
            raise ValueError(f"history {name!r} has no numeric metric columns besides 'epoch'")
        long = h.melt(id_vars="epoch", value_vars=num, var_name="metric", value_name="value")
        long["value"] = pd.to_numeric(long["value"], errors="coerce")
        long = long.dropna(subset=["value"])
        long.insert(0, "run", str(name))
        frames.append(long)
    out = pd.concat(frames, ignore_index=True)
    out["panel"] = out["metric"].map(_panel)
    return out
