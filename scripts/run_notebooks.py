"""Execute the tutorial notebooks in order (papermill), writing executed .ipynb and HTML reports.

Used by ``make demo`` (full parameters) and by the test suite (reduced parameters)::

    python scripts/run_notebooks.py --out reports
    python scripts/run_notebooks.py --out /tmp/r -p epochs=3 -p seeds=1 --only 01 02

Each notebook's ``parameters`` cell can be overridden with ``-p name=value`` (value parsed as JSON
when possible, else kept as a string). Notebooks share one work directory (``-p work_dir=...``,
default ``<out>/work``) so later ones reuse what earlier ones computed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def _parse_param(s: str) -> tuple[str, object]:
    if "=" not in s:
        raise SystemExit(f"-p expects name=value, got {s!r}")
    k, v = s.split("=", 1)
    try:
        return k, json.loads(v)
    except json.JSONDecodeError:
        return k, v


def run(out: Path, params: dict, only: list[str] | None = None, html: bool = True) -> list[dict]:
    """Execute the notebooks; returns one record per notebook (name, seconds). Raises on the first failure."""
    import nbformat
    import papermill as pm
    from nbconvert import HTMLExporter

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # figures as plotly JSON (live in Jupyter) plus HTML with plotly.js embedded, so the HTML
    # reports show them offline
    os.environ.setdefault("PLOTLY_RENDERER", "plotly_mimetype+notebook")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    params = {"work_dir": str(out / "work"), **params}
    books = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if only:
        books = [b for b in books if any(b.name.startswith(o) for o in only)]
    if not books:
        raise SystemExit(f"no notebooks found in {NOTEBOOKS}")
    records = []
    for nb in books:
        t0 = time.perf_counter()
        target = out / nb.name
        print(f"[run_notebooks] {nb.name} ...", flush=True)
        pm.execute_notebook(str(nb), str(target), parameters=params, kernel_name="python3",
                            cwd=str(NOTEBOOKS), progress_bar=False, log_output=False)
        if html:
            body, _ = HTMLExporter().from_notebook_node(nbformat.read(target, as_version=4))
            target.with_suffix(".html").write_text(body, encoding="utf-8")
        dt = time.perf_counter() - t0
        records.append({"notebook": nb.name, "seconds": round(dt, 1)})
        print(f"[run_notebooks] {nb.name} done in {dt:.1f} s", flush=True)
    total = sum(r["seconds"] for r in records)
    print(f"[run_notebooks] all {len(records)} notebooks in {total:.1f} s -> {out}", flush=True)
    (out / "timings.json").write_text(json.dumps(records, indent=1))
    return records


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "reports"), help="folder for executed notebooks and HTML")
    ap.add_argument("-p", "--param", action="append", default=[], help="override a parameter: name=value")
    ap.add_argument("--only", nargs="*", help="run only notebooks whose names start with these prefixes")
    ap.add_argument("--no-html", action="store_true", help="skip the HTML export")
    a = ap.parse_args(argv)
    run(Path(a.out), dict(_parse_param(p) for p in a.param), a.only, html=not a.no_html)


if __name__ == "__main__":
    sys.exit(main())
