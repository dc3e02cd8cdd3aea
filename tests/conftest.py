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


# --------------------------------------------------------------------------- the time of the test session
_TIMES: dict[str, float] = {}
_OUTCOMES: dict[str, str] = {}
_T0: list[float] = []


def pytest_sessionstart(session):
    import time

    _T0.append(time.perf_counter())


def pytest_runtest_logreport(report):
    _TIMES[report.nodeid] = _TIMES.get(report.nodeid, 0.0) + report.duration
    if report.when == "call" or report.outcome != "passed":
        _OUTCOMES[report.nodeid] = report.outcome


def pytest_sessionfinish(session, exitstatus):
    """``SEMCAT_RECORD_TEST_TIMES=docs/bench/make_test.md`` writes the session's wall time, the load
    average at its end and where the time went (per file, the slowest tests) to that markdown file."""
    path = os.environ.get("SEMCAT_RECORD_TEST_TIMES")
    if not path or not _T0 or not _TIMES:
        return
    import time

    from semcat_kit._core.io import atomic_write_text

    wall = time.perf_counter() - _T0[0]
    per_file: dict[str, float] = {}
    for node, sec in _TIMES.items():
        f = node.split("::", 1)[0]
        per_file[f] = per_file.get(f, 0.0) + sec
    counts: dict[str, int] = {}
    for o in _OUTCOMES.values():
        counts[o] = counts.get(o, 0) + 1
    one, five, fifteen = os.getloadavg()
    fmt = lambda s: f"{int(s // 60)} min {int(round(s % 60))} s" if s >= 60 else f"{s:.0f} s"  # noqa: E731
    notebooks = sum(s for n, s in _TIMES.items() if n.startswith(("tests/test_notebooks.py", "tests/test_browser.py")))
    lines = [
        "# The time of the test session",
        "",
        f"Written by `tests/conftest.py` (`SEMCAT_RECORD_TEST_TIMES={path}`) at the end of a pytest session "
        f"on {time.strftime('%Y-%m-%d %H:%M')}: {fmt(wall)} wall for {len(_TIMES):,} tests "
        f"({', '.join(f'{v:,} {k}' for k, v in sorted(counts.items()))}) on {os.cpu_count()} CPU cores, "
        f"load average at the end {one:.1f} / {five:.1f} / {fifteen:.1f} (1 / 5 / 15 min). The notebook and "
        f"browser tests (the seven notebooks on the tutorial, the toys catalog and the 5,595-class Google "
        f"taxonomy, 06 alone, JupyterLab) took {fmt(notebooks)} of it ({notebooks / max(wall, 1e-9):.0%}).",
        "",
        "| file | time | share |", "|---|---:|---:|",
        *[f"| `{f}` | {fmt(s)} | {s / max(wall, 1e-9):.0%} |"
          for f, s in sorted(per_file.items(), key=lambda kv: -kv[1])[:15]],
        "", "Slowest tests (set-up + call + tear-down):", "", "| test | time |", "|---|---:|",
        *[f"| `{n}` | {fmt(s)} |" for n, s in sorted(_TIMES.items(), key=lambda kv: -kv[1])[:15]], ""]
    atomic_write_text(ROOT / path if not os.path.isabs(path) else Path(path), "\n".join(lines))
