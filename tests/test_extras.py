"""Light installs: the optional packages of each extra are really optional. With a package hidden
(``sys.modules[name] = None``: its import fails, as when it is not installed), the module that needs
it says which extra to install, and the core (train / export / predict / CLI) runs without it.
The fresh-venv install of the core alone is tests/test_core_install.py (slow)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, hide: list[str]) -> subprocess.CompletedProcess:
    prelude = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in hide)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.mark.parametrize("hide, code, extra", [
    (["plotly"], "import semcat_kit as sk; sk.viz", "viz"),
    (["ipywidgets"], "import semcat_kit as sk; sk.widgets", "notebooks"),
    (["umap"], """
        import numpy as np, semcat_kit as sk
        tax = sk.Taxonomy.from_paths([f"a > c{i}" for i in range(30)])
        sk.see.project_labels(np.random.default_rng(0).normal(size=(30, 8)), tax, method="umap")""", "viz"),
    (["optuna"], """
        import numpy as np, semcat_kit as sk
        sk.tune((np.zeros((4, 3)), [0, 1, 0, 1]), (np.zeros((2, 3)), [0, 1]),
                taxonomy=sk.Taxonomy.from_paths(["a", "b"]), n_trials=1)""", "tune"),
    (["hiclass"], """
        import numpy as np, semcat_kit as sk
        sk.HiClassBaseline(C=1.0).fit(np.eye(4, dtype="float32"), ["a > b", "a > c", "a > b", "a > c"])""", "peers"),
    (["cleanlab", "cleanlab.filter"], """
        import numpy as np, semcat_kit as sk
        sk.see.label_issues(np.full((4, 2), 0.5), [0, 1, 0, 1], cleanlab=True)""", "cleanlab"),
    (["onnxscript"], """
        import numpy as np, torch, semcat_kit as sk
        from semcat_kit.encode.embeddings import Embeddings
        e = Embeddings([str(i) for i in range(8)], np.random.default_rng(0).normal(size=(8, 4)).astype("float32"),
                       None, np.ones(8, bool), np.zeros(8, bool))
        run = sk.train(e, np.arange(8) % 2, taxonomy=sk.Taxonomy.from_paths(["a", "b"]), progress=False,
                       config=sk.TrainConfig(epochs=1, proj_dim=4, hidden=4, device="cpu", early_stopping=None))
        sk.export_head(run, "/nonexistent-dir-never-written/h", onnx=True)""", "onnx"),
])
def test_a_missing_extra_names_itself(hide, code, extra):
    r = _run(code, hide)
    assert r.returncode != 0
    assert f'pip install "semcat_kit[{extra}]"' in r.stderr, r.stderr[-2000:]
    assert "MissingExtraError" in r.stderr


def test_core_paths_do_not_import_the_extras(tmp_path):
    """train + export (pt2) + predict + the CLI's help with every extra hidden."""
    hide = ["plotly", "ipywidgets", "umap", "optuna", "hiclass", "cleanlab", "onnx", "onnxruntime", "onnxscript",
            "jupyterlab", "papermill", "nbformat", "nbclient", "nbconvert"]
    r = _run(f"""
        import numpy as np, pandas as pd, semcat_kit as sk
        from semcat_kit import cli
        cat = sk.datasets.load_fashion_tutorial()
        cat = cat[cat["label"].isin(cat["label"].value_counts().index[:4])].groupby("label").head(10)
        tax = sk.Taxonomy.from_paths(cat["label"])
        enc = sk.encoders.load("hash-text:16")
        emb = sk.encode_catalog(cat[["item_id", "title"]], text_encoder=enc, progress=False)
        clf = sk.SemcatClassifier(taxonomy=tax, epochs=2, device="cpu").fit(emb, cat["label"].to_numpy())
        sk.export_head(clf.run_, {str(tmp_path / 'h')!r}, onnx=False)
        res = sk.Predictor.from_pretrained({str(tmp_path / 'h')!r}, device="cpu").predict(cat[["item_id", "title"]],
                                                                                       progress=False)
        assert len(res) == len(cat)
        import sys
        loaded = [m for m in {hide!r} if sys.modules.get(m) is not None]
        assert not loaded, loaded
        print("core ok")
    """, hide)
    assert r.returncode == 0 and "core ok" in r.stdout, r.stderr[-3000:]


HEAVY = ("torch", "plotly", "ipywidgets", "numpy", "pandas")


@pytest.mark.parametrize("code", [
    "import semcat_kit",
    "import semcat_kit as sk; sk.__version__; sk.TrainConfig",      # a lazy name resolves on first use
    "from semcat_kit.cli.app import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
    "from semcat_kit.cli.app import main\ntry:\n    main(['predict', '--help'])\nexcept SystemExit:\n    pass",
], ids=["import", "version", "semcat --help", "semcat predict --help"])
def test_a_light_face_imports_no_heavy_library(code):
    """`import semcat_kit` and `semcat --help` load none of torch, plotly, ipywidgets, numpy, pandas
    (PEP 562 lazy names; README's development section)."""
    import subprocess

    probe = code + f"\nimport sys\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = out.stdout.strip().splitlines()[-1]
    if "TrainConfig" in code:      # TrainConfig lives with the trainer: torch, numpy are expected there
        assert "plotly" not in loaded and "ipywidgets" not in loaded, loaded
    else:
        assert loaded == "[]", f"{code!r} imported {loaded}"
