"""The ``semcat`` command: train and export a head, or categorize products with an exported head.

::

    semcat train --catalog tutorial --config config.yaml --out head/ [--cache-dir cache/] [--predictions p.csv]
    semcat predict --model head/ --input products.csv --output preds.csv [--top-k 5] [--crm]

Bad input ends the command with exit status 1 and one line ``semcat: error: ...`` on stderr
(usage errors: status 2, from argparse).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["main", "build_parser", "read_train_config", "training_pipeline", "sample_catalog", "CONFIG_TEMPLATE"]

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")

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
    from .soft_labels import TARGET_KINDS

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

    from .training import TrainConfig

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


def training_pipeline(source: str, cfg: dict, cache_dir=None):
    """The :class:`~semcat_kit.pipeline.Pipeline` that ``semcat train`` runs for a config
    (:func:`read_train_config`) and a ``--catalog`` source."""
    from .pipeline import Pipeline, PipelineConfig

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
    from .export import export_head
    from .predictor import Predictor
    from .taxonomy import TaxonomyMergeWarning
    from . import distributed

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
    with distributed.main_first():     # under torchrun rank 0 fills the cache, the others read it
        emb = pipe.embeddings(progress=not args.quiet and distributed.is_main())
    if len(emb.failures):
        print(f"unusable inputs: {len(emb.failures)} (e.g. {emb.failures.iloc[0].to_dict()})", file=sys.stderr)
    sp = pipe.split()
    print(f"split: {len(sp.train)} train, {len(sp.val)} val, {len(sp.test)} test", flush=True)
    if distributed.is_distributed():   # torchrun: DDP over the ranks, each on its own device
        tcfg = tcfg.replace(device=distributed.device_for_rank(tcfg.device))
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
    meta = {"test_metrics": metrics, "catalog": args.catalog, "n_products": len(catalog),
            "split": {"n_train": len(sp.train), "n_val": len(sp.val), "n_test": len(sp.test), **cfg["split"]},
            "sample": cfg["sample"], "seed": cfg["seed"]}
    export_head(run, out, onnx=cfg["export"]["onnx"], torchscript=cfg["export"]["torchscript"],
                overwrite=args.overwrite, metadata=meta)
    print(f"exported the head to {out}")
    unl = pipe.unlabelled_catalog()
    if len(unl):
        from ._io import atomic_path

        dest = Path(args.predictions) if args.predictions else out / "unlabelled_predictions.csv"
        res = Predictor.load(out, device=tcfg.device).predict(unl, top_k=5, cache_dir=args.cache_dir,
                                                              progress=not args.quiet)
        with atomic_path(dest, suffix=".csv") as tmp:
            res.to_csv(tmp, index=False)
            _umask_permissions(tmp)
        print(f"wrote predictions for the {len(unl)} products without a usable label to {dest}")
    return 0


# ----------------------------------------------------------------------------- predict
def _read_products(args) -> pd.DataFrame:
    from .datasets import read_csv

    p = Path(args.input).expanduser()
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
    ids = df[id_col] if id_col is not None else pd.Series([str(i) for i in range(len(df))])
    if id_col is not None and ids.isna().any():
        raise CliError(f"--input {args.input}: column {id_col!r} is empty at line(s) "
                       f"{[int(i) + 2 for i in np.flatnonzero(ids.isna().to_numpy())[:10]]}")
    out = pd.DataFrame({"item_id": ids.astype(str).str.strip().to_numpy()})
    dup = out["item_id"].duplicated(keep=False).to_numpy()
    if dup.any():
        first = out["item_id"][dup].iloc[0]
        lines = [int(i) + 2 for i in np.flatnonzero(out["item_id"].to_numpy() == first)[:10]]
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
        index = {}
        for f in images.iterdir():
            if f.suffix.lower() in IMAGE_EXTS:
                index.setdefault(f.stem, str(f))
        out["image_path"] = [index.get(i) for i in out["item_id"]]
    return out


def _check_device(name: str) -> None:
    from .contracts import resolve_device

    try:
        resolve_device(name, name="--device")
    except ValueError as e:
        raise CliError(str(e)) from None


def _umask_permissions(path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _cmd_predict(args) -> int:
    from ._io import atomic_path
    from .predictor import Predictor

    if args.top_k < 1:
        raise CliError(f"--top-k must be >= 1, not {args.top_k}")
    _check_device(args.device)
    out = Path(args.output).expanduser()
    if out.is_dir():
        raise CliError(f"--output {args.output} is a folder; give a file name such as {out / 'predictions.csv'}")
    products = _read_products(args)
    pred = Predictor.load(args.model, device=args.device, backend=args.backend)
    res = pred.predict(products, top_k=args.top_k, crm=args.crm, cache_dir=args.cache_dir,
                       progress=not args.quiet)
    with atomic_path(out, suffix=".csv") as tmp:
        res.to_csv(tmp, index=False)
        _umask_permissions(tmp)  # the temporary file is private (0600); the output is not
    fails = res.attrs["failures"]
    print(f"wrote {len(res)} predictions to {out} ({len(fails)} unusable input(s))")
    for _, r in fails.head(10).iterrows():
        print(f"  {r['item_id']}: {r['modality']}: {r['reason']}", file=sys.stderr)
    if len(fails) > 10:
        print(f"  ... and {len(fails) - 10} more (see the 'failures' column)", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The ``semcat`` argument parser."""
    ap = argparse.ArgumentParser(
        prog="semcat", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Categorize products into a category hierarchy from titles and images.",
        epilog="Run 'semcat train --help' or 'semcat predict --help' for the options of each command.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="{train,predict}")

    p = sub.add_parser("predict", help="categorize products with an exported head",
                       description="Categorize the products of a CSV file with a head exported by 'semcat train' "
                                   "or sk.export_head; writes one row per product: item_id, pred_1..k (full "
                                   "category paths), name_1..k, prob_1..k, used, failures.")
    p.add_argument("--model", required=True, metavar="DIR", help="folder of the exported head")
    p.add_argument("--input", required=True, metavar="CSV",
                   help="products to categorize: a CSV with a title column and/or an image column")
    p.add_argument("--images", metavar="DIR", help="folder that relative image paths are resolved against "
                   "(default: the CSV's folder); without an image column, the image of product X is DIR/X.jpg "
                   "(.jpeg, .png, .webp)")
    p.add_argument("--id-col", metavar="NAME", help="column of product ids (default 'id'; without one the row "
                   "number is the id)")
    p.add_argument("--title-col", metavar="NAME", help="column of product titles (default 'title')")
    p.add_argument("--image-col", metavar="NAME", help="column of image file paths (default 'image')")
    p.add_argument("--output", required=True, metavar="CSV", help="where to write the predictions (atomically)")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="categories per product (default 5)")
    p.add_argument("--crm", action="store_true", help="rank by least expected tree distance (CRM) instead of "
                   "probability; adds exp_dist_1..k")
    p.add_argument("--cache-dir", metavar="DIR", help="embedding cache folder (re-runs skip encoding)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda (default auto)")
    p.add_argument("--backend", default="torch", choices=("torch", "onnx", "torchscript"),
                   help="what runs the head (default torch)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_predict)

    t = sub.add_parser("train", help="train a head on a catalog and export it",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Encode a catalog, split it (stratified train/val/test), train a head, print "
                                   "the test metrics and export the head.\n\nconfig.yaml (all keys optional; "
                                   "unknown keys are an error):\n\n" + CONFIG_TEMPLATE + _kinds_help())
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
    return ap


def main(argv=None) -> int:
    """Run the ``semcat`` command line; returns the exit status (0 ok, 1 bad input, 2 usage)."""
    from .export import ExportError
    from .training import TrainingDivergedError

    args = build_parser().parse_args(argv)
    if getattr(args, "quiet", False):
        try:   # transformers draws its own "Loading weights" bar when an encoder loads
            from transformers.utils import logging as _hf_logging

            _hf_logging.disable_progress_bar()
        except ImportError:   # pragma: no cover
            pass
    from . import distributed

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
