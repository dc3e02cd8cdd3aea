"""Writing a trained head to a self-describing folder, and loading it back.

``export_head(run, dir)`` writes (atomically: a temporary folder swapped in as a whole, so an
interrupted export never leaves a folder that loads) a Hugging Face style folder::

    dir/
      config.json          format version, architecture (FusionHead.config), input dims, fusion,
                           label representation, encoders (names, fingerprints, dims),
                           normalisation, package version, the TrainConfig, the calibrated hedging
                           thresholds with the precision of each (optional), sha256 of every file
      model.safetensors    the head's weights
      codes.safetensors    (label_repr="codes" only) the (C, B) code matrix behind class scores
      labels.json          class index -> full category path (and short name)
      taxonomy.json        Taxonomy.to_dict()
      head.onnx            (onnx=True) the head's graph (torch.onnx, dynamo exporter); checked with
                           onnxruntime against torch
      head.pt2             (pt2=True) the head as a ``torch.export`` ExportedProgram; checked
                           against torch
      README.md            the model card: training data summary, classes, metrics, intended use
                           (generated; free to edit: not checksummed, never read by load_head)

All three backends compute the head's raw output (class logits, or one logit per taxonomy node for
``label_repr="codes"``, which :func:`semcat_kit.labels.soft_labels.code_scores` turns into class scores with
the stored code matrix); ``softmax`` of the class scores is the class probability. The batch size
of the ONNX and ``.pt2`` graphs is dynamic.

``load_head(dir, backend="torch"|"onnx"|"pt2")`` validates ``config.json`` against
:data:`CONFIG_SCHEMA`, verifies every file's sha256 and the consistency of labels, taxonomy and head
before returning an :class:`ExportedHead`; :meth:`ExportedHead.from_pretrained` /
:meth:`semcat_kit.Predictor.from_pretrained` also take a Hugging Face Hub repo id (downloaded only
then, and only when not cached). The checksums catch corruption, not tampering: load a head from
elsewhere on the graph backends only with ``expected_sha256=`` (the sha256 of its
``config.json``, given by its author).

Heads exported before (format version 1: ``head.safetensors``, ``head.torchscript.pt``) still
load: ``backend="torchscript"`` runs their TorchScript file through ``torch.jit`` (PyTorch's
deprecated path; a ``FutureWarning`` says to re-export), and on a current head it is taken as
``"pt2"``.
"""
from __future__ import annotations

import copy
import datetime as _dt
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from .._core.digest import file_sha256
from .._core.io import atomic_dir
from .._core.contracts import as_embedding_table, resolve_device

__all__ = ["export_head", "load_head", "resolve_pretrained", "check_config", "ExportedHead", "ExportError", "FORMAT", "FORMAT_VERSION",
           "READABLE_VERSIONS", "BACKENDS", "CONFIG_SCHEMA", "model_card"]

FORMAT = "semcat_kit.head"
#: version written; 2: model.safetensors + head.pt2 (torch.export) + README.md, dynamo ONNX
FORMAT_VERSION = 2
#: versions read (1: head.safetensors, head.torchscript.pt written by semcat_kit 0.1)
READABLE_VERSIONS = (1, 2)
#: backends an export writes / load_head runs; "torchscript" loads version-1 heads only
BACKENDS = ("torch", "onnx", "pt2")
LOAD_BACKENDS = BACKENDS + ("torchscript",)
FILES = {"weights": "model.safetensors", "codes": "codes.safetensors", "labels": "labels.json",
         "taxonomy": "taxonomy.json", "onnx": "head.onnx", "pt2": "head.pt2"}
#: file names of version-1 heads
V1_FILES = {**FILES, "weights": "head.safetensors", "torchscript": "head.torchscript.pt"}
CONFIG = "config.json"
CARD = "README.md"
ONNX_OPSET = 18
_CHECK_ATOL = 1e-4


def _files(cfg: dict) -> dict:
    """File names of an export with this config (by its format version)."""
    return V1_FILES if cfg.get("format_version") == 1 else FILES


class ExportError(RuntimeError):
    """An export could not be written or failed its own round-trip check (nothing was written)."""


# ----------------------------------------------------------------------------- graph wrappers
class _Graph(torch.nn.Module):
    """The head with positional inputs of the modalities it uses -> its raw output (N, out_dim)."""

    def __init__(self, head):
        super().__init__()
        self.head = head


class _Both(_Graph):
    def forward(self, text, image, text_mask, image_mask):
        return self.head(text, image, image_mask=image_mask, text_mask=text_mask)


class _TextOnly(_Graph):
    def forward(self, text, text_mask):
        return self.head(text, None, text_mask=text_mask)


class _ImageOnly(_Graph):
    def forward(self, image, image_mask):
        return self.head(None, image, image_mask=image_mask)


def _inputs_of(arch: dict) -> list[str]:
    """Graph input names of a head with this architecture (the modalities its forward uses)."""
    fusion = arch["fusion"]
    text = bool(arch.get("text_dim")) and fusion != "image"
    image = bool(arch.get("image_dim")) and fusion != "text"
    return (["text"] if text else []) + (["image"] if image else []) + \
        (["text_mask"] if text else []) + (["image_mask"] if image else [])


def _wrapper(head, inputs):
    cls = _Both if "image" in inputs and "text" in inputs else (_TextOnly if "text" in inputs else _ImageOnly)
    return cls(head).eval()


