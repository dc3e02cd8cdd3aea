"""Notebooks 05 and 06 in a real JupyterLab in headless chromium, and their HTML reports offline.

What a user sees, checked on screen: both widgets render and every control changes what they show
(paging, sorting, modes, sliders, text filters, flag/unflag, export, class search); figures have a
usable plot area and their whole legend; the browser console shows no errors; the HTML reports,
opened from disk with every network request refused, still show the widgets' first page and every
figure. Screenshots go to ``test-artifacts/browser/`` (or ``$SEMCAT_ARTIFACTS``). Nothing here names a
class of the tutorial catalog: the classes typed and expected are read from the page or from the
executed notebooks.

Needs Debian's chromium (``apt-get install chromium``; ``.ci/run`` installs it) and the
``playwright`` package (the ``test`` extra); playwright's own browser download is never used.
Skips, saying which is missing, without them. Select with ``pytest -m browser``.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import load_run_notebooks

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NB05, NB06 = "05_label_embedding_map.ipynb", "06_inspect_mispredictions.ipynb"
ARTIFACTS = Path(os.environ.get("SEMCAT_ARTIFACTS") or ROOT / "test-artifacts") / "browser"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# alone, 05 and 06 run with these: text only (image encoding is most of a cold run; thumbnails still
# show, they are read from the image files), one epoch, the fewest seeds a suite accepts
SMALL = {"epochs": 1, "seeds": [0, 1, 2], "image_encoder": None}
MIN_PLOT_PX = 300               # plot area of a figure (JupyterLab's default 360 px figure leaves ~180)


def _missing() -> str | None:
    if not Path(CHROMIUM).is_file():
        return (f"no chromium at {CHROMIUM}: install Debian's package (apt-get install chromium; .ci/run does) "
                "to run the browser test")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing: pip install -e '.[test]' (do not run `playwright install`)"
    return None


pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.notebooks,
              pytest.mark.skipif(_missing() is not None, reason=_missing() or "")]
# a kernel round trip (a widget message, its re-render) on a loaded 2-core machine can take seconds:
# every wait below is for a condition on the page, bounded by these
ACTION_S = 90
RENDER_S = 120
STUCK_S = 45     # cells left unrun while the kernel is idle this long: the Run All went nowhere


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def built(notebook_run, tmp_path_factory):
    """Executed notebooks and HTML reports of 05 and 06, and a lab folder with copies of the two
    notebooks whose parameters point at the same work dir (so the JupyterLab run reuses the
    encodings and the trained suite instead of computing them again).

    In ``make test`` they come from the session's shared notebook run (conftest.NotebookRun: all
    seven ran in tests/test_notebooks.py, collected first), at no extra cost. Run alone, the test
    executes only 05 and 06, with the smallest parameters that still give every widget and figure
    something to show (``SMALL``)."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    t0 = time.perf_counter()
    root = tmp_path_factory.mktemp("browser")
    if all(n in notebook_run.records for n in (NB05, NB06)):
        reports, params, how = notebook_run.out, notebook_run.params, "reused from the session's notebook run"
    else:
        params = {**SMALL, "work_dir": os.environ.get("SEMCAT_TEST_WORK_DIR") or str(root / "work")}
        reports, how = root / "reports", "run with " + json.dumps(SMALL)
        load_run_notebooks().run(reports, params, only=["05", "06"], html=True)
    lab = root / "lab"
    lab.mkdir()
    for name in (NB05, NB06):
        nb = parameterize_notebook(load_notebook_node(str(NOTEBOOKS / name)), params)
        nbformat.write(nb, lab / name)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"[browser] notebooks 05 and 06 and their reports {how}: {time.perf_counter() - t0:.0f} s")
    return {"root": root, "reports": reports, "lab": lab, "params": params}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab_server(built):
    """JupyterLab on 127.0.0.1 (a free port, a random token) serving the lab folder, with its own
    config/settings/runtime folders (no news pop-up, no extension manager queries)."""
    root, port, token = built["root"], _free_port(), secrets.token_hex(16)
    settings = root / "lab-settings"
    news = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    # start the notebook's kernel without the "Select Kernel" dialog: accepting that dialog starts a
    # second kernel and shuts the first, and a Run All sent meanwhile waits forever on the dead one
    # (the setting belongs to the notebook tracker in JupyterLab 4; JupyterLab logs a wrong place)
    tracker = settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"autoStartDefaultKernel": True}))
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(root / "jcfg"), JUPYTER_RUNTIME_DIR=str(root / "jrt"),
               JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(root / "jws"),
               HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    log = open(root / "jupyterlab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={built['lab']}", "--LabApp.news_url=", "--LabApp.extension_manager=readonly"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}: {(root / 'jupyterlab.log').read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if time.time() > deadline:
                    pytest.fail("JupyterLab did not answer within 120 s")
                time.sleep(0.5)
        yield {"base": base, "token": token, "log": root / "jupyterlab.log"}
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# JupyterLab's own messages, not about the notebooks: its debugger sidebar asks the kernel for its
# state while the kernel is still starting (a race seen on a loaded machine)
LAB_NOISE = ("Could not restore the debugger state",)


class Console:
    """Errors a page reports: console.error messages, uncaught exceptions, failed requests."""

    def __init__(self, page):
        self.errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and not m.text.startswith(LAB_NOISE)
                and self.errors.append(f"console: {m.text[:400]}"))
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {str(e)[:400]}"))
        page.on("requestfailed", lambda r: self.errors.append(f"request failed: {r.url[:200]} {r.failure}"))


