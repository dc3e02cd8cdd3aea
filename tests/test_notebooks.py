"""The tutorial notebooks: committed without outputs, and executed end to end (reduced epochs)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
EXPECTED = ["01_taxonomy_and_label_graph", "02_encode_catalog", "03_train_heads", "04_mistake_severity",
            "05_label_embedding_map", "06_inspect_mispredictions", "07_export_and_predict"]


@pytest.fixture(scope="module")
def run_notebooks():
    """scripts/run_notebooks.py, the runner behind `make demo`."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import run_notebooks
    finally:
        sys.path.pop(0)
    return run_notebooks


def test_the_seven_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs_and_with_a_parameters_cell(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), \
        f"{path.name} carries outputs: clear them before committing"
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"
    src = "".join(tagged[0]["source"])
    for name in ("catalog", "text_encoder", "image_encoder", "epochs", "device", "work_dir"):
        assert f"{name} =" in src, f"{path.name}: parameter {name!r} missing"
    # notebooks are thin: they call the library, they define no functions or classes of their own
    for c in code:
        body = "".join(c["source"])
        assert "\ndef " not in "\n" + body and "\nclass " not in "\n" + body, f"{path.name} defines logic"


@pytest.mark.notebooks
@pytest.mark.slow
def test_notebooks_run_end_to_end(tmp_path, run_notebooks):
    """Execute all seven in order in fresh kernels, sharing one work directory (the real demo path)."""
    # SEMCAT_TEST_WORK_DIR lets a developer reuse a work dir between local runs; CI starts empty
    work = os.environ.get("SEMCAT_TEST_WORK_DIR") or str(tmp_path / "work")
    records = run_notebooks.run(tmp_path / "reports", {"epochs": 2, "work_dir": work}, html=True)
    assert [r["notebook"] for r in records] == [f"{n}.ipynb" for n in EXPECTED]
    for name in EXPECTED:
        executed = json.loads((tmp_path / "reports" / f"{name}.ipynb").read_text())
        code = [c for c in executed["cells"] if c["cell_type"] == "code"]
        assert all(c.get("execution_count") for c in code), f"{name}: a cell did not run"
        errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{name}: {errors[0]['ename']}: {errors[0]['evalue']}"
        assert (tmp_path / "reports" / f"{name}.html").stat().st_size > 10_000
    # the results table really reached notebook 04, and the exported head predicted in notebook 07
    nb4 = (tmp_path / "reports" / "04_mistake_severity.ipynb").read_text()
    assert "mistake_severity" in nb4 and "top-20 semantic" in nb4 and "+ CRM" in nb4
    # figures reach the HTML reports (plotly.js embedded, no network needed to view them)
    html5 = (tmp_path / "reports" / "05_label_embedding_map.html").read_text()
    assert html5.count("Plotly.newPlot") >= 2
    nb7 = (tmp_path / "reports" / "07_export_and_predict.ipynb").read_text()
    assert "top-1 accuracy of the exported head" in nb7 and "head.onnx" in nb7


@pytest.mark.notebooks
@pytest.mark.slow
def test_a_later_notebook_runs_alone_on_an_empty_work_dir(tmp_path, run_notebooks):
    """06 needs embeddings, neighbours and a trained suite: it builds them itself when run first."""
    work = tmp_path / "work"
    run_notebooks.run(tmp_path / "reports", {"epochs": 1, "work_dir": str(work)}, only=["06"], html=False)
    executed = json.loads((tmp_path / "reports" / "06_inspect_mispredictions.ipynb").read_text())
    text = json.dumps(executed["cells"])
    assert "likely label issues out of" in text
    assert list((work / "suites").glob("*/summary.csv")), "the suite was not trained into the work dir"
