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
