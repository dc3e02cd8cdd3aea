"""Execute the tutorial notebooks in order (papermill), writing executed .ipynb and HTML reports.

Used by ``make demo`` (full parameters) and by the test suite (reduced parameters)::

    python scripts/run_notebooks.py --out reports
    python scripts/run_notebooks.py --out /tmp/r -p epochs=3 -p seeds=1 --only 01 02

Each notebook's ``parameters`` cell can be overridden with ``-p name=value``: ``None``, ``True`` and
``False`` are those Python values (papermill's own convention), anything else is parsed as JSON when
possible (``null``, ``3``, ``{"id": "sku"}``), else kept as a string. Notebooks share one work directory (``-p work_dir=...``,
default ``<out>/work``) so later ones reuse what earlier ones computed.

The HTML reports work offline, widgets included: the executed notebooks keep the widget state
(nbclient's ``store_widget_state``), and each report loads plotly.js and the Jupyter widget
manager (``@jupyter-widgets/html-manager``'s ``embed.js``) from ``<out>/_static/`` instead of a CDN.
plotly.js comes from the plotly Python package; the widget manager from the npm registry, fetched
once with ``npm pack`` into a cache (``$SEMCAT_JS_CACHE``, default ``~/.cache/semcat_kit/js``).
Without npm the reports fall back to the CDN loader (widgets then need a network) and say so.

The executed notebooks open cleanly in JupyterLab (:func:`finish_notebook`): they are signed for this
user (as ``jupyter trust`` does), so JupyterLab draws their widgets from the saved state instead of
showing each one as text ("VBox(children=...)"), and no output points at a widget model the saved
state does not hold (shown as "Error displaying widget: model not found").
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
from semcat_kit._core.io import atomic_dir, atomic_write_text  # noqa: E402

# The widget manager of the reports. Fetched from npm when a report is built rather than vendored:
# the bundle is 1.9 MB of minified third-party code (BSD-3, plus its fonts), pinned here by exact
# version so every build embeds the same file; the cache makes it a one-time download. 1.0.x is the
# html-manager of ipywidgets 8. embed.js (not embed-amd.js) renders the built-in controls without
# require.js, so a report needs no AMD loader at all.
HTML_MANAGER = "@jupyter-widgets/html-manager@1.0.15"
STATIC = "_static"

# nbconvert's lab template, with local scripts instead of CDN links: plotly.js (drawn by every
# figure, also the fallback HTML of figures inside widgets) and the widget manager; no require.js
# (nothing left needs it) and no MathJax (the notebooks have no formulas, and a missing MathJax
# script is an error on an offline page).
REPORT_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}
<script src="{{ resources.semcat_static }}/plotly.min.js"></script>
{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{% block jupyter_widgets %}
{%- if "widgets" in nb.metadata and resources.semcat_widgets_js -%}
<script src="{{ resources.semcat_widgets_js }}"></script>
{%- elif "widgets" in nb.metadata -%}
{{ super() }}
{%- endif -%}
{% endblock jupyter_widgets %}
"""


#: papermill's own spellings of Python constants on its command line (``papermill -p x None``)
PAPERMILL_CONSTANTS = {"None": None, "True": True, "False": False}


def _parse_param(s: str) -> tuple[str, object]:
    """``name=value`` of ``-p``: papermill's ``None`` / ``True`` / ``False`` are those Python values,
    anything else is parsed as JSON (``null``, ``3``, ``{"id": "sku"}``) when it can be, else kept as
    a string."""
    if "=" not in s:
        raise SystemExit(f"-p expects name=value, got {s!r}")
    k, v = s.split("=", 1)
    k = k.strip()
    if v.strip() in PAPERMILL_CONSTANTS:
        return k, PAPERMILL_CONSTANTS[v.strip()]
    try:
        return k, json.loads(v)
    except json.JSONDecodeError:
        return k, v