def _probe(arch: dict, inputs: list[str], n: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random L2-normalised inputs with every presence pattern (both, text only, image only, none)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in ("text", "image"):
        if name in inputs:
            x = torch.randn(n, arch[f"{name}_dim"], generator=g)
            out[name] = x / x.norm(dim=1, keepdim=True)
    pattern = torch.arange(n) % 4
    if "text_mask" in inputs:
        out["text_mask"] = (pattern == 0) | (pattern == 1)
    if "image_mask" in inputs:
        out["image_mask"] = (pattern == 0) | (pattern == 2)
    if "text_mask" in inputs and "image_mask" not in inputs:
        out["text_mask"] = torch.ones(n, dtype=torch.bool)
    if "image_mask" in inputs and "text_mask" not in inputs:
        out["image_mask"] = torch.ones(n, dtype=torch.bool)
    return {k: out[k] for k in inputs}


# ----------------------------------------------------------------------------- helpers
def _package_version() -> str:
    from .._version import __version__

    return __version__


def _check_metadata(metadata, where: str = "metadata") -> None:
    """Raise a TypeError naming the first value of ``metadata`` that config.json cannot hold."""
    if isinstance(metadata, dict):
        for k, v in metadata.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} key {k!r} is not a string; config.json keys must be strings")
            _check_metadata(v, f"{where}[{k!r}]")
    elif isinstance(metadata, (list, tuple)):
        for i, v in enumerate(metadata):
            _check_metadata(v, f"{where}[{i}]")
    elif metadata is not None and not isinstance(metadata, (str, bool, int, float, np.integer, np.floating,
                                                              np.ndarray, Path)):
        raise TypeError(f"{where} ({type(metadata).__name__}) cannot be stored in config.json; pass numbers, "
                        "strings, lists or dicts")


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON-serialisable")


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False, default=_json_default), encoding="utf-8")


_CARD_CLASSES = 40     # classes listed in the card (all are in labels.json)


def _fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4f}"
    return str(v).replace("|", "\\|")


def model_card(config: dict, taxonomy, history=None) -> str:
    """The generated model card (``README.md``) of an export: Hugging Face front matter, intended use,
    inputs, training data summary, metrics table, classes and how to load it.

    Parameters
    ----------
    config : dict
        The export's ``config.json``.
    taxonomy : Taxonomy
    history : pandas.DataFrame, optional
        ``TrainRun.history``: the validation metrics of the kept epoch go into the metrics table.
    """
    meta = config.get("metadata") or {}
    enc = config.get("encoders") or {}
    tcfg = config.get("train_config") or {}
    C = int(config["n_classes"])
    depth = int(np.max(taxonomy.depth(np.arange(C)))) if C else 0
    names = {k: (v or {}).get("name") for k, v in enc.items()}
    used = [m for m in ("text", "image") if m in config["inputs"]]
    lines = ["---", "library_name: semcat_kit", "tags:", "- product-categorization", "- hierarchical-classification",
             "- semcat_kit", "---", "",
             f"# Product categorization head ({C:,} classes)", "",
             f"A small fusion head (`{config['fusion']}` fusion) trained with `semcat_kit` "
             f"{config.get('package_version', '')} on frozen encoder embeddings of product "
             f"{' and '.join({'text': 'titles', 'image': 'images'}[m] for m in used)}. It assigns a product to one "
             f"of {C:,} categories of a taxonomy of depth {depth}.", "",
             "## Intended use", "",
             "Suggesting categories for products of a catalog like the one it was trained on (same taxonomy, "
             "same kind of titles/images), with a person checking low-confidence or costly suggestions. "
             "Not for catalogs in other languages or domains without re-training, and not for decisions about "
             "people. Mistakes are ranked by their distance in the taxonomy (see the metrics).", "",
             "## Inputs", ""]
    for m in used:
        e = enc.get(f"{m}_encoder") or {}
        lines.append(f"- {m}: `{e.get('name') or 'unknown encoder'}` ({_fmt(config['input_dims'].get(m))}-d, "
                     f"L2-normalised, fingerprint `{e.get('fingerprint')}`); a missing {m} is a zero row with its "
                     "mask False")
    lines += ["", "## Training data", ""]
    data = {"catalog": meta.get("catalog"), "products": meta.get("n_products")}
    split = meta.get("split") if isinstance(meta.get("split"), dict) else {}
    for k in ("n_train", "n_val", "n_test"):
        if k in split:
            data[k.replace("n_", "") + " items"] = split[k]
    if isinstance(meta.get("training_data"), dict):
        data.update(meta["training_data"])
    rows = [(k, v) for k, v in data.items() if v is not None]
    if rows:
        lines += ["| | |", "| --- | --- |", *[f"| {k} | {_fmt(v)} |" for k, v in rows]]
    else:
        lines.append("Not recorded (pass `metadata={\"training_data\": {...}}` to `export_head`).")
    train = {k: tcfg.get(k) for k in ("smoothing", "alpha", "curriculum", "focal_gamma", "kl_weight", "label_repr",
                                      "epochs", "min_steps", "lr", "batch_size", "seed") if k in tcfg}
    if train:
        lines += ["", "Training: " + ", ".join(f"`{k}={v}`" for k, v in train.items())
                  + (f"; weights of epoch {config['best_epoch']}." if config.get("best_epoch") else ".")]
    lines += ["", "## Metrics", ""]
    metrics = meta.get("test_metrics") or meta.get("metrics")
    table = []
    if isinstance(metrics, dict) and metrics:
        table += [("test" if "test_metrics" in meta else "given", k, v) for k, v in metrics.items()
                  if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)]
    if history is not None and len(history):
        ep = config.get("best_epoch")
        row = history[history["epoch"] == ep] if ep and "epoch" in history else history.iloc[[-1]]
        if len(row):
            for k, v in row.iloc[0].items():
                if str(k).startswith("val_") and k != "val_seconds" and isinstance(v, (float, np.floating)) \
                        and np.isfinite(v):
                    table.append(("validation", str(k)[4:], v))
    if table:
        lines += ["| split | metric | value |", "| --- | --- | --- |",
                  *[f"| {s} | {k} | {_fmt(v)} |" for s, k, v in table]]
        lines += ["", "Metric definitions: `semcat_kit.judge.metrics.METRICS` (top-k accuracy, mistake severity "
                  "= mean taxonomy distance of wrong top-1 predictions, hierarchical F1, ECE, ...)."]
    else:
        lines.append("None recorded (train with validation data, or pass `metadata={\"metrics\": {...}}`).")
    lines += ["", "## Classes", "",
              f"{C:,} classes (all in `labels.json`, the tree in `taxonomy.json`)"
              + (f"; the first {_CARD_CLASSES}:" if C > _CARD_CLASSES else ":"), ""]
    lines += [f"- {_fmt(c)}" for c in list(taxonomy.classes)[:_CARD_CLASSES]]
    if C > _CARD_CLASSES:
        lines.append(f"- ... and {C - _CARD_CLASSES:,} more")
    lines += ["", "## How to use", "", "```python", "import semcat_kit as sk", "",
              "pred = sk.Predictor.from_pretrained(\"path/to/this/folder\")   # or a Hub repo id",
              "pred.predict([{\"title\": \"...\", \"image_path\": \"...\"}], top_k=5)", "```", "",
              "Backends: " + ", ".join(f"`{b}`" for b in config["backends"])
              + " (`onnx`: onnxruntime, `pt2`: `torch.export`). Every file but this card is listed with its "
              "sha256 in `config.json` and verified on load.", ""]
    return "\n".join(lines)


