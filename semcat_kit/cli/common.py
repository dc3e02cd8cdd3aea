"""What the ``semcat`` commands share: their error type, the checks of the ``--catalog`` option and
of ``--device``.

Torch-free at import (``semcat --help`` imports this).
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["CliError", "check_training_catalog", "check_device"]


class CliError(Exception):
    """Bad input found by the command line itself. ``all_ranks=True``: every ``torchrun`` rank raises
    the same error (found alike by all), so it is printed once, by rank 0."""

    def __init__(self, message: str = "", *, all_ranks: bool = False):
        super().__init__(message)
        self.all_ranks = all_ranks


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


def check_device(name: str) -> None:
    from .._core.contracts import resolve_device

    try:
        resolve_device(name, name="--device")
    except ValueError as e:
        raise CliError(str(e)) from None