def _shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


# --------------------------------------------------------------------------- helpers on the page
FIGURES_JS = """root => Array.from(root.querySelectorAll('.js-plotly-plot')).map(gd => {
  const drag = gd.querySelector('.nsewdrag');
  const lg = gd.querySelector('g.legend');
  const entries = lg ? Array.from(lg.querySelectorAll('g.traces')) : [];
  const bg = lg ? lg.querySelector('rect.bg').getBoundingClientRect() : null;
  const sb = lg ? lg.querySelector('rect.scrollbar') : null;
  return {
    title: (gd.layout && gd.layout.title && gd.layout.title.text) || '',
    height: gd.getBoundingClientRect().height,
    plot: drag ? drag.getBoundingClientRect().height : 0,
    expected_legend: (gd.layout.showlegend === false) ? 0 :
        (gd.data || []).filter(t => t.showlegend !== false && t.type !== 'heatmap').length,
    legend: entries.length,
    clipped: bg ? entries.filter(e => { const r = e.getBoundingClientRect();
        return r.bottom > bg.bottom + 1 || r.top < bg.top - 1; }).length : 0,
    scrollbar: sb ? sb.getBoundingClientRect().height : 0,
  };
})"""


def _check_figures(figs: list[dict], where: str) -> None:
    for f in figs:
        what = f"{where}: figure {f['title'][:60]!r}"
        assert f["plot"] >= MIN_PLOT_PX, f"{what} has a {f['plot']:.0f} px plot area ({f['height']:.0f} px in all)"
        if f["expected_legend"] > 1:
            assert f["legend"] == f["expected_legend"], f"{what}: {f['legend']} of {f['expected_legend']} legend entries"
            assert f["clipped"] == 0 and f["scrollbar"] < 1, f"{what}: legend cut off ({f['clipped']} entries hidden)"


DIALOGS: list[str] = []   # texts of the JupyterLab dialogs accepted, for the failure messages


def _kernel_dialog(page) -> bool:
    """Accept a JupyterLab dialog (e.g. "Select Kernel": the default kernel) if one shows."""
    dlg = page.locator(".jp-Dialog")
    if not dlg.count():
        return False
    DIALOGS.append(dlg.first.inner_text()[:300])
    _shot(page, f"lab-dialog-{len(DIALOGS)}")
    dlg.first.locator(".jp-mod-accept").first.click()
    page.wait_for_timeout(500)
    return True