def _dynamic(probe: dict) -> tuple:
    """``dynamic_shapes`` of the graph inputs: the batch dimension (0) of every input is one ``n``."""
    n = torch.export.Dim("n")
    return tuple({0: n} for _ in probe)


def _export_onnx(wrapper, probe: dict, path: Path) -> None:
    """The head through ``torch.onnx.export(dynamo=True)`` (``torch.export`` + onnxscript)."""
    _require_onnx()
    with warnings.catch_warnings():
        # the one batch Dim is shared by every input: torch.onnx says it names it once (not a deprecation)
        warnings.filterwarnings("ignore", message=r".*axis name: n will not be used", category=UserWarning)
        program = torch.onnx.export(wrapper, tuple(probe.values()), dynamo=True, input_names=list(probe),
                                    output_names=["output"], dynamic_shapes=_dynamic(probe), opset_version=ONNX_OPSET,
                                    optimize=True, verbose=False)
    program.save(str(path))


def _require_onnx() -> None:
    from .._core.optional import require

    for m in ("onnx", "onnxscript", "onnxruntime"):     # onnxscript: the dynamo exporter's translator
        require(m, "onnx", "the ONNX export (or export_head(..., onnx=False))")


def _export_pt2(wrapper, probe: dict, path: Path) -> None:
    """The head as a ``torch.export`` ExportedProgram (``torch.export.save``)."""
    program = torch.export.export(wrapper, tuple(probe.values()), dynamic_shapes=_dynamic(probe))
    torch.export.save(program, str(path))


