"""The ``semcat`` command: encode a catalog, train and export a head, or categorize products.

::

    semcat encode --catalog tutorial --cache-dir cache/ [--out emb/] [--text-encoder minilm]
    torchrun --nproc-per-node=2 -m semcat_kit encode --catalog tutorial --cache-dir cache/
    semcat train --catalog tutorial --config config.yaml --out head/ [--cache-dir cache/] [--predictions p.csv]
    semcat predict --model head/ --input products.csv --output preds.csv [--top-k 5] [--crm] [--precision 0.98]
                   [--chunk-size 8192]     (input and output: .csv or .parquet, streamed in chunks)
    semcat tune --catalog tutorial --config config.yaml --out tuned/ \
        [--objective "hdist@5; top1 >= baseline - 0.5pt"] [--n-trials 30] [--timeout 600]

Bad input ends the command with exit status 1 and one line ``semcat: error: ...`` on stderr
(usage errors: status 2, from argparse).
"""
from __future__ import annotations

import argparse
import sys

from . import encode, predict, train, tune
from .common import CliError
from .predict import DEFAULT_CHUNK_SIZE

__all__ = ["main", "build_parser"]


def _kinds_help() -> str:
    """The soft-label kinds of ``train.smoothing`` and the config fields each reads, from the registry."""
    from ..labels.soft_labels import TARGET_KINDS

    lines = ["\ntrain.smoothing kinds (and the train fields each reads besides alpha):"]
    for name, kind in TARGET_KINDS.items():
        opts = ", ".join(sorted(set(kind.params.values()))) or "-"
        lines.append(f"  {name:10s} {kind.doc} [fields: {opts}]")
    return "\n".join(lines) + "\n"


def _train_description() -> str:
    from ..orchestrate.config import CONFIG_TEMPLATE

    return ("Encode a catalog, split it (stratified train/val/test), train a head, print the test metrics "
            "and export the head.\n\nconfig.yaml (all keys optional; unknown keys are an error; "
            "`semcat train --print-config > config.yaml` writes it):\n\n"
            + CONFIG_TEMPLATE + _kinds_help())