def _run_all(page, base: str, token: str, name: str, timeout_s: int = 600) -> None:
    """Open a notebook, run all its cells with the Run menu, wait until every cell has run."""
    # ?reset: a fresh workspace, so the notebook of the previous test is not reopened beside it
    page.goto(f"{base}/lab/tree/{name}?reset&token={token}")
    page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=120_000)
    deadline = time.time() + 180
    while not page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").count() or _kernel_dialog(page):
        assert time.time() < deadline, f"{name}: the kernel did not start within 180 s"
        page.wait_for_timeout(1000)
    started = "() => Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt'))" \
              ".some(e => /\\[(\\*|\\d+)\\]/.test(e.textContent))"
    for attempt in range(4):   # on a loaded machine the first Run All can come before the kernel connects
        _kernel_dialog(page)
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        page.wait_for_timeout(1000)
        _kernel_dialog(page)
        try:
            page.wait_for_function(started, timeout=30_000)
            break
        except Exception:
            if attempt == 3:
                _shot(page, f"lab-{name[:2]}-did-not-start")
                raise AssertionError(f"{name}: Run All Cells queued nothing (4 tries; dialogs: {DIALOGS})")
    # done when every prompt has a number; "stuck" when a cell still waits ([*]) but the kernel has
    # not been busy and no prompt changed for STUCK_S (its requests went to a kernel that is gone)
    finished = """quiet => { const p = Array.from(document.querySelectorAll(
            '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')).map(e => e.textContent);
        if (p.length > 0 && p.every(t => /\\[\\d+\\]/.test(t))) return 'done';
        const busy = !!document.querySelector('.jp-Notebook-ExecutionIndicator[data-status="busy"]');
        const key = p.join('|'), now = Date.now();
        if (busy || key !== window.__semcatPrompts) { window.__semcatPrompts = key; window.__semcatQuiet = now; }
        return now - window.__semcatQuiet > quiet ? 'stuck' : false; }"""
    for attempt in range(2):
        try:
            how = page.wait_for_function(finished, arg=STUCK_S * 1000, polling=1000, timeout=timeout_s * 1000).json_value()
        except Exception:
            how = "timeout"
        if how == "done":
            break
        prompts = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt").all_inner_texts()
        _shot(page, f"lab-{name[:2]}-did-not-finish-{attempt}")
        if how == "timeout" or attempt == 1:
            raise AssertionError(f"{name}: cells did not all run ({how}; prompts {prompts}; dialogs: {DIALOGS})")
        # stuck (seen once in six runs: the kernel was started twice at once, only the first cell ran):
        # run all again, on the kernel the page has now
        print(f"[browser] {name}: Run All stuck (prompts {prompts}); running all cells again")
        _kernel_dialog(page)
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=60_000)
    text = "\n".join(page.locator(".jp-OutputArea-output").all_inner_texts())
    assert "Traceback" not in text, f"{name} raised in JupyterLab:\n{text[text.find('Traceback') - 300:][:1500]}"


def _settings_accepted(lab_server) -> None:
    """JupyterLab applied the test's settings (it only logs a setting it rejects, then ignores it)."""
    bad = [line for line in lab_server["log"].read_text().splitlines() if "Failed validating settings" in line]
    assert not bad, f"JupyterLab rejected the test's settings: {bad[:2]}"


def _drag(page, handle, fraction: float) -> None:
    """Drag a noUiSlider handle to ``fraction`` of its track."""
    track = handle.locator("xpath=ancestor::div[contains(@class,'noUi-target')]").bounding_box()
    box = handle.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(track["x"] + fraction * track["width"], box["y"] + box["height"] / 2, steps=8)
    page.mouse.up()


def _label(browser_w) -> str:
    return browser_w.locator(".widget-html", has_text=re.compile(r"page \d+ / \d+")).first.inner_text()


