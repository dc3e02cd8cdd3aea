"""Run by tests/test_faults.py under torchrun (2 ranks): ``semcat encode`` where the ranks read
different catalog files (rank r reads BASE/c<r>.csv). Exits with the command's status.

    python _encode_ranks_case.py BASE_DIR
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from semcat_kit import cli

if __name__ == "__main__":
    base = Path(sys.argv[1])
    rank = int(os.environ.get("RANK", "0"))
    sys.exit(cli.main(["encode", "--catalog", str(base / f"c{rank}.csv"), "--config", str(base / "c.yaml"),
                       "--cache-dir", str(base / "cache"), "--text-encoder", "hash-text:16", "--image-encoder",
                       "none", "--quiet"]))
