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


def load_run_notebooks():
    """scripts/run_notebooks.py as a module."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import run_notebooks
    finally:
        sys.path.pop(0)
    return run_notebooks


@pytest.fixture(scope="module")
def run_notebooks():
    """scripts/run_notebooks.py, the runner behind `make demo`."""
    return load_run_notebooks()


class NotebookRun:
    """The tutorial notebooks executed with the test parameters (a short training) into one reports
    folder and one work dir, each notebook at most once per session.

    ``ensure()`` (or ``ensure(["05", "06"])``) runs those of the named notebooks not run yet, in
    notebook order, with HTML reports, and returns the reports folder; ``records`` names those run.
    tests/test_notebooks.py runs all seven (in order, fresh kernels); tests/test_browser.py, collected
    after it (see ``pytest_collection_modifyitems``), reuses the executed 05 and 06, their reports and
    the work dir when they are in ``records`` instead of running the notebooks again.
    """

    PARAMS = {"epochs": 2}

    def __init__(self, root: Path):
        self.out = root / "reports"
        # SEMCAT_TEST_WORK_DIR lets a developer reuse a work dir between local runs; CI starts empty
        self.work = Path(os.environ.get("SEMCAT_TEST_WORK_DIR") or root / "work")
        self.params = {**self.PARAMS, "work_dir": str(self.work)}
        self.records: dict[str, dict] = {}

    def ensure(self, only: list[str] | None = None) -> Path:
        books = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
        wanted = [b.name for b in books if not only or any(b.name.startswith(o) for o in only)]
        missing = [n for n in wanted if n not in self.records]
        if missing:
            for r in load_run_notebooks().run(self.out, self.params, only=[n[:2] for n in missing], html=True):
                self.records[r["notebook"]] = r
        return self.out


@pytest.fixture(scope="session")
def notebook_run(tmp_path_factory) -> NotebookRun:
    """One shared run of the notebooks per session (see :class:`NotebookRun`)."""
    return NotebookRun(tmp_path_factory.mktemp("notebook-run"))


def pytest_collection_modifyitems(config, items):
    """Browser tests last, so they find the notebooks already run by tests/test_notebooks.py."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)   # stable: order kept otherwise