def _count(label: str) -> int:
    return int(re.search(r"(\d+) items?", label).group(1))


def _leaf(path: str) -> str:
    return path.rsplit(" > ", 1)[-1].strip()


def _executed(ipynb: Path) -> dict:
    return json.loads(ipynb.read_text())


def _stream_line(ipynb: Path, prefix: str) -> str:
    """The rest of the first printed line starting with ``prefix`` in an executed notebook."""
    for c in _executed(ipynb)["cells"]:
        for o in c.get("outputs", []):
            text = "".join(o.get("text", "")) if o.get("output_type") == "stream" else ""
            for line in text.splitlines():
                if line.startswith(prefix):
                    return line[len(prefix):].strip()
    raise AssertionError(f"{ipynb.name} printed no line starting with {prefix!r}")


def _plotly_outputs(ipynb: Path) -> int:
    """Plotly outputs of an executed notebook: in cells and inside widget (Output) states."""
    nb = _executed(ipynb)
    n = sum("application/vnd.plotly.v1+json" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))
    state = nb["metadata"].get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    n += sum("application/vnd.plotly.v1+json" in o.get("data", {})
             for m in state.values() for o in (m.get("state", {}).get("outputs") or []))
    return n


# the explorer's visible state: its page label and the text of its card grid
STATE_JS = """el => { const l = Array.from(el.querySelectorAll('.widget-html')).map(e => e.innerText)
    .find(t => /page \\d+ \\/ \\d+/.test(t)) || ''; const g = el.querySelector('.widget-gridbox');
    return l + '\\n' + (g ? g.innerText : ''); }"""
# true once the explorer's state differs from ``before``, the kernel is idle (a widget message makes
# it busy) and nothing changed for ``quiet`` ms: one control's effect has fully arrived (the page
# label and the grid sync as separate messages; a slider drag sends several values)
SETTLED_JS = """([el, before, quiet]) => { const s = (%s)(el); const now = Date.now();
    const idle = !!document.querySelector('.jp-Notebook-ExecutionIndicator[data-status="idle"]');
    if (s !== el.__semcatLast || !idle) { el.__semcatLast = s; el.__semcatSince = now; }
    return s !== before && now - el.__semcatSince >= quiet; }""" % STATE_JS


# --------------------------------------------------------------------------- JupyterLab
def test_notebook_05_label_maps_in_jupyterlab(built, lab_server, chromium):
    expected = _plotly_outputs(built["reports"] / NB05)         # what the same notebook drew under papermill
    assert expected >= 2, f"notebook 05 should draw label maps, its executed copy holds {expected} figure(s)"
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    console = Console(page)
    _run_all(page, lab_server["base"], lab_server["token"], NB05)
    try:
        page.wait_for_function("n => document.querySelectorAll('.jp-OutputArea .js-plotly-plot .nsewdrag').length >= n",
                               arg=expected, timeout=RENDER_S * 1000)
    finally:
        _shot(page, "lab-05")
    figs = page.locator(".jp-Notebook").evaluate(FIGURES_JS)
    assert len(figs) == expected, f"JupyterLab drew {len(figs)} of the {expected} label maps of notebook 05"
    _check_figures(figs, "JupyterLab 05")
    assert all(f["legend"] >= 2 for f in figs), [(f["title"], f["legend"]) for f in figs]   # coloured by category
    assert not console.errors, "\n".join(console.errors)
    _settings_accepted(lab_server)
    page.close()


