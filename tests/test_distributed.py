"""Two CPU processes under torchrun (gloo) give the same head as one process with the same global batch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

HERE = Path(__file__).parent
# float32 sums in a different order (each rank's half-batch mean, then DDP's gradient all-reduce
# average, instead of one mean over the batch): differences of a few ulp per step, after 24 AdamW
# steps well below 1e-6 on weights of order 0.1-1 (measured: 3e-8; 1e-6 leaves 30x for other CPUs'
# summation orders while still catching a wrong batch split, which moves weights by ~1e-3).
ATOL = 1e-6


def _run(args, tmp_path, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    p = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


@pytest.mark.slow
def test_ddp_training_matches_one_process(tmp_path):
    _run([sys.executable, str(HERE / "_ddp_train.py"), str(tmp_path / "one.pt")], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
          str(HERE / "_ddp_train.py"), str(tmp_path / "two.pt"), str(tmp_path / "ck")], tmp_path)
    one = torch.load(tmp_path / "one.pt", weights_only=False)
    two = torch.load(tmp_path / "two.pt", weights_only=False)
    assert one["world"] == 1 and two["world"] == 2
    for k, v in one["state"].items():
        assert torch.allclose(v, two["state"][k], atol=ATOL, rtol=0), (k, (v - two["state"][k]).abs().max())
    np.testing.assert_allclose(one["history"]["loss"], two["history"]["loss"], rtol=1e-5)
    np.testing.assert_allclose(one["history"]["val_top1"], two["history"]["val_top1"])
    assert one["best_epoch"] == two["best_epoch"]
    # rank 0 alone wrote the checkpoint
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["last.pt"]


@pytest.mark.slow
def test_ddp_training_with_a_last_batch_smaller_than_the_number_of_ranks(tmp_path):
    """33 rows, batch 32, 2 ranks: the last global batch (1 row) would leave rank 1 with an empty
    step (NaN loss, a divergence error on that rank only); it is joined to the batch before it."""
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
          str(HERE / "_ddp_train.py"), str(tmp_path / "two.pt")], tmp_path, {"SEMCAT_DDP_ROWS": "33"})
    two = torch.load(tmp_path / "two.pt", weights_only=False)
    assert two["world"] == 2 and len(two["history"]["loss"]) == 3
    assert np.isfinite(two["history"]["loss"]).all()
    assert all(torch.isfinite(v).all() for v in two["state"].values())


def test_collective_timeout_comes_from_semcat_dist_timeout(monkeypatch):
    from semcat_kit import distributed

    monkeypatch.delenv("SEMCAT_DIST_TIMEOUT", raising=False)
    assert distributed.timeout_seconds() == distributed.DEFAULT_TIMEOUT_S == 1800.0
    monkeypatch.setenv("SEMCAT_DIST_TIMEOUT", "7200")
    assert distributed.timeout_seconds() == 7200.0
    for bad in ("0", "-5", "soon", "nan"):
        monkeypatch.setenv("SEMCAT_DIST_TIMEOUT", bad)
        with pytest.raises(ValueError, match="SEMCAT_DIST_TIMEOUT"):
            distributed.timeout_seconds()
    seen = {}
    monkeypatch.setenv("SEMCAT_DIST_TIMEOUT", "90")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend, timeout: seen.update(t=timeout))
    assert distributed.init_from_env(backend="gloo") is True
    assert seen["t"].total_seconds() == 90


@pytest.mark.slow
def test_semcat_train_under_torchrun_shares_the_encoding_between_ranks(tmp_path):
    """`torchrun --nproc-per-node=2 -m semcat_kit train --cache-dir ...`: each rank encodes its half
    of the catalog into the store (not rank 0 everything while the other waits), both then read
    every vector from it, train with DDP, and rank 0 exports a head that predicts; a second run
    encodes nothing."""
    import pandas as pd
    import yaml

    sys.path.insert(0, str(HERE))
    import _export_case as ec

    df = ec.sample()
    csv = tmp_path / "shop.csv"
    pd.DataFrame({"sku": df["item_id"], "name": df["title"], "category": df["label"]}).to_csv(csv, index=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "text_encoder": "minilm", "image_encoder": None, "catalog": {"id": "sku", "title": "name",
                                                                     "path_col": "category"},
        "train": {"epochs": 2, "proj_dim": 32, "hidden": 64, "batch_size": 64, "lr": 0.003, "device": "cpu",
                  "early_stopping": None},
        "export": {"onnx": False, "torchscript": False}}))
    cache = tmp_path / "store"

    def run(out):
        return _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
                     "semcat_kit", "train", "--catalog", str(csv), "--config", str(cfg), "--out", str(out),
                     "--cache-dir", str(cache), "--quiet"], tmp_path, {"HF_HUB_OFFLINE": "1"})
    p = run(tmp_path / "h")
    got = {}
    for line in p.stdout.splitlines():
        if line.startswith("rank ") and "encoded text" in line:
            r = line.split()[1].split("/")[0]
            got[r] = int(line.split("encoded text ")[1].split(",")[0])
    assert sorted(got) == ["0", "1"] and sum(got.values()) == df["title"].nunique() and min(got.values()) > 0, p.stdout
    assert "test metrics (" in p.stdout
    import semcat_kit as sk

    pred = sk.Predictor.load(tmp_path / "h", device="cpu").predict(
        pd.DataFrame({"item_id": df["item_id"][:5], "title": df["title"][:5]}), progress=False)
    assert len(pred) == 5 and pred["pred_1"].notna().all()
    again = run(tmp_path / "h2")
    assert again.stdout.count("encoded text 0, image - of its") == 2, again.stdout
