"""Baselines a user would pick instead of a trained head: rows of :func:`semcat_kit.compare`.

A baseline is fitted on the same cached embeddings and labels as a head and returns class
probabilities over the taxonomy's classes, so :func:`semcat_kit.evaluate` (and CRM decoding)
score it exactly like a :class:`~semcat_kit.TrainRun`.

* :class:`LogisticBaseline`: ``sklearn.linear_model.LogisticRegression`` (multinomial, L2) on
  the features ``[text, image, text_mask, image_mask]`` (missing modality rows are zeros, flagged
  by the mask columns). With ``C="val"`` the inverse regularisation strength is chosen from a small
  log grid by validation top-1 (ties: the smaller ``C``), then the model is refitted **on the
  training split only** with that ``C`` (the validation split plays the role it plays for a head:
  model selection, never training data). Without validation data ``C="val"`` falls back to
  ``LogisticRegressionCV`` on the training split (stratified folds, ``neg_log_loss``).
* :class:`HiClassBaseline`: a local classifier per parent node (``hiclass``
  ``LocalClassifierPerParentNode``) with a logistic regression at every internal node of the
  tree. Class probabilities are the product of the local conditional probabilities along the
  class's path, ``P(c | x) = prod_{(u -> v) on root..c} P(v | u, x)`` (every path, not only the
  greedy one), so the rows sum to 1 over the taxonomy's classes. A class that is also an inner node
  (a shorter path that other classes extend) gets a "stop here" child at that node.

Every baseline is a scikit-learn estimator with the signature of :class:`semcat_kit.SemcatClassifier`:
``fit(X, y)`` (``taxonomy`` a constructor parameter, or ``fit(X, y, taxonomy=..., val=None, seed=0)``
as :func:`semcat_kit.compare` calls it), ``predict``, ``score``, ``get_params`` / ``set_params``,
and ``predict_proba(X)`` returning an ``(N, C)`` float32 array, column ``c`` = ``taxonomy.classes[c]``
(classes absent from training get probability 0).
"""
from __future__ import annotations

import copy
import time
import warnings
from typing import Sequence

import numpy as np

from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError

from .._core.contracts import as_embedding_table, as_labels

__all__ = ["Baseline", "LogisticBaseline", "HiClassBaseline", "features", "DEFAULT_CS"]

#: The log grid of ``C`` searched on the validation split.
DEFAULT_CS = (0.1, 1.0, 10.0, 100.0)
_STOP = "<stop>"


def features(emb, what: str = "emb") -> np.ndarray:
    """(N, d_text + d_image + 2) float32: text and image embeddings (zeros where missing) and their masks.

    A modality that the table does not have contributes no columns (and no mask column).
    """
    t = as_embedding_table(emb, what)
    cols = [x.numpy() for x in (t.text, t.image) if x is not None]
    if t.text is not None and t.image is not None:
        cols += [t.text_mask.numpy()[:, None].astype(np.float32), t.image_mask.numpy()[:, None].astype(np.float32)]
    return np.ascontiguousarray(np.concatenate(cols, axis=1), dtype=np.float32)


class BaselineNotFittedError(NotFittedError, RuntimeError):
    """``predict`` before ``fit`` (scikit-learn's NotFittedError; a RuntimeError as before)."""


