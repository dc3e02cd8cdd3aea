"""A tuner for a user-stated objective: Optuna (TPE) over soft labels, loss, head and budget.

``sk.tune(train, val, taxonomy=..., neighbors=..., objective="hdist@5; top1 >= baseline - 0.5pt")``
trains one head per trial on ``train`` and scores it on ``val`` with :func:`semcat_kit.evaluate`.

The objective is a metric to optimise (its direction follows the metric: severity, hdist, ece and
loss are minimised, the rest maximised) plus optional constraints ``<metric> >= <bound>`` or
``<metric> <= <bound>``. A bound is a number, or relative to a reference measured on the same
validation split before the search:

* ``baseline``: the best of the ``baselines`` (default: a tuned LogisticRegression on the same
  embeddings) on that metric;
* ``onehot``: a one-hot head with the default settings;

optionally shifted by percentage points (``baseline - 0.5pt`` = value - 0.005) or by percent of
the reference (``onehot - 20%`` = 0.8 x value). Constrained search uses Optuna's
``Trial.set_constraint`` (a trial is feasible when every violation ``<= 0``); the best trial is the
feasible one with the best objective, or, when none is feasible, the one with the smallest total
violation (a warning says so). Trial 0 is always the one-hot head with the base settings (moved into
the searched ranges; it is also the ``onehot`` reference), so the result is never worse than one-hot
on the stated objective (feasibility first, then the metric).

Searched (``search_space`` can fix or narrow any of them): ``label_repr`` (class outputs or binary
taxonomy codes, which take no soft labels), ``smoothing`` kind, ``alpha``, ``k``,
``temperature``, ``tree_beta``, ``kl_weight``, ``focal_gamma``, ``focal_alpha`` (none / inverse /
effective), head size (``proj_dim``, ``hidden``), the step budget (``steps``, converted to epochs) and
CRM decoding (``crm``). Trials train without early stopping (the validation split is the judge).

Resuming and pruning: with ``storage="sqlite:///tune.db"`` (any Optuna storage URL) every finished
trial is written to the database as it ends, with its validation scores and config; running the same
call again loads the study (``load_if_exists``) and runs only the trials still missing from
``n_trials`` (a trial a kill interrupted is marked failed and run again). A pruner (default
``"median"``: Optuna's ``MedianPruner``) reads the objective metric on the validation split after
every epoch of a minibatch trial and stops it when it is worse than the median of earlier trials at
the same epoch. Full-batch trials (``solver="lbfgs"``, what ``"auto"`` picks for in-memory data)
converge in one pass and are not pruned.
"""
from __future__ import annotations

import math
import re
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..learn.config import TrainConfig

__all__ = ["tune", "TuneResult", "Objective", "parse_objective", "DEFAULT_SPACE", "PRUNERS", "DEFAULT_STUDY"]

#: ``pruner=`` names: Optuna's MedianPruner, or no pruning
PRUNERS = ("median", "none")
#: study name in a storage when none is given
DEFAULT_STUDY = "semcat-tune"

_LOWER = ("severity", "hdist", "ece", "loss", "seconds")

#: The default search space: lists are categorical choices, (lo, hi) floats/ints are ranges
#: (``log`` for the names in ``_LOG``).
DEFAULT_SPACE: dict[str, Any] = {
    "label_repr": ["onehot", "codes"],
    "smoothing": ["onehot", "uniform", "topk", "semantic", "tree"],
    "alpha": (0.02, 0.4),
    "k": (3, 20),
    "temperature": (0.02, 1.0),
    "tree_beta": (0.5, 8.0),
    "kl_weight": (0.1, 3.0),
    "focal_gamma": (0.0, 3.0),
    "focal_alpha": ["none", "inverse", "effective"],
    "proj_dim": [64, 128, 256],
    "hidden": [128, 256, 512],
    "steps": (200, 2000),
    "crm": [False, True],
}
_LOG = ("alpha", "temperature", "kl_weight", "steps", "tree_beta")


def _lower_is_better(metric: str) -> bool:
    return any(s in metric for s in _LOWER)


