"""Run by tests/test_distributed.py under torchrun (2 ranks): what ``encode_distributed`` refuses.

    python _dist_refuse_case.py BASE_DIR

1. Rank 1 holds the catalog in another order (same length): every rank must raise (otherwise
   rows get another product's vector).
2. Each rank has its own, unshared cache folder (``--nnodes`` with a local ``--cache-dir``):
   every rank must raise (otherwise each rank silently trains on another part of the data).

Writes ``BASE_DIR/r<rank>.json``: the message of each case (or "no error").
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

import semcat_kit as sk
from semcat_kit import distributed
from semcat_kit import encode_distributed


def main() -> None:
    base = Path(sys.argv[1])
    distributed.init_from_env(backend="gloo")
    rank = distributed.rank()
    enc = sk.encoders.load("hash-text:8")
    cat = pd.DataFrame({"item_id": [f"p{i}" for i in range(6)], "title": [f"title {i}" for i in range(6)]})
    out = {}
    for case in ("order", "unshared"):
        c = cat.iloc[::-1].reset_index(drop=True) if case == "order" and rank == 1 else cat
        cache = base / (f"node{rank}" if case == "unshared" else "shared")
        try:
            encode_distributed(c, enc, cache_dir=cache, progress=False)
            out[case] = "no error"
        except RuntimeError as e:
            out[case] = str(e)
    (base / f"r{rank}.json").write_text(json.dumps(out))
    distributed.barrier()


if __name__ == "__main__":
    main()
