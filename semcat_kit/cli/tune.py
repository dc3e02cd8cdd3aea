"""``semcat tune``: search training settings for a stated objective (Optuna) on a catalog encoded and
split as ``semcat train`` does."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

from .common import CliError, load_training_catalog, sample_catalog

__all__ = ["run"]


def _prepare_data(args, cfg):
    """Catalog -> taxonomy, embeddings, labels, split and neighbours, as ``semcat train`` builds them."""
    import semcat_kit as sk

    tcfg = cfg["train"]
    catalog = load_training_catalog(args.catalog, cfg["catalog"], args.config)
    if cfg["sample"] is not None:
        catalog = sample_catalog(catalog, cfg["sample"], cfg["seed"])
    csv_source = args.catalog != "tutorial" and Path(args.catalog).expanduser().is_file()
    sep = (cfg["catalog"].get("sep") or " > ") if csv_source else " > "
    from ..datasets.taxonomy import TaxonomyMergeWarning

    with warnings.catch_warnings():   # the merges are printed below, once (as semcat train does)
        warnings.simplefilter("ignore", TaxonomyMergeWarning)
        tax = sk.Taxonomy.from_paths(catalog["label"], sep=sep)
    print(f"catalog: {len(catalog)} products, {tax.n_classes} classes", flush=True)
    if tax.aliases:
        print(tax.merge_message(limit=30), flush=True)
    text_enc = sk.encoders.load(cfg["text_encoder"], device=tcfg.device) if cfg["text_encoder"] else None
    image_enc = sk.encoders.load(cfg["image_encoder"], device=tcfg.device) if cfg["image_encoder"] else None
    emb = sk.encode_catalog(catalog, text_encoder=text_enc, image_encoder=image_enc, cache_dir=args.cache_dir,
                            progress=not args.quiet)
    if len(emb.failures):
        print(f"unusable inputs: {len(emb.failures)} (e.g. {emb.failures.iloc[0].to_dict()})", file=sys.stderr)
    y = tax.index_of(catalog["label"].tolist())
    sp = sk.split(y, val=cfg["split"]["val"], test=cfg["split"]["test"], seed=cfg["split"]["seed"],
                  min_count=cfg["split"]["min_count"])
    nk = min(max(cfg["neighbors"]["k"], tcfg.k), max(1, tax.n_classes - 1))
    if text_enc is not None:
        names = sk.similarity.class_texts(tax, template=cfg["neighbors"]["template"])
        neighbors = sk.similarity.label_neighbors(text_enc.encode_texts(names), k=nk)
    else:
        neighbors = sk.similarity.tree_neighbors(tax, nk)
    return tax, emb, np.asarray(y), sp, neighbors


def run(args) -> int:
    import yaml

    from .._core.io import atomic_write_text
    from ..experiments.tuning import parse_objective, tune

    objective = parse_objective(args.objective)   # a bad objective fails before any encoding
    if args.n_trials < 1:
        raise CliError(f"--n-trials must be >= 1, not {args.n_trials}")
    if args.timeout is not None and args.timeout <= 0:
        raise CliError(f"--timeout must be a positive number of seconds, not {args.timeout}")
    from ..orchestrate.config import read_train_config

    cfg = read_train_config(args.config)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise CliError(f"--out {out} exists and is not empty; pass --overwrite or choose another folder")
    tax, emb, y, sp, neighbors = _prepare_data(args, cfg)
    if not len(sp.val):
        raise CliError("the split has no validation items; the tuner scores trials on it (set split.val > 0)")
    print(f"split: {len(sp.train)} train, {len(sp.val)} val, {len(sp.test)} test; objective: {objective}", flush=True)
    res = tune((emb.take(sp.train), y[sp.train]), (emb.take(sp.val), y[sp.val]), taxonomy=tax, neighbors=neighbors,
               objective=objective, n_trials=args.n_trials, timeout=args.timeout, base_config=cfg["train"],
               seed=cfg["seed"], progress=not args.quiet, allow_unseen_val_classes=True)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "trials.csv", res.trials.to_csv(index=False))
    best = {"train": res.config.to_dict(), "crm": res.crm, "objective": str(objective),
            "val_scores": {k: float(v) for k, v in res.scores.items()},
            "references": {n: {k: float(v) for k, v in s.items()} for n, s in res.references.items()}}
    atomic_write_text(out / "best.yaml", yaml.safe_dump(best, sort_keys=False, allow_unicode=True))
    print(f"best of {len(res.trials)} trials ({'feasible' if res.feasible else 'NO trial met the constraints'}): "
          f"{objective.metric} = {res.scores[objective.metric]:.4f} on val, crm={res.crm}")
    for name, ref in res.references.items():
        print(f"  reference {name}: {objective.metric} = {ref[objective.metric]:.4f}")
    print(f"wrote {out / 'best.yaml'} (its 'train:' section is a semcat train config) and {out / 'trials.csv'}")
    return 0
