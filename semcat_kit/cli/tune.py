"""``semcat tune``: search training settings for a stated objective (Optuna) on the catalog, taxonomy,
embeddings and split that ``semcat train`` builds (the same :class:`~semcat_kit.Pipeline`)."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

from .common import CliError, check_training_catalog

__all__ = ["run"]


def run(args) -> int:
    import yaml

    from .._core.io import atomic_write_text
    from ..datasets.taxonomy import TaxonomyMergeWarning
    from ..experiments.tuning import parse_objective
    from ..orchestrate.config import read_train_config
    from ..orchestrate.pipeline import Pipeline

    objective = parse_objective(args.objective)   # a bad objective fails before any encoding
    if args.n_trials < 1:
        raise CliError(f"--n-trials must be >= 1, not {args.n_trials}")
    if args.timeout is not None and args.timeout <= 0:
        raise CliError(f"--timeout must be a positive number of seconds, not {args.timeout}")
    cfg = read_train_config(args.config)
    out = Path(args.out)
    resuming = args.storage is not None and out.exists() and (out / "best.yaml").is_file()
    if out.exists() and any(out.iterdir()) and not args.overwrite and not resuming:
        raise CliError(f"--out {out} exists and is not empty; pass --overwrite or choose another folder")
    check_training_catalog(args.catalog, cfg["catalog"], args.config)
    pipe = Pipeline.from_train_config(args.catalog, cfg, cache_dir=args.cache_dir)
    with warnings.catch_warnings():   # the merges are printed below, once (as semcat train does)
        warnings.simplefilter("ignore", TaxonomyMergeWarning)
        summary = pipe.validate()
    tax = pipe.taxonomy()
    print(f"catalog: {summary['products']} products, {tax.n_classes} classes", flush=True)
    if tax.aliases:
        print(tax.merge_message(limit=30), flush=True)
    if summary["unlabelled"] or summary["unknown_labels"]:
        print(f"not used for tuning: {summary['unlabelled']} unlabelled product(s), {summary['unknown_labels']} "
              "with a label that is not a taxonomy class", flush=True)
    emb = pipe.embeddings(progress=not args.quiet)
    if len(emb.failures):
        print(f"unusable inputs: {len(emb.failures)} (e.g. {emb.failures.iloc[0].to_dict()})", file=sys.stderr)
    sp = pipe.split()
    print(f"split: {len(sp.train)} train, {len(sp.val)} val, {len(sp.test)} test; objective: {objective}", flush=True)
    base = pipe.train_config(cfg["train"])      # the decision every trial's untuned fields get, as semcat train's
    print(f"base training config: {base!r}\n  minibatch budget (trials that tune 'steps' change it): "
          f"{base.budget(len(sp.train))}", flush=True)
    res = pipe.tune(objective, n_trials=args.n_trials, timeout=args.timeout, base_config=cfg["train"],
                    seed=cfg["seed"], progress=not args.quiet, storage=args.storage, study_name=args.study_name,
                    pruner=args.pruner)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "trials.csv", res.trials.to_csv(index=False))
    best = {"train": res.config.to_dict(), "crm": res.crm, "objective": str(objective),
            "val_scores": {k: float(v) for k, v in res.scores.items()},
            "references": {n: {k: float(v) for k, v in s.items()} for n, s in res.references.items()}}
    atomic_write_text(out / "best.yaml", yaml.safe_dump(best, sort_keys=False, allow_unicode=True))
    import optuna

    n_pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in res.study.trials)
    if n_pruned:
        print(f"pruned {n_pruned} hopeless trial(s) early")
    print(f"best of {len(res.trials)} trials ({'feasible' if res.feasible else 'NO trial met the constraints'}): "
          f"{objective.metric} = {res.scores[objective.metric]:.4f} on val, crm={res.crm}")
    for name, ref in res.references.items():
        print(f"  reference {name}: {objective.metric} = {ref[objective.metric]:.4f}")
    print(f"wrote {out / 'best.yaml'} (its 'train:' section is a semcat train config) and {out / 'trials.csv'}")
    return 0
