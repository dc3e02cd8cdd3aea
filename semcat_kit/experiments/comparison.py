"""Comparing training configurations over several seeds on one split.

:func:`compare` trains every configuration once per seed, evaluates each run on the test set
with :func:`semcat_kit.evaluate`, and summarises per configuration as ``mean`` and ``std``
(sample standard deviation, ddof=1, over seeds). ``"<name> + CRM"`` rows re-decode the *same*
trained runs with CRM (minimum expected tree distance) instead of argmax, without retraining.
:func:`default_suite` is the seed design's experiment; :func:`format_table` renders a Markdown
table of ``mean ± std``.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..labels import soft_labels as _soft
from .baselines import Baseline
from ..judge.decoding import CrmFlagWarning, crm_trust
from ..judge.metrics import lower_is_better
from ..learn.config import TrainConfig
from ..learn.training import train as _train

__all__ = ["compare", "CrmFlagWarning", "hedging_columns", "default_suite", "baseline_suite", "loss_suite", "format_table", "CompareRuns", "CRM_SUFFIX"]

CRM_SUFFIX = " + CRM"


class CompareRuns(dict):
    """The trained runs of a :func:`compare` call, ``{(config_name, seed): TrainRun or fitted Baseline}``, plus
    ``.long`` (one row per (config, seed), CRM rows included).

    ``.test_top1`` is ``{(config_name, seed): (N_test,) int32}``, each run's top-1 class on the test
    rows as scored (for paired comparisons without predicting again).

    Stored in ``df.attrs["runs"]``; shared, not copied, when pandas propagates ``attrs``.
    """

    long: pd.DataFrame

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.test_top1: dict = {}

    def __deepcopy__(self, memo):
        return self

    def __eq__(self, other):
        return self is other

    __hash__ = None


def _check_pair(pair, name: str):
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
        raise ValueError(f"{name} must be a pair (embeddings, labels)")
    return pair


def hedging_columns(run, val, test_probs, y_test, taxonomy) -> dict:
    """The hedged-decoding columns of one :func:`compare` row: ``leaf_coverage@{p}``,
    ``specificity@{p}``, ``specificity_bits@{p}``, ``hedged_precision@{p}``, ``review@{p}`` for p = 95,
    98, 99 (:func:`semcat_kit.judge.metrics.hedging_metrics`: thresholds calibrated on ``val`` with
    RCPS, read on the test products). NaN when there is no ``val``."""
    from ..judge.metrics import hedging_metric_names, hedging_metrics

    if val is None or len(val[1]) == 0:
        return dict.fromkeys(hedging_metric_names(), float("nan"))
    return hedging_metrics(run.predict_proba(val[0]), val[1], test_probs, y_test, taxonomy).to_dict()


def compare(configs: dict, train=None, val=None, test=None, *, taxonomy, neighbors=None,
            seeds: Sequence[int] = (0, 1, 2), crm_for: str | Iterable[str] | None = None,
            best_by: str = "top1", long: bool = False, ks: Sequence[int] = (1, 5, 20),
            by_frequency: bool | tuple = False, progress: bool = True, **train_kwargs) -> pd.DataFrame:
    """Train each configuration over several seeds and tabulate test metrics.

    Parameters
    ----------
    configs : dict[str, TrainConfig or Baseline]
        Named configurations (their ``seed`` is replaced by each of ``seeds``). A
        :class:`semcat_kit.experiments.baselines.Baseline` (e.g. ``LogisticBaseline()``, ``HiClassBaseline()``)
        is fitted on the same ``train`` (``val`` for its model selection) and scored on the same
        ``test``; one whose fit does not depend on the seed is fitted once and its row repeated
        per seed (std 0). Its ``best_epoch`` is NaN.
    train, val, test : (embeddings, labels)
        One split; ``val`` (optional) drives early stopping, ``test`` is evaluated.
    taxonomy, neighbors
        As for :func:`semcat_kit.train`; ``neighbors`` also gives the ``nbrs@k`` metrics.
    seeds : sequence of int
        At least 3 distinct seeds.
    crm_for : str, list of str, "best" or None
        Configurations that also get a ``"<name> + CRM"`` row: the same runs evaluated with
        ``crm=True``. ``"best"`` picks the configuration with the best mean ``best_by``. A CRM row
        is flagged (``crm_trusted`` 0, and a :class:`CrmFlagWarning`) where its run's validation
        probabilities are too flat for CRM (:func:`semcat_kit.judge.decoding.crm_trust`: mean top-1
        probability below :data:`~semcat_kit.judge.decoding.CRM_MIN_CONFIDENCE`); NaN without ``val``.
    best_by : str
        Metric that ``crm_for="best"`` ranks by (lower is better for severity/hdist/ece).
    long : bool
        Return one row per (config, seed) instead of the summary.
    ks : sequence of int
        Passed to :func:`semcat_kit.evaluate`.
    by_frequency : bool or (t1, t2)
        Also report ``top1[b]``, ``macro_f1[b]``, ``mistake_severity[b]`` and ``n[b]`` per frequency
        bucket ``b`` in head / torso / tail of the *training* class counts
        (:func:`semcat_kit.judge.frequency.frequency_buckets`: thirds of the classes, or count thresholds).
    progress : bool
        ``tqdm`` bar over runs.
    **train_kwargs
        Passed to :func:`semcat_kit.train` (e.g. ``allow_unseen_val_classes=True``);
        ``checkpoint_dir`` gets one sub-folder per run (``<dir>/<config>/seed<seed>``).

    Returns
    -------
    pandas.DataFrame
        Index ``config``; columns ``n_seeds``, ``crm`` and ``<metric>_mean``, ``<metric>_std``
        for every metric of :func:`semcat_kit.evaluate`, the hedged-decoding metrics of
        :func:`hedging_columns` (``leaf_coverage@98`` ...: which model commits to a leaf most often at
        98 % precision; NaN without ``val``; a ``+ CRM`` row repeats its runs' values, since hedging
        decodes the probabilities, not the CRM ranking), ``best_epoch`` and ``train_seconds``. ``df.attrs["runs"]`` is a :class:`CompareRuns` holding the trained runs
        and the long table (``.long``).
    """
    from ..judge.metrics import evaluate

    if not isinstance(configs, dict) or not configs:
        raise ValueError("configs must be a non-empty dict {name: TrainConfig}")
    for name, cfg in configs.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"configuration names must be non-empty strings, not {name!r}")
        if not isinstance(cfg, (TrainConfig, Baseline)):
            raise TypeError(f"configs[{name!r}] is a {type(cfg).__name__}, not a TrainConfig or a "
                            "semcat_kit.experiments.baselines.Baseline")
        if name.endswith(CRM_SUFFIX):
            raise ValueError(f"configuration name {name!r} ends with {CRM_SUFFIX!r}, which is reserved for CRM rows")
    seeds = list(seeds)
    if len(set(seeds)) < 3 or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be at least 3 distinct integers (mean and std over seeds); got {seeds}")
    tr, te = _check_pair(train, "train"), _check_pair(test, "test")
    va = _check_pair(val, "val") if val is not None else None
    need_nb = [n for n, c in configs.items() if isinstance(c, TrainConfig) and _soft.kind_info(c.smoothing).needs_neighbors]
    if need_nb and neighbors is None:
        raise ValueError(f"configurations {need_nb} use neighbour soft labels; pass neighbors=...")
    crm_names: list[str] = []
    if crm_for is not None:
        crm_names = [crm_for] if isinstance(crm_for, str) else list(crm_for)
        unknown = [n for n in crm_names if n != "best" and n not in configs]
        if unknown:
            raise ValueError(f"crm_for names {unknown} are not configurations; choose from {list(configs)} or 'best'")

    if "resume" in train_kwargs:
        raise ValueError("compare() cannot resume runs; call sk.train(..., resume=...) for a single run")
    ck_root = train_kwargs.pop("checkpoint_dir", None)
    buckets = None
    if by_frequency is not False and by_frequency is not None:
        from .._core.contracts import as_labels
        from ..judge.frequency import frequency_buckets

        y_tr = as_labels(tr[1], len(tr[1]), taxonomy, name="train labels")
        buckets = frequency_buckets(y_tr, taxonomy.n_classes,
                                    thresholds=None if by_frequency is True else by_frequency)

    def extra(probs, crm):
        if buckets is None:
            return {}
        from ..judge.frequency import bucket_metrics

        return bucket_metrics(probs, te[1], taxonomy, buckets, crm=crm).to_dict()

    runs = CompareRuns()
    rows = []
    stacked = _stacked_runs(configs, tr, va, seeds, taxonomy=taxonomy, neighbors=neighbors, ck_root=ck_root,
                            progress=progress, train_kwargs=train_kwargs)
    probs_of: dict = {}       # a run shared by several seeds is scored once
    total = len(configs) * len(seeds)
    with tqdm(total=total, desc="compare", unit="run", disable=not progress) as bar:
        for name, cfg in configs.items():
            fitted = None     # a seed-independent baseline is fitted once
            for seed in seeds:
                bar.set_postfix_str(f"{name} seed={seed}")
                t0 = time.perf_counter()
                if isinstance(cfg, Baseline):
                    if fitted is None or cfg.seeded:
                        fitted = cfg.clone().fit(tr[0], tr[1], taxonomy=taxonomy, val=va, seed=seed)
                        fit_secs = time.perf_counter() - t0
                    run, best_epoch, secs = fitted, float("nan"), fit_secs
                elif (name, seed) in stacked or (name, None) in stacked:
                    run = stacked.get((name, seed)) or stacked[(name, None)]
                    best_epoch, secs = run.best_epoch, run.solver["seconds"]
                else:
                    ck = None if ck_root is None else Path(ck_root) / re.sub(r"[^\w.-]+", "_", name) / f"seed{seed}"
                    run = _train(tr[0], tr[1], taxonomy=taxonomy, neighbors=neighbors, config=cfg.replace(seed=seed),
                                 val=va, progress=False, checkpoint_dir=ck, **train_kwargs)
                    best_epoch, secs = run.best_epoch, time.perf_counter() - t0
                runs[(name, seed)] = run
                if id(run) not in probs_of:
                    probs_of[id(run)] = run.predict_proba(te[0])
                probs = probs_of[id(run)]
                runs.test_top1[(name, seed)] = np.asarray(probs).argmax(1).astype(np.int32)
                scores = evaluate(probs, te[1], taxonomy, neighbors=neighbors, ks=ks)
                rows.append({"config": name, "seed": seed, "crm": False, **scores.drop("n").to_dict(),
                             **extra(probs, False), **hedging_columns(run, va, probs, te[1], taxonomy),
                             "best_epoch": best_epoch, "train_seconds": secs})
                bar.update(1)
    base = pd.DataFrame(rows)
    metric_cols = [c for c in base.columns if c not in ("config", "seed", "crm")]
    if "best" in crm_names:
        if best_by not in metric_cols:
            raise ValueError(f"best_by={best_by!r} is not a metric; choose one of {metric_cols}")
        means = base.groupby("config", sort=False)[best_by].mean()
        best = means.idxmin() if lower_is_better(best_by) else means.idxmax()
        crm_names = [best if n == "best" else n for n in crm_names]
    crm_rows = []
    for name in dict.fromkeys(crm_names):
        flagged = []
        for rr in base[base["config"] == name].to_dict("records"):
            run = runs[(name, rr["seed"])]
            probs = probs_of[id(run)]            # as scored above
            scores = evaluate(probs, te[1], taxonomy, neighbors=neighbors, ks=ks, crm=True)
            # CRM on flat probabilities sends products to the class nearest to everything: judged on val
            trust = crm_trust(run.predict_proba(va[0])) if va is not None and len(va[1]) else None
            if trust is not None and not trust.ok:
                flagged.append((rr["seed"], trust))
            crm_rows.append({**rr, **scores.drop("n").to_dict(), **extra(probs, True), "config": name + CRM_SUFFIX,
                             "crm": True, "crm_trusted": np.nan if trust is None else float(trust.ok)})
        if flagged:
            import warnings

            warnings.warn(f"'{name}{CRM_SUFFIX}' is flagged for {len(flagged)} of its {len(seeds)} seed(s): "
                          f"{flagged[0][1].reason} (column crm_trusted is 0 for it)", CrmFlagWarning, stacklevel=2)
    if crm_rows:
        metric_cols = metric_cols + ["crm_trusted"]
    long_df = pd.concat([base, pd.DataFrame(crm_rows)], ignore_index=True) if crm_rows else base
    order = []
    for name in configs:
        order.append(name)
        if name in crm_names:
            order.append(name + CRM_SUFFIX)
    long_df["config"] = pd.Categorical(long_df["config"], categories=order, ordered=True)
    long_df = long_df.sort_values(["config", "seed"], kind="stable").reset_index(drop=True)
    long_df["config"] = long_df["config"].astype(str)
    runs.long = long_df
    if long:
        long_df.attrs["runs"] = runs
        return long_df
    g = long_df.groupby("config", sort=False)
    summary = g[metric_cols].agg(["mean", "std"])
    summary.columns = [f"{m}_{s}" for m, s in summary.columns]
    summary.insert(0, "crm", g["crm"].first())
    summary.insert(0, "n_seeds", g["seed"].nunique())
    summary.index.name = "config"
    summary.attrs["runs"] = runs
    return summary


def _stacked_runs(configs, tr, va, seeds, *, taxonomy, neighbors, ck_root, progress, train_kwargs) -> dict:
    """The runs of the configurations that train full-batch, fitted together by
    :func:`semcat_kit.learn.training.train_stacked`: ``{(name, seed): run}``, or ``{(name, None): run}``
    for a configuration whose fit does not depend on the seed (a linear head: one run for every seed)."""
    from .._core.contracts import as_embedding_table
    from ..learn.training import choose_solver, seed_free, train_stacked

    heads = {n: c for n, c in configs.items() if isinstance(c, TrainConfig)}
    if not heads:
        return {}
    probe = as_embedding_table(tr[0], "train emb")
    want = []
    for name, cfg in heads.items():
        method, _ = choose_solver(cfg, probe, checkpoint_dir=ck_root, callbacks=train_kwargs.get("callbacks", ()),
                                  log_csv=train_kwargs.get("log_csv"), n_classes=taxonomy.n_classes)
        if method != "lbfgs":
            continue
        if seed_free(cfg, va is not None):
            want.append((name, None, cfg.replace(seed=seeds[0])))
        else:
            want.extend((name, s, cfg.replace(seed=s)) for s in seeds)
    if not want:
        return {}
    fitted = train_stacked(tr[0], tr[1], [w[2] for w in want], taxonomy=taxonomy, neighbors=neighbors, val=va,
                           progress=progress,
                           allow_unseen_val_classes=train_kwargs.get("allow_unseen_val_classes", False))
    return {(name, seed): run for (name, seed, _), run in zip(want, fitted)}


#: The mass ``alpha`` of the neighbour soft labels in :func:`default_suite` (every kind but one-hot and
#: uniform label smoothing). Chosen on ``scripts/measure_soft_alpha.py`` (docs/soft_alpha.md, the tutorial
#: and toys catalogs): at 0.1 the tree row cuts hdist@5 by 8 % and 7 % against one-hot, at 0.5 by 24 % and
#: 19.8 %, with top-1 at or above one-hot's (issue 28's goal: at least 20 % at that top-1), and macro-F1
#: at or above 0.1's.
ALPHA_NEIGHBOURS = 0.5


def default_suite(epochs: int | None = None, k: int = 20, alpha: float = 0.1, curriculum: bool = False,
                  alpha_neighbours: float = ALPHA_NEIGHBOURS, **common) -> dict[str, TrainConfig]:
    """The seed design's experiment as named configurations, one per registered soft-label kind.

    Every kind of :data:`semcat_kit.labels.soft_labels.TARGET_KINDS` with a ``suite_name`` gives a row
    (one-hot, uniform label smoothing ``alpha``, and at ``alpha_neighbours``: uniform over the top-``k`` semantic neighbours,
    similarity-weighted top-``k``, tree soft labels ``softmax(-beta d_LCA)`` over the ``k`` nearest
    classes in the tree, similarity-weighted over the neighbours above ``sim_threshold``, and any
    kind registered later), plus binary taxonomy codes with BCE. ``curriculum=True`` adds the
    similarity-weighted top-``k`` with a linear curriculum (alpha -> 0): a curriculum hardens the
    targets over epochs, so that row trains with the minibatch solver (a full-batch fit converges
    to the optimum of the final targets, which is the one-hot row). Use
    ``compare(..., crm_for="best")`` for "CRM on top of the best". ``common`` sets any other
    :class:`TrainConfig` field on every configuration. ``epochs=None`` leaves the budget to the
    data (``epochs="auto"``, decided by :meth:`TrainConfig.resolve` when each run trains); a
    number fixes it (minibatch runs only).
    """
    from ..labels import soft_labels as _soft

    base = dict(**({} if epochs is None else {"epochs": epochs}), **common)
    out: dict[str, TrainConfig] = {}
    for name, kind in _soft.TARGET_KINDS.items():
        if kind.suite_name is None:
            continue
        mass = {} if name == "onehot" else {"alpha": alpha if name == "uniform" else alpha_neighbours}
        cfg = TrainConfig(smoothing=name, **mass,
                          **({"k": k} if name != "uniform" and name != "onehot" else {}), **base)
        out[kind.suite_name.format(**cfg.to_dict())] = cfg
        if name == "semantic" and curriculum:
            out[kind.suite_name.format(**cfg.to_dict()) + " + curriculum"] = cfg.replace(curriculum="linear")
    out["binary codes"] = TrainConfig(label_repr="codes", smoothing="onehot", **base)
    return out


def loss_suite(smoothing: str = "semantic", k: int = 20, alpha: float = 0.1, gamma: float = 2.0,
               **common) -> dict[str, TrainConfig]:
    """The seed's loss ablation as named configurations.

    Focal only (``kl_weight=0``), KL only (``focal_weight=0``: cross-entropy to the ``smoothing``
    soft labels), focal + KL; and focal + KL with class weights ``focal_alpha`` = ``inverse``
    (``w_c ∝ 1/n_c``) and ``effective`` (``w_c ∝ (1 - beta) / (1 - beta^n_c)``, Cui et al. 2019).
    ``common`` sets any other :class:`TrainConfig` field on every configuration (e.g. ``min_steps``).
    Run with ``compare(..., by_frequency=True)`` for head / torso / tail metrics.
    """
    soft = dict(smoothing=smoothing, alpha=alpha, **({"k": k} if smoothing not in ("onehot", "uniform") else {}))
    return {
        f"focal γ={gamma:g} only": TrainConfig(focal_gamma=gamma, kl_weight=0.0, **common),
        f"KL only ({smoothing})": TrainConfig(focal_weight=0.0, kl_weight=1.0, **soft, **common),
        f"focal + KL ({smoothing})": TrainConfig(focal_gamma=gamma, **soft, **common),
        f"focal + KL, α inverse": TrainConfig(focal_gamma=gamma, focal_alpha="inverse", **soft, **common),
        f"focal + KL, α effective": TrainConfig(focal_gamma=gamma, focal_alpha="effective", **soft, **common),
    }


def baseline_suite(C="val", hiclass_C=10.0, soft_labels: str | None = "semantic", k: int = 20,
                   alpha: float = ALPHA_NEIGHBOURS) -> dict:
    """What a user would pick instead of a head, as :func:`compare` rows.

    ``"LogisticRegression"`` (:class:`~semcat_kit.experiments.baselines.LogisticBaseline`, ``C`` chosen on the
    validation split by default) and ``"hiclass LCPPN"`` (:class:`~semcat_kit.experiments.baselines.HiClassBaseline`,
    a logistic regression per parent node, each with ``hiclass_C``; ``"val"`` searches it too, at
    about ``len(DEFAULT_CS)`` times the cost, which on a 30k-product catalog is an hour on 2 CPU cores).
    ``soft_labels`` (a soft-label kind, default ``"semantic"``; ``None`` leaves it out) adds
    ``"LogisticRegression + <kind> soft labels"``: the same model -- a linear map of the same
    features, L2 with ``C`` chosen on the same grid by validation top-1 -- fitted to convergence
    (``solver="lbfgs"``) with the KL term to the soft targets (``k`` neighbours, ``alpha``: the
    suite's :data:`ALPHA_NEIGHBOURS`), so the
    table answers "do soft labels help the best linear model?". It needs ``neighbors`` in
    :func:`compare` for the neighbour kinds. Add ``crm_for=["LogisticRegression", ...]`` for the
    "+ CRM" row.
    """
    from .baselines import DEFAULT_CS, HiClassBaseline, LogisticBaseline

    out = {"LogisticRegression": LogisticBaseline(C=C)}
    if soft_labels is not None:
        kw = {} if soft_labels in ("onehot", "uniform") else {"k": k}
        out[f"LogisticRegression + {soft_labels} soft labels"] = TrainConfig(
            hidden=0, proj_dim=0, input_norm=False, focal_gamma=0.0, smoothing=soft_labels, alpha=alpha,
            solver="lbfgs", C=C, Cs=DEFAULT_CS, **kw)
    out["hiclass LCPPN"] = HiClassBaseline(C=hiclass_C)
    return out


def format_table(df: pd.DataFrame, metrics: Sequence[str] = ("top1", "top5", "macro_f1", "mistake_severity",
                                                              "hdist@5"), digits: int = 3,
                 directions: bool = False) -> str:
    """Markdown table of ``mean ± std`` per configuration (rows) and metric (columns).

    ``df`` is the summary returned by :func:`compare`. Missing metrics raise naming the available ones.
    ``directions`` marks each column ↑ (higher is better) or ↓ (lower is better) from the metric registry.
    """
    avail = sorted({c[:-5] for c in df.columns if c.endswith("_mean")})
    missing = [m for m in metrics if f"{m}_mean" not in df.columns]
    if missing:
        raise ValueError(f"metrics {missing} are not in this table; available: {avail}")
    def col(m):
        if not directions:
            return m
        return f"{m} {'↓' if lower_is_better(m) else '↑'}"
    head = "| config | " + " | ".join(col(m) for m in metrics) + " |"
    sep = "|---|" + "---:|" * len(metrics)
    lines = [head, sep]
    for name, row in df.iterrows():
        cells = []
        for m in metrics:
            mu, sd = row[f"{m}_mean"], row.get(f"{m}_std", np.nan)
            cells.append("–" if pd.isna(mu) else (f"{mu:.{digits}f} ± {sd:.{digits}f}" if pd.notna(sd)
                                                 else f"{mu:.{digits}f}"))
        lines.append(f"| {str(name).replace('|', '/')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
