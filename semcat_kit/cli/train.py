"""``semcat train``: read a catalog with a YAML config, train a head, print its test metrics, export it
(and categorize the catalog's unlabelled products)."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

from .common import CliError, check_training_catalog

__all__ = ["run"]


def run(args) -> int:
    from .._core.memory import release_freed_memory
    from ..ship.predictor import Predictor
    from ..datasets.taxonomy import TaxonomyMergeWarning
    from .._core import distributed

    from ..orchestrate.config import read_train_config
    from ..orchestrate.pipeline import Pipeline

    cfg = read_train_config(args.config)
    tcfg = cfg["train"]
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise CliError(f"--out {out} exists; pass --overwrite to replace it or choose another folder")
    check_training_catalog(args.catalog, cfg["catalog"], args.config)
    pipe = Pipeline.from_train_config(args.catalog, cfg, cache_dir=args.cache_dir)
    with warnings.catch_warnings():   # the merges are printed below, once
        warnings.simplefilter("ignore", TaxonomyMergeWarning)
        summary = pipe.validate()
    catalog, tax = pipe.load_catalog(), pipe.taxonomy()
    print(f"catalog: {len(catalog)} products, {tax.n_classes} classes", flush=True)
    if tax.aliases:
        print(tax.merge_message(limit=30), flush=True)
    unknown = pipe.unknown_labels()
    if summary["unlabelled"] or len(unknown):
        print(f"not used for training: {summary['unlabelled']} unlabelled product(s), {len(unknown)} with a label "
              "that is not a taxonomy class (both get predictions)", flush=True)
    for _, r in unknown.drop_duplicates("label").head(10).iterrows():
        print(f"  label {r['label']!r} (row {r['row']}) is not in the taxonomy; closest: {r['suggestions']}",
              file=sys.stderr)
    if distributed.is_distributed() and args.cache_dir:
        # under torchrun with a store: every rank reads, hashes and encodes only its share (rows
        # rank::world) into it; the ranks exchange the rows' content keys and each gets a view of the
        # whole catalog on the store (Pipeline.embeddings -> sharded.encode_distributed)
        emb = pipe.embeddings(progress=not args.quiet)
        st, rank, world = emb.meta["stats"], distributed.rank(), distributed.world_size()

        def mine(m):
            return st[f"{m}_encoded_by_rank"][rank] if f"{m}_encoded_by_rank" in st else "-"
        print(f"rank {rank}/{world}: encoded text {mine('text')}, image {mine('image')} "
              f"of its {st['n_by_rank'][rank]} products (the rest from the store)", flush=True)
    else:
        with distributed.main_first():     # rank 0 fills the cache (or encodes), the others read it
            emb = pipe.embeddings(progress=not args.quiet and distributed.is_main())
    if len(emb.failures):
        print(f"unusable inputs: {len(emb.failures)} (e.g. {emb.failures.iloc[0].to_dict()})", file=sys.stderr)
    sp = pipe.split()
    print(f"split: {len(sp.train)} train, {len(sp.val)} val, {len(sp.test)} test", flush=True)
    # training needs only the arrays built from the catalog (labels, split, embeddings): the table
    # goes before it (rank 0 keeps the unlabelled rows it predicts at the end)
    n_products = len(catalog)
    unl = pipe.unlabelled_catalog() if distributed.is_main() else None
    del catalog
    pipe.release_catalog()
    release_freed_memory()
    if distributed.is_distributed():   # torchrun: DDP over the ranks, each on its own device
        tcfg = tcfg.replace(device=distributed.device_for_rank(tcfg.device))
    tcfg = pipe.train_config(tcfg)     # the "auto" fields decided for this split (what train() decides)
    print(f"training config: {tcfg!r}", flush=True)
    run = pipe.train(tcfg, progress=not args.quiet)
    if not distributed.is_main():
        return 0                       # rank 0 evaluates and exports
    s = run.solver
    print(f"solver: {s.get('method')} ({s.get('why')})"
          + (f"; C={s['C']:g} chosen on the val split, {s['iterations']} L-BFGS steps, "
             f"{'converged' if s['converged'] else 'NOT converged (raise train.max_iter)'}"
             if s.get("method") == "lbfgs" else f"; budget: {s.get('budget')}, trained {len(run.history)} epochs"
             if s.get("method") == "minibatch" else ""), flush=True)
    onnx = cfg["export"]["onnx"]
    if onnx == "auto":
        from .._core.optional import have_onnx

        onnx = have_onnx()
        if not onnx:
            print('no head.onnx: the ONNX export needs pip install "semcat_kit[onnx]" (export.onnx: auto)')
    meta = {"catalog": args.catalog, "n_products": n_products, "split": dict(cfg["split"]),
            "sample": cfg["sample"], "seed": cfg["seed"]}
    # the library measures and exports (test metrics, titles-only metrics, hedging thresholds, the CRM
    # verdict, split.csv); this command prints what it measured
    rep = pipe.export_head(run, out, onnx=onnx, pt2=cfg["export"]["pt2"], overwrite=args.overwrite, metadata=meta)
    metrics, text_only, hedging, trust = (rep["test_metrics"], rep["test_metrics_text_only"], rep["hedging"],
                                          rep["crm_trust"])
    if metrics:
        print(f"test metrics ({len(sp.test)} products):")
        for k, v in metrics.items():
            print(f"  {k:>24s}  {int(v):d}" if k == "n" else f"  {k:>24s}  {v:.4f}")
    else:
        print("test metrics: none (the test split is empty)")
    if text_only:
        print(f"  without images (titles only, as `semcat predict --text-only`): top1 {text_only['top1']:.4f}")
    if hedging is not None:
        _print_hedging(hedging)
    if trust is not None:
        print(f"CRM decoding (--crm): {'can be used' if trust.ok else 'FLAGGED'} ({trust.reason})", flush=True)
    print(f"exported the head to {out} (the split's item ids: {rep['split_file']})")
    if len(unl):
        from .._core.io import atomic_path

        dest = Path(args.predictions) if args.predictions else out / "unlabelled_predictions.csv"
        hedge_at = UNLABELLED_PRECISION if hedging is not None else None
        res = Predictor.load(out, device=tcfg.device).predict(unl, top_k=5, cache_dir=args.cache_dir,
                                                              progress=not args.quiet, precision=hedge_at)
        with atomic_path(dest, suffix=".csv") as tmp:
            res.to_csv(tmp, index=False)
        print(f"wrote predictions for the {len(unl)} products without a usable label to {dest}")
        if hedge_at is not None:
            leaf, review = res["is_leaf"].to_numpy(bool), res["needs_review"].to_numpy(bool)
            print(f"  at precision {hedge_at:g}: {int(leaf.sum())} given a leaf, {int((~leaf & ~review).sum())} a "
                  f"broader category, {int(review.sum())} marked needs_review (columns node, is_leaf, needs_review)")
    return 0


#: Precision of the hedged columns of the unlabelled products' predictions.
UNLABELLED_PRECISION = 0.98


def _print_hedging(cal) -> None:
    """The hedging thresholds calibrated on the validation split, one line per precision."""
    print(f"hedging thresholds (calibrated on {cal.n} val products; RCPS, delta {cal.delta:g}):")
    for r in cal.table().itertuples():
        if r.threshold >= 1:
            print(f"  precision {r.precision:g}: root for every product (too few val products to certify it)")
        else:
            print(f"  precision {r.precision:g}: threshold {r.threshold:.4f} (val: {r.val_leaf_coverage:.1%} given "
                  f"a leaf, precision {r.val_precision:.3f})")