class Baseline(ClassifierMixin, BaseEstimator):
    """A classifier fitted on embeddings, scored like a trained head (a scikit-learn estimator).

    Subclasses implement :meth:`_fit` (features, class indices) and :meth:`_proba` (features ->
    probabilities over the taxonomy's classes). ``seeded = False`` means the fit does not depend on
    the seed: :func:`semcat_kit.compare` fits it once and reuses it for every seed.

    ``fit(X, y)`` takes what :class:`semcat_kit.SemcatClassifier` takes: ``X`` an ``Embeddings`` or
    an (N, d) array (text), ``y`` labels or taxonomy class indices; the taxonomy is the constructor's,
    or ``fit(..., taxonomy=)`` (as :func:`semcat_kit.compare` calls it), or built from the labels.
    ``predict_proba`` has one column per taxonomy class (``classes_``: the class paths, or the
    indices ``0..C-1`` when ``y`` was given as indices), so ``evaluate`` scores it like a head.
    (Unlike ``SemcatClassifier``, classes of the taxonomy absent from ``y`` keep their column, as
    :func:`semcat_kit.compare` needs.)
    """

    seeded: bool = False

    # -- public API -------------------------------------------------------------------------
    def fit(self, X, y, *, taxonomy=None, val=None, seed: int = 0) -> "Baseline":
        """Fit on training embeddings and labels (class indices or label paths).

        ``val`` (``(emb, labels)``) is used only for model selection by the baselines that have
        something to select. Returns ``self``.
        """
        from ..datasets.taxonomy import Taxonomy

        tax = taxonomy if taxonomy is not None else self.taxonomy
        yarr = np.asarray(y)
        as_index = yarr.dtype.kind in "iuf" and tax is not None
        if tax is None:   # every distinct label a class (paths "A > B" give the tree)
            if yarr.ndim != 1:
                raise ValueError(f"y must be 1-D (one label per row), got shape {yarr.shape}")
            u = np.unique(yarr)
            tax = Taxonomy.from_paths([str(c) for c in u], on_conflict="keep", label_case="strict")   # each value a class
            if yarr.dtype.kind in "iuf":   # classes_ keep the given values, in the taxonomy's class order
                self._label_values_ = u[np.argsort(tax.index_of([str(c) for c in u]))]
            yarr = np.asarray([str(v) for v in yarr.tolist()], dtype=object)
        feats = features(X, "train emb")
        yi = as_labels(yarr, len(feats), tax, name="train labels", against="train embeddings")
        if len(yi) == 0:
            raise ValueError("no training rows")
        self._dims_ = self._table_dims(X)
        Xv = yv = None
        if val is not None:
            if not (isinstance(val, (tuple, list)) and len(val) == 2):
                raise ValueError("val must be a pair (embeddings, labels)")
            Xv = self._features_like(val[0], "val emb")
            yv = as_labels(val[1], len(Xv), tax, name="val labels", against="val embeddings")
        self.taxonomy_ = tax
        values = self.__dict__.pop("_label_values_", None)
        self.classes_ = (np.arange(tax.n_classes) if as_index else values if values is not None
                         else np.asarray(tax.classes, dtype=object))
        self.n_features_in_ = sum(self._dims_)
        self.C_, self.selection_, self.model_ = None, {}, None
        t0 = time.perf_counter()
        self._fit(feats, yi, Xv, yv, int(seed))
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def predict_proba(self, X, batch_size: int = 8192) -> np.ndarray:
        """(N, C) float32 probabilities over ``taxonomy.classes`` (0 for classes unseen in training)."""
        if not hasattr(self, "taxonomy_"):
            raise BaselineNotFittedError(f"{type(self).__name__} is not fitted; call fit(X, y, taxonomy=...) first")
        feats = self._features_like(X, "emb")
        C = self.taxonomy_.n_classes
        out = np.zeros((len(feats), C), dtype=np.float32)
        for s in range(0, len(feats), batch_size):
            p = self._proba(feats[s:s + batch_size])
            out[s:s + batch_size] = p
        out /= np.clip(out.sum(1, keepdims=True), 1e-12, None)
        return out

    def predict(self, X) -> np.ndarray:
        """The most probable class of each row (an entry of ``classes_``)."""
        p = self.predict_proba(X)
        return self.classes_[np.argmax(p, axis=1)]

    def clone(self) -> "Baseline":
        """An unfitted copy with the same settings (``sklearn.base.clone``)."""
        from sklearn.base import clone

        return clone(self)

    # -- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _table_dims(emb) -> tuple[int, int]:
        t = as_embedding_table(emb, "train emb")
        return (t.text_dim or 0, t.image_dim or 0)

    def _features_like(self, emb, what: str) -> np.ndarray:
        """Features of ``emb`` laid out like the training features (a lacking modality -> zeros, mask 0)."""
        td, idim = self._dims_
        t = as_embedding_table(emb, what)
        for name, dim, have in (("text", td, t.text_dim), ("image", idim, t.image_dim)):
            if dim and have and have != dim:
                raise ValueError(f"{what}.{name} has dimension {have} but the baseline was fitted on {dim}; "
                                 f"use the same {name} encoder as in training")
            if not dim and have:
                pass   # a modality the baseline never saw is ignored
        if td and t.text is None and not idim:
            raise ValueError(f"{what} has no text embeddings but the baseline was fitted on text only")
        if idim and t.image is None and not td:
            raise ValueError(f"{what} has no image embeddings but the baseline was fitted on images only")
        t = t.with_modalities(td or None, idim or None)
        cols = []
        if td:
            cols.append(t.text.numpy())
        if idim:
            cols.append(t.image.numpy())
        if td and idim:
            cols += [t.text_mask.numpy()[:, None].astype(np.float32), t.image_mask.numpy()[:, None].astype(np.float32)]
        return np.ascontiguousarray(np.concatenate(cols, axis=1), dtype=np.float32)

    def _fit(self, X, y, Xv, yv, seed):  # pragma: no cover - abstract
        raise NotImplementedError

    def _proba(self, X) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


