"""Torch threads on a shared machine (semcat_kit._core.threads): the SEMCAT_THREADS knob, the
OpenMP wait policy set before torch loads, and the trainer running under the choice."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import semcat_kit as sk
from semcat_kit._core import threads as TH   # internal: the thread choice is this module's own invariant
from semcat_kit.learn import trainer as T
from semcat_kit.learn.solver import default_threads
from semcat_kit.learn.training import TrainConfig, train


def test_semcat_threads_wins_and_bad_values_name_the_variable(monkeypatch):
    monkeypatch.setenv("SEMCAT_THREADS", "3")
    assert TH.choose_threads() == 3 and default_threads() == 3
    for bad in ("0", "-2", "two", "1.5"):
        monkeypatch.setenv("SEMCAT_THREADS", bad)
        with pytest.raises(ValueError, match=rf"SEMCAT_THREADS='{bad}'.*positive number of threads"):
            TH.choose_threads()


def test_auto_is_at_least_one_and_never_more_than_the_callers_threads(monkeypatch):
    monkeypatch.setenv("SEMCAT_THREADS", "auto")
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert TH.choose_threads() == 1                  # the caller's cap is kept, never raised
        monkeypatch.setattr(TH, "busy_cores", lambda window=0.05: 100.0)
        TH._cache.clear()        # private: forget the last measurement (kept a few seconds; no public refresh)
        torch.set_num_threads(2)
        assert TH.choose_threads() == 1                  # everything busy: still one thread
        monkeypatch.setattr(TH, "busy_cores", lambda window=0.05: 0.0)
        TH._cache.clear()
        assert TH.choose_threads() == min(2, TH.available_cores())
    finally:
        torch.set_num_threads(old)
        TH._cache.clear()
    assert TH.busy_cores(0.01) >= 0.0


def test_torch_threads_restores_the_callers_setting():
    old = torch.get_num_threads()
    with TH.torch_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == old


def test_trainer_fits_under_the_chosen_threads_and_restores_them(monkeypatch):
    seen = []

    class Probe(T.Callback):
        def on_epoch_begin(self, t):
            seen.append(torch.get_num_threads())

    rng = np.random.default_rng(0)
    tax = sk.Taxonomy.from_paths([f"A > L{i}" for i in range(3)])
    y = np.repeat(np.arange(3), 10)
    emb = (np.eye(3)[y] @ rng.normal(size=(3, 8)) + 0.1 * rng.normal(size=(30, 8))).astype(np.float32)
    old = torch.get_num_threads()
    monkeypatch.setenv("SEMCAT_THREADS", "1")
    try:
        torch.set_num_threads(2)
        train(emb, y, taxonomy=tax, config=TrainConfig(epochs=2, hidden=8, proj_dim=4, batch_size=8, device="cpu",
                                                       solver="minibatch", early_stopping=None),
              callbacks=[Probe()], progress=False)
        assert seen == [1, 1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(old)


def _child(env: dict, code: str) -> str:
    e = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "SEMCAT_OMP_PASSIVE")}
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, check=True).stdout.strip()


def test_import_sets_the_passive_wait_policy_before_torch_unless_told_otherwise():
    code = ("import os, sys; import semcat_kit; print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")
    assert _child({}, code) == "PASSIVE False"                          # set, and torch not loaded by it
    assert _child({"OMP_WAIT_POLICY": "ACTIVE"}, code) == "ACTIVE False"  # the user's value is kept
    assert _child({"SEMCAT_OMP_PASSIVE": "0"}, code) == "None False"      # opt-out
    late = "import os, torch, semcat_kit; print(os.environ.get('OMP_WAIT_POLICY'))"
    assert _child({}, late) == "None"           # torch loaded first: too late to change libgomp, left alone
