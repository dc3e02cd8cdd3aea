"""What the ``semcat`` commands share: their error type, the ``--catalog`` source they read, the
device check, and the product sample.

Torch-free at import (``semcat --help`` imports this).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

__all__ = ["CliError", "check_training_catalog", "load_training_catalog", "training_pipeline", "sample_catalog",
           "check_device"]


class CliError(Exception):
    """Bad input found by the command line itself. ``all_ranks=True``: every ``torchrun`` rank raises
    the same error (found alike by all), so it is printed once, by rank 0."""

    def __init__(self, message: str = "", *, all_ranks: bool = False):
        super().__init__(message)
        self.all_ranks = all_ranks


def sample_catalog(catalog: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """A random sample of ``n`` products (all when ``n >= len``), in catalog order."""
    if n >= len(catalog):
        return catalog.reset_index(drop=True)
    return catalog.sample(n=n, random_state=seed).sort_index().reset_index(drop=True)


def check_training_catalog(source: str, mapping: dict, config_path) -> None:
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


def load_training_catalog(source: str, mapping: dict, config_path):
    """The catalog a command reads for ``--catalog`` (read by the same Pipeline as ``semcat train``)."""
    from ..orchestrate.pipeline import Pipeline

    check_training_catalog(source, mapping, config_path)
    file_source = source != "tutorial" and Path(source).expanduser().is_file()
    return Pipeline(catalog=source, catalog_options=dict(mapping) if file_source else {}).load_catalog()


def training_pipeline(source: str, cfg: dict, cache_dir=None):
    """The :class:`~semcat_kit.orchestrate.pipeline.Pipeline` that ``semcat train`` runs for a config
    (:func:`semcat_kit.orchestrate.config.read_train_config`) and a ``--catalog`` source."""
    from ..orchestrate.config import pipeline_config
    from ..orchestrate.pipeline import Pipeline

    return Pipeline(pipeline_config(source, cfg), cache_dir=cache_dir)


def check_device(name: str) -> None:
    from .._core.contracts import resolve_device

    try:
        resolve_device(name, name="--device")
    except ValueError as e:
        raise CliError(str(e)) from None