class _PrintConfig(argparse.Action):
    """``--print-config``: print the YAML config template (every key, commented) and exit, as ``--version`` does."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from ..orchestrate.config import CONFIG_TEMPLATE

        sys.stdout.write(CONFIG_TEMPLATE)
        parser.exit(0)


# ----------------------------------------------------------------------------- parser
#: the descriptions ``semcat <command> --help`` prints (train's is built when printed: _train_description)
_ENCODE_DESCRIPTION = (
    "Encode the titles and images of a catalog into the embedding store under --cache-dir (see "
    "semcat_kit.encode.store), resuming after the last chunk a killed run wrote.\n\n"
    "Several processes (each encodes every WORLD_SIZE-th product into its own shards; rank 0 finalises "
    "the store):\n"
    "  torchrun --nproc-per-node=2 -m semcat_kit encode --catalog tutorial --cache-dir cache/\n"
    "  (gloo on CPUs, NCCL with one GPU per process; add --nnodes/--rdzv-endpoint for several machines "
    "sharing the cache folder)")
_PREDICT_DESCRIPTION = (
    "Categorize the products of a CSV file with a head exported by 'semcat train' or sk.export_head; "
    "writes one row per product: item_id, pred_1..k (full category paths), name_1..k, prob_1..k, (with "
    "--precision: node, node_depth, node_prob, is_leaf, needs_review), used, failures.")
_TUNE_DESCRIPTION = (
    "Encode and split a catalog as 'semcat train' does, then search soft labels, loss, head size, step "
    "budget and CRM with Optuna, training on the train split and scoring on the validation split. Writes "
    "best.yaml (its 'train:' section is a 'semcat train' config) and trials.csv.")


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


def _command(sub, name: str, run, help: str, **kwargs) -> argparse.ArgumentParser:
    """One ``semcat <name>`` subcommand that calls ``run(args)``."""
    cmd = sub.add_parser(name, help=help, **kwargs)
    cmd.set_defaults(func=run)
    return cmd


def _add_catalog(cmd, *, config_help: str, config_required: bool = True) -> None:
    """``--catalog`` and ``--config``: the catalog a command reads and its YAML config."""
    cmd.add_argument("--catalog", required=True, metavar="SOURCE",
                     help="a catalog CSV (columns mapped by the config's 'catalog:' section), a Kaggle fashion "
                          "folder (styles.csv + images/), or 'tutorial' for the bundled tutorial catalog")
    cmd.add_argument("--config", required=config_required, metavar="YAML", help=config_help)


def _add_cache_dir(cmd) -> None:
    cmd.add_argument("--cache-dir", metavar="DIR", help="embedding cache folder (re-runs skip encoding)")


def _add_device(cmd) -> None:
    cmd.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda (default auto)")


def _add_quiet(cmd) -> None:
    cmd.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The ``semcat`` argument parser."""
    ap = _Parser(
        prog="semcat", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Categorize products into a category hierarchy from titles and images.",
        epilog="Run 'semcat encode --help', 'semcat train --help', 'semcat predict --help' or "
               "'semcat tune --help' for the options of each command.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="{encode,train,predict,tune}")

    e = _command(sub, "encode", encode.run, "encode a catalog into the embedding store (one or many processes)",
                 formatter_class=argparse.RawDescriptionHelpFormatter,
                 description=_ENCODE_DESCRIPTION)
    _add_catalog(e, config_help="a 'semcat train' config: its catalog mapping, encoders and sample are used",
                 config_required=False)
    e.add_argument("--cache-dir", required=True, metavar="DIR", help="the embedding store folder (shared by ranks)")
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
    e.add_argument("--store-dtype", default=None, choices=("float32", "float16"),
                   help="precision of new store shards (default: the store's own, float32 for a new store)")
    _add_device(e)
    _add_quiet(e)

    p = _command(sub, "predict", predict.run, "categorize products with an exported head",
                 description=_PREDICT_DESCRIPTION)
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
    p.add_argument("--text-only", action="store_true", help="predict from the titles alone with a head trained on "
                   "titles and images (without it, an input with no image column is refused for such a head, "
                   "saying how much accuracy the images were worth on its test split)")
    p.add_argument("--output", required=True, metavar="FILE", help="where to write the predictions, chunk by "
                   "chunk, renamed into place when complete: Parquet when it ends in .parquet/.pq, else CSV")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="categories per product (default 5)")
    p.add_argument("--crm", action="store_true", help="rank by least expected tree distance (CRM) instead of "
                   "probability; adds exp_dist_1..k")
    p.add_argument("--precision", type=float, metavar="P", help="also give each product its hedged prediction: "
                   "the most specific category at the threshold calibrated for precision P (e.g. 0.98: the true "
                   "category lies under the predicted one for at least 98%% of products); adds node, node_depth, "
                   "node_prob, is_leaf, needs_review. The head must carry calibrated thresholds ('semcat train' "
                   "exports them when there is a validation split)")
    _add_cache_dir(p)
    _add_device(p)
    p.add_argument("--backend", default="torch", choices=("torch", "onnx", "pt2", "torchscript"),
                   help="what runs the head (default torch): its safetensors weights in torch, head.onnx in "
                        "onnxruntime, or head.pt2 (torch.export); 'torchscript' loads heads exported by "
                        "semcat_kit 0.1 and means pt2 for current ones")
    p.add_argument("--expected-sha256", metavar="HEX", help="sha256 of the head's config.json given by its author "
                   "(`sha256sum DIR/config.json`); the head is refused unless it matches, and every file it "
                   "lists is then checked against the checksums recorded there (recommended for a head from "
                   "elsewhere on the onnx / pt2 / torchscript backends)")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, metavar="N",
                   help=f"products read, encoded and scored at a time; memory grows with it, not with the "
                        f"input size (default {DEFAULT_CHUNK_SIZE}); the output does not depend on it")
    _add_quiet(p)

    t = _command(sub, "train", train.run, "train a head on a catalog and export it",
                 formatter_class=argparse.RawDescriptionHelpFormatter, description_fn=_train_description)
    _add_catalog(t, config_help="training configuration (see above)")
    t.add_argument("--out", required=True, metavar="DIR", help="folder to export the trained head to")
    _add_cache_dir(t)
    t.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    t.add_argument("--predictions", metavar="CSV", help="where to write the predictions for the catalog's products "
                   "without a usable label (default: <out>/unlabelled_predictions.csv; only when there are some)")
    _add_quiet(t)
    t.add_argument("--print-config", action=_PrintConfig,
                   help="print the config template above (valid YAML, every key explained) and exit")

    u = _command(sub, "tune", tune.run, "search training settings for a stated objective (Optuna)",
                 description=_TUNE_DESCRIPTION)
    _add_catalog(u, config_help="as for 'semcat train'; its 'train:' section holds the settings that are not "
                                "searched")
    u.add_argument("--out", required=True, metavar="DIR", help="folder for best.yaml and trials.csv")
    u.add_argument("--objective", default="hdist@5; top1 >= baseline - 0.5pt",
                   help="metric to optimise and constraints, e.g. 'hdist@5; top1 >= baseline - 0.5pt, "
                        "macro_f1 >= baseline - 0.5pt' (baseline: a tuned LogisticRegression on the same "
                        "embeddings; onehot: the default one-hot head)")
    u.add_argument("--n-trials", type=int, default=30, metavar="N", help="number of trials (default 30)")
    u.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="stop after this long")
    _add_cache_dir(u)
    u.add_argument("--storage", metavar="URL", help="Optuna storage, e.g. sqlite:///tune.db: every finished trial "
                   "is saved there, and running the same command again resumes the study (--n-trials counts "
                   "the trials of every run)")
    u.add_argument("--study-name", metavar="NAME", default=None, help="study name in --storage (default "
                   "semcat-tune)")
    u.add_argument("--pruner", choices=("median", "none"), default="median", help="stop trials whose per-epoch "
                   "validation value trails the median of earlier trials (default median)")
    u.add_argument("--overwrite", action="store_true", help="write into a non-empty --out folder")
    _add_quiet(u)
    return ap


def main(argv=None) -> int:
    """Run the ``semcat`` command line; returns the exit status (0 ok, 1 bad input, 2 usage)."""
    args = build_parser().parse_args(argv)      # --help and usage errors exit here, before torch loads
    from .._core.optional import MissingExtraError
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
    expected = (CliError, ValueError, KeyError, TypeError, OSError, ExportError, TrainingDivergedError,
                MissingExtraError)
    try:
        return int(args.func(args) or 0)
    except Exception as e:
        # under torchrun a failed check of the ranks (encode_distributed's RuntimeError) or a peer that
        # stopped (a collective's error) is one line per rank too, never a traceback on every rank
        if not isinstance(e, expected) and not (distributed.is_distributed() and isinstance(e, RuntimeError)):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        msg = " ".join(str(msg).split())
        if distributed.is_distributed():
            if getattr(e, "all_ranks", False) and distributed.rank() != 0:
                return 1                          # the same error on every rank: rank 0 says it
            print(f"semcat (rank {distributed.rank()}): error: {msg}", file=sys.stderr)
        else:
            print(f"semcat: error: {msg}", file=sys.stderr)
        return 1
    finally:
        if started:
            distributed.shutdown()


if __name__ == "__main__":   # pragma: no cover
    sys.exit(main())
