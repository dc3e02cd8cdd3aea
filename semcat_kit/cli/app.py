"""The ``semcat`` command: encode a catalog, train and export a head, or categorize products.

::

    semcat encode --catalog tutorial --cache-dir cache/ [--out emb/] [--text-encoder minilm]
    torchrun --nproc-per-node=2 -m semcat_kit encode --catalog tutorial --cache-dir cache/
    semcat train --catalog tutorial --config config.yaml --out head/ [--cache-dir cache/] [--predictions p.csv]
    semcat predict --model head/ --input products.csv --output preds.csv [--top-k 5] [--crm]
                   [--chunk-size 8192]     (input and output: .csv or .parquet, streamed in chunks)
    semcat tune --catalog tutorial --config config.yaml --out tuned/ \
        [--objective "hdist@5; top1 >= baseline - 0.5pt"] [--n-trials 30] [--timeout 600]

Bad input ends the command with exit status 1 and one line ``semcat: error: ...`` on stderr
(usage errors: status 2, from argparse).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["main", "build_parser", "read_train_config", "training_pipeline", "sample_catalog", "CONFIG_TEMPLATE"]

#: Default --chunk-size of ``semcat predict`` (= semcat_kit.ship.predictor.DEFAULT_CHUNK_SIZE; not
#: imported, to keep ``semcat --help`` free of torch).
DEFAULT_CHUNK_SIZE = 8192

CONFIG_TEMPLATE = """\
# semcat train configuration (every key optional; unknown keys are an error)
text_encoder: minilm               # sk.encoders.load name, or null for no titles
image_encoder: efficientnet-lite0  # or null for no images
taxonomy: null                     # the class set: a Google taxonomy file, a saved Taxonomy (.json), a .txt
                                   # of paths, or a list of paths; null: the catalog's own labels
sample: null                       # an int: train on a random sample of this many products (quick try)
seed: 0                            # seed of that sample
catalog:                           # column mapping of a CSV catalog (not used for "tutorial" / a Kaggle folder)
  id: id
  title: title
  image: null                      # column of image paths; null: <images_dir>/<id>.jpg
  images_dir: null                 # relative to the CSV's folder
  path: null                       # category level columns, top first, e.g. [masterCategory, subCategory]
  path_col: null                   # or one column holding "A > B > C"
  sep: " > "
split: {val: 0.1, test: 0.2, seed: 0, min_count: 3}
neighbors: {k: 20, template: "{path}"}   # class-name neighbour table (text encoder; tree without one):
                                         # soft labels use its first train.k, metrics nbrs@k need k >= 19
train:                             # any sk.TrainConfig field
  epochs: 30
  smoothing: semantic              # soft-label kind (list below)