def _normal_permissions(folder: Path) -> None:
    """Temporary files are private (0600/0700); give the export the usual umask permissions."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for p in folder.iterdir():
        os.chmod(p, 0o666 & ~umask)


# ----------------------------------------------------------------------------- export
def export_head(run, dir, onnx: bool = True, pt2: bool = True, overwrite: bool = False,
                metadata: dict | None = None, hedging=None, *, torchscript: bool | None = None) -> Path:
    """Write a trained head to a self-describing folder.

    Parameters
    ----------
    run : TrainRun
        From :func:`semcat_kit.train` (needs ``model``, ``taxonomy``, ``config``, ``encoder_meta``,
        ``codes``).
    dir : str or Path
        Target folder; written atomically (a temporary folder swapped in once complete).
    onnx, pt2 : bool
        Also write ``head.onnx`` (``torch.onnx.export(dynamo=True)``; needs the ``[onnx]`` extra) /
        ``head.pt2`` (``torch.export``); each is checked against the torch scores on probe inputs
        (every presence pattern) and the export fails if they differ.
    overwrite : bool
        Replace an existing folder (only after the new one is complete).
    metadata : dict, optional
        JSON-serialisable extras stored under ``"metadata"`` in ``config.json``. The model card
        (``README.md``) shows ``test_metrics`` / ``metrics`` (a ``{name: value}`` table) and the data
        summary in ``catalog``, ``n_products``, ``split`` and ``training_data``.
    hedging : HedgeCalibration or (embeddings, labels), optional
        Hedging thresholds stored under ``"hedging"`` in ``config.json`` (each with the precision it was
        calibrated for), read by ``Predictor.predict(..., precision=0.98)``. A pair is the
        validation split (products the head did not train on): the thresholds for
        :data:`semcat_kit.judge.hedging.DEFAULT_PRECISIONS` are calibrated on
        ``run.predict_proba(embeddings)`` (:func:`semcat_kit.calibrate_hedging`, RCPS, delta 0.1).
    torchscript : bool, optional
        Replaced by ``pt2`` (PyTorch deprecates TorchScript for ``torch.export``): a value is taken as
        ``pt2`` with a ``FutureWarning``.

    Returns
    -------
    pathlib.Path
        The folder.

    Raises
    ------
    FileExistsError
        ``dir`` exists and ``overwrite`` is False.
    ExportError
        A backend's scores disagree with torch (nothing is written).
    """
    from safetensors.torch import save_file

    if torchscript is not None:
        warnings.warn("export_head(torchscript=...) is replaced by pt2=... (torch.export: head.pt2); "
                      f"writing head.pt2 = {bool(torchscript)}", FutureWarning, stacklevel=2)
        pt2 = bool(torchscript)
    if onnx:
        _require_onnx()                # before anything is written
    for attr in ("model", "taxonomy"):
        if not hasattr(run, attr):
            raise TypeError(f"export_head needs a TrainRun (from sk.train); {type(run).__name__} has no .{attr}")
    dir = Path(dir)
    if dir.exists() and not overwrite:
        raise FileExistsError(f"{dir} exists; pass overwrite=True to replace it (or choose another folder)")
    head = copy.deepcopy(run.model).cpu().float().eval()
    arch = dict(head.config)
    tax = run.taxonomy
    codes = getattr(run, "codes", None)
    codes = None if codes is None else np.asarray(codes, dtype=np.float32)
    C = tax.n_classes
    out_dim = arch.get("out_dim") or arch["n_classes"]
    if arch["n_classes"] != C:
        raise ValueError(f"the head has {arch['n_classes']} classes but run.taxonomy has {C}")
    if codes is not None and codes.shape != (C, out_dim):
        raise ValueError(f"run.codes has shape {codes.shape}; expected ({C}, {out_dim}) for this head")
    if codes is None and out_dim != C:
        raise ValueError(f"the head outputs {out_dim} values for {C} classes but run.codes is None")
    inputs = _inputs_of(arch)
    if metadata is not None:
        _check_metadata(metadata)
    enc_meta = dict(getattr(run, "encoder_meta", None) or {})
    cfg = getattr(run, "config", None)
    cfg_dict = cfg.to_dict() if hasattr(cfg, "to_dict") else (dict(cfg) if cfg else None)
    hedge_cfg = _hedging_config(run, hedging)
    wrapper = _wrapper(head, inputs)
    probe = _probe(arch, inputs)
    with torch.no_grad():
        ref = wrapper(*probe.values()).numpy()

    with atomic_dir(dir, overwrite=overwrite) as tmp:
        files = [FILES["weights"], FILES["labels"], FILES["taxonomy"]]
        state = {k: v.detach().contiguous() for k, v in head.state_dict().items()}
        save_file(state, str(tmp / FILES["weights"]), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
        if codes is not None:
            save_file({"codes": torch.as_tensor(codes)}, str(tmp / FILES["codes"]))
            files.append(FILES["codes"])
        _write_json(tmp / FILES["labels"], [{"index": i, "label": c, "name": n}
                                             for i, (c, n) in enumerate(zip(tax.classes, tax.names))])
        tax.save(tmp / FILES["taxonomy"])
        backends = ["torch"] + [b for b, wanted in (("onnx", onnx), ("pt2", pt2)) if wanted]
        writers = {"onnx": _export_onnx, "pt2": _export_pt2}
        for backend in backends[1:]:
            writers[backend](wrapper, probe, tmp / FILES[backend])
            files.append(FILES[backend])
        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "package_version": _package_version(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "architecture": arch,
            "inputs": inputs,
            "input_dims": {"text": arch.get("text_dim"), "image": arch.get("image_dim")},
            "fusion": arch["fusion"],
            "n_classes": C,
            "label_representation": ({"kind": "codes", "file": FILES["codes"], "n_bits": int(codes.shape[1])}
                                     if codes is not None else {"kind": "onehot"}),
            "output": ("bit logits; class scores = soft_labels.code_scores(bits, codes)" if codes is not None
                       else "class logits; softmax gives class probabilities"),
            "encoders": {"text_encoder": enc_meta.get("text_encoder"), "image_encoder": enc_meta.get("image_encoder")},
            "normalisation": {"text": "l2", "image": "l2",
                              "note": "inputs are the encoders' L2-normalised embeddings; a missing modality "
                                      "is a zero row with its mask False"},
            "train_config": cfg_dict,
            "best_epoch": getattr(run, "best_epoch", None),
            "backends": backends,
            "metadata": metadata or {},
            **({"hedging": hedge_cfg} if hedge_cfg is not None else {}),
            "files": {name: file_sha256(tmp / name) for name in files},
        }
        _write_json(tmp / CONFIG, config)
        (tmp / CARD).write_text(model_card(config, tax, getattr(run, "history", None)), encoding="utf-8")
        for backend in backends[1:]:   # the written graphs must reproduce the torch scores
            got = load_head(tmp, backend=backend)._run(probe)
            diff = float(np.abs(got - ref).max()) if ref.size else 0.0
            if not np.isfinite(diff) or diff > _CHECK_ATOL * max(1.0, float(np.abs(ref).max())):
                raise ExportError(f"{backend} export check failed: its scores differ from the torch head's by up to "
                                  f"{diff:.3g} on probe inputs; nothing was written to {dir}")
        got = load_head(tmp, backend="torch")._run(probe)
        if float(np.abs(got - ref).max()) > 1e-6:
            raise ExportError(f"reloading {FILES['weights']} did not reproduce the head; nothing was written to {dir}")
        _normal_permissions(tmp)
    return dir


def _hedging_config(run, hedging) -> dict | None:
    """``config.json``'s ``hedging`` entry from a HedgeCalibration or a (embeddings, labels) pair."""
    from ..judge.hedging import HedgeCalibration, calibrate_hedging

    if hedging is None:
        return None
    if isinstance(hedging, HedgeCalibration):
        return hedging.to_dict()
    if isinstance(hedging, (tuple, list)) and len(hedging) == 2:
        emb, labels = hedging
        return calibrate_hedging(run.predict_proba(emb), labels, run.taxonomy).to_dict()
    raise TypeError(f"hedging must be a HedgeCalibration (sk.calibrate_hedging) or a pair (val_embeddings, "
                    f"val_labels), not {type(hedging).__name__}")


# ----------------------------------------------------------------------------- load
def _fail(dir: Path, msg: str):
    raise ValueError(f"{dir}: {msg}")


def _read_json(dir: Path, name: str):
    p = dir / name
    if not p.is_file():
        _fail(dir, f"{name} is missing; this is not a complete semcat_kit export (re-export with sk.export_head)")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        _fail(dir, f"{name} is corrupted (not valid JSON: {e}); re-export the head")


# config.json schema: key -> (accepted types, required). Nested dicts are checked by _check_config.
_INT, _STR, _DICT, _LIST, _NONE = (int,), (str,), (dict,), (list,), (type(None),)
CONFIG_SCHEMA = {
    "format": (_STR, True), "format_version": (_INT, True), "package_version": (_STR, False),
    "created": (_STR, False), "architecture": (_DICT, True), "inputs": (_LIST, True),
    "input_dims": (_DICT, False), "fusion": (_STR, True), "n_classes": (_INT, True),
    "label_representation": (_DICT, True), "output": (_STR, False), "encoders": (_DICT, True),
    "normalisation": (_DICT, False), "train_config": (_DICT + _NONE, False), "best_epoch": (_INT + _NONE, False),
    "backends": (_LIST, True), "metadata": (_DICT, False), "files": (_DICT, True),
    "hedging": (_DICT, False),
}
_ARCH_SCHEMA = {"text_dim": (_INT + _NONE, True), "image_dim": (_INT + _NONE, True), "n_classes": (_INT, True),
                "fusion": (_STR, True), "proj_dim": (_INT, False), "hidden": (_INT, False),
                "dropout": ((float, int), False), "modality_dropout": ((float, int), False),
                "out_dim": (_INT + _NONE, False), "input_norm": ((bool,), False)}
