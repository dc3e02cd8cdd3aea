"""A scikit-learn estimator over :func:`semcat_kit.train`: :class:`SemcatClassifier`.

``SemcatClassifier(taxonomy=tax).fit(X, y)`` trains the fusion head (``sk.train``) and then behaves
like any scikit-learn classifier: ``predict_proba``, ``predict``, ``classes_``, ``score``,
``get_params`` / ``set_params``, ``clone``; it works inside ``Pipeline``, ``GridSearchCV`` and
``cross_val_predict(method="predict_proba")`` (whose output cleanlab takes as ``pred_probs``).

Inputs
------
``X`` is an :class:`~semcat_kit.Embeddings` table (text and/or image, with their masks) or a 2-D array.
An array is the text embedding, or ``[text | image]`` side by side when ``text_dim`` says where the
text columns end (``sk.learn.estimator.to_matrix(emb)`` builds it); a block that is all zeros in a
row is that modality missing (the encoders' vectors are L2-normalised, never all zero).

``y`` is labels (full category paths, or any hashable values) or class indices of ``taxonomy``.
``classes_`` are the distinct values of ``y`` seen in ``fit`` (sorted, scikit-learn's rule; labels are
spelled as the taxonomy's classes, so an alias of a merged path counts as its class), and
``predict_proba`` has one column per entry of ``classes_``: the head's probabilities of those
classes, renormalised over them (classes of the taxonomy absent from ``y`` get no column).
Integers are taken as taxonomy class indices when a taxonomy is given; without one, the taxonomy is
built from the labels (``Taxonomy.from_paths(str(label))``, so ``"A > B"`` paths give a tree).

.. note:: ``cross_val_predict(..., method="predict_proba")`` label-encodes ``y`` (``0..K-1`` over the
   distinct values, sorted) before every ``fit``. With a taxonomy, pass ``y`` as its class indices
   (``tax.index_of(labels)``) over a taxonomy whose every class occurs in ``y``
   (``Taxonomy.from_paths(labels)``): the encoding is then the identity. For a taxonomy with classes
   that no item has, :func:`cross_val_proba` is the safe equivalent (it splits the folds itself).

Hyperparameters are the :class:`~semcat_kit.TrainConfig` fields (same names and defaults, read from
the dataclass, so a field added there is a parameter here), plus ``taxonomy``, ``neighbors``,
``text_dim``, ``sep``, ``random_state`` (the config's ``seed``) and ``progress``.
"""
from __future__ import annotations

import dataclasses
import inspect
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .config import TrainConfig
from .training import train

__all__ = ["SemcatClassifier", "to_matrix", "cross_val_proba", "CONFIG_PARAMS"]

_CONFIG_FIELDS = [f for f in dataclasses.fields(TrainConfig) if f.name != "seed"]
#: TrainConfig fields that are SemcatClassifier parameters (all but ``seed``, which is ``random_state``).
CONFIG_PARAMS = tuple(f.name for f in _CONFIG_FIELDS)
_OWN = (("taxonomy", None), ("neighbors", None), ("text_dim", None), ("sep", " > "),
        ("random_state", None), ("progress", False))


def _default(f: dataclasses.Field):
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def to_matrix(emb) -> tuple[np.ndarray, int | None]:
    """``(X, text_dim)``: an ``Embeddings`` as one float32 array ``[text | image]`` (missing rows zero).

    ``SemcatClassifier(text_dim=text_dim).fit(X, y)`` then reads it as the two modalities again.
    ``text_dim`` is None when the table has only text (the whole array is text) and 0 when it has
    only images.
    """
    text, image = getattr(emb, "text", None), getattr(emb, "image", None)
    if text is None and image is None:
        raise ValueError("to_matrix: the embeddings have neither text nor image vectors")
    parts = []
    for x, mask in ((text, getattr(emb, "text_mask", None)), (image, getattr(emb, "image_mask", None))):
        if x is None:
            continue
        a = np.array(x, dtype=np.float32)
        if mask is not None:
            a[~np.asarray(mask, dtype=bool)] = 0.0
        parts.append(a)
    X = np.ascontiguousarray(np.concatenate(parts, axis=1)) if len(parts) > 1 else parts[0]
    text_dim = None if image is None else (0 if text is None else int(text.shape[1]))
    return X, text_dim