@dataclass
class Constraint:
    """``metric >= bound`` (``op=">="``) or ``metric <= bound``; ``bound`` is a number or relative to
    ``ref`` (``"baseline"`` / ``"onehot"``): ``ref_value + shift`` (``unit="pt"``: shift/100) or
    ``ref_value * (1 + shift/100)`` (``unit="%"``)."""

    metric: str
    op: str
    ref: str | None = None
    shift: float = 0.0
    unit: str = "abs"
    value: float | None = None

    def bound(self, refs: dict[str, pd.Series]) -> float:
        if self.ref is None:
            return float(self.value)
        base = float(refs[self.ref][self.metric])
        if self.unit == "pt":
            return base + self.shift / 100.0
        if self.unit == "%":
            return base * (1.0 + self.shift / 100.0)
        return base + self.shift

    def violation(self, scores: pd.Series, refs) -> float:
        """``> 0`` when violated (by how much), ``<= 0`` when met."""
        v = float(scores[self.metric])
        if math.isnan(v):
            return 1.0
        b = self.bound(refs)
        return b - v if self.op == ">=" else v - b

    def __str__(self) -> str:
        if self.ref is None:
            return f"{self.metric} {self.op} {self.value:g}"
        sh = "" if self.shift == 0 else f" {'+' if self.shift > 0 else '-'} {abs(self.shift):g}{self.unit if self.unit != 'abs' else ''}"
        return f"{self.metric} {self.op} {self.ref}{sh}"


@dataclass
class Objective:
    """A metric to optimise and constraints on others (see :func:`parse_objective`)."""

    metric: str
    constraints: list[Constraint] = field(default_factory=list)

    @property
    def minimize(self) -> bool:
        return _lower_is_better(self.metric)

    def refs(self) -> set[str]:
        return {c.ref for c in self.constraints if c.ref is not None}

    def key(self, scores: pd.Series, refs) -> tuple[float, float]:
        """``(total violation, objective to minimise)``: smaller is better, feasibility first."""
        viol = sum(max(0.0, c.violation(scores, refs)) for c in self.constraints)
        v = float(scores[self.metric])
        v = math.inf if math.isnan(v) else (v if self.minimize else -v)
        return viol, v

    def __str__(self) -> str:
        s = f"{'lowest' if self.minimize else 'highest'} {self.metric}"
        return s + ("" if not self.constraints else " with " + ", ".join(map(str, self.constraints)))


_CONS = re.compile(r"^\s*(?P<metric>[\w@.]+)\s*(?P<op>>=|<=|≥|≤)\s*(?:(?P<ref>baseline|onehot|one-hot)\s*"
                   r"(?:(?P<sign>[+-])\s*(?P<shift>\d+(?:\.\d+)?)\s*(?P<unit>pt|%)?)?|(?P<value>-?\d+(?:\.\d+)?))\s*$")


def parse_objective(text: str) -> Objective:
    """Parse ``"<metric>[; <metric> >= <bound>, ...]"``.

    ``<bound>`` is a number or ``baseline|onehot [± x[pt|%]]``, e.g.
    ``"hdist@5; top1 >= baseline - 0.5pt, macro_f1 >= baseline - 0.5pt"`` or
    ``"top1; mistake_severity <= onehot - 10%"``. Metric names are those of :func:`semcat_kit.evaluate`.
    """
    if isinstance(text, Objective):
        return text
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"objective must be a string like 'hdist@5; top1 >= baseline - 0.5pt', not {text!r}")
    head, _, rest = text.partition(";")
    metric = head.strip()
    if not re.fullmatch(r"[\w@.]+", metric):
        raise ValueError(f"objective {text!r}: {metric!r} is not a metric name (e.g. 'hdist@5', 'top1')")
    cons = []
    for part in filter(None, (p.strip() for p in re.split(r",|\band\b", rest))):
        m = _CONS.match(part)
        if not m:
            raise ValueError(f"objective {text!r}: cannot read the constraint {part!r}; write e.g. "
                             "'top1 >= baseline - 0.5pt', 'mistake_severity <= onehot - 10%' or 'top1 >= 0.9'")
        op = {"≥": ">=", "≤": "<="}.get(m["op"], m["op"])
        if m["value"] is not None:
            cons.append(Constraint(m["metric"], op, value=float(m["value"])))
        else:
            ref = "onehot" if m["ref"] == "one-hot" else m["ref"]
            shift = float(m["shift"] or 0.0) * (-1 if m["sign"] == "-" else 1)
            cons.append(Constraint(m["metric"], op, ref=ref, shift=shift, unit=m["unit"] or "abs"))
    for name in [metric] + [c.metric for c in cons]:       # before any catalog is read or encoded
        _check_metric_name(name, text)
    return Objective(metric, cons)


