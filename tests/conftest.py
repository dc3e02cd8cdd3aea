"""Shared fixtures. Tests never touch the network (HF_HUB_OFFLINE=1)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SEMCAT_SHARED_DATA", ROOT.parent / "shared" / "data"))
FASHION_DIR = SHARED_DATA / "myntra-fashion"
GOOGLE_TAXONOMY = SHARED_DATA / "google-product-taxonomy" / "taxonomy-with-ids.en-US.txt"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (set SEMCAT_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    """The full Myntra catalog folder (styles.csv + images/)."""
    return _need(FASHION_DIR)


@pytest.fixture(scope="session")
def google_taxonomy_file() -> Path:
    return _need(GOOGLE_TAXONOMY)


@pytest.fixture(scope="session")
def myntra_styles(fashion_dir):
    import pandas as pd

    return pd.read_csv(fashion_dir / "styles.csv", on_bad_lines="skip")


@pytest.fixture(scope="module")
def run_notebooks():
    """scripts/run_notebooks.py, the runner behind `make demo`."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import run_notebooks
    finally:
        sys.path.pop(0)
    return run_notebooks