_HEX64 = set("0123456789abcdef")


def _type_names(types) -> str:
    return " or ".join({"NoneType": "null", "str": "string", "int": "integer", "float": "number",
                        "dict": "object", "list": "list"}[t.__name__] for t in types)


def _check_keys(dir: Path, d: dict, schema: dict, where: str) -> None:
    for key, (types, required) in schema.items():
        if key not in d:
            if required:
                _fail(dir, f"{CONFIG} lacks the key {where}{key!r}; re-export the head")
            continue
        v = d[key]
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            _fail(dir, f"{CONFIG}: key {where}{key!r} must be {_type_names(types)}, not {type(v).__name__} "
                       f"({str(v)[:60]!r}); re-export the head")


def check_config(cfg, dir: Path | str = "config") -> dict:
    """Validate an export's ``config.json`` (already parsed) against :data:`CONFIG_SCHEMA`.

    Checks types and required keys (top level and ``architecture``), the format and version, that
    ``inputs`` match the architecture, that ``files`` lists a sha256 (64 hex digits) for exactly
    the export's own file names, including every required one (weights, labels, taxonomy, the
    codes of a codes head, the file of every listed backend), so no file escapes verification.

    Raises
    ------
    ValueError
        Naming the key and what is wrong with it.
    """
    dir = Path(dir)
    if not isinstance(cfg, dict):
        _fail(dir, f"{CONFIG} must hold a JSON object, not {type(cfg).__name__}")
    if cfg.get("format") != FORMAT:
        _fail(dir, f"{CONFIG} is not a semcat_kit head config (format {cfg.get('format')!r})")
    if cfg.get("format_version") not in READABLE_VERSIONS:
        _fail(dir, f"{CONFIG} has format version {cfg.get('format_version')!r}; this semcat_kit "
                   f"{_package_version()} reads versions {list(READABLE_VERSIONS)}. Re-export the head with this "
                   "version (or load it with the semcat_kit that wrote it)")
    _check_keys(dir, cfg, CONFIG_SCHEMA, "")
    arch = cfg["architecture"]
    _check_keys(dir, arch, _ARCH_SCHEMA, "architecture.")
    if arch["n_classes"] < 1 or arch["n_classes"] != cfg["n_classes"]:
        _fail(dir, f"{CONFIG}: key 'n_classes' ({cfg['n_classes']}) must equal architecture.n_classes "
                   f"({arch['n_classes']}) and be >= 1")
    if arch["fusion"] != cfg["fusion"]:
        _fail(dir, f"{CONFIG}: key 'fusion' ({cfg['fusion']!r}) differs from architecture.fusion ({arch['fusion']!r})")
    if cfg["inputs"] != _inputs_of(arch):
        _fail(dir, f"{CONFIG}: key 'inputs' {cfg['inputs']} does not match the architecture (expected "
                   f"{_inputs_of(arch)})")
    rep = cfg["label_representation"]
    if rep.get("kind") not in ("onehot", "codes"):
        _fail(dir, f"{CONFIG}: key 'label_representation.kind' must be 'onehot' or 'codes', not {rep.get('kind')!r}")
    for key in ("text_encoder", "image_encoder"):
        if key not in cfg["encoders"] or not isinstance(cfg["encoders"][key], (dict, type(None))):
            _fail(dir, f"{CONFIG}: key 'encoders.{key}' must be an object or null")
    backends = cfg["backends"]
    FILES = _files(cfg)   # noqa: N806 - this version's file names
    allowed = [b for b in LOAD_BACKENDS if b == "torch" or b in FILES]
    if "torch" not in backends or not set(backends) <= set(allowed):
        _fail(dir, f"{CONFIG}: key 'backends' {backends} must list 'torch' and only {allowed}")
    files = cfg["files"]
    known = set(FILES.values())
    for name, digest in files.items():
        if name not in known:
            _fail(dir, f"{CONFIG}: key 'files' lists {name!r}, which is not a file of a semcat_kit export "
                       f"({sorted(known)}); re-export the head")
        if not isinstance(digest, str) or len(digest) != 64 or not set(digest) <= _HEX64:
            _fail(dir, f"{CONFIG}: key 'files.{name}' must be a sha256 (64 hex digits), not {str(digest)[:70]!r}")
    required = [FILES["weights"], FILES["labels"], FILES["taxonomy"]]
    if rep["kind"] == "codes":
        if rep.get("file", FILES["codes"]) != FILES["codes"]:
            _fail(dir, f"{CONFIG}: key 'label_representation.file' must be {FILES['codes']!r}")
        required.append(FILES["codes"])
    required += [FILES[b] for b in backends if b != "torch"]
    missing = [f for f in required if f not in files]
    if missing:
        _fail(dir, f"{CONFIG}: key 'files' lacks the checksum of {missing}; every file of the export must be "
                   "verified (re-export the head)")
    if "hedging" in cfg:   # optional: heads exported before hedged decoding have none
        from ..judge.hedging import HedgeCalibration

        try:
            HedgeCalibration.from_dict(cfg["hedging"], where="hedging")
        except ValueError as e:
            _fail(dir, f"{CONFIG}: key {e}; re-export the head (export_head(..., hedging=...))")
    return cfg


def _digest(dir: Path, name: str, if_missing: str) -> str:
    """sha256 of the export's file ``name``; a missing file fails with ``"{name} is missing; {if_missing}"``."""
    if not (dir / name).is_file():
        _fail(dir, f"{name} is missing; {if_missing}")
    return file_sha256(dir / name)