def js_cache() -> Path:
    """Folder caching the npm packages the reports embed."""
    return Path(os.environ.get("SEMCAT_JS_CACHE") or Path.home() / ".cache" / "semcat_kit" / "js")


def widget_manager_dist(spec: str = HTML_MANAGER) -> Path | None:
    """``dist/`` of the html-manager npm package (``embed.js`` and its fonts), fetched once with
    ``npm pack`` into :func:`js_cache`; None (with a message) when npm is missing or fails."""
    import shutil
    import subprocess
    import tarfile
    import tempfile

    target = js_cache() / spec.replace("/", "+")
    if (target / "embed.js").is_file():
        return target
    npm = shutil.which("npm")
    if npm is None:
        print(f"[run_notebooks] npm not found: the HTML reports load the widget manager from a CDN, so widgets "
              f"in them need a network (install Node.js/npm to embed {spec})", flush=True)
        return None
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([npm, "pack", spec, "--pack-destination", tmp, "--silent"], capture_output=True,
                           text=True, timeout=300)
        tgz = list(Path(tmp).glob("*.tgz"))
        if r.returncode or not tgz:
            print(f"[run_notebooks] `npm pack {spec}` failed ({r.stderr.strip()[-300:]}); the HTML reports load "
                  "the widget manager from a CDN", flush=True)
            return None
        with tarfile.open(tgz[0]) as tf, atomic_dir(target) as out:
            for m in tf.getmembers():
                name = m.name.removeprefix("package/")
                if m.isfile() and (name.startswith("dist/") and not name.endswith(".map") and "amd" not in name
                                  or name.startswith("LICENSE")):
                    dest = out / Path(name).name
                    dest.write_bytes(tf.extractfile(m).read())
    return target


def write_static(out: Path) -> dict:
    """Copy plotly.js and the widget manager into ``out/_static``; returns the template resources."""
    import shutil

    from plotly.offline import get_plotlyjs

    static = out / STATIC
    static.mkdir(parents=True, exist_ok=True)
    js = get_plotlyjs()
    if not (static / "plotly.min.js").is_file() or (static / "plotly.min.js").stat().st_size != len(js.encode()):
        atomic_write_text(static / "plotly.min.js", js)
    res = {"semcat_static": STATIC, "semcat_widgets_js": ""}
    dist = widget_manager_dist()
    if dist is not None:
        dest = static / "html-manager"
        if not (dest / "embed.js").is_file() or (dest / "embed.js").stat().st_size != (dist / "embed.js").stat().st_size:
            with atomic_dir(dest) as tmp:
                for f in dist.iterdir():
                    shutil.copyfile(f, tmp / f.name)
        res["semcat_widgets_js"] = f"{STATIC}/html-manager/embed.js"
    return res


def _figure_html(nb) -> None:
    """Give every plotly output an HTML rendering that draws with the page's plotly.js (the notebooks
    run with plotly's JSON renderer only: JupyterLab draws that, nbconvert does not)."""
    import plotly.io as pio

    def fix(outputs):
        for o in outputs:
            data = o.get("data", {})
            spec = data.get("application/vnd.plotly.v1+json")
            if spec is not None and "text/html" not in data:
                data["text/html"] = pio.to_html(spec, include_plotlyjs=False, include_mathjax=False,
                                                full_html=False, validate=False,
                                                default_height=spec.get("layout", {}).get("height") or 525)

    for cell in nb.cells:
        fix(cell.get("outputs", []))
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    for model in state.get("state", {}).values():   # figures inside Output widgets
        fix(model.get("state", {}).get("outputs", []) or [])


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def finish_notebook(ipynb: Path) -> int:
    """Make an executed notebook open cleanly in JupyterLab; returns how many outputs were dropped.

    An output showing a widget whose model is not in the notebook's saved widget state would read
    "Error displaying widget: model not found": it is dropped. The notebook is then signed with
    this user's notebook secret (``nbformat.sign``, what ``jupyter trust`` does): an unsigned
    notebook is untrusted, and JupyterLab shows each widget of an untrusted notebook as its text.
    """
    import nbformat
    from nbformat.sign import NotebookNotary

    nb = nbformat.read(ipynb, as_version=4)
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    dropped = 0
    for cell in nb.cells:
        outs = cell.get("outputs")
        if not outs:
            continue
        keep = [o for o in outs if WIDGET_VIEW not in o.get("data", {})
                or o["data"][WIDGET_VIEW].get("model_id") in state]
        dropped += len(outs) - len(keep)
        cell.outputs = keep
    if dropped:
        atomic_write_text(ipynb, nbformat.writes(nb))
    NotebookNotary().sign(nb)
    return dropped


