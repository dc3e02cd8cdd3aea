"""The pipeline's configuration, in one place: :class:`PipelineConfig` (the fields and their
defaults), the column mapping of a catalog (:data:`CATALOG_OPTIONS`), and the YAML file that
``semcat`` commands read (:data:`CONFIG_TEMPLATE`, :func:`read_train_config`), whose defaults are
the dataclass's.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..datasets.taxonomy import DEFAULT_SEP, Taxonomy
from ..labels import similarity

__all__ = ["PipelineConfig", "PipelineError", "CATALOG_OPTIONS", "catalog_kwargs", "CONFIG_TEMPLATE", "ConfigError",
           "read_train_config", "pipeline_config", "CATALOG_DEFAULTS", "SPLIT_DEFAULTS", "NEIGHBOR_DEFAULTS",
           "EXPORT_DEFAULTS", "TOP_DEFAULTS"]

#: ``catalog_options`` keys (the column mapping of :func:`semcat_kit.load_catalog`, and ``label_case``: the
#: letter-case policy of the catalog's own class set, :meth:`semcat_kit.Taxonomy.from_paths`).
CATALOG_OPTIONS = ("id", "title", "image", "images_dir", "path", "path_col", "sep", "label_case")
#: ``catalog_options`` keys that are not :func:`semcat_kit.load_catalog` arguments
_NOT_LOADER = ("label_case",)


class PipelineError(ValueError):
    """Bad pipeline input, said in one sentence (shown without a traceback in Jupyter)."""

    def _render_traceback_(self):   # IPython shows this instead of the traceback
        return [f"PipelineError: {self}"]


@dataclass
class PipelineConfig:
    """Everything that decides a pipeline's data, explicit and printable.

    Parameters
    ----------
    catalog : str, Path or DataFrame
        ``"tutorial"``, a Kaggle fashion folder, a ``.csv`` / ``.parquet`` file, or a DataFrame.
    catalog_options : dict
        Column mapping for a file or DataFrame: ``id, title, image, images_dir, path, path_col, sep``
        (see :func:`semcat_kit.load_catalog`); a relative ``images_dir`` is relative to the file.
    taxonomy : None, path, list of str or Taxonomy
        ``None``: the classes are the catalog's label paths. Otherwise an external taxonomy
        (see :func:`semcat_kit.datasets.taxonomy.read_taxonomy`) whose classes are the class set.
    text_encoder, image_encoder : str or None
        Names for :func:`semcat_kit.encode.encoders.load`; ``None`` skips that modality.
    class_template : str
        How a class is written for the text encoder (``similarity.class_texts``).
    k : int
        Semantic neighbours per class (capped at ``n_classes - 1``).
    val, test, split_seed, min_count
        The stratified split of the labelled rows (:func:`semcat_kit.split`).
    sample, sample_seed : int or None, int
        Use a random sample of this many products (a quick try), drawn with ``sample_seed``.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    """

    catalog: Any = "tutorial"
    catalog_options: dict = field(default_factory=dict)
    taxonomy: Any = None
    text_encoder: str | None = "minilm"
    image_encoder: str | None = "efficientnet-lite0"
    class_template: str = similarity.DEFAULT_TEMPLATE
    k: int = 20
    val: float = 0.1
    test: float = 0.2
    split_seed: int = 0
    min_count: int = 3
    sample: int | None = None
    sample_seed: int = 0
    device: str = "auto"

    def to_dict(self) -> dict:
        """The configuration as plain values (a DataFrame catalog / Taxonomy become a description)."""
        d = dataclasses.asdict(self)
        if isinstance(self.catalog, pd.DataFrame):
            d["catalog"] = f"<DataFrame {len(self.catalog)} rows>"
        if isinstance(self.taxonomy, Taxonomy):
            d["taxonomy"] = {"classes": list(self.taxonomy.classes), "sep": self.taxonomy.sep}
        elif self.taxonomy is not None and not isinstance(self.taxonomy, (str, Path)):
            d["taxonomy"] = [str(p) for p in self.taxonomy]
        elif isinstance(self.taxonomy, Path):
            d["taxonomy"] = str(self.taxonomy)
        return d


def catalog_kwargs(opts: dict, base: Path | None) -> dict:
    """``load_catalog`` keyword arguments of ``catalog_options`` (unset ones dropped); a relative
    ``images_dir`` is relative to ``base`` (the catalog file's folder)."""
    bad = [k for k in opts if k not in CATALOG_OPTIONS]
    if bad:
        raise PipelineError(f"catalog_options has unknown key {bad[0]!r}; known keys: {', '.join(CATALOG_OPTIONS)}")
    kw = {k: v for k, v in opts.items() if v is not None and k not in _NOT_LOADER}
    if kw.get("images_dir") is not None:
        d = Path(kw["images_dir"]).expanduser()
        kw["images_dir"] = d if d.is_absolute() or base is None else base / d
    return kw


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
  label_case: merge                # "fastrack" beside "Fastrack": merge (into the most frequent, warned) or strict
split: {val: 0.1, test: 0.2, seed: 0, min_count: 3}
neighbors: {k: 20, template: "{path}"}   # class-name neighbour table (text encoder; tree without one):
                                         # soft labels use its first train.k, metrics nbrs@k need k >= 19
train:                             # any sk.TrainConfig field; "auto" = decided by the data (TrainConfig.resolve)
  smoothing: semantic              # soft-label kind (list below)
  epochs: auto                     # minibatch budget: 30 epochs raised to min_steps; a number is the whole budget
  min_steps: auto                  # 600 optimizer steps at least when epochs is auto, else 0
  early_stopping: auto             # val_top1 when the val split has >= 1000 items, else none (null)
  solver: auto                     # lbfgs (to convergence) for the linear head in memory, else minibatch
export: {onnx: auto, pt2: true}     # onnx: auto = when the [onnx] extra is installed; pt2: torch.export
"""

#: defaults of the YAML config's sections, taken from :class:`PipelineConfig` where it has the field
_P = PipelineConfig()
CATALOG_DEFAULTS = {"id": "id", "title": "title", "image": None, "images_dir": None, "path": None, "path_col": None,
                    "sep": DEFAULT_SEP, "label_case": "merge"}
SPLIT_DEFAULTS = {"val": _P.val, "test": _P.test, "seed": _P.split_seed, "min_count": _P.min_count}
NEIGHBOR_DEFAULTS = {"k": _P.k, "template": _P.class_template}
EXPORT_DEFAULTS = {"onnx": "auto", "pt2": True}
TOP_DEFAULTS = {"text_encoder": _P.text_encoder, "image_encoder": _P.image_encoder, "taxonomy": _P.taxonomy,
                "sample": _P.sample, "seed": _P.sample_seed,
                "catalog": None, "split": None, "neighbors": None, "train": None, "export": None}
del _P


class ConfigError(ValueError):
    """A YAML config that cannot be used: the file, the key and what is wrong, in one sentence."""


def _section(raw, name: str, defaults: dict, where: str) -> dict:
    if raw is None:
        return dict(defaults)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: '{name}' must be a mapping of keys, not {type(raw).__name__}")
    unknown = [k for k in raw if k not in defaults]
    if unknown:
        raise ConfigError(f"{where}: unknown key '{name}.{unknown[0]}'; known keys of '{name}': {', '.join(defaults)}")
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
    ConfigError
        Unreadable YAML, an unknown key (named with its section), or a bad value.
    """
    import yaml

    from ..learn.config import TrainConfig

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} not found")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of keys (text_encoder, train, ...)")
    unknown = [k for k in raw if k not in TOP_DEFAULTS]
    if unknown:
        raise ConfigError(f"{p}: unknown key '{unknown[0]}'; known keys: {', '.join(TOP_DEFAULTS)}")
    cfg = {**TOP_DEFAULTS, **raw}
    cfg["catalog"] = _section(raw.get("catalog"), "catalog", CATALOG_DEFAULTS, str(p))
    cfg["split"] = _section(raw.get("split"), "split", SPLIT_DEFAULTS, str(p))
    cfg["neighbors"] = _section(raw.get("neighbors"), "neighbors", NEIGHBOR_DEFAULTS, str(p))
    export = raw.get("export")
    if isinstance(export, dict) and "torchscript" in export:     # semcat_kit 0.1 configs
        export = dict(export)
        ts = export.pop("torchscript")
        export.setdefault("pt2", ts)
        warnings.warn(f"{p}: 'export.torchscript' is replaced by 'export.pt2' (torch.export); read as pt2: {ts!r}",
                      FutureWarning, stacklevel=2)
    cfg["export"] = _section(export, "export", EXPORT_DEFAULTS, str(p))
    train = raw.get("train") or {}
    if not isinstance(train, dict):
        raise ConfigError(f"{p}: 'train' must be a mapping of TrainConfig fields")
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    bad = [k for k in train if k not in names]
    if bad:
        raise ConfigError(f"{p}: unknown key 'train.{bad[0]}'; TrainConfig fields: {', '.join(names)}")
    try:
        cfg["train"] = TrainConfig(**train)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{p}: {e}") from None
    for key in ("text_encoder", "image_encoder"):
        if cfg[key] is not None and (not isinstance(cfg[key], str) or not cfg[key]):
            raise ConfigError(f"{p}: '{key}' must be an encoder name (e.g. 'minilm') or null")
    if cfg["text_encoder"] is None and cfg["image_encoder"] is None:
        raise ConfigError(f"{p}: text_encoder and image_encoder are both null; give at least one")
    s = cfg["sample"]
    if s is not None and (isinstance(s, bool) or not isinstance(s, int) or s < 2):
        raise ConfigError(f"{p}: 'sample' must be an integer >= 2 or null, not {s!r}")
    for key in ("seed",):
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], int) or cfg[key] < 0:
            raise ConfigError(f"{p}: '{key}' must be a non-negative integer, not {cfg[key]!r}")
    for key in ("onnx", "pt2"):
        v = cfg["export"][key]
        if not isinstance(v, bool) and not (key == "onnx" and v == "auto"):
            raise ConfigError(f"{p}: 'export.{key}' must be true or false{' or auto' if key == 'onnx' else ''}, "
                              f"not {v!r}")
    k = cfg["neighbors"]["k"]
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"{p}: 'neighbors.k' must be a positive integer, not {k!r}")
    return cfg


def pipeline_config(source, cfg: dict | None = None) -> PipelineConfig:
    """The :class:`PipelineConfig` of a YAML config (:func:`read_train_config`; None: no config file,
    every default) and a catalog source (``"tutorial"``, a Kaggle fashion folder or a catalog file:
    only a file uses ``catalog:``)."""
    file_source = str(source) != "tutorial" and Path(source).expanduser().is_file()
    if cfg is None:
        return PipelineConfig(catalog=source, catalog_options=dict(CATALOG_DEFAULTS) if file_source else {})
    return PipelineConfig(
        catalog=source, catalog_options=dict(cfg["catalog"]) if file_source else {}, taxonomy=cfg["taxonomy"],
        text_encoder=cfg["text_encoder"], image_encoder=cfg["image_encoder"],
        class_template=cfg["neighbors"]["template"], k=max(cfg["neighbors"]["k"], cfg["train"].k),
        val=cfg["split"]["val"], test=cfg["split"]["test"], split_seed=cfg["split"]["seed"],
        min_count=cfg["split"]["min_count"], sample=cfg["sample"], sample_seed=cfg["seed"],
        device=cfg["train"].device)