def _read_config(dir: Path, expected_sha256: str | None = None) -> dict:
    if not dir.is_dir():
        raise FileNotFoundError(f"no exported head at {dir} (expected a folder written by sk.export_head)")
    if expected_sha256 is not None:
        want = str(expected_sha256).strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", want):
            raise ValueError(f"expected_sha256 {str(expected_sha256)!r} is not a sha256 (64 hexadecimal digits, as "
                             f"`sha256sum {dir / CONFIG}` prints); copy the checksum the head's author gave you")
        got = _digest(dir, CONFIG, "this is not a complete semcat_kit export (re-export with sk.export_head)")
        if got != want:
            _fail(dir, f"{CONFIG} has sha256 {got} but expected_sha256 is {want}: this is not the head you were "
                       "given a checksum for (modified or replaced); do not load it")
    return check_config(_read_json(dir, CONFIG), dir)


def _verify_files(dir: Path, cfg: dict) -> None:
    for name, digest in cfg["files"].items():
        got = _digest(dir, name, f"{CONFIG} lists it: copy the whole folder or re-export the head")
        if got != digest:
            _fail(dir, f"{name} is corrupted: sha256 {got[:12]}... does not match {digest[:12]}... recorded in "
                       f"{CONFIG} (truncated or modified file); copy it again or re-export the head")


class ExportedHead:
    """A head reloaded from an export folder (see :func:`load_head`).

    Attributes
    ----------
    config : dict
        ``config.json``.
    taxonomy : Taxonomy
    classes, names : list of str
        Full category path / short name of each class index.
    encoder_meta : dict
        ``{"text_encoder": {"name", "fingerprint", "dim"} | None, "image_encoder": ...}``.
    codes : numpy.ndarray or None
        (C, B) binary codes when the head predicts taxonomy codes.
    hedging : HedgeCalibration or None
        The calibrated hedging thresholds (None for a head exported without them).
    backend : str
    model : FusionHead or None
        The torch head (``backend="torch"``).
    """

    def __init__(self, dir: Path, config: dict, taxonomy, labels: list[dict], codes, backend: str, runner,
                 model=None):
        self.dir, self.config, self.taxonomy, self.backend = dir, config, taxonomy, backend
        self.classes = [d["label"] for d in labels]
        self.names = [d.get("name", d["label"]) for d in labels]
        self.encoder_meta = dict(config["encoders"])
        self.codes, self.model = codes, model
        self.inputs = list(config["inputs"])
        self._runner = runner
        self.hedging = None
        if config.get("hedging") is not None:
            from ..judge.hedging import HedgeCalibration

            self.hedging = HedgeCalibration.from_dict(config["hedging"])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def uses(self) -> tuple[str, ...]:
        """Modalities the head reads (``"text"``, ``"image"``)."""
        return tuple(m for m in ("text", "image") if m in self.inputs)

    def __repr__(self) -> str:
        enc = {k: (v or {}).get("name") for k, v in self.encoder_meta.items()}
        return (f"ExportedHead({self.n_classes} classes, backend={self.backend!r}, fusion={self.config['fusion']!r}, "
                f"uses={self.uses}, encoders={enc})")

    def check_embeddings_meta(self, meta: dict | None) -> None:
        """Raise ``ValueError`` if embeddings' ``meta`` names a different encoder than the head was trained on."""
        for key in ("text_encoder", "image_encoder"):
            m = (meta or {}).get(key)
            want = self.encoder_meta.get(key)
            if m is None or want is None or key.split("_")[0] not in self.uses:
                continue
            if m.get("fingerprint") != want.get("fingerprint") or (m.get("dim") is not None and m.get("dim") != want.get("dim")):
                raise ValueError(f"the embeddings come from {key.replace('_', ' ')} {m.get('name')!r} (fingerprint "
                                 f"{m.get('fingerprint')}, dim {m.get('dim')}) but the head in {self.dir} was trained on "
                                 f"{want.get('name')!r} (fingerprint {want.get('fingerprint')}, dim {want.get('dim')}); "
                                 "encode with the head's encoder")

    @classmethod
    def from_pretrained(cls, name_or_path, backend: str = "torch", device: str = "cpu",
                        expected_sha256: str | None = None, *, revision: str | None = None, cache_dir=None,
                        local_files_only: bool = False) -> "ExportedHead":
        """:func:`load_head` of a local folder or a Hugging Face Hub repo id (``"owner/name"``).

        A repo id is fetched with ``huggingface_hub.snapshot_download`` -- the network is used only
        then, and not at all when the snapshot is cached and ``HF_HUB_OFFLINE=1`` or
        ``local_files_only=True``. The folder is verified exactly as by :func:`load_head`.
        """
        path = resolve_pretrained(name_or_path, revision=revision, cache_dir=cache_dir,
                                  local_files_only=local_files_only)
        return load_head(path, backend=backend, device=device, expected_sha256=expected_sha256)

    def save_pretrained(self, dir, overwrite: bool = False) -> Path:
        """Copy this head's folder (every checksummed file, ``config.json`` and the model card) to
        ``dir``, atomically, after verifying the files again. Returns ``dir``."""
        import shutil

        dir = Path(dir)
        if dir.exists() and not overwrite:
            raise FileExistsError(f"{dir} exists; pass overwrite=True to replace it (or choose another folder)")
        _verify_files(self.dir, self.config)
        with atomic_dir(dir, overwrite=overwrite) as tmp:
            for name in [CONFIG, *self.config["files"], CARD]:
                if (self.dir / name).is_file():
                    shutil.copyfile(self.dir / name, tmp / name)
            _verify_files(tmp, self.config)
            _normal_permissions(tmp)
        return dir

    def _arrays(self, emb, what: str = "emb") -> dict[str, torch.Tensor]:
        self.check_embeddings_meta(getattr(emb, "meta", None))
        arch = self.config["architecture"]
        data = as_embedding_table(emb, what).fit_to(arch.get("text_dim") if "text" in self.inputs else None,
                                                    arch.get("image_dim") if "image" in self.inputs else None, what)
        if getattr(data, "lazy", False):      # memory-mapped / store view: rows read block by block
            return _LazyInputs(data, self.inputs)
        full = {"text": data.text, "image": data.image, "text_mask": data.text_mask, "image_mask": data.image_mask}
        return {k: full[k] for k in self.inputs}

    def _run(self, arrays, batch_size: int = 4096) -> np.ndarray:
        """Raw head outputs (N, out_dim): class logits, or bit logits of a codes head."""
        lazy = isinstance(arrays, _LazyInputs)
        n = len(arrays) if lazy else len(next(iter(arrays.values())))
        if n == 0:
            return np.zeros((0, self.config["architecture"].get("out_dim") or self.n_classes), dtype=np.float32)
        out = [self._runner(arrays.block(s, min(n, s + batch_size)) if lazy else
                            {k: v[s:s + batch_size] for k, v in arrays.items()}) for s in range(0, n, batch_size)]
        return np.concatenate(out).astype(np.float32, copy=False)

    def predict_logits(self, emb, batch_size: int = 4096) -> np.ndarray:
        """(N, C) float32 class scores for an ``Embeddings``: logits, or for a codes head the class
        code scores ``soft_labels.code_scores(bits, codes)`` (as ``TrainRun.predict_logits``)."""
        z = self._run(self._arrays(emb), batch_size)
        if self.codes is None:
            return z
        from ..labels.soft_labels import code_scores

        return code_scores(torch.from_numpy(z), self.codes).numpy()

    def predict_proba(self, emb, batch_size: int = 4096) -> np.ndarray:
        """(N, C) float32 class probabilities, ``softmax(predict_logits(emb))``."""
        return torch.softmax(torch.from_numpy(self.predict_logits(emb, batch_size)), dim=1).numpy()