def test_notebook_06_widgets_respond_in_jupyterlab(built, lab_server, chromium, tmp_path):
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    console = Console(page)
    _run_all(page, lab_server["base"], lab_server["token"], NB06)
    grid = page.locator(".widget-gridbox").first
    grid.wait_for(timeout=RENDER_S * 1000)
    bw = page.locator(".jp-OutputArea-output", has=page.locator(".semcat-range")).first   # the browser
    _shot(page, "lab-06-initial")

    def state() -> str:
        return bw.evaluate(STATE_JS)

    def changes(action, what) -> str:
        """Do ``action``; wait until the explorer shows something else and has settled; its label."""
        before = state()
        action()
        try:
            page.wait_for_function(SETTLED_JS, arg=[bw.element_handle(), before, 1000], polling=250,
                                   timeout=ACTION_S * 1000)
        except Exception:
            _shot(page, f"lab-06-failed-{what.replace(' ', '-')}")
            raise AssertionError(f"{what} did not change the browser's output within {ACTION_S} s")
        return _label(bw)

    def shows(text: str, what: str) -> None:
        try:
            page.wait_for_function("([el, t]) => el.innerText.includes(t)", arg=[bw.element_handle(), text],
                                   timeout=ACTION_S * 1000)
        except Exception:
            _shot(page, f"lab-06-failed-{what.replace(' ', '-')}")
            raise AssertionError(f"{what}: {text!r} did not show within {ACTION_S} s")

    # --- paging
    first = _label(bw)
    n_pages = int(re.search(r"page 1 / (\d+)", first).group(1))
    assert n_pages > 1 and bw.locator(".widget-gridbox > .widget-vbox").count() == 8     # page_size=8 cards
    titles0 = bw.locator(".widget-gridbox b.title").all_inner_texts()
    assert "page 2 /" in changes(lambda: bw.get_by_role("button", name="next ▶").click(), "next page")
    assert bw.locator(".widget-gridbox b.title").all_inner_texts() != titles0
    assert "page 1 /" in changes(lambda: bw.get_by_role("button", name="◀ prev").click(), "previous page")
    # --- sorting
    sort = bw.locator(".widget-dropdown select")
    changes(lambda: sort.select_option(label="confidence: least confident first"), "sorting")
    # --- modes
    n_mistakes = _count(_label(bw))
    least = float(re.search(r": (\d\.\d\d)$", bw.locator(".widget-gridbox ol.preds li").first.inner_text().strip()).group(1))
    n_all = _count(changes(lambda: bw.locator(".widget-toggle-button", has_text=re.compile("^all$")).click(), "mode 'all'"))
    assert n_all > n_mistakes
    changes(lambda: bw.locator(".widget-toggle-button", has_text="label issues").click(), "mode 'label issues'")
    changes(lambda: bw.locator(".widget-toggle-button", has_text="only mistakes").click(), "mode 'only mistakes'")
    assert _count(_label(bw)) == n_mistakes
    # --- sliders: the range readouts fit their box; each slider alone narrows the mistakes shown
    readouts = bw.locator(".semcat-range .widget-readout")
    for k in range(readouts.count()):
        sw, cw, text = readouts.nth(k).evaluate("e => [e.scrollWidth, e.clientWidth, e.innerText]")
        assert sw <= cw + 1, f"slider readout {text!r} overflows its box ({sw} > {cw} px)"
    severity, confidence = bw.locator(".semcat-range").nth(0), bw.locator(".semcat-range").nth(1)
    # the least confident mistake (first card of this sort) drops out above its confidence
    target = 0.6 if least < 0.55 else (least + 1) / 2
    n = _count(changes(lambda: _drag(page, confidence.locator(".noUi-handle-lower"), target), "confidence slider"))
    lo = float(confidence.locator(".widget-readout").inner_text().split()[0])
    assert abs(lo - target) < 0.05 and n < n_mistakes, (lo, target, n, n_mistakes)
    assert _count(changes(lambda: _drag(page, confidence.locator(".noUi-handle-lower"), 0.0),
                          "confidence slider back")) == n_mistakes
    n_sev = _count(changes(lambda: _drag(page, severity.locator(".noUi-handle-upper"), 0.0), "LCA distance slider"))
    assert n_sev < n_mistakes                    # LCA distance 0 is no mistake
    assert _count(changes(lambda: _drag(page, severity.locator(".noUi-handle-upper"), 1.0),
                          "LCA distance slider back")) == n_mistakes
    # --- text filters, with classes taken from the first card; then nothing matches: the message
    # spans the whole grid
    true_cls = _leaf(bw.locator(".widget-gridbox .true").first.inner_text().removeprefix("true:").strip())
    pred_cls = _leaf(re.sub(r": \d\.\d\d$", "", bw.locator(".widget-gridbox ol.preds li").first.inner_text()))
    true_box, pred_box = bw.get_by_placeholder("true class contains…"), bw.get_by_placeholder("predicted class contains…")
    n_true = _count(changes(lambda: true_box.fill(true_cls), "true-class filter"))
    assert 0 < n_true < n_mistakes
    assert all(true_cls.lower() in t.lower() for t in bw.locator(".widget-gridbox .true").all_inner_texts())
    changes(lambda: true_box.fill(""), "clearing the true-class filter")
    n_pred = _count(changes(lambda: pred_box.fill(pred_cls), "predicted-class filter"))
    assert 0 < n_pred < n_mistakes
    assert all(pred_cls.lower() in t.lower() for t in bw.locator(".widget-gridbox ol.preds li:first-child").all_inner_texts())
    changes(lambda: pred_box.fill(""), "clearing the predicted-class filter")
    changes(lambda: true_box.fill("zzz no such class"), "filter matching nothing")
    empty = bw.locator(".semcat-empty")
    empty.wait_for(timeout=ACTION_S * 1000)
    ew, gw = empty.bounding_box()["width"], bw.locator(".widget-gridbox").first.bounding_box()["width"]
    _shot(page, "lab-06-empty")
    assert ew > 0.6 * gw, f"the empty-result message is squeezed into one grid column ({ew:.0f} of {gw:.0f} px)"
    assert _count(changes(lambda: true_box.fill(""), "clearing the filter")) == n_mistakes
    # --- flag / unflag / export
    flag = bw.locator(".widget-gridbox .widget-toggle-button").first
    flag.click()
    shows("· 1 flagged", "flag")
    flag.click()
    shows("· 0 flagged", "unflag")
    flag.click()
    shows("· 1 flagged", "flag again")
    csv = tmp_path / "flagged_from_browser.csv"
    bw.locator(".widget-text", has_text="CSV path").locator("input").fill(str(csv))
    bw.get_by_role("button", name="export flagged").click()
    shows("wrote 1 item to", "export")
    assert csv.is_file() and len(csv.read_text().strip().splitlines()) == 2        # header + the flagged item
    _shot(page, "lab-06-browser")

    # --- ConfusionNeighborhood: the class the notebook chose, named in the box and the header; the
    # heatmap usable; class search (an ambiguous text lists matches; a neighbour is picked)
    selected = re.search(r"selected: (.+)", page.locator(".jp-OutputArea-output", has_text="selected: ").first
                         .inner_text()).group(1).strip()
    cn = page.locator(".jp-OutputArea-output", has=page.get_by_placeholder("type to search a class…")).first
    picker = cn.get_by_placeholder("type to search a class…")
    assert picker.input_value() == selected
    assert cn.locator("h4").first.inner_text().strip() == selected
    cn.locator(".js-plotly-plot .nsewdrag").first.wait_for(timeout=RENDER_S * 1000)
    cn.scroll_into_view_if_needed()
    assert _leaf(selected) in cn.locator(".js-plotly-plot .gtitle").first.text_content()
    _check_figures(cn.evaluate(FIGURES_JS), "JupyterLab 06 heatmap")
    picker.fill(selected.split(" > ")[0])          # its top-level category: many classes match
    cn.locator(".widget-html", has_text="classes match").wait_for(timeout=ACTION_S * 1000)
    cn.locator(".widget-select select").first.wait_for(timeout=ACTION_S * 1000)
    neighbour = cn.locator("table.semcat-neighbours tbody tr").first.locator("td").nth(1).inner_text().strip()
    assert neighbour and neighbour != selected
    picker.fill(_leaf(neighbour))                  # a unique name selects at once; else choose it in the list
    page.wait_for_function(
        """([el, t]) => { const h = el.querySelector('h4'); if (h && h.innerText.trim() === t) return true;
             const s = el.querySelector('.widget-select select');
             return !!s && Array.from(s.options).some(o => o.text === t); }""",
        arg=[cn.element_handle(), neighbour], timeout=ACTION_S * 1000)
    if cn.locator("h4").first.inner_text().strip() != neighbour:
        cn.locator(".widget-select select").first.select_option(label=neighbour)
    try:
        page.wait_for_function(
            """([el, t, leaf]) => { const h = el.querySelector('h4'); const g = el.querySelector('.js-plotly-plot .gtitle');
                 return !!h && h.innerText.trim() === t && !!g && g.textContent.includes(leaf); }""",
            arg=[cn.element_handle(), neighbour, _leaf(neighbour)], timeout=ACTION_S * 1000)
    finally:
        _shot(page, "lab-06-neighbourhood")
    assert picker.input_value() == neighbour
    _check_figures(cn.evaluate(FIGURES_JS), "JupyterLab 06 heatmap after a pick")
    assert not console.errors, "\n".join(console.errors)
    page.close()