def _check_metric_name(name: str, text: str) -> None:
    """A name :func:`semcat_kit.evaluate` can return (from the metric registry: ``top{k}``, ``hdist@{k}``,
    ``acc_level_{l}`` with any integer); whether this taxonomy has that level is checked by :func:`tune`."""
    import difflib

    from ..judge.metrics import METRICS

    pats = {m.key: re.escape(m.key).replace(r"\{k\}", r"\d+").replace(r"\{l\}", r"\d+")
            for m in METRICS.values() if m.source == "evaluate" and m.key != "n"}
    if any(re.fullmatch(p, name) for p in pats.values()):
        return
    examples = [k.replace("{k}", "5").replace("{l}", "2") for k in pats]
    close = difflib.get_close_matches(name, examples, n=3, cutoff=0.5)
    raise ValueError(f"objective {text!r}: {name!r} is not a metric of evaluate()"
                     f"{'; did you mean ' + ' or '.join(repr(c) for c in close) if close else ''}; the metrics are "
                     f"{examples} (k and level numbers vary)")


@dataclass
class TuneResult:
    """What :func:`tune` found.

    Attributes
    ----------
    config : TrainConfig
        The best trial's configuration (``epochs`` from its step budget, no early stopping).
    crm : bool
        Whether the best trial decodes with CRM (``evaluate(..., crm=True)``, ``Predictor`` CRM).
    scores : pandas.Series
        The best trial's validation metrics.
    trials : pandas.DataFrame
        One row per trial: parameters, ``value`` (the objective), ``violation``, ``feasible``,
        ``seconds`` and every validation metric.
    references : dict[str, pandas.Series]
        Validation metrics of ``"baseline"`` / ``"onehot"`` (those the objective refers to).
    objective : Objective
    study : optuna.Study
    """

    config: TrainConfig
    crm: bool
    scores: pd.Series
    trials: pd.DataFrame
    references: dict
    objective: Objective
    study: Any = None

    @property
    def feasible(self) -> bool:
        return bool(self.objective.key(self.scores, self.references)[0] == 0)

    def __repr__(self) -> str:
        return (f"TuneResult({self.objective}: {self.objective.metric}={self.scores[self.objective.metric]:.4f}, "
                f"feasible={self.feasible}, crm={self.crm}, {len(self.trials)} trials, config={self.config!r})")


def _steps_per_epoch(n: int, batch: int) -> int:
    return max(1, math.ceil(n / batch))


def _config_from(params: dict, base: TrainConfig, n_train: int) -> TrainConfig:
    p = {k: v for k, v in params.items() if k not in ("steps", "crm")}
    if p.get("label_repr", base.label_repr) == "codes":   # BCE of taxonomy codes: soft labels do not apply
        p["smoothing"] = "onehot"
    steps = params.get("steps")
    if steps is not None:
        p["epochs"] = max(1, math.ceil(int(steps) / _steps_per_epoch(n_train, base.batch_size)))
        p["min_steps"] = 0        # the trial's budget is its steps, not a data-aware minimum on top
    return base.replace(early_stopping=None, **p)


def _suggest(trial, space: dict) -> dict:
    out = {}
    for name, spec in space.items():
        if isinstance(spec, list):
            out[name] = trial.suggest_categorical(name, spec) if len(spec) > 1 else spec[0]
        elif isinstance(spec, tuple):
            lo, hi = spec
            if isinstance(lo, int) and isinstance(hi, int):
                out[name] = trial.suggest_int(name, lo, hi, log=name in _LOG)
            else:
                out[name] = trial.suggest_float(name, float(lo), float(hi), log=name in _LOG)
        else:
            out[name] = spec
    return out


