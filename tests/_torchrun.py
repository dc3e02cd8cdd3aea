"""Commands of the tests that start torchrun ranks (or one process), with one repeat for torch's
gloo teardown abort (used by test_distributed, test_store, test_encode_stream and test_faults)."""
from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Callable

#: What a rank prints when torch's gloo process group aborts it at interpreter exit, after its work:
#: seen once in each of three full test sessions (2026-12-07/08, torch 2.14.1; each time a torchrun
#: test of tests/test_distributed.py), never when that file ran alone (8 runs). Such a run is
#: repeated once, in a clean folder, with a warning; any other failure, or the same one twice,
#: fails the test.
TEARDOWN_ABORT = "terminate called without an active exception"


def run(args, cwd, env, timeout: int = 600,
        ok: Callable[[subprocess.CompletedProcess], bool] = lambda p: p.returncode == 0) -> subprocess.CompletedProcess:
    """``subprocess.run(args)`` in ``cwd``, captured; when the outcome is not ``ok`` and a rank aborted
    with :data:`TEARDOWN_ABORT`, what the first attempt wrote into ``cwd`` is removed and it runs once
    more (with a warning). Returns the last attempt: the test asserts on it as before."""
    cwd = Path(cwd)
    before = set(cwd.iterdir())
    p = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if not ok(p) and TEARDOWN_ABORT in p.stdout + p.stderr:
        warnings.warn(f"a torchrun rank aborted at exit ({TEARDOWN_ABORT!r}); running it again once")
        for made in set(cwd.iterdir()) - before:           # what the first attempt wrote
            shutil.rmtree(made) if made.is_dir() else made.unlink()
        p = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return p