# --------------------------------------------------------------------------- reports, offline
def _offline_page(chromium):
    ctx = chromium.new_context(viewport={"width": 1300, "height": 1000})
    refused: list[str] = []

    def route(r):
        if r.request.url.startswith(("file://", "data:", "blob:")):
            r.continue_()
        else:
            refused.append(r.request.url)
            r.abort()

    ctx.route("**/*", route)
    return ctx, ctx.new_page(), refused


@pytest.mark.parametrize("name", [NB05, NB06], ids=["05", "06"])
def test_report_works_offline(built, chromium, name):
    html = built["reports"] / name.replace(".ipynb", ".html")
    assert (built["reports"] / "_static" / "plotly.min.js").is_file()
    if name == NB06 and not (built["reports"] / "_static" / "html-manager" / "embed.js").is_file() \
            and shutil.which("npm") is None:
        pytest.skip("no npm on this machine: the reports load the widget manager from a CDN, so the widgets of an "
                    "offline report cannot be checked here (apt-get install npm; .ci/run does)")
    assert name == NB05 or (built["reports"] / "_static" / "html-manager" / "embed.js").is_file(), \
        "the reports were built without a local widget manager (npm missing or `npm pack` failed: " \
        "see scripts/run_notebooks.py); .ci/run installs npm"
    ctx, page, refused = _offline_page(chromium)
    console = Console(page)
    page.goto(html.as_uri())
    expected = _plotly_outputs(built["reports"] / name)
    assert expected >= (2 if name == NB05 else 1)
    try:
        page.wait_for_function("n => document.querySelectorAll('.js-plotly-plot .nsewdrag').length >= n",
                               arg=expected, timeout=RENDER_S * 1000)
    finally:
        _shot(page, f"report-offline-{name[:2]}")
    if name == NB06:
        grid = page.locator(".widget-gridbox").first
        grid.wait_for(timeout=RENDER_S * 1000)
        assert page.get_by_text(re.compile(r"page 1 / \d+ · \d+ items")).count() == 1
        assert grid.locator("b.title").count() == 8                     # the first page's cards
        assert page.locator(".widget-image").count() > 8               # thumbnails from the saved state
        selected = _stream_line(built["reports"] / name, "selected: ")   # the class the notebook chose
        assert page.get_by_placeholder("type to search a class…").input_value() == selected
        assert page.locator("h4", has_text=selected).count() == 1
    figs = page.evaluate(f"() => ({FIGURES_JS})(document)")
    assert len(figs) == expected
    _check_figures(figs, f"offline report {html.name}")
    assert not refused, f"the report asked the network for {refused[:5]}"
    assert not console.errors, "\n".join(console.errors)
    ctx.close()