def _check_C(C, Cs) -> None:
    if isinstance(C, str):
        if C != "val":
            raise ValueError(f"C must be a positive number or 'val' (chosen on the validation split), not {C!r}")
        if not Cs or any(not (isinstance(c, (int, float)) and c > 0) for c in Cs):
            raise ValueError(f"Cs must be a non-empty sequence of positive numbers, not {Cs!r}")
    elif isinstance(C, bool) or not isinstance(C, (int, float)) or not C > 0:
        raise ValueError(f"C must be a positive number or 'val', not {C!r}")


def _logreg(C: float, seed: int, max_iter: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=float(C), max_iter=max_iter, tol=1e-4, random_state=seed)


def _in_parallel(fit, items) -> list:
    """``[fit(item) for item in items]`` on as many threads as this process has cores, each fit's BLAS
    on one thread (no oversubscription): the grid's cold fits are independent, and their BLAS and
    scipy work releases the GIL."""
    import os

    from joblib import Parallel, delayed
    from threadpoolctl import threadpool_limits

    items = list(items)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:     # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    jobs = max(1, min(cores, len(items)))
    if jobs == 1:
        return [fit(i) for i in items]

    with threadpool_limits(limits=1):      # process-wide: set once around all the threads
        return Parallel(n_jobs=jobs, prefer="threads")(delayed(fit)(i) for i in items)


def _fit_quiet(model, X, y):
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y)