_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def resolve_pretrained(name_or_path, *, revision: str | None = None, cache_dir=None,
                       local_files_only: bool = False) -> Path:
    """A head folder: ``name_or_path`` itself when it exists, else the Hugging Face Hub snapshot of
    the repo id it names (``huggingface_hub.snapshot_download``; cached snapshots need no network).

    Raises
    ------
    FileNotFoundError
        Neither a folder nor a repo id that could be fetched (the message says why).
    """
    p = Path(name_or_path).expanduser()
    if p.exists():
        return p
    s = str(name_or_path)
    if not _REPO_ID.fullmatch(s):
        raise FileNotFoundError(f"no exported head at {p} (expected a folder written by sk.export_head, or a "
                                "Hugging Face Hub repo id 'owner/name')")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:   # pragma: no cover - installed with sentence-transformers
        raise ImportError(f"{s!r} is not a folder; loading it from the Hugging Face Hub needs huggingface_hub "
                          "(pip install huggingface_hub)") from e
    try:
        return Path(snapshot_download(s, revision=revision, cache_dir=cache_dir,
                                      local_files_only=bool(local_files_only)))
    except Exception as e:  # noqa: BLE001 - offline / not found / auth errors of huggingface_hub
        raise FileNotFoundError(f"no exported head at {s!r}: not a local folder, and the Hugging Face Hub repo "
                                f"{s!r} could not be fetched ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                                "give a folder path, or fetch the repo first (network, or HF_HUB_OFFLINE=0)") from e


def load_head(dir, backend: str = "torch", device: str = "cpu",
              expected_sha256: str | None = None) -> ExportedHead:
    """Load a head written by :func:`export_head`, verifying it first.

    Trust: the checksums in ``config.json`` detect corruption, not tampering -- they live in the
    same folder as the files. ``backend="torch"`` (the default) reads only data (safetensors
    weights, JSON). ``"pt2"`` deserialises a ``torch.export`` program and ``"onnx"`` runs a graph
    through onnxruntime; ``"torchscript"`` (version-1 heads) **executes code stored in the folder**
    (``head.torchscript.pt`` is a program): load a head from elsewhere on those backends only if
    you trust it, or pass ``expected_sha256`` --
    the sha256 of its ``config.json`` obtained from its author over another channel
    (``sha256sum config.json``); since ``config.json`` records every file's sha256, that one
    checksum pins the whole folder.

    Parameters
    ----------
    dir : str or Path
    backend : {"torch", "onnx", "pt2", "torchscript"}
        What computes the scores (``"onnx"`` uses onnxruntime on CPU; ``"pt2"`` the exported
        program, on CPU). ``"torchscript"`` is for heads written by semcat_kit 0.1 (their
        ``head.torchscript.pt``, through the deprecated ``torch.jit``, with a ``FutureWarning``); on a
        current head it means ``"pt2"`` (with a ``FutureWarning``).
    device : str
        Torch device of the ``torch`` / ``torchscript`` backends (``"auto"``: CUDA when present).
    expected_sha256 : str, optional
        Hex sha256 of ``config.json``; the load refuses a folder whose ``config.json`` differs
        (checked before anything else is read).

    Returns
    -------
    ExportedHead

    Raises
    ------
    FileNotFoundError
        No folder at ``dir``.
    ValueError
        A missing or corrupted file (sha256 mismatch, truncated safetensors; the message names the
        file), a ``config.json`` that breaks :data:`CONFIG_SCHEMA` (naming the key) or does not match
        ``expected_sha256``, a format version this package cannot read, labels that do not match the head's
        output size or the taxonomy, or a backend that was not exported.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..datasets.taxonomy import Taxonomy

    if backend not in LOAD_BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} ('torchscript' for heads of semcat_kit 0.1), "
                         f"not {backend!r}")
    dir = Path(dir)
    cfg = _read_config(dir, expected_sha256)
    FILES = _files(cfg)   # noqa: N806 - this version's file names
    if backend == "torchscript" and "torchscript" not in FILES:
        warnings.warn(f"backend='torchscript' is replaced by 'pt2' (torch.export); the head in {dir} has no "
                      "TorchScript file, loading head.pt2", FutureWarning, stacklevel=2)
        backend = "pt2"
    elif backend == "pt2" and "pt2" not in cfg["backends"] and "torchscript" in cfg["backends"]:
        _fail(dir, "this head was exported by semcat_kit 0.1 with TorchScript (head.torchscript.pt), not "
                   "torch.export: use backend='torchscript' or 'torch', or re-export it (sk.export_head) to get "
                   "head.pt2")
    _verify_files(dir, cfg)
    arch = cfg["architecture"]
    labels = _read_json(dir, FILES["labels"])
    if not isinstance(labels, list) or not all(isinstance(d, dict) and "label" in d for d in labels):
        _fail(dir, f"{FILES['labels']} must be a list of {{index, label, name}} records; re-export the head")
    if [d.get("index") for d in labels] != list(range(len(labels))):
        _fail(dir, f"{FILES['labels']}: indices are not 0..{len(labels) - 1} in order")
    if len(labels) != arch["n_classes"]:
        _fail(dir, f"{FILES['labels']} lists {len(labels)} classes but the head outputs {arch['n_classes']} classes; "
                   "the labels do not belong to this head (re-export it)")
    tax_dict = _read_json(dir, FILES["taxonomy"])
    try:
        tax = Taxonomy.from_dict(tax_dict)
    except (KeyError, TypeError, ValueError) as e:
        _fail(dir, f"{FILES['taxonomy']} is not a valid taxonomy ({e}); re-export the head")
    if list(tax.classes) != [d["label"] for d in labels]:
        _fail(dir, f"{FILES['labels']} and {FILES['taxonomy']} disagree on the classes; re-export the head")
    codes = None
    if cfg["label_representation"].get("kind") == "codes":
        name = cfg["label_representation"].get("file", FILES["codes"])
        try:
            codes = load_file(str(dir / name))["codes"].numpy()
        except (SafetensorError, OSError, KeyError) as e:
            _fail(dir, f"{name} is unreadable ({e}); re-export the head")
        if codes.shape[0] != len(labels):
            _fail(dir, f"{name} has codes for {codes.shape[0]} classes but {FILES['labels']} lists {len(labels)}")
    inputs = list(cfg["inputs"])
    dev = resolve_device(device)
    if backend != "torch" and FILES[backend] not in cfg["files"]:
        _fail(dir, f"this export has no {FILES[backend]} (exported with {backend}=False); use backend='torch'")
    runner, model = _RUNNERS[backend](dir, FILES, arch, inputs, dev)
    return ExportedHead(dir, cfg, tax, labels, codes, backend, runner, model)


# ---------------------------------------------------------------- one runner per backend
# each takes (dir, file names, architecture, input names, device) and returns (runner, torch model or None);
# a runner maps a dict of input tensors to the head's float32 scores as a numpy array
def _torch_runner(dir: Path, FILES: dict, arch: dict, inputs: list, dev):   # noqa: N803 - the version's file names
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..learn.model import FusionHead

    try:
        state = load_file(str(dir / FILES["weights"]))
    except (SafetensorError, OSError) as e:
        _fail(dir, f"{FILES['weights']} is unreadable ({e}): truncated or corrupted; re-export the head")
    model = FusionHead(**arch)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        _fail(dir, f"{FILES['weights']} does not fit the architecture in {CONFIG} ({str(e).splitlines()[0]})")
    wrapper = _wrapper(model, inputs).to(dev)

    def runner(batch):
        with torch.no_grad():
            return wrapper(*(batch[k].to(dev) for k in inputs)).float().cpu().numpy()
    return runner, model


def _onnx_runner(dir: Path, FILES: dict, arch: dict, inputs: list, dev):   # noqa: N803, ARG001
    from .._core.optional import require

    ort = require("onnxruntime", "onnx", "backend='onnx'")
    try:
        sess = ort.InferenceSession(str(dir / FILES["onnx"]), providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        _fail(dir, f"{FILES['onnx']} is unreadable by onnxruntime ({e}); re-export the head")

    def runner(batch):
        return sess.run(["output"], {k: batch[k].numpy() for k in inputs})[0]
    return runner, None


def _pt2_runner(dir: Path, FILES: dict, arch: dict, inputs: list, dev):   # noqa: N803, ARG001
    try:
        program = torch.export.load(str(dir / FILES["pt2"]))
    except Exception as e:  # noqa: BLE001 - torch.export raises many types on a bad archive
        _fail(dir, f"{FILES['pt2']} is unreadable by torch.export.load ({type(e).__name__}: {e}); re-export the head")
    module = program.module()
    if dev.type != "cpu":
        warnings.warn("the pt2 backend runs on CPU (the program was exported there); use backend='torch' "
                      f"for {dev}", UserWarning, stacklevel=3)

    def runner(batch):
        with torch.no_grad():
            return module(*(batch[k].cpu() for k in inputs)).float().numpy()
    return runner, None


def _torchscript_runner(dir: Path, FILES: dict, arch: dict, inputs: list, dev):   # noqa: N803, ARG001
    warnings.warn(f"{dir} is a semcat_kit 0.1 head: its head.torchscript.pt runs through torch.jit, which "
                  "PyTorch deprecates; re-export it with sk.export_head to get head.pt2 (torch.export)",
                  FutureWarning, stacklevel=3)
    if not hasattr(torch, "jit") or not hasattr(torch.jit, "load"):
        _fail(dir, f"this torch {torch.__version__} cannot load TorchScript (torch.jit is gone); load the head "
                   "with backend='torch' (its safetensors weights) and re-export it")
    try:
        ts = torch.jit.load(str(dir / FILES["torchscript"]), map_location=dev)
    except Exception as e:  # noqa: BLE001
        _fail(dir, f"{FILES['torchscript']} is unreadable ({e}); re-export the head")
    ts.eval()

    def runner(batch):
        with torch.no_grad():
            return ts(*(batch[k].to(dev) for k in inputs)).float().cpu().numpy()
    return runner, None


_RUNNERS = {"torch": _torch_runner, "onnx": _onnx_runner, "pt2": _pt2_runner, "torchscript": _torchscript_runner}


class _LazyInputs:
    """The head's inputs from a lazy (memory-mapped / store view) table, read ``block`` by block."""

    def __init__(self, data, inputs):
        self.data, self.inputs = data, inputs

    def __len__(self) -> int:
        return len(self.data)

    def block(self, start: int, stop: int) -> dict[str, torch.Tensor]:
        text, image, image_mask, text_mask = self.data.batch(torch.arange(start, stop), "cpu")
        full = {"text": text, "image": image, "text_mask": text_mask, "image_mask": image_mask}
        return {k: full[k] for k in self.inputs}