def to_html(ipynb: Path, resources: dict) -> Path:
    """Write the HTML report of an executed notebook beside it (see the module docstring)."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    nb = nbformat.read(ipynb, as_version=4)
    _figure_html(nb)
    exporter = HTMLExporter(extra_loaders=[DictLoader({"semcat_report.html.j2": REPORT_TEMPLATE})],
                            template_file="semcat_report.html.j2")
    body, _ = exporter.from_notebook_node(nb, resources={**resources})
    target = ipynb.with_suffix(".html")
    atomic_write_text(target, body)
    return target


def run(out: Path, params: dict, only: list[str] | None = None, html: bool = True) -> list[dict]:
    """Execute the notebooks; returns one record per notebook (name, seconds). Raises on the first failure."""
    import papermill as pm

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # figures as plotly JSON only (drawn by JupyterLab); the HTML reports get their HTML from to_html,
    # which draws them with the one local plotly.js of the report folder
    os.environ.setdefault("PLOTLY_RENDERER", "plotly_mimetype")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    params = {"work_dir": str(out / "work"), **params}
    books = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if only:
        books = [b for b in books if any(b.name.startswith(o) for o in only)]
    if not books:
        raise SystemExit(f"no notebooks found in {NOTEBOOKS}")
    start, load_start = time.perf_counter(), os.getloadavg()
    resources = write_static(out) if html else {}
    records = []
    for nb in books:
        t0 = time.perf_counter()
        target = out / nb.name
        print(f"[run_notebooks] {nb.name} ...", flush=True)
        pm.execute_notebook(str(nb), str(target), parameters=params, kernel_name="python3",
                            cwd=str(NOTEBOOKS), progress_bar=False, log_output=False)
        finish_notebook(target)
        if html:
            to_html(target, resources)
        dt = time.perf_counter() - t0
        records.append({"notebook": nb.name, "seconds": round(dt, 1)})
        print(f"[run_notebooks] {nb.name} done in {dt:.1f} s", flush=True)
        # after every notebook, so a long run that is stopped keeps the times of what it finished
        atomic_write_text(out / "timings.json", json.dumps(
            {"params": {k: v for k, v in params.items() if k != "work_dir"}, "load_avg": os.getloadavg(),
             "load_avg_start": load_start, "wall_seconds": round(time.perf_counter() - start, 1),
             "cpu_count": os.cpu_count(), "notebooks": records}, indent=1, default=str))
    total = sum(r["seconds"] for r in records)
    print(f"[run_notebooks] all {len(records)} notebooks in {total:.1f} s -> {out}", flush=True)
    return records


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "reports"), help="folder for executed notebooks and HTML")
    ap.add_argument("-p", "--param", action="append", default=[], help="override a parameter: name=value (None/True/False as in papermill, else JSON, "
                    "else a string)")
    ap.add_argument("--only", nargs="*", help="run only notebooks whose names start with these prefixes")
    ap.add_argument("--no-html", action="store_true", help="skip the HTML export")
    a = ap.parse_args(argv)
    run(Path(a.out), dict(_parse_param(p) for p in a.param), a.only, html=not a.no_html)


if __name__ == "__main__":
    sys.exit(main())