class SemcatClassifier(ClassifierMixin, BaseEstimator):
    """scikit-learn classifier that trains the fusion head with :func:`semcat_kit.train`.

    Parameters
    ----------
    taxonomy : Taxonomy, optional
        The class tree (hierarchical soft labels, tree metrics, codes). Default: built from the
        labels of ``fit`` (``Taxonomy.from_paths`` with ``sep``; every distinct label a class).
    neighbors : similarity.Neighbors, optional
        Label neighbours of the taxonomy's classes, for the neighbour soft-label kinds
        (``smoothing="semantic"`` / ``"topk"`` / ``"threshold"``).
    text_dim : int, optional
        For array ``X``: the first ``text_dim`` columns are the text embedding, the rest the image
        embedding (``0``: all image). None: the whole array is text.
    sep : str
        Path separator when the taxonomy is built from the labels.
    random_state : int, optional
        The config's ``seed`` (None: its default, 0 -- training is deterministic on CPU).
    progress : bool
        Show the training progress bar.
    **TrainConfig fields
        ``smoothing, k, alpha, curriculum, focal_gamma, kl_weight, epochs, lr, device, ...``: see
        :class:`semcat_kit.TrainConfig` (same names and defaults: the fields left at ``"auto"`` are
        decided by the data as everywhere else, :meth:`semcat_kit.TrainConfig.resolve`).

    Attributes
    ----------
    classes_ : numpy.ndarray
        The distinct labels of ``y`` (sorted); columns of :meth:`predict_proba`.
    class_index_ : numpy.ndarray of int
        Taxonomy class index of each entry of ``classes_``.
    taxonomy_ : Taxonomy
        The taxonomy used (given or built).
    run_ : TrainRun
        The trained head (``sk.export_head(clf.run_, dir)`` exports it).
    config_ : TrainConfig
        The config trained with (its ``"auto"`` fields resolved for the data of ``fit``).
    n_iter_ : int
        L-BFGS iterations (``solver="lbfgs"``) or epochs (minibatch) of the run.
    n_features_in_ : int
        Columns of ``X`` (text + image dimensions for an ``Embeddings``).
    """

    def __init__(self, *args, **kwargs):   # replaced below by an explicit signature (see _make_init)
        raise TypeError("replaced at import")

    # ------------------------------------------------------------------ sklearn protocol
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.classifier_tags.multi_class = True
        return tags

    def _config(self) -> TrainConfig:
        params = {f.name: getattr(self, f.name) for f in _CONFIG_FIELDS}
        if self.random_state is not None:
            params["seed"] = self.random_state
        return TrainConfig(**params)      # train() resolves the "auto" fields for the data

    def _table(self, X, *, reset: bool, y=None):   # reset: called by fit
        """X -> (table for sk.train / TrainRun, y or None). Sets n_features_in_ when ``reset``."""
        from ..encode.embeddings import Embeddings

        if isinstance(X, Embeddings):
            if reset and y is None:
                raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
            dims = tuple(0 if m is None else int(m.shape[1]) for m in (X.text, X.image))
            if reset:
                self.n_features_in_ = sum(dims)
                self._input_dims = dims
                if y is not None:
                    y = np.asarray(y)
                    if y.ndim != 1 or len(y) != len(X):
                        raise ValueError(f"y must be 1-D with one label per row of X ({len(X)}), got shape {y.shape}")
            elif sum(dims) != self.n_features_in_:
                raise ValueError(f"X has {sum(dims)} features (text {dims[0]} + image {dims[1]}), but "
                                 f"{type(self).__name__} is expecting {self.n_features_in_} features as input")
            return X, y
        if reset:   # fit: y is required (None is refused with scikit-learn's message)
            X, y = validate_data(self, X, y, reset=reset, dtype=[np.float32, np.float64], y_numeric=False)
        else:
            X = validate_data(self, X, reset=reset, dtype=[np.float32, np.float64])
        X = np.asarray(X, dtype=np.float32)
        d = X.shape[1]
        td = self.text_dim
        if td is not None and (isinstance(td, bool) or not isinstance(td, (int, np.integer)) or not 0 <= td <= d):
            raise ValueError(f"text_dim must be an integer in [0, {d}] (X has {d} columns), not {td!r}")
        if reset:
            self._input_dims = (d, 0) if td is None else (int(td), d - int(td))
        dt, di = self._input_dims
        if dt and di:
            text, image = X[:, :dt], X[:, dt:]
            tm, im = (text != 0).any(1), (image != 0).any(1)
            return Embeddings(np.arange(len(X)).astype(str), text, image, tm, im), y
        if dt:
            return X, y
        return Embeddings(np.arange(len(X)).astype(str), None, X, np.zeros(len(X), bool), np.ones(len(X), bool)), y

    def fit(self, X, y, *, val=None):
        """Train the head on ``X`` (Embeddings or array) and ``y`` (labels or class indices).

        ``val``: optional ``(X_val, y_val)`` for per-epoch validation and early stopping (the
        config's ``early_stopping``). Returns ``self``.
        """
        from ..datasets.taxonomy import Taxonomy

        data, y = self._table(X, reset=True, y=y)
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.ravel()
        check_classification_targets(y)
        if len(y) < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 training items, got n_samples = {len(y)}")
        if self.taxonomy is None:
            classes = np.unique(y)
            tax = Taxonomy.from_paths([str(c) for c in classes], sep=self.sep, on_conflict="keep",
                                      label_case="strict")   # every distinct label stays a class (as before)
            index = np.asarray(tax.index_of([str(c) for c in classes]), dtype=np.int64)
        else:
            tax = self.taxonomy
            if y.dtype.kind in "iu" or (y.dtype.kind == "f" and np.all(y == np.round(y))):
                classes = np.unique(y)
                index = classes.astype(np.int64)
                bad = index[(index < 0) | (index >= tax.n_classes)]
                if len(bad):
                    raise ValueError(f"y holds class indices {bad[:5].tolist()} outside [0, {tax.n_classes}) of the "
                                     "taxonomy; pass labels or taxonomy.index_of(labels)")
            else:   # labels: spelled as the taxonomy's classes (an alias of a merged path becomes its class)
                u, inv = np.unique(y.astype(str), return_inverse=True)
                y = np.asarray(tax.classes, dtype=object)[np.asarray(tax.index_of(u.tolist()))][inv]
                classes = np.unique(y)
                index = np.asarray(tax.index_of(classes.tolist()), dtype=np.int64)
        pos = np.searchsorted(classes, y)
        y_idx = index[pos]
        val_pair = None
        if val is not None:
            if not (isinstance(val, (tuple, list)) and len(val) == 2):
                raise ValueError("val must be a pair (X_val, y_val)")
            v_data, _ = self._table(val[0], reset=False)
            vy = np.asarray(val[1])
            if vy.dtype.kind in "iu" and self.taxonomy is not None:
                vi = vy.astype(np.int64)
            else:
                vi = np.asarray(tax.index_of([str(v) for v in vy.tolist()]), dtype=np.int64)
            val_pair = (v_data, vi)
        cfg = self._config()
        self.run_ = train(data, y_idx, taxonomy=tax, neighbors=self.neighbors, config=cfg, val=val_pair,
                          progress=bool(self.progress))
        self.config_ = self.run_.config
        solver = getattr(self.run_, "solver", None) or {}
        self.n_iter_ = int(solver.get("iterations") or len(self.run_.history) or 1)
        self.classes_ = classes
        self.class_index_ = index
        self.taxonomy_ = tax
        return self

    def predict_proba(self, X) -> np.ndarray:
        """(N, len(classes_)) float64 probabilities, columns in ``classes_`` order (rows sum to 1)."""
        check_is_fitted(self, "run_")
        data, _ = self._table(X, reset=False)
        p = self.run_.predict_proba(data)[:, self.class_index_].astype(np.float64)
        p /= np.clip(p.sum(1, keepdims=True), np.finfo(np.float64).tiny, None)
        return p

    def predict_log_proba(self, X) -> np.ndarray:
        """``log(predict_proba(X))``."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X) -> np.ndarray:
        """The most probable entry of ``classes_`` for each row."""
        p = self.predict_proba(X)
        return self.classes_[np.argmax(p, axis=1)]


def _make_init():
    params = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=d) for name, d in _OWN]
    params += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=_default(f)) for f in _CONFIG_FIELDS]
    names = [p.name for p in params]
    defaults = {p.name: p.default for p in params}
    # the first three may be positional, as in SemcatClassifier(tax)
    params = [p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) if p.name in ("taxonomy", "neighbors")
              else p for p in params]
    params.sort(key=lambda p: p.kind)

    def __init__(self, taxonomy=None, neighbors=None, **kwargs):
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise TypeError(f"SemcatClassifier got unknown parameter(s) {unknown}; parameters are the TrainConfig "
                            f"fields and {[n for n, _ in _OWN]}")
        self.taxonomy, self.neighbors = taxonomy, neighbors
        for n in names[2:]:
            setattr(self, n, kwargs.get(n, defaults[n]))

    __init__.__signature__ = inspect.Signature([inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
                                                *params])
    __init__.__doc__ = "See the class docstring (the TrainConfig fields are keyword parameters)."
    return __init__


SemcatClassifier.__init__ = _make_init()


def cross_val_proba(estimator, X, y, *, cv=5, random_state: int = 0, progress: bool = False) -> np.ndarray:
    """Out-of-sample probabilities over the estimator's taxonomy: ``(N, C)`` float32.

    Row ``i`` comes from a clone of ``estimator`` fitted on the folds that do not hold ``i``
    (``StratifiedKFold(cv, shuffle=True)``; classes with fewer than ``cv`` items are spread over the
    folds they have). Unlike ``cross_val_predict`` it keeps the taxonomy's class indices, so
    ``probs[:, c]`` is ``taxonomy.classes[c]`` whatever classes a fold misses (0 where the fold's
    training part never saw class ``c``).

    Parameters
    ----------
    estimator : SemcatClassifier
        With a ``taxonomy`` (its classes are the columns).
    X : Embeddings or array
    y : labels or class indices of the taxonomy
    cv : int >= 2
        Folds.
    """
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold
    from .._core.progress import progress as tqdm

    from .._core.contracts import as_labels

    tax = estimator.taxonomy
    if tax is None:
        raise ValueError("cross_val_proba needs an estimator with a taxonomy (its classes are the columns)")
    if isinstance(cv, bool) or not isinstance(cv, (int, np.integer)) or cv < 2:
        raise ValueError(f"cv must be an integer >= 2 (folds), not {cv!r}")
    n = len(X)
    yi = as_labels(y, n, tax, name="y", against="X")
    counts = np.bincount(yi, minlength=tax.n_classes)
    if counts.max() < cv:
        raise ValueError(f"cv={cv} folds but no class has {cv} items; use fewer folds")
    out = np.zeros((n, tax.n_classes), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        folds = list(StratifiedKFold(int(cv), shuffle=True, random_state=random_state).split(np.zeros(n), yi))
    take = X.take if hasattr(X, "take") and not isinstance(X, np.ndarray) else (lambda idx: np.asarray(X)[idx])
    for tr, te in tqdm(folds, desc="cross-validation", unit="fold", disable=not progress, leave=False):
        est = clone(estimator).fit(take(tr), yi[tr])
        out[te[:, None], est.class_index_[None, :]] = est.predict_proba(take(te))
    return out