export: {onnx: true, torchscript: true}
"""

_CATALOG_KEYS = {"id": "id", "title": "title", "image": None, "images_dir": None, "path": None, "path_col": None,
                 "sep": " > "}
_SPLIT_KEYS = {"val": 0.1, "test": 0.2, "seed": 0, "min_count": 3}
_NEIGHBOR_KEYS = {"k": 20, "template": "{path}"}
_EXPORT_KEYS = {"onnx": True, "torchscript": True}
_TOP_KEYS = {"text_encoder": "minilm", "image_encoder": "efficientnet-lite0", "taxonomy": None, "sample": None,
             "seed": 0,
             "catalog": None, "split": None, "neighbors": None, "train": None, "export": None}


def _kinds_help() -> str:
    """The soft-label kinds of ``train.smoothing`` and the config fields each reads, from the registry."""
    from ..labels.soft_labels import TARGET_KINDS

    lines = ["\ntrain.smoothing kinds (and the train fields each reads besides alpha):"]
    for name, kind in TARGET_KINDS.items():
        opts = ", ".join(sorted(set(kind.params.values()))) or "-"
        lines.append(f"  {name:10s} {kind.doc} [fields: {opts}]")
    return "\n".join(lines) + "\n"


class CliError(Exception):
    """Bad input found by the command line itself."""


# ----------------------------------------------------------------------------- config
def _section(raw, name: str, defaults: dict, where: str) -> dict:
    if raw is None:
        return dict(defaults)
    if not isinstance(raw, dict):
        raise CliError(f"{where}: '{name}' must be a mapping of keys, not {type(raw).__name__}")
    unknown = [k for k in raw if k not in defaults]
    if unknown:
        raise CliError(f"{where}: unknown key '{name}.{unknown[0]}'; known keys of '{name}': {', '.join(defaults)}")
    return {**defaults, **raw}


def read_train_config(path) -> dict:
    """Read and validate a ``semcat train`` YAML config (see :data:`CONFIG_TEMPLATE`).

    Returns
    -------
    dict
        Sections ``text_encoder, image_encoder, sample, seed, catalog, split, neighbors, export``
        with defaults filled in, and ``train`` as a :class:`semcat_kit.TrainConfig`.

    Raises
    ------
    CliError
        Unreadable YAML, an unknown key (named with its section), or a bad value.
    """
    import yaml

    from ..learn.training import TrainConfig

    p = Path(path)
    if not p.is_file():
        raise CliError(f"config file {str(p)!r} not found")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise CliError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise CliError(f"{p}: the top level must be a mapping of keys (text_encoder, train, ...)")
    unknown = [k for k in raw if k not in _TOP_KEYS]
    if unknown:
        raise CliError(f"{p}: unknown key '{unknown[0]}'; known keys: {', '.join(_TOP_KEYS)}")
    cfg = {**_TOP_KEYS, **raw}
    cfg["catalog"] = _section(raw.get("catalog"), "catalog", _CATALOG_KEYS, str(p))
    cfg["split"] = _section(raw.get("split"), "split", _SPLIT_KEYS, str(p))
    cfg["neighbors"] = _section(raw.get("neighbors"), "neighbors", _NEIGHBOR_KEYS, str(p))
    cfg["export"] = _section(raw.get("export"), "export", _EXPORT_KEYS, str(p))
    train = raw.get("train") or {}
    if not isinstance(train, dict):
        raise CliError(f"{p}: 'train' must be a mapping of TrainConfig fields")
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    bad = [k for k in train if k not in names]
    if bad:
        raise CliError(f"{p}: unknown key 'train.{bad[0]}'; TrainConfig fields: {', '.join(names)}")
    try:
        cfg["train"] = TrainConfig(**train)
    except (ValueError, TypeError) as e:
        raise CliError(f"{p}: {e}") from None
    for key in ("text_encoder", "image_encoder"):
        if cfg[key] is not None and (not isinstance(cfg[key], str) or not cfg[key]):
            raise CliError(f"{p}: '{key}' must be an encoder name (e.g. 'minilm') or null")
    if cfg["text_encoder"] is None and cfg["image_encoder"] is None:
        raise CliError(f"{p}: text_encoder and image_encoder are both null; give at least one")
    s = cfg["sample"]
    if s is not None and (isinstance(s, bool) or not isinstance(s, int) or s < 2):
        raise CliError(f"{p}: 'sample' must be an integer >= 2 or null, not {s!r}")
    for key in ("seed",):
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], int) or cfg[key] < 0:
            raise CliError(f"{p}: '{key}' must be a non-negative integer, not {cfg[key]!r}")
    for key in ("onnx", "torchscript"):
        if not isinstance(cfg["export"][key], bool):
            raise CliError(f"{p}: 'export.{key}' must be true or false, not {cfg['export'][key]!r}")
    k = cfg["neighbors"]["k"]
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise CliError(f"{p}: 'neighbors.k' must be a positive integer, not {k!r}")
    return cfg


def sample_catalog(catalog: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """A random sample of ``n`` products (all when ``n >= len``), in catalog order."""
    if n >= len(catalog):
        return catalog.reset_index(drop=True)
    return catalog.sample(n=n, random_state=seed).sort_index().reset_index(drop=True)


# ----------------------------------------------------------------------------- train
def _check_training_catalog(source: str, mapping: dict, config_path) -> None:
    """The ``--catalog`` checks that speak of the command's own options (the rest is the pipeline's)."""
    if source == "tutorial":
        return
    p = Path(source).expanduser()
    if p.is_dir():
        if not (p / "styles.csv").is_file():
            raise CliError(f"--catalog {source}: a folder must have the Kaggle fashion layout (styles.csv + images/); "
                           "for another layout give the CSV file and a 'catalog:' mapping in the config")
        return
    if not p.is_file():
        raise CliError(f"--catalog {source}: no such file or folder (give a CSV, a Kaggle fashion folder or 'tutorial')")
    if mapping["path"] is None and mapping["path_col"] is None:
        raise CliError(f"{config_path}: a CSV catalog needs 'catalog.path' (level columns, top first) or "
                       "'catalog.path_col' (one column of \"A > B > C\" paths)")


def _load_training_catalog(source: str, mapping: dict, config_path):
    """The catalog a command reads for ``--catalog`` (read by the same Pipeline as ``semcat train``)."""
    from ..orchestrate.pipeline import Pipeline

    _check_training_catalog(source, mapping, config_path)
    file_source = source != "tutorial" and Path(source).expanduser().is_file()
    return Pipeline(catalog=source, catalog_options=dict(mapping) if file_source else {}).load_catalog()


def training_pipeline(source: str, cfg: dict, cache_dir=None):
    """The :class:`~semcat_kit.orchestrate.pipeline.Pipeline` that ``semcat train`` runs for a config
    (:func:`read_train_config`) and a ``--catalog`` source."""
    from ..orchestrate.pipeline import Pipeline, PipelineConfig

    file_source = source != "tutorial" and Path(source).expanduser().is_file()
    tcfg = cfg["train"]
    return Pipeline(PipelineConfig(
        catalog=source, catalog_options=dict(cfg["catalog"]) if file_source else {}, taxonomy=cfg["taxonomy"],
        text_encoder=cfg["text_encoder"], image_encoder=cfg["image_encoder"],
        class_template=cfg["neighbors"]["template"], k=max(cfg["neighbors"]["k"], tcfg.k),
        val=cfg["split"]["val"], test=cfg["split"]["test"], split_seed=cfg["split"]["seed"],
        min_count=cfg["split"]["min_count"], sample=cfg["sample"], sample_seed=cfg["seed"], device=tcfg.device),
        cache_dir=cache_dir)


def _cmd_train(args) -> int:
    from .._core.memory import release_freed_memory
    from ..ship.export import export_head
    from ..ship.predictor import Predictor
    from ..datasets.taxonomy import TaxonomyMergeWarning
    from .._core import distributed

    cfg = read_train_config(args.config)
    tcfg = cfg["train"]
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise CliError(f"--out {out} exists; pass --overwrite to replace it or choose another folder")
    _check_training_catalog(args.catalog, cfg["catalog"], args.config)
    pipe = training_pipeline(args.catalog, cfg, cache_dir=args.cache_dir)
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
    tcfg = pipe.train_config(tcfg)     # data-aware defaults for the fields the YAML does not set
    print(f"training config: {tcfg!r}", flush=True)
    run = pipe.train(tcfg, progress=not args.quiet)
    if not distributed.is_main():
        return 0                       # rank 0 evaluates and exports
    metrics = pipe.evaluate(run, "test")
    if metrics:
        print(f"test metrics ({len(sp.test)} products):")
        for k, v in metrics.items():
            print(f"  {k:>24s}  {int(v):d}" if k == "n" else f"  {k:>24s}  {v:.4f}")
    else:
        print("test metrics: none (the test split is empty)")
    meta = {"test_metrics": metrics, "catalog": args.catalog, "n_products": n_products,
            "split": {"n_train": len(sp.train), "n_val": len(sp.val), "n_test": len(sp.test), **cfg["split"]},
            "sample": cfg["sample"], "seed": cfg["seed"]}
    export_head(run, out, onnx=cfg["export"]["onnx"], torchscript=cfg["export"]["torchscript"],
                overwrite=args.overwrite, metadata=meta)
    print(f"exported the head to {out}")
    if len(unl):
        from .._core.io import atomic_path

        dest = Path(args.predictions) if args.predictions else out / "unlabelled_predictions.csv"
        res = Predictor.load(out, device=tcfg.device).predict(unl, top_k=5, cache_dir=args.cache_dir,
                                                              progress=not args.quiet)
        with atomic_path(dest, suffix=".csv") as tmp:
            res.to_csv(tmp, index=False)
        print(f"wrote predictions for the {len(unl)} products without a usable label to {dest}")
    return 0


# ----------------------------------------------------------------------------- tune
def _prepare_data(args, cfg):
    """Catalog -> taxonomy, embeddings, labels, split and neighbours, as ``semcat train`` builds them."""
    import semcat_kit as sk

    tcfg = cfg["train"]
    catalog = _load_training_catalog(args.catalog, cfg["catalog"], args.config)
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


def _cmd_tune(args) -> int:
    import yaml

    from .._core.io import atomic_write_text
    from ..experiments.tuning import parse_objective, tune

    objective = parse_objective(args.objective)   # a bad objective fails before any encoding
    if args.n_trials < 1:
        raise CliError(f"--n-trials must be >= 1, not {args.n_trials}")
    if args.timeout is not None and args.timeout <= 0:
        raise CliError(f"--timeout must be a positive number of seconds, not {args.timeout}")
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


# ----------------------------------------------------------------------------- predict
def _read_products(args, df: pd.DataFrame | None = None, first_row: int = 0) -> pd.DataFrame:
    """Products of ``--input`` (or of ``df``, the rows ``first_row..`` of it read by ``_input_chunks``)."""
    p = Path(args.input).expanduser()
    if df is None:
        from ..datasets import read_csv

        if not p.is_file():
            raise CliError(f"--input {args.input}: no such file")
        try:   # the package's one CSV reader: BOM, encoding, long fields, duplicate columns, malformed lines
            df = read_csv(p, what="--input", id_col=args.id_col or "id", repair_col=args.title_col or "title",
                          dtype=str, keep_default_na=False, na_values=[""])
        except (pd.errors.ParserError, ValueError) as e:
            raise CliError(str(e).splitlines()[0]) from None
        for r in df.attrs["report"].itertuples():
            print(f"  {r.item_id}: {r.problem}", file=sys.stderr)
    cols = list(df.columns)

    def column(opt: str, given, default):
        name = given if given is not None else default
        if name in cols:
            return name
        if given is not None:
            raise CliError(f"--input {args.input} has no column {given!r} (from {opt}); its columns are {cols}")
        return None

    id_col = column("--id-col", args.id_col, "id")
    title_col = column("--title-col", args.title_col, "title")
    image_col = column("--image-col", args.image_col, "image")
    images = Path(args.images).expanduser() if args.images else None
    if images is not None and not images.is_dir():
        raise CliError(f"--images {args.images}: no such folder")
    if title_col is None and image_col is None and images is None:
        raise CliError(f"--input {args.input} has neither a title column ('title', or --title-col) nor an image "
                       f"column ('image', or --image-col) and no --images folder; its columns are {cols}")
    ids = (df[id_col] if id_col is not None
           else pd.Series([str(i) for i in range(first_row, first_row + len(df))], index=df.index))
    if id_col is not None and ids.isna().any():
        raise CliError(f"--input {args.input}: column {id_col!r} is empty at line(s) "
                       f"{[int(i) + 2 + first_row for i in np.flatnonzero(ids.isna().to_numpy())[:10]]}")
    out = pd.DataFrame({"item_id": ids.astype(str).str.strip().to_numpy()})
    dup = out["item_id"].duplicated(keep=False).to_numpy()
    if dup.any():
        first = out["item_id"][dup].iloc[0]
        lines = [int(i) + 2 + first_row for i in np.flatnonzero(out["item_id"].to_numpy() == first)[:10]]
        raise CliError(f"--input {args.input}: column {id_col!r} repeats id {first!r} (lines {lines}; "
                       f"{int(out['item_id'][dup].nunique())} repeated id(s) in all); ids must be unique, "
                       "or pass --id-col with a unique column")
    if title_col is not None:
        out["title"] = df[title_col].where(df[title_col].notna(), None).to_numpy(dtype=object)
    base = images if images is not None else p.resolve().parent
    if image_col is not None:
        paths = []
        for v in df[image_col].tolist():
            if v is None or (isinstance(v, float) and np.isnan(v)) or not str(v).strip():
                paths.append(None)
            else:
                q = Path(str(v).strip()).expanduser()
                paths.append(str(q if q.is_absolute() else base / q))
        out["image_path"] = paths
    elif images is not None:
        from ..datasets import image_paths_for

        # the image of each id as load_catalog(images_dir=) finds it (per id, no folder listing); an
        # entry that is not a regular file (a FIFO, a folder) is passed on: encoding reports it
        out["image_path"] = image_paths_for(out["item_id"].tolist(), images).paths
    return out


def _input_chunks(args, chunk_size: int):
    """Raw frames of ``--input`` (all columns as strings, None where empty), ``chunk_size`` rows at a
    time, read by the package's one chunked reader (:class:`semcat_kit.datasets.readers.CatalogFile`): CSV
    (malformed lines repaired and printed) or Parquet (``.parquet``/``.pq``); ``.tsv`` and
    ``.arrow``/``.feather`` too. Yields ``(frame, first_row)``."""
    from ..datasets.readers import ARROW_SUFFIXES, CSV_SUFFIXES, PARQUET_SUFFIXES, CatalogFile, text_frame

    p = Path(args.input).expanduser()
    if not p.is_file():
        raise CliError(f"--input {args.input}: no such file")
    known = p.suffix.lower() in CSV_SUFFIXES + PARQUET_SUFFIXES + ARROW_SUFFIXES
    try:
        f = CatalogFile(p, what="--input", id_col=args.id_col or "id", repair_col=args.title_col or "title",
                        csv_options=dict(dtype=str, keep_default_na=False, na_values=[""]),
                        format=None if known else "csv")
        chunks = f.chunks(chunk_size)
        while True:
            with warnings.catch_warnings():        # only around the read: repairs are printed below, once
                warnings.simplefilter("ignore")
                try:
                    df, first = next(chunks)
                except StopIteration:
                    break
            for r in df.attrs["report"].itertuples():
                print(f"  {r.item_id}: {r.problem}", file=sys.stderr)
            df.attrs.clear()
            yield text_frame({c: df[c].to_numpy(dtype=object) for c in df.columns}, df.index,
                              empty_is_missing=True), first
    except (pd.errors.ParserError, ValueError) as e:
        raise CliError(str(e).splitlines()[0]) from None


def _product_chunks(args, chunk_size: int):
    """``_read_products`` of each input chunk (column checks, ids, image paths per chunk)."""
    for df, first in _input_chunks(args, chunk_size):
        yield _read_products(args, df, first)


def _repeated_id_error(args, dup_id: str) -> CliError:
    """The error ``_read_products`` gives, for an id repeated in different chunks (the input is read
    again to name the lines: only on this error path)."""
    lines, repeated, seen = [], set(), set()
    for df, first in _input_chunks(args, 65536):
        for i, v in enumerate(_read_products(args, df, first)["item_id"].tolist()):
            if v == dup_id and len(lines) < 10:
                lines.append(first + i + 2)
            if v in seen:
                repeated.add(v)
            seen.add(v)
    return CliError(f"--input {args.input}: column {args.id_col or 'id'!r} repeats id {dup_id!r} (lines {lines}; "
                    f"{len(repeated)} repeated id(s) in all); ids must be unique, or pass --id-col with a unique "
                    "column")


def _check_device(name: str) -> None:
    from .._core.contracts import resolve_device

    try:
        resolve_device(name, name="--device")
    except ValueError as e:
        raise CliError(str(e)) from None


def _cmd_predict(args) -> int:
    from ..ship.predictor import DuplicateIdError, Predictor, write_predictions

    if args.top_k < 1:
        raise CliError(f"--top-k must be >= 1, not {args.top_k}")
    if args.chunk_size < 1:
        raise CliError(f"--chunk-size must be >= 1, not {args.chunk_size}")
    _check_device(args.device)
    out = Path(args.output).expanduser()
    if out.is_dir():
        raise CliError(f"--output {args.output} is a folder; give a file name such as {out / 'predictions.csv'}")
    chunks = _product_chunks(args, args.chunk_size)
    first = next(chunks)            # bad input (file, columns, ids of the first chunk) fails before loading
    pred = Predictor.load(args.model, device=args.device, backend=args.backend,
                          expected_sha256=args.expected_sha256)

    def products():
        yield first
        yield from chunks
    frames = pred.predict_iter(products(), top_k=args.top_k, crm=args.crm, cache_dir=args.cache_dir,
                               progress=not args.quiet, chunk_size=args.chunk_size)
    try:
        n = write_predictions(frames, out)
    except DuplicateIdError as e:
        raise _repeated_id_error(args, e.ids[0]) from None
    fails = pred.failures
    print(f"wrote {n} predictions to {out} ({len(fails)} unusable input(s))")
    for _, r in fails.head(10).iterrows():
        print(f"  {r['item_id']}: {r['modality']}: {r['reason']}", file=sys.stderr)
    if len(fails) > 10:
        print(f"  ... and {len(fails) - 10} more (see the 'failures' column)", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- encode
def sample_positions(n_rows: int, n: int, seed: int = 0) -> np.ndarray:
    """Sorted row positions of the products :func:`sample_catalog` keeps (``catalog.sample(n=n,
    random_state=seed)``, pandas' own draw: ``RandomState(seed).choice(n_rows, n, replace=False)``),
    computed from the row count alone so a file can be sampled while it is streamed."""
    if n >= n_rows:
        return np.arange(n_rows, dtype=np.int64)
    return np.sort(np.random.RandomState(seed).choice(n_rows, size=n, replace=False)).astype(np.int64)


_ENCODE_COLUMNS = ["item_id", "title", "image_path"]


def _stream_catalog_file(args, path: Path, mapping: dict, sample, seed: int, rank: int, world: int, out_rows=None,
                         image_used: bool = False):
    """This rank's share of a catalog file, chunk by chunk, mapped as ``semcat train`` maps it.

    Each chunk gets the Pipeline's column mapping (:func:`semcat_kit.datasets.mapping.load_catalog_chunks`:
    ids, titles, image paths relative to the file, the checks and the report); the selected rows
    (all, or the ``--sample`` positions of :func:`sample_positions`) are numbered ``j = 0, 1, ...`` and
    this rank keeps ``j % world == rank`` -- the rows ``sample_catalog(catalog).iloc[rank::world]``
    gave when the whole catalog was loaded. Every rank checks every row's id and category (the same
    errors everywhere) but looks at the image files of its own rows only. ``out_rows``: a Parquet file
    that receives every selected row (rank 0 with ``--out``). Returns ``(frames, total)``.
    """
    from ..datasets import CatalogFile, load_catalog_chunks
    from ..orchestrate.pipeline import _catalog_kwargs

    kw = _catalog_kwargs(dict(mapping), path.resolve().parent)
    # one reader for the count and the chunks (a CSV is checked once)
    cf = CatalogFile(path, what="catalog CSV" if path.suffix.lower() == ".csv" else "catalog file",
                     id_col=kw.get("id", "id"), repair_col=kw.get("title", "title"))
    positions, n_sel = None, None
    if sample is not None:
        positions = sample_positions(cf.num_rows(), sample, seed)
        n_sel = len(positions)
    elif cf.kind != "CSV":
        n_sel = cf.num_rows()           # from the metadata: no pass over the rows
    total = None if n_sel is None else n_sel // world + (rank < n_sel % world)

    def select(first: int, n: int):
        """``(selected, j)``: which rows of the chunk are in the (sampled) catalog, and their number j."""
        g = np.arange(first, first + n, dtype=np.int64)
        if positions is None:
            return np.ones(n, dtype=bool), g
        j = np.searchsorted(positions, g)
        return (j < len(positions)) & (positions[np.minimum(j, len(positions) - 1)] == g), j

    def keep(first: int, n: int):          # rank 0 with --out keeps every selected row (for the file)
        sel, j = select(first, n)
        return sel if out_rows is not None else sel & (j % world == rank)

    def frames():
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([(c, pa.string()) for c in _ENCODE_COLUMNS])
        writer = pq.ParquetWriter(str(out_rows), schema) if out_rows is not None else None
        images = 0
        try:
            for cat, first in load_catalog_chunks(cf, chunk_size=args.chunk_size, keep=keep, **kw):
                rep = cat.attrs["report"]            # each rank lists the repaired lines of its rows ...
                for r in rep[rep["problem"].str.startswith("malformed CSV line")].itertuples():
                    print(f"  {r.item_id}: {r.problem}", file=sys.stderr)
                if image_used:                       # ... and why an image path is unusable (10 of them)
                    for r in rep[rep["column"] == "image_path"].itertuples():
                        images += 1
                        if images <= 10:
                            print(f"  {r.item_id}: {r.problem}", file=sys.stderr)
                sel = cat[_ENCODE_COLUMNS]         # kept rows, indexed by their position in the file
                sel.attrs = {}
                if writer is not None and len(sel):
                    writer.write_table(pa.Table.from_pandas(sel.astype(object), schema=schema, preserve_index=False))
                if writer is not None:             # this rank's share of the selected rows
                    g = sel.index.to_numpy(dtype=np.int64)
                    j = g if positions is None else np.searchsorted(positions, g)
                    sel = sel[j % world == rank]
                yield sel
            if images > 10:
                print(f"  ... and {images - 10} more unusable image path(s)", file=sys.stderr)
        finally:
            if writer is not None:
                writer.close()
    return frames(), total


def _cmd_encode(args) -> int:
    """Encode a catalog into the store; under torchrun each rank encodes rows ``rank::world``.

    A catalog file is streamed (memory bounded by ``--chunk-size`` rows, see
    :func:`_stream_catalog_file`); ``tutorial`` and a Kaggle fashion folder (small) are loaded whole.
    """
    import tempfile

    import semcat_kit as sk

    from ..encode.encode import encode_into_store
    from ..encode.store import VectorStore

    if args.chunk_size < 1 or args.batch_size < 1:
        raise CliError("--chunk-size and --batch-size must be >= 1")
    _check_device(args.device)
    from .._core import distributed

    distributed.init_from_env()   # one code path: a process group only when torchrun started several (idempotent)
    rank, world = distributed.rank(), distributed.world_size()
    cfg = read_train_config(args.config) if args.config else None
    mapping = cfg["catalog"] if cfg else dict(_CATALOG_KEYS)
    text_name = args.text_encoder if args.text_encoder is not None else (cfg["text_encoder"] if cfg else "minilm")
    image_name = args.image_encoder if args.image_encoder is not None else \
        (cfg["image_encoder"] if cfg else "efficientnet-lite0")
    text_name = None if text_name in (None, "none", "") else text_name
    image_name = None if image_name in (None, "none", "") else image_name
    if text_name is None and image_name is None:
        raise CliError("--text-encoder and --image-encoder are both none; give at least one")
    sample = args.sample if args.sample is not None else (cfg["sample"] if cfg else None)
    if sample is not None and sample < 1:
        raise CliError(f"--sample must be >= 1, not {sample}")
    seed = cfg["seed"] if cfg else 0
    device = distributed.device_for_rank(args.device)
    _check_training_catalog(args.catalog, mapping, args.config or "--config")
    file_source = args.catalog != "tutorial" and Path(args.catalog).expanduser().is_file()
    text_enc = sk.encoders.load(text_name, device=device) if text_name else None
    image_enc = sk.encoders.load(image_name, device=device) if image_name else None
    opts = dict(text_encoder=text_enc, image_encoder=image_enc, cache_dir=args.cache_dir, batch_size=args.batch_size,
                num_workers=args.num_workers, chunk_size=args.chunk_size, store_dtype=args.store_dtype)
    with contextlib.ExitStack() as stack:
        out_rows = None
        if file_source:
            if args.out and rank == 0:      # the selected rows' item_id/title/image_path, for --out below
                base = Path(args.cache_dir).expanduser()
                try:                        # beside the store (the system temp folder may be small)
                    base.mkdir(parents=True, exist_ok=True)
                except OSError:
                    base = None
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix=".semcat-encode-", dir=base))
                out_rows = Path(tmp) / "catalog.parquet"
            frames, total = _stream_catalog_file(args, Path(args.catalog).expanduser(), mapping, sample, seed,
                                                 rank, world, out_rows, image_used=image_enc is not None)
            fill = encode_into_store(frames, total=total, progress=not args.quiet and rank == 0,
                                     store_writer=f"r{rank}", check_ids=False, **opts)   # checked by the reader
            catalog = out_rows
        else:                               # tutorial / Kaggle folder: small, loaded whole
            catalog = _load_training_catalog(args.catalog, mapping, args.config or "--config")
            if sample is not None:
                catalog = sample_catalog(catalog, sample, seed)
            fill = encode_into_store(catalog.iloc[rank::world], progress=not args.quiet and rank == 0,
                                     store_writer=f"r{rank}", **opts)
        st = fill.stats
        print(f"rank {rank}/{world}: {fill.n} products, encoded text {st.get('text_encoded', '-')}, "
              f"image {st.get('image_encoded', '-')} (the rest from the store), {len(fill.failures)} unusable "
              "input(s)", flush=True)
        if not args.out:                    # (with --out they are listed below, in catalog order)
            for _, r in fill.failures.head(10).iterrows():
                print(f"  {r['item_id']}: {r['modality']}: {r['reason']}", file=sys.stderr)
        if st.get("cache_write_error"):
            print(f"rank {rank}: the store could not be written ({st['cache_write_error']})", file=sys.stderr)
        distributed.barrier()
        if rank == 0:
            for m, enc in (("text", text_enc), ("image", image_enc)):
                if enc is None:
                    continue
                store = VectorStore.for_encoder(args.cache_dir, enc.fingerprint, m,
                                                enc.text_dim if m == "text" else enc.image_dim,
                                                dtype=args.store_dtype, writer="r0")
                store.merge()  # rank 0 finalises: adopt/verify every rank's shards, merge full tiers
                print(f"store {store.root}: {len(store)} {m} vectors in {len(store.shard_files)} shard(s)")
            if args.out:   # from the store (nothing left to encode); a file catalog is read back column by column
                full = sk.encode_catalog(catalog, text_encoder=text_enc, image_encoder=image_enc,
                                         cache_dir=args.cache_dir, batch_size=args.batch_size,
                                         num_workers=args.num_workers, progress=not args.quiet,
                                         chunk_size=args.chunk_size, out=args.out, store_dtype=args.store_dtype,
                                         store_writer="r0")
                print(f"wrote embeddings of {len(full)} products to {args.out} "
                      f"({len(full.failures)} unusable input(s))")
                for _, r in full.failures.head(10).iterrows():
                    print(f"  {r['item_id']}: {r['modality']}: {r['reason']}", file=sys.stderr)
        distributed.barrier()
    return 0


# ----------------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """An argument parser whose description may be given as a function, called only when its help
    is printed (``semcat train --help`` lists the soft-label registry, which imports torch)."""

    def __init__(self, *args, description_fn=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._description_fn = description_fn

    def format_help(self):
        if self._description_fn is not None:
            self.description, self._description_fn = self._description_fn(), None
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    """The ``semcat`` argument parser."""
    ap = _Parser(
        prog="semcat", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Categorize products into a category hierarchy from titles and images.",
        epilog="Run 'semcat encode --help', 'semcat train --help', 'semcat predict --help' or "
               "'semcat tune --help' for the options of each command.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="{encode,train,predict,tune}")

    e = sub.add_parser("encode", help="encode a catalog into the embedding store (one or many processes)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Encode the titles and images of a catalog into the embedding store under "
                                   "--cache-dir (see semcat_kit.encode.store), resuming after the last chunk a killed run "
                                   "wrote.\n\nSeveral processes (each encodes every WORLD_SIZE-th product into "
                                   "its own shards; rank 0 finalises the store):\n"
                                   "  torchrun --nproc-per-node=2 -m semcat_kit encode --catalog tutorial "
                                   "--cache-dir cache/\n  (gloo on CPUs, NCCL with one GPU per process; add "
                                   "--nnodes/--rdzv-endpoint for several machines sharing the cache folder)")
    e.add_argument("--catalog", required=True, metavar="SOURCE",
                   help="a catalog CSV (columns mapped by --config's 'catalog:' section), a Kaggle fashion folder "
                        "or 'tutorial'")
    e.add_argument("--cache-dir", required=True, metavar="DIR", help="the embedding store folder (shared by ranks)")
    e.add_argument("--config", metavar="YAML", help="a 'semcat train' config: its catalog mapping, encoders and "
                   "sample are used")
    e.add_argument("--text-encoder", metavar="NAME", help="text encoder (default: the config's, else minilm; "
                   "'none' for no titles)")
    e.add_argument("--image-encoder", metavar="NAME", help="image encoder (default: the config's, else "
                   "efficientnet-lite0; 'none' for no images)")
    e.add_argument("--sample", type=int, metavar="N", help="encode a random sample of N products (seeded)")
    e.add_argument("--out", metavar="DIR", help="also write the catalog's embeddings (in catalog order) to this "
                   "folder; sk.Embeddings.load(DIR) memory-maps it")
    e.add_argument("--batch-size", type=int, default=64, metavar="B", help="encoder batch size (default 64)")
    e.add_argument("--chunk-size", type=int, default=8192, metavar="C",
                   help="catalog rows read and encoded at a time, and items between two store writes (default "
                        "8192): a catalog file is streamed, memory grows with C, not with the catalog")
    e.add_argument("--num-workers", type=int, metavar="W", help="image loader workers (default: 0 on CPU, 4 on GPU)")
    e.add_argument("--store-dtype", default="float32", choices=("float32", "float16"),
                   help="precision of new store shards (default float32)")
    e.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda (default auto)")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    e.set_defaults(func=_cmd_encode)

    p = sub.add_parser("predict", help="categorize products with an exported head",
                       description="Categorize the products of a CSV file with a head exported by 'semcat train' "
                                   "or sk.export_head; writes one row per product: item_id, pred_1..k (full "
                                   "category paths), name_1..k, prob_1..k, used, failures.")
    p.add_argument("--model", required=True, metavar="DIR", help="folder of the exported head")
    p.add_argument("--input", required=True, metavar="FILE",
                   help="products to categorize: a CSV (or .parquet) file with a title column and/or an image "
                        "column; read --chunk-size rows at a time")
    p.add_argument("--images", metavar="DIR", help="folder that relative image paths are resolved against "
                   "(default: the CSV's folder); without an image column, the image of product X is DIR/X.jpg "
                   "(.jpeg, .png, .webp)")
    p.add_argument("--id-col", metavar="NAME", help="column of product ids (default 'id'; without one the row "
                   "number is the id)")
    p.add_argument("--title-col", metavar="NAME", help="column of product titles (default 'title')")
    p.add_argument("--image-col", metavar="NAME", help="column of image file paths (default 'image')")
    p.add_argument("--output", required=True, metavar="FILE", help="where to write the predictions, chunk by "
                   "chunk, renamed into place when complete: Parquet when it ends in .parquet/.pq, else CSV")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="categories per product (default 5)")
    p.add_argument("--crm", action="store_true", help="rank by least expected tree distance (CRM) instead of "
                   "probability; adds exp_dist_1..k")
    p.add_argument("--cache-dir", metavar="DIR", help="embedding cache folder (re-runs skip encoding)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda (default auto)")
    p.add_argument("--backend", default="torch", choices=("torch", "onnx", "torchscript"),
                   help="what runs the head (default torch)")
    p.add_argument("--expected-sha256", metavar="HEX", help="sha256 of the head's config.json given by its author "
                   "(`sha256sum DIR/config.json`); the head is refused unless it matches, and every file it "
                   "lists is then checked against the checksums recorded there (recommended with "
                   "--backend torchscript, which runs code from the folder)")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, metavar="N",
                   help=f"products read, encoded and scored at a time; memory grows with it, not with the "
                        f"input size (default {DEFAULT_CHUNK_SIZE}); the output does not depend on it")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_predict)

    t = sub.add_parser("train", help="train a head on a catalog and export it",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description_fn=lambda: ("Encode a catalog, split it (stratified train/val/test), train a "
                                               "head, print the test metrics and export the head.\n\nconfig.yaml "
                                               "(all keys optional; unknown keys are an error):\n\n"
                                               + CONFIG_TEMPLATE + _kinds_help()))
    t.add_argument("--catalog", required=True, metavar="SOURCE",
                   help="a catalog CSV (columns mapped by the config's 'catalog:' section), a Kaggle fashion "
                        "folder (styles.csv + images/), or 'tutorial' for the bundled tutorial catalog")
    t.add_argument("--config", required=True, metavar="YAML", help="training configuration (see above)")
    t.add_argument("--out", required=True, metavar="DIR", help="folder to export the trained head to")
    t.add_argument("--cache-dir", metavar="DIR", help="embedding cache folder (re-runs skip encoding)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    t.add_argument("--predictions", metavar="CSV", help="where to write the predictions for the catalog's products "
                   "without a usable label (default: <out>/unlabelled_predictions.csv; only when there are some)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=_cmd_train)

    u = sub.add_parser("tune", help="search training settings for a stated objective (Optuna)",
                       description="Encode and split a catalog as 'semcat train' does, then search soft labels, "
                                   "loss, head size, step budget and CRM with Optuna, training on the train split "
                                   "and scoring on the validation split. Writes best.yaml (its 'train:' section "
                                   "is a 'semcat train' config) and trials.csv.")
    u.add_argument("--catalog", required=True, metavar="SOURCE", help="as for 'semcat train'")
    u.add_argument("--config", required=True, metavar="YAML", help="as for 'semcat train'; its 'train:' section "
                   "holds the settings that are not searched")
    u.add_argument("--out", required=True, metavar="DIR", help="folder for best.yaml and trials.csv")
    u.add_argument("--objective", default="hdist@5; top1 >= baseline - 0.5pt",
                   help="metric to optimise and constraints, e.g. 'hdist@5; top1 >= baseline - 0.5pt, "
                        "macro_f1 >= baseline - 0.5pt' (baseline: a tuned LogisticRegression on the same "
                        "embeddings; onehot: the default one-hot head)")
    u.add_argument("--n-trials", type=int, default=30, metavar="N", help="number of trials (default 30)")
    u.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="stop after this long")
    u.add_argument("--cache-dir", metavar="DIR", help="embedding cache folder (re-runs skip encoding)")
    u.add_argument("--overwrite", action="store_true", help="write into a non-empty --out folder")
    u.add_argument("--quiet", action="store_true", help="no progress bars")
    u.set_defaults(func=_cmd_tune)
    return ap


def main(argv=None) -> int:
    """Run the ``semcat`` command line; returns the exit status (0 ok, 1 bad input, 2 usage)."""
    args = build_parser().parse_args(argv)      # --help and usage errors exit here, before torch loads
    from ..learn.training import TrainingDivergedError
    from ..ship.export import ExportError

    if getattr(args, "quiet", False):
        try:   # transformers draws its own "Loading weights" bar when an encoder loads
            from transformers.utils import logging as _hf_logging

            _hf_logging.disable_progress_bar()
        except ImportError:   # pragma: no cover
            pass
    from .._core import distributed

    started = distributed.init_from_env()     # under torchrun (WORLD_SIZE > 1): one process group
    try:
        return int(args.func(args) or 0)
    except (CliError, ValueError, KeyError, TypeError, OSError, ExportError, TrainingDivergedError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        msg = " ".join(str(msg).split())
        rank = f" (rank {distributed.rank()})" if distributed.is_distributed() else ""
        print(f"semcat{rank}: error: {msg}", file=sys.stderr)
        return 1
    finally:
        if started:
            distributed.shutdown()


if __name__ == "__main__":   # pragma: no cover
    sys.exit(main())
