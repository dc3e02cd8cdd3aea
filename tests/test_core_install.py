"""The core install alone (``pip install semcat_kit``, no extra) into a fresh virtual environment
(no system site packages) runs ``semcat train`` and ``semcat predict`` on the bundled tutorial, and
has none of the extras' packages (no JupyterLab, plotly, optuna, hiclass, onnx).

Slow (marked ``slow`` and ``install``): it builds a venv and installs torch and the rest from the
package index (SEMCAT_CORE_INSTALL_ARGS adds pip options, e.g. ``--find-links DIR``). It reports the
install time in its output (``-rP``)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("jupyterlab", "notebook", "papermill", "nbconvert", "ipywidgets", "plotly", "umap-learn", "optuna",
          "hiclass", "cleanlab", "onnx", "onnxruntime", "onnxscript")


@pytest.mark.slow
@pytest.mark.install
def test_core_install_runs_train_and_predict(tmp_path):
    if os.environ.get("SEMCAT_SKIP_INSTALL_TEST"):
        pytest.skip("SEMCAT_SKIP_INSTALL_TEST is set")
    venv = tmp_path / "venv"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    # copy the package source (tracked files only matter; build outputs and venvs are left behind)
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", ".pytest_cache", "reports", "__pycache__",
                                                             "*.egg-info", "build", "notebooks", "bench", "docs"))
    extra = os.environ.get("SEMCAT_CORE_INSTALL_ARGS", "").split()
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", *extra, str(src)], capture_output=True, text=True,
                       timeout=3000)
    assert r.returncode == 0, r.stderr[-3000:]
    install_s = time.perf_counter() - t0
    listed = subprocess.run([str(py), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                            check=True).stdout.lower()
    names = {line.split("==")[0].replace("_", "-") for line in listed.splitlines()}
    assert not names & set(EXTRAS), sorted(names & set(EXTRAS))
    semcat = venv / "bin" / "semcat"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("text_encoder: minilm\nimage_encoder: null\nsample: 400\n"
                   "train: {epochs: 3, proj_dim: 64, hidden: 128, batch_size: 64, device: cpu}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    t1 = time.perf_counter()
    r = subprocess.run([str(semcat), "train", "--catalog", "tutorial", "--config", str(cfg), "--out",
                        str(tmp_path / "head"), "--quiet"], capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=1800)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    assert "no head.onnx" in r.stdout and (tmp_path / "head" / "head.pt2").is_file()
    assert (tmp_path / "head" / "README.md").is_file() and (tmp_path / "head" / "model.safetensors").is_file()
    products = tmp_path / "products.csv"
    products.write_text("id,title\n1,Men Blue Denim Jeans\n2,Women Red Kurta\n3,Black Leather Wallet\n")
    r = subprocess.run([str(semcat), "predict", "--model", str(tmp_path / "head"), "--input", str(products),
                        "--output", str(tmp_path / "pred.csv"), "--quiet"], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = (tmp_path / "pred.csv").read_text().splitlines()
    assert lines[0].startswith("item_id,pred_1,") and len(lines) == 4
    print(f"core install: {install_s:.0f} s (venv + pip install); train + predict: {time.perf_counter() - t1:.0f} s; "
          f"load average {os.getloadavg()[0]:.1f}")