class LogisticBaseline(Baseline):
    """Multinomial logistic regression on ``[text, image, masks]`` (see the module docstring).

    Parameters
    ----------
    C : float or "val"
        Inverse L2 strength; ``"val"`` picks it from ``Cs`` by validation top-1 (refit on train
        only), or by ``LogisticRegressionCV`` (3 folds, train only) when no validation data is given.
    Cs : sequence of float
        The grid for ``C="val"``.
    max_iter : int
        lbfgs iterations.

    Attributes
    ----------
    C_ : float
        The ``C`` used by the final model.
    selection_ : dict
        ``{C: validation top-1}`` of the grid (empty when ``C`` was given).
    """

    def __init__(self, C="val", Cs: Sequence[float] = DEFAULT_CS, max_iter: int = 500, *, taxonomy=None):
        _check_C(C, Cs)
        self.taxonomy, self.C, self.Cs, self.max_iter = taxonomy, C, Cs, max_iter

    def __repr__(self) -> str:
        return f"LogisticBaseline(C={self.C!r}" + (f", Cs={tuple(self.Cs)}" if self.C == "val" else "") + ")"

    def _fit(self, X, y, Xv, yv, seed):
        C = self.C
        if C == "val" and Xv is not None:
            # each grid fit is what a user's plain LogisticRegression(C) gives (cold start: a
            # warm-started path stops at other points of these ill-conditioned problems); the chosen
            # fit is kept (it is fitted on the training split only) instead of being refitted
            Cs = [float(c) for c in self.Cs]
            fitted = dict(zip(Cs, _in_parallel(lambda c: _fit_quiet(_logreg(c, seed, self.max_iter), X, y), Cs)))
            for c, m in fitted.items():
                self.selection_[c] = float((m.predict(Xv) == yv).mean())
            best = max(self.selection_.values())
            self.C_ = float(min(c for c, v in self.selection_.items() if v == best))
            self.model_ = fitted[self.C_]
            return
        elif C == "val":
            from sklearn.linear_model import LogisticRegressionCV

            counts = np.bincount(y)
            folds = int(max(2, min(3, counts[counts > 0].min())))
            cv = LogisticRegressionCV(Cs=[float(c) for c in self.Cs], cv=folds, scoring="neg_log_loss", max_iter=self.max_iter,
                                      random_state=seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # folds missing rare classes, convergence
                _fit_quiet(cv, X, y)
            C = float(np.atleast_1d(cv.C_)[0])
        self.C_ = float(C)
        self.model_ = _fit_quiet(_logreg(self.C_, seed, self.max_iter), X, y)

    def _proba(self, X):
        out = np.zeros((len(X), self.taxonomy_.n_classes), dtype=np.float32)
        out[:, self.model_.classes_] = self.model_.predict_proba(X)
        return out


class HiClassBaseline(Baseline):
    """``hiclass.LocalClassifierPerParentNode`` with a logistic regression at every inner node.

    Parameters
    ----------
    C : float
        Inverse L2 strength of every local logistic regression (``"val"``: chosen from ``Cs`` by
        validation top-1, refit on train only).
    Cs : sequence of float
    max_iter : int
    """

    def __init__(self, C=10.0, Cs: Sequence[float] = DEFAULT_CS, max_iter: int = 500, *, taxonomy=None):
        _check_C(C, Cs)
        self.taxonomy, self.C, self.Cs, self.max_iter = taxonomy, C, Cs, max_iter

    def __repr__(self) -> str:
        return f"HiClassBaseline(C={self.C!r})"

    def _paths(self) -> list[list[str]]:
        """Each class's path, plus a stop token for classes that are inner nodes of another path."""
        tax = self.taxonomy_
        paths = [list(tax.node_paths[tax.class_nodes[c]]) for c in range(tax.n_classes)]
        prefixes = {tuple(p[:i]) for p in paths for i in range(1, len(p))}
        return [p + [_STOP] if tuple(p) in prefixes else p for p in paths]

    def _fit_one(self, C, X, y, seed):
        from .._core.optional import require

        LocalClassifierPerParentNode = require("hiclass", "peers", "HiClassBaseline").LocalClassifierPerParentNode
        paths = self._paths()
        depth = max(len(p) for p in paths)
        Y = np.array([paths[c] + [""] * (depth - len(paths[c])) for c in y], dtype=object)
        model = LocalClassifierPerParentNode(local_classifier=_logreg(C, seed, self.max_iter), n_jobs=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _fit_quiet(model, X, Y)
        return model

    def _fit(self, X, y, Xv, yv, seed):
        self._class_paths = self._paths()
        C = self.C
        if C == "val":
            if Xv is None:
                raise ValueError("HiClassBaseline(C='val') needs validation data (val=(emb, labels)); or give C")
            for c in map(float, self.Cs):
                self.model_ = self._fit_one(c, X, y, seed)
                self.selection_[c] = float((self._proba(Xv).argmax(1) == yv).mean())
            best = max(self.selection_.values())
            C = min(c for c, v in self.selection_.items() if v == best)
        self.C_ = float(C)
        self.model_ = self._fit_one(self.C_, X, y, seed)

    def _proba(self, X):
        m = self.model_
        sep = m.separator_
        # conditional probabilities of every child node given its parent node
        cond: dict[str, np.ndarray] = {}
        for node in m.hierarchy_.nodes:
            data = m.hierarchy_.nodes[node]
            clf = data.get("classifier")
            if clf is None or not list(m.hierarchy_.successors(node)):
                continue
            p = clf.predict_proba(X)
            for j, child in enumerate(np.asarray(clf.classes_)):
                cond[str(child)] = p[:, j]
        out = np.zeros((len(X), self.taxonomy_.n_classes), dtype=np.float32)
        for c, path in enumerate(self._class_paths):
            prob = np.ones(len(X), dtype=np.float64)
            for i in range(len(path)):
                name = sep.join(path[:i + 1])
                q = cond.get(name)
                if q is None:   # a node never seen in training
                    prob = np.zeros(len(X))
                    break
                prob = prob * q
            out[:, c] = prob
        return out