def _check_space(space: dict | None, neighbors) -> dict:
    sp = dict(DEFAULT_SPACE)
    if space:
        unknown = [k for k in space if k not in DEFAULT_SPACE and k not in TrainConfig.__dataclass_fields__]
        if unknown:
            raise ValueError(f"search_space has unknown parameter(s) {unknown}; known: {sorted(DEFAULT_SPACE)} or any "
                             "TrainConfig field")
        sp.update(space)
    if neighbors is None and isinstance(sp.get("smoothing"), list):
        sp["smoothing"] = [s for s in sp["smoothing"] if s not in ("topk", "semantic")]
        if not sp["smoothing"]:
            raise ValueError("smoothing 'topk'/'semantic' need neighbors=...; pass them or allow other kinds")
    try:   # a linear head (hidden=0) when this version of TrainConfig supports it
        TrainConfig(hidden=0)
        if space is None or "hidden" not in space:
            sp["hidden"] = [0] + list(sp["hidden"])
    except ValueError:
        pass
    return sp


def tune(train, val, *, taxonomy, neighbors=None, objective: str | Objective = "hdist@5; top1 >= baseline - 0.5pt",
         n_trials: int = 30, timeout: float | None = None, baselines: dict | None = None,
         base_config: TrainConfig | None = None, search_space: dict | None = None, seed: int = 0,
         progress: bool = True, storage=None, study_name: str | None = None, pruner="median",
         **train_kwargs) -> TuneResult:
    """Search training settings for a stated objective on a validation split (Optuna TPE).

    Parameters
    ----------
    train, val : (embeddings, labels)
        Trials train on ``train`` and are scored on ``val``.
    taxonomy, neighbors
        As for :func:`semcat_kit.train` (``topk``/``semantic`` are searched only with neighbours).
    objective : str or Objective
        See :func:`parse_objective`, e.g. ``"hdist@5; top1 >= baseline - 0.5pt"``.
    n_trials, timeout : int, float (seconds)
        The budget: stop after ``n_trials`` trials or ``timeout`` seconds, whichever first.
    baselines : dict {name: Baseline}, optional
        What ``baseline`` in a constraint means (the best of them per metric); default a
        :class:`~semcat_kit.experiments.baselines.LogisticBaseline` (``C`` chosen on ``val``).
    base_config : TrainConfig, optional
        Settings not searched (device, lr, batch size, fusion, ...); default ``TrainConfig()``.
    search_space : dict, optional
        Overrides of :data:`DEFAULT_SPACE`: a list (choices), a ``(lo, hi)`` range, or a fixed value.
    seed : int
        Seed of the sampler and of every trial's training.
    progress : bool
        Optuna's progress bar.
    storage : str or optuna storage, optional
        E.g. ``"sqlite:///tune.db"``: trials are saved as they finish and a second call with the same
        storage and ``study_name`` resumes the study (``n_trials`` counts the trials of every run;
        the objective and data sizes must be the same). Default: in memory.
    study_name : str, optional
        Default :data:`DEFAULT_STUDY`.
    pruner : {"median", "none"} or optuna.pruners.BasePruner
        Stops hopeless minibatch trials from their per-epoch validation value of the objective metric
        (``"median"``: ``MedianPruner(n_startup_trials=5, n_warmup_steps=2)``). Trial 0 and full-batch
        (L-BFGS) trials are never pruned.
    **train_kwargs
        Passed to :func:`semcat_kit.train` (e.g. ``allow_unseen_val_classes=True``).

    Returns
    -------
    TuneResult
    """
    from .._core.optional import require

    optuna = require("optuna", "tune")
    from ..judge.metrics import evaluate
    from ..learn.trainer import Callback
    from ..learn.training import train as _train

    obj = parse_objective(objective)
    if not (isinstance(train, (tuple, list)) and len(train) == 2 and isinstance(val, (tuple, list)) and len(val) == 2):
        raise ValueError("train and val must be pairs (embeddings, labels)")
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"n_trials must be a positive int, not {n_trials!r}")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds or None, not {timeout!r}")
    base = base_config if base_config is not None else TrainConfig()
    if not isinstance(base, TrainConfig):
        raise TypeError(f"base_config must be a TrainConfig, not {type(base).__name__}")
    base = base.replace(seed=seed, early_stopping=None)
    space = _check_space(search_space, neighbors)
    n_train = len(train[1])
    ys_val = val[1]

    def score(probs, crm=False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return evaluate(probs, ys_val, taxonomy, neighbors=neighbors, crm=crm)

    known = score(np.full((len(ys_val), taxonomy.n_classes), 1.0 / taxonomy.n_classes)).index
    for m in [obj.metric] + [c.metric for c in obj.constraints]:
        if m not in known:
            raise ValueError(f"objective metric {m!r} is not a metric of evaluate(); choose from "
                             f"{[k for k in known if k != 'n']}")

    refs: dict[str, pd.Series] = {}
    if "baseline" in obj.refs():
        from .baselines import LogisticBaseline

        bl = baselines if baselines is not None else {"LogisticRegression": LogisticBaseline()}
        per = {name: score(b.clone().fit(*train, taxonomy=taxonomy, val=val, seed=seed).predict_proba(val[0]))
               for name, b in bl.items()}
        table = pd.DataFrame(per)
        best = {m: (table.loc[m].min() if _lower_is_better(m) else table.loc[m].max()) for m in table.index}
        refs["baseline"] = pd.Series(best)
        refs["baseline"].attrs["per_baseline"] = table
    nb_k = neighbors.k if neighbors is not None else None
    if nb_k is not None and isinstance(space.get("k"), tuple):
        space["k"] = (space["k"][0], max(space["k"][0], min(space["k"][1], nb_k)))
    # trial 0 (and the "onehot" reference): the one-hot head with the base settings, moved into the space
    searched = {k for k, v in space.items() if isinstance(v, tuple) or (isinstance(v, list) and len(v) > 1)}
    first = {k: _clamp(space[k], v) for k, v in {**_default_params(base, n_train), "smoothing": "onehot",
                                                 "label_repr": "onehot", "crm": False}.items() if k in searched}
    first_cfg = _config_from({**{k: (v[0] if isinstance(v, list) else v) for k, v in space.items()
                                 if k not in searched}, **first}, base, n_train)
    cache: dict = {}
    pruning = _make_pruner(optuna, pruner)

    class _Report(Callback):
        """The objective metric on val after each epoch -> trial.report; prune when hopeless."""

        def __init__(self, trial):
            self.trial = trial

        def on_epoch_end(self, trainer):
            v = trainer.row.get(f"val_{obj.metric}")
            if v is None or not np.isfinite(v):
                return
            self.trial.report(float(v), int(trainer.row.get("epoch", len(trainer.history))))
            if self.trial.number > 0 and self.trial.should_prune():
                raise optuna.TrialPruned(f"val_{obj.metric} = {v:.4g} at epoch {trainer.row.get('epoch')}")

    from .._core.contracts import as_embedding_table
    from ..learn.training import choose_solver

    train_table = as_embedding_table(train[0], "train") if pruning is not None else None

    def fit_score(cfg: TrainConfig, crm: bool, trial=None):
        key = (repr(cfg.to_dict()), crm)
        if key not in cache:
            # a minibatch trial reports each epoch to the pruner; a full-batch (L-BFGS) one converges in
            # one pass, and a callback would turn it into a minibatch run, so it is never watched
            watch = (trial is not None and pruning is not None
                     and choose_solver(cfg, train_table, n_classes=taxonomy.n_classes)[0] == "minibatch")
            r = _train(*train, taxonomy=taxonomy, neighbors=neighbors, config=cfg, val=val if watch else None,
                       progress=False, callbacks=[_Report(trial)] if watch else (), **train_kwargs)
            cache[key] = score(r.predict_proba(val[0]), crm=crm)
        return cache[key]

    if "onehot" in obj.refs():
        refs["onehot"] = fit_score(first_cfg, False)

    def run_trial(trial):
        params = _suggest(trial, space)
        cfg = _config_from(params, base, n_train)
        t0 = time.perf_counter()
        s = fit_score(cfg, bool(params.get("crm", False)), trial)
        for c in obj.constraints:
            trial.set_constraint(str(c), c.violation(s, refs))
        trial.set_user_attr("scores", {k: float(x) for k, x in s.items()})
        trial.set_user_attr("config", cfg.to_dict())
        trial.set_user_attr("params", {k: (v.item() if isinstance(v, np.generic) else v) for k, v in params.items()})
        trial.set_user_attr("seconds", time.perf_counter() - t0)
        return float(s[obj.metric])

    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, min(10, n_trials // 3)))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    direction = "minimize" if obj.minimize else "maximize"
    name = study_name or DEFAULT_STUDY
    study = optuna.create_study(direction=direction, sampler=sampler, pruner=pruning, storage=storage,
                                study_name=name, load_if_exists=storage is not None)
    stamp = {"objective": str(obj), "n_train": int(n_train), "n_val": int(len(ys_val)),
             "n_classes": int(taxonomy.n_classes)}
    old = {k: study.user_attrs.get(k) for k in stamp}
    if any(v is not None for v in old.values()) and old != stamp:
        raise ValueError(f"the study {name!r} in {storage} was run on other data or another objective "
                         f"({old}; now {stamp}); pass another study_name or storage")
    for k, v in stamp.items():
        study.set_user_attr(k, v)
    if storage is not None:
        _fail_interrupted(study, optuna)
    finished = [t for t in study.get_trials(deepcopy=False)
                if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    if not finished:
        study.enqueue_trial(first, skip_if_exists=True)
    left = n_trials - len(finished)
    if left > 0:
        study.optimize(run_trial, n_trials=left, timeout=timeout, show_progress_bar=progress, gc_after_trial=False)
    records = [_record(t, obj, refs) for t in study.get_trials(deepcopy=False)
               if t.state == optuna.trial.TrialState.COMPLETE and "scores" in t.user_attrs]
    if not records:
        raise RuntimeError("no trial finished within the budget; raise timeout or n_trials")
    best = min(records, key=lambda r: obj.key(r["_scores"], refs))
    if best["violation"] > 0:
        warnings.warn(f"no trial met every constraint of '{obj}'; returning the least-violating one "
                      f"(violation {best['violation']:.4g}). Raise n_trials/timeout or relax the constraints",
                      stacklevel=2)
    trials = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in records])
    return TuneResult(config=best["_config"], crm=bool(best.get("crm", False)), scores=best["_scores"],
                      trials=trials, references=refs, objective=obj, study=study)


def _make_pruner(optuna, pruner):
    if pruner is None or pruner == "none":
        return None
    if pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    if isinstance(pruner, optuna.pruners.BasePruner):
        return pruner
    raise ValueError(f"pruner must be one of {PRUNERS} or an optuna pruner, not {pruner!r}")


def _fail_interrupted(study, optuna) -> None:
    """Trials left RUNNING in the storage by a killed process: mark them failed (they are run again)."""
    stale = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]
    for t in stale:
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    if stale:
        warnings.warn(f"{len(stale)} trial(s) of study {study.study_name!r} were interrupted (e.g. killed) and are "
                      f"marked failed: {[t.number for t in stale]}; the resumed study runs them again",
                      stacklevel=3)


