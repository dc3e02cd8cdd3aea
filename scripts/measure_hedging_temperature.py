"""Does calibrating hedging over temperatures pay? The head's own probabilities against the grid, measured.

For every configuration of a trained suite (``Workspace.suite``; the work dir of ``make results`` or of
a notebook run), the first seed's head is reloaded, its probabilities on the validation split are
computed, and the hedging thresholds are calibrated twice with RCPS (delta 0.1): on the head's own
probabilities (``temperatures=(1.0,)``) and over the default grid (``DEFAULT_TEMPERATURES``, delta/K
each, the temperature chosen per target on the same products). Both are read on the test split.
Prints a markdown table: test leaf coverage and realised precision at each target, and the
temperature chosen.

    python scripts/measure_hedging_temperature.py --work-dir reports/work [--catalog tutorial] \\
        [--catalog-options JSON] [--image-encoder none] [--record docs/hedging_temperature.md]

``--record`` puts the table under a section named after the catalog in that file (others kept).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGETS = (0.95, 0.98, 0.99)


def measure(work_dir: Path, catalog: str, options: dict, text_encoder, image_encoder) -> pd.DataFrame:
    import semcat_kit as sk
    from semcat_kit.judge import hedging as H
    from semcat_kit.orchestrate.workspace import SuiteResult

    ws = sk.Workspace(work_dir, catalog=catalog, catalog_options=options, text_encoder=text_encoder,
                      image_encoder=image_encoder)
    folders = sorted((Path(work_dir) / "suites").glob("*/spec.json"), key=lambda p: p.stat().st_mtime)
    if not folders:
        raise SystemExit(f"no trained suite under {work_dir}/suites: run the notebooks or make results first")
    res = SuiteResult.load(folders[-1].parent)          # the latest suite trained in work_dir
    (va, yva), (te, yte) = ws.part("val"), ws.part("test")
    tax = ws.taxonomy()
    rows = []
    for name in res.names:
        head = res.head(name)
        pv, pt = head.predict_proba(va), res.test_probs(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", H.CalibrationWarning)
            own = H.calibrate_hedging(pv, yva, tax, TARGETS, temperatures=(1.0,))
            grid = H.calibrate_hedging(pv, yva, tax, TARGETS)
        row = {"config": name}
        for q in TARGETS:
            a, b = own.predict(pt, tax, q), grid.predict(pt, tax, q)
            k = f"{100 * q:g}"
            row[f"leaves@{k} own"] = a.is_leaf.mean()
            row[f"leaves@{k} grid"] = b.is_leaf.mean()
            row[f"T@{k}"] = grid.temperature(q)
            row[f"precision@{k} grid"] = b.correct(yte).mean()
        rows.append(row)
    df = pd.DataFrame(rows).set_index("config")
    df.attrs["n"] = (len(yva), len(yte))
    return df


def markdown(df: pd.DataFrame, name: str) -> str:
    cols = [c for q in TARGETS for c in (f"leaves@{100 * q:g} own", f"leaves@{100 * q:g} grid", f"T@{100 * q:g}",
                                         f"precision@{100 * q:g} grid")]
    head = "| config | " + " | ".join(cols) + " |\n|---|" + "---:|" * len(cols) + "\n"
    body = "".join("| " + str(n) + " | " + " | ".join(f"{r[c]:g}" if c.startswith("T@") else f"{r[c]:.3f}"
                                                       for c in cols) + " |\n" for n, r in df.iterrows())
    n_val, n_test = df.attrs["n"]
    one, five, _ = os.getloadavg()
    return (f"Catalog `{name}`: {n_val:,} validation products calibrate, {n_test:,} test products read "
            f"(`own`: the head's probabilities at delta 0.1; `grid`: {len(__import__('semcat_kit').judge.hedging.DEFAULT_TEMPERATURES)} "
            f"temperatures at delta/K, `T`: the one chosen; `precision`: realised on test with the grid). "
            f"Written by `scripts/measure_hedging_temperature.py` on {time.strftime('%Y-%m-%d')} "
            f"(load average {one:.1f}).\n\n{head}{body}")


def record(path: Path, name: str, text: str) -> None:
    from semcat_kit._core.io import atomic_write_text

    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    title = "# Hedging over temperatures, measured\n"
    parts = {}
    for chunk in old.split("\n## ")[1:]:
        key, _, body = chunk.partition("\n")
        parts[key.strip()] = body.strip() + "\n"
    parts[name] = text
    atomic_write_text(path, title + "".join(f"\n## {k}\n\n{v}" for k, v in parts.items()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work-dir", required=True)
    ap.add_argument("--catalog", default="tutorial")
    ap.add_argument("--name", help="section name (default: the catalog's)")
    ap.add_argument("--catalog-options", default="{}")
    ap.add_argument("--text-encoder", default="minilm")
    ap.add_argument("--image-encoder", default="efficientnet-lite0", help="'none' for text only")
    ap.add_argument("--record", help="markdown file to put the table in")
    a = ap.parse_args(argv)
    none = lambda v: None if str(v).lower() in ("none", "null", "") else v  # noqa: E731
    df = measure(Path(a.work_dir), a.catalog, json.loads(a.catalog_options), none(a.text_encoder),
                 none(a.image_encoder))
    text = markdown(df, a.name or Path(a.catalog).name)
    print(text)
    if a.record:
        record(Path(a.record), a.name or Path(a.catalog).name, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