def _record(t, obj: Objective, refs: dict) -> dict:
    """A trials-table row (and the best-trial pieces) from a finished trial's stored attributes."""
    s = pd.Series(t.user_attrs["scores"])
    viol, _ = obj.key(s, refs)
    cfg = TrainConfig.from_dict(t.user_attrs["config"])
    return {"number": t.number, **t.user_attrs.get("params", {}), "epochs": cfg.epochs, "value": float(s[obj.metric]),
            "violation": viol, "feasible": viol == 0, "seconds": t.user_attrs.get("seconds", float("nan")),
            **{f"val_{k}": float(x) for k, x in s.items() if k != "n"}, "_config": cfg, "_scores": s}


def _default_params(base: TrainConfig, n_train: int) -> dict:
    d = {k: getattr(base, k) for k in DEFAULT_SPACE if hasattr(base, k)}
    d["steps"] = base.epochs_for(n_train) * _steps_per_epoch(n_train, base.batch_size)
    return d


def _clamp(spec, v):
    """``v`` moved into a search range (the first choice when a categorical one does not hold it)."""
    if isinstance(spec, list):
        return v if v in spec else spec[0]
    lo, hi = spec
    v = min(max(v, lo), hi)
    return int(round(v)) if isinstance(lo, int) and isinstance(hi, int) else float(v)
