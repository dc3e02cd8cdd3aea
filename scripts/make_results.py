"""Write the README's results tables from a run, never by hand: ``make results``.

Trains the built-in comparison suite (``sk.default_suite``) on a catalog through the same
:class:`~semcat_kit.Workspace` the notebooks use, and writes one section per catalog into
``docs/results.md`` (the table, the catalog's size, the settings and the measured time). The
section named ``tutorial`` is also copied into README.md between the ``results:start`` /
``results:end`` markers (any other section ``name`` between ``results:<name>:start`` / ``:end``
markers, where the README has them), so the README shows exactly what the command wrote::

    python scripts/make_results.py                                   # the bundled tutorial (make results)
    python scripts/make_results.py --name myntra-full --catalog ../shared/data/myntra-fashion
    python scripts/make_results.py --name toys --catalog products.csv --image-encoder none \\
        --catalog-options '{"id": "uniq_id", "title": "product_name", "path_col": "amazon_category_and_sub_category"}'

``tests/test_results.py`` fails when the committed tables and this script disagree in shape
(columns, rows) or when the README's copy differs from docs/results.md.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results.md"
README = ROOT / "README.md"
#: The columns of every results table, in order (after ``config``).
METRICS = ["top1", "top5", "macro_f1", "mistake_severity", "hdist@5", "hdist@20", "nbrs@5"]
#: The columns of the hedged-predictions table that follows it (docs/hedging.md).
HEDGE_METRICS = ["leaf_coverage@95", "leaf_coverage@98", "leaf_coverage@99", "specificity@98", "hedged_precision@95",
                 "hedged_precision@98", "hedged_precision@99"]
START, END = "<!-- results:start -->", "<!-- results:end -->"
HEADER = ("# Results\n\nWritten by `scripts/make_results.py` (`make results`); do not edit by hand. "
          "Each section: the built-in comparison suite (`sk.default_suite`) trained through the notebooks' "
          "Workspace, mean ± std over seeds on the test split; the `+ CRM` row re-decodes the best "
          "configuration's runs. The last rows are the peers a user would pick instead (`sk.baseline_suite`: "
          "LogisticRegression with C chosen on the validation split, the same + CRM, hiclass's logistic "
          "regression per parent node), fitted on the same embeddings and split.\n")


#: Peers that also get a ``+ CRM`` row (``Workspace.baselines``' default).
PEER_CRM = ("LogisticRegression",)


def peer_rows() -> list[str]:
    """The peers' rows of every table: ``sk.baseline_suite()``, each ``PEER_CRM`` one followed by its CRM row."""
    import semcat_kit as sk

    return [r for n in sk.baseline_suite() for r in ([n, f"{n} + CRM"] if n in PEER_CRM else [n])]


def expected_rows(k: int = 20) -> list[str]:
    """Row names a results table has: the suite's configurations, one ``+ CRM`` row, then the peers."""
    import semcat_kit as sk

    return list(sk.default_suite(k=k)) + ["+ CRM"] + peer_rows()


def table_shape(md: str) -> tuple[list[str], list[str]]:
    """``(columns, row names)`` of the first markdown table in ``md``."""
    lines = []
    for line in md.splitlines():          # the first run of table lines only (a section holds two tables)
        if line.startswith("|"):
            lines.append(line)
        elif lines:
            break
    cols = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [l.strip("|").split("|")[0].strip() for l in lines[2:]]
    return cols, rows


def sections(text: str) -> dict[str, str]:
    """``name -> body`` of the ``## name`` sections of docs/results.md."""
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1].strip() for i in range(1, len(parts), 2)}


def measure(name: str, catalog: str, catalog_options: dict, text_encoder, image_encoder, epochs: int,
            seeds: list[int], work_dir: Path, device: str = "auto", reuse: bool = False,
            notebook_timings: Path | None = None) -> str:
    """Train the suite and the peers and return the markdown body of one results section.

    ``reuse``: take the suite and peers already trained in ``work_dir`` with the same data, settings
    and seeds (e.g. by ``scripts/run_notebooks.py``, whose ``timings.json`` is then quoted).
    """
    import semcat_kit as sk

    t0 = time.perf_counter()
    ws = sk.Workspace(work_dir, catalog=catalog, catalog_options=catalog_options, text_encoder=text_encoder,
                      image_encoder=image_encoder, device=device)
    s = ws.validate()
    ws.embeddings()
    t_enc = time.perf_counter() - t0
    stats = ws.embeddings().meta.get("stats", {})
    n_enc = sum(v for k, v in stats.items() if k.endswith("_encoded") and isinstance(v, int))
    stored = lambda: {p for sub in ("suites", "baselines") for p in (work_dir / sub).glob("*")}  # noqa: E731
    before = stored()
    res = ws.suite(seeds=seeds, epochs=epochs, retrain=not reuse)
    t_suite = time.perf_counter() - t0 - t_enc
    base = ws.baselines(seeds=seeds, crm_for=PEER_CRM, retrain=not reuse)
    total = time.perf_counter() - t0
    sp = ws.split()
    import pandas as pd

    crm = [n for n in res.summary.index if str(n).endswith("+ CRM")]
    both = pd.concat([res.summary.rename(index={n: "+ CRM" for n in crm}), base])
    table = sk.format_table(both, metrics=METRICS)
    t_boot = time.perf_counter()
    left_out: list[str] = []
    right = ranked_first(res, both, ws, seeds[0], left_out, peers=base)   # for the Reading's paired bootstrap
    t_boot = time.perf_counter() - t_boot
    refit = "LogisticRegression" not in base.attrs.get("test_top1", {})
    if left_out:
        print("make_results: paired bootstrap: " + "; ".join(left_out), file=sys.stderr)
    cfg0 = json.loads((res.folder / "spec.json").read_text())["configs"][res.names[0]]
    new = stored() - before
    if reuse and new and notebook_timings:
        # the notebooks trained the suite (and the peers they show); the rest was fitted now
        fitted = ", ".join(sorted({p.parent.name for p in new}))
        timing = (f"Measured time: the notebook run trained what it shows ({_notebook_times(notebook_timings)}); "
                  f"this command fitted what it had not ({fitted}: the peer rows the notebooks do not show) in "
                  f"{_fmt(total)} on this machine ({_cpu()}).")
    elif reuse and not new:
        timing = (f"Measured time: reused the suite and baselines trained in `{shown_path(work_dir)}` "
                  + (f"by the notebook run ({_notebook_times(notebook_timings)})" if notebook_timings else
                     "by an earlier run") + f"; this command took {_fmt(total)} on this machine ({_cpu()}).")
    else:                 # trained now (or not everything was stored before): timed as such
        timing = (f"Measured time: {_fmt(total)} in all ({_fmt(t_enc)} reading and encoding the catalog, "
                  f"{n_enc:,} inputs encoded, the rest read from the cache; {_fmt(t_suite)} training the suite; "
                  f"{_fmt(total - t_enc - t_suite)} fitting the peers), on this machine ({_cpu()}).")
    if refit:
        timing += (f" Not counted above: {_fmt(t_boot)} for the Reading's paired bootstrap (LogisticRegression's "
                   f"per-product predictions were not stored with the peers: it is fitted again, deterministically).")
    encoders = " + ".join(e for e in (text_encoder, image_encoder) if e)
    hedged = sk.format_table(both, metrics=HEDGE_METRICS)
    return (f"Catalog `{shown_path(catalog)}`: {s['products']:,} products ({s['unlabelled']:,} without a category), "
            f"{s['classes_with_products']:,} classes with products; split {len(sp.train):,} train / "
            f"{len(sp.val):,} val / {len(sp.test):,} test. Encoders: {encoders}. {_budget(cfg0, len(sp.train))}, "
            f"seeds {seeds}. `+ CRM` = {crm[0][:-6] if crm else '-'} re-decoded.\n\n"
            f"{table}\n\n{reading(both, right)}\n\n"
            f"Hedged predictions (the most specific category at a precision guaranteed with probability >= 0.9, "
            f"thresholds calibrated on the val split; `leaf_coverage@p`: share of test products given a class, "
            f"`hedged_precision@p`: realised; see docs/hedging.md):\n\n{hedged}\n\n{hedge_reading(both, confidence(res))}\n\n{timing}")


def _budget(cfg: dict, n_train: int) -> str:
    """How long each head trained, from its stored configuration."""
    import semcat_kit as sk

    c = sk.TrainConfig.from_dict(cfg)
    if c.solver != "minibatch" and c.curriculum == "constant":
        head = "linear heads" if c.hidden == 0 and c.proj_dim == 0 else f"MLP heads (hidden {c.hidden})"
        grid = ", ".join(f"{x:g}" for x in c.Cs)
        return (f"{head.capitalize()} fitted full-batch to convergence (L-BFGS, tol {c.tol:g}; every configuration "
                f"of one shape stacked), C chosen on the val split from [{grid}]" if c.C == "val" else
                f"{head.capitalize()} fitted full-batch to convergence (L-BFGS, tol {c.tol:g}), C = {c.C:g}")
    epochs = c.epochs_for(n_train)
    stop = (f"early stopping on {cfg['early_stopping']} (patience {cfg['patience']})" if cfg.get("early_stopping")
            else "no early stopping")
    return f"{epochs} epochs of batch {cfg['batch_size']}" + (
        f" (at least {cfg['min_steps']} steps)" if cfg.get("min_steps") else "") + f", {stop}"


#: "at that top-1" (issue 28's hdist@5 goal): a soft-label head counts when its top-1 is at least
#: one-hot's minus this many points.
TOP1_SLACK_PT = 0.5
#: Issue 28's goal for the soft-label heads: hdist@5 at least this many % below one-hot's.
HDIST_GOAL_PCT = -20.0
#: Resamples and seed of the paired bootstrap of the headline top-1 difference.
N_BOOT, BOOT_SEED = 2000, 0


def soft_label_rows(index) -> list[str]:
    """The rows of a table that are soft-label heads: the suite's configurations trained on soft
    targets (``uniform LS``, ``top-k uniform``, ``top-k semantic``, ``tree top-k``, ``sim ≥``
    and any later kind, ``+ curriculum`` ones included).

    Not counted: ``one-hot`` (the reference), ``binary codes`` (an alternative output coding trained
    on one-hot targets with BCE, no soft labels: ``default_suite`` builds it with
    ``smoothing="onehot"``), any ``+ CRM`` row (a decoding of another row's probabilities, not a
    training target) and the peers (:func:`peer_rows`: LogisticRegression*, hiclass*, including
    ``LogisticRegression + semantic soft labels``, which is the peer's model, not a head).
    """
    peers = set(peer_rows())
    return [n for n in index if n not in peers and n not in ("one-hot", "binary codes")
            and not str(n).endswith("+ CRM")]


def paired_bootstrap(right_a, right_b, n_boot: int = N_BOOT, seed: int = BOOT_SEED,
                     level: float = 0.95) -> tuple[float, float, float]:
    """Top-1 difference of two classifiers on the same test products, with a percentile interval.

    Parameters
    ----------
    right_a, right_b : array of bool, shape (n,)
        Whether classifier a (b) ranks product ``i``'s class first, for the same ``n`` products.
    n_boot : int
        Bootstrap resamples.
    seed : int
        Seed of the resampling (fixed: the interval is reproducible).
    level : float
        Coverage of the interval.

    Returns
    -------
    (delta, lo, hi) : floats, in points (100 x shares)
        With ``d_i = right_a[i] - right_b[i]`` (in {-1, 0, 1}), ``delta = 100 * mean(d)``. Each
        resample ``b`` draws ``n`` products with replacement, ``I_b ~ U{1..n}^n``, and gives
        ``delta*_b = 100 * mean(d[I_b])``; the interval is the percentile one,
        ``[q_{(1-level)/2}(delta*), q_{(1+level)/2}(delta*)]``. The products are resampled in pairs
        (both classifiers' outcomes on the same product stay together), so what the two get right
        alike does not widen the interval. Since ``d_i`` takes three values, ``mean(d[I_b])`` is drawn
        exactly (same distribution) as ``(n_+ - n_-) / n`` with ``(n_+, n_0, n_-)`` multinomial
        over ``n`` draws with the observed shares of ``d = 1, 0, -1``.
    """
    import numpy as np

    a, b = np.asarray(right_a, dtype=bool), np.asarray(right_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"right_a and right_b must be 1-D, non-empty and of one length; got {a.shape}, {b.shape}")
    n = len(a)
    d = a.astype(np.int64) - b.astype(np.int64)
    shares = np.array([(d == 1).sum(), (d == 0).sum(), (d == -1).sum()]) / n
    counts = np.random.default_rng(seed).multinomial(n, shares, size=n_boot)
    boot = 100 * (counts[:, 0] - counts[:, 2]) / n
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return float(100 * d.mean()), float(lo), float(hi)


def _heads(df):
    """The trained heads' rows (the suite's configurations and its ``+ CRM`` row), not the peers."""
    peers = set(peer_rows())
    return df.loc[[n for n in df.index if n not in peers]]


def best_top1_head(df) -> str:
    """The head row with the highest mean top-1 (the one :func:`reading` compares with LogisticRegression)."""
    return _heads(df)["top1_mean"].idxmax()


def reading(df, right: dict | None = None) -> str:
    """What the table says, computed from it: the best head against the peers and against one-hot.

    Sentences, not judgements: top-1 / macro-F1 of the best head beside LogisticRegression; the
    lowest hdist@5 and mistake severity of any row relative to the one-hot head; issue 28's goal for
    the soft-label heads (:func:`soft_label_rows`); and the noise to read the differences against.

    Parameters
    ----------
    df : DataFrame
        A results table (``<metric>_mean`` / ``_std`` columns, one row per configuration).
    right : dict, optional
        ``{row: bool array over the test products, True where the row ranks the class first}``
        (:func:`ranked_first`). With the best top-1 head (:func:`best_top1_head`) and
        ``"LogisticRegression"`` in it, the reading adds the :func:`paired_bootstrap` 95 % interval
        of their top-1 difference.

    Returns
    -------
    str
        ``"Reading (computed from the table): ..."``. The soft-label clause: among the soft-label
        heads with ``top1 >= top1(one-hot) - TOP1_SLACK_PT / 100`` ("at that top-1"), the lowest
        hdist@5 ``h`` and ``100 * (h / hdist@5(one-hot) - 1)`` %, met when ``<= HDIST_GOAL_PCT``
        (missed, and said so, when no soft-label head keeps that top-1). The noise clause: the
        largest top-1 std of the heads between seeds when it is not 0; when it is 0 (every head
        fitted once for all seeds) the seeds measure nothing and the reading says so.
    """
    heads = _heads(df)
    out = []
    if "LogisticRegression" in df.index:
        lr = df.loc["LogisticRegression"]
        for m in ("top1", "macro_f1"):
            best = heads[f"{m}_mean"].idxmax()
            d = 100 * (heads.loc[best, f"{m}_mean"] - lr[f"{m}_mean"])
            out.append(f"best head {m} {heads.loc[best, f'{m}_mean']:.3f} (`{best}`) vs LogisticRegression "
                       f"{lr[f'{m}_mean']:.3f} ({d:+.1f} pt)")
    if "one-hot" in df.index:
        oh = df.loc["one-hot"]
        for m in ("hdist@5", "mistake_severity"):
            best = df[f"{m}_mean"].idxmin()
            rel = 100 * (df.loc[best, f"{m}_mean"] / oh[f"{m}_mean"] - 1)
            out.append(f"lowest {m} {df.loc[best, f'{m}_mean']:.3f} (`{best}`), {rel:+.0f}% vs one-hot")
        soft = df.loc[soft_label_rows(df.index)]
        if len(soft):
            floor = oh["top1_mean"] - TOP1_SLACK_PT / 100
            kept = soft[soft["top1_mean"] >= floor - 1e-12]
            if len(kept):
                b = kept["hdist@5_mean"].idxmin()
                rel = 100 * (kept.loc[b, "hdist@5_mean"] / oh["hdist@5_mean"] - 1)
                out.append(f"soft-label heads with top-1 >= one-hot's {oh['top1_mean']:.3f} - {TOP1_SLACK_PT:g} pt: "
                           f"lowest hdist@5 {kept.loc[b, 'hdist@5_mean']:.3f} (`{b}`, top1 "
                           f"{kept.loc[b, 'top1_mean']:.3f}), {rel:+.0f}% vs one-hot "
                           f"(goal <= {HDIST_GOAL_PCT:+.0f} %: {'met' if rel <= HDIST_GOAL_PCT else 'missed'})")
            else:
                out.append(f"no soft-label head has top-1 >= one-hot's {oh['top1_mean']:.3f} - {TOP1_SLACK_PT:g} pt "
                           f"(hdist@5 goal <= {HDIST_GOAL_PCT:+.0f} % vs one-hot at that top-1: missed)")
    noise = heads["top1_std"].max()
    if noise > 0:
        out.append(f"top-1 varies by up to {noise:.3f} (std) between seeds: smaller differences are noise")
    else:
        out.append("top-1 std 0 between seeds (every head fitted once for all seeds): the seeds measure no noise")
    if right and "LogisticRegression" in df.index and len(heads):
        best = best_top1_head(df)
        if best in right and "LogisticRegression" in right:
            d, lo, hi = paired_bootstrap(right[best], right["LogisticRegression"])
            n = len(right[best])
            # a head that depends on the seed: its per-product predictions are one seed's, not the mean's
            one = " (its first seed)" if abs(right[best].mean() - df.loc[best, "top1_mean"]) >= 0.5 / n else ""
            out.append(f"paired bootstrap over the {n:,} test products ({N_BOOT:,} resamples): "
                       f"`{best}`{one} vs LogisticRegression top-1 {d:+.1f} pt, 95 % interval [{lo:+.1f}, {hi:+.1f}] pt "
                       f"({'excludes 0' if lo > 0 or hi < 0 else 'includes 0: not distinguishable from noise'})")
    return "Reading (computed from the table): " + "; ".join(out) + "."


def ranked_first(res, df, ws, seed: int, left_out: list | None = None, peers=None) -> dict:
    """``{row: per-test-product bool}`` for :func:`reading`'s bootstrap: whether the best top-1 head
    (:func:`best_top1_head`) and LogisticRegression rank each test product's class first.

    The head's come from the suite's stored test probabilities (its first seed; a ``+ CRM`` row is
    re-decoded with :func:`semcat_kit.judge.metrics.crm_predict`); LogisticRegression's from the
    predictions ``Workspace.baselines`` stores with the peers (``peers.attrs["test_top1"]``, its first
    seed). A peers table without them (stored by an older version) has LogisticRegression fitted
    again through the public API: its fit is deterministic (L-BFGS, C chosen on the val split). A
    prediction set whose top-1 differs from the table's row is left out. ``left_out`` collects what
    was left out and why.
    """
    import semcat_kit as sk
    from semcat_kit.judge.metrics import crm_predict

    left_out = [] if left_out is None else left_out
    out = {}
    best = best_top1_head(df)
    base = next((n for n in res.names if f"{n} + CRM" in res.summary.index), None) if best == "+ CRM" else best
    if base in res.names:
        p = res.test_probs(base)
        pred = crm_predict(p, ws.taxonomy(), top_k=1)[0][:, 0] if best == "+ CRM" else p.argmax(1)
        out[best] = pred == res.y_test
    else:
        left_out.append(f"no stored test probabilities for `{best}`")
    stored = {} if peers is None else peers.attrs.get("test_top1", {})
    if "LogisticRegression" in df.index and "LogisticRegression" in stored:
        right = stored["LogisticRegression"] == peers.attrs["y_test"]
    elif "LogisticRegression" in df.index:
        (tr, ytr), (va, yva), (te, yte) = ws.part("train"), ws.part("val"), ws.part("test")
        lr = sk.baseline_suite()["LogisticRegression"].clone().fit(tr, ytr, taxonomy=ws.taxonomy(), val=(va, yva),
                                                                   seed=seed)
        right = lr.predict_proba(te).argmax(1) == yte
    if "LogisticRegression" in df.index:
        if abs(right.mean() - df.loc["LogisticRegression", "top1_mean"]) < 0.5 / len(right):
            out["LogisticRegression"] = right
        else:
            left_out.append(f"LogisticRegression's per-product top-1 {right.mean():.4f} differs from its row's "
                        f"{df.loc['LogisticRegression', 'top1_mean']:.4f}")
    return out


def confidence(res) -> dict:
    """``config -> (top-1, AUROC of the top-1 probability for right vs wrong top-1, median top-1
    probability of the right ones)`` on the suite's test split (its first seed): how many sure
    leaves a head has to give, whatever the threshold."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    out = {}
    for name in res.names:
        p = res.test_probs(name)
        right = p.argmax(1) == res.y_test
        conf = p.max(1)
        auc = roc_auc_score(right, conf) if 0 < right.sum() < len(right) else float("nan")
        out[name] = (float(right.mean()), float(auc), float(np.median(conf[right])) if right.any() else float("nan"))
    return out


def hedge_reading(df, conf: dict | None = None) -> str:
    """What the hedging table says, computed from it: the issue-23 goals, met or not.

    At 98 %: the best soft-label head's leaf coverage against one-hot (goal: >= 5 pt more) and against
    LogisticRegression and its + CRM row (goal: at least as many); and the lowest realised precision of
    any row at each target (goal: >= the target, within the guarantee's slack). ``conf``
    (:func:`confidence`) adds why when the +5 pt goal is missed: a head can only give a sure leaf to
    a product it ranks right, so the reading compares top-1 and how well the top-1 probability
    separates right from wrong (AUROC) with one-hot's.
    """
    col = "leaf_coverage@98_mean"
    out = []
    soft = df.loc[soft_label_rows(df.index)]
    if len(soft) and col in df.columns:
        best = soft[col].idxmax()
        b = soft.loc[best, col]
        if "one-hot" in df.index:
            d = 100 * (b - df.loc["one-hot", col])
            why = ""
            if d < 5 and conf and best in conf and "one-hot" in conf:
                (t1, a1, m1), (t0, a0, m0) = conf[best], conf["one-hot"]
                why = (f": why, on the test split: its top-1 is {100 * (t1 - t0):+.1f} pt vs one-hot's ({t1:.3f} vs "
                       f"{t0:.3f}) and its top-1 probability separates right from wrong top-1 predictions "
                       f"{'as well or better' if a1 >= a0 else 'less well'} (AUROC {a1:.3f} vs {a0:.3f}; median "
                       f"probability of a right top-1 {m1:.2f} vs {m0:.2f}), so it has "
                       f"{'few' if t1 - t0 < 0.01 else 'not enough'} more products it is both right and sure about")
            out.append(f"best soft-label head at 98 %: `{best}` gives a leaf to {b:.1%} of products, {d:+.1f} pt vs "
                       f"one-hot ({'meets' if d >= 5 else 'misses'} the +5 pt goal{why})")
        for peer in ("LogisticRegression", "LogisticRegression + CRM"):
            if peer in df.index:
                d = 100 * (b - df.loc[peer, col])
                out.append(f"{d:+.1f} pt vs {peer} ({'at least as many' if d >= 0 else 'fewer'})")
    for q in (95, 98, 99):
        c = f"hedged_precision@{q}_mean"
        if c in df.columns and df[c].notna().any():
            worst = df[c].idxmin()
            out.append(f"lowest realised precision at {q} %: {df.loc[worst, c]:.3f} (`{worst}`)")
    return "Reading (computed from the table): " + "; ".join(out) + "." if out else ""


def shown_path(p) -> str:
    """How a committed result names a path: relative to the repository when inside it, else by its
    last parts (the catalog's name: ``myntra-fashion``, ``amazon-uk-toys/products.csv``), never a
    machine's absolute path."""
    s = str(p)
    if s == "tutorial" or not (Path(s).is_absolute() or s.startswith("~")):
        return s
    q = Path(s).expanduser().resolve()
    try:
        return q.relative_to(ROOT).as_posix()
    except ValueError:
        return "/".join(q.parts[-2:]) if q.suffix else q.name


#: Issue 28's goal for `make demo` (the seven notebooks, after set-up) on this 2-core machine.
DEMO_GOAL_S = 300


def _notebook_times(path: Path) -> str:
    rec = json.loads(Path(path).read_text())
    recs = rec["notebooks"]
    total = sum(r["seconds"] for r in recs)
    params = ", ".join(f"{k}={shown_path(v) if k in ('catalog', 'work_dir', 'taxonomy') else v}"
                       for k, v in rec.get("params", {}).items())
    each = ", ".join(f"{r['notebook'][:2]} {_fmt(r['seconds'])}" for r in recs)
    wall = rec.get("wall_seconds")
    if wall is None:            # a record written before run_notebooks kept its wall time
        head = f"all {len(recs)} notebooks in {_fmt(total)} ({each})"
    else:
        head = (f"all {len(recs)} notebooks in {_fmt(wall)} wall time ({each}; "
                f"goal of `make demo` <= 5 min: {'met' if wall <= DEMO_GOAL_S else 'missed'})")
    start = rec.get("load_avg_start")
    loads = (f"load average {start[0]:.1f} at the start, {rec['load_avg'][0]:.1f} at the end" if start
             else f"load average at the end {rec['load_avg'][0]:.1f}")
    return f"`scripts/run_notebooks.py` with {params or 'the default parameters'}: {head}; {loads} on {rec['cpu_count']} cores"


def _fmt(sec: float) -> str:
    m, s = divmod(int(round(sec)), 60)
    return f"{m} min {s} s" if m else f"{s} s"


def _cpu() -> str:
    import os

    import torch

    one, five, _ = os.getloadavg()
    return f"{os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}" + (
        ", CUDA" if torch.cuda.is_available() else "") + f", load average {one:.1f} (5 min: {five:.1f}) at the end"


def write(name: str, body: str, results: Path = RESULTS, readme: Path = README) -> None:
    """Put section ``name`` into docs/results.md (others kept) and refresh the README copy."""
    from semcat_kit._core.io import atomic_write_text

    old = sections(results.read_text(encoding="utf-8")) if results.is_file() else {}
    old[name] = body
    text = HEADER + "".join(f"\n## {n}\n\n{b}\n" for n, b in old.items())
    atomic_write_text(results, text)
    if readme.is_file():
        r = readme.read_text(encoding="utf-8")
        for n, body in old.items():
            start, end = markers(n)
            if start in r and end in r:
                pre, rest = r.split(start, 1)
                _, post = rest.split(end, 1)
                r = f"{pre}{start}\n{body}\n{end}{post}"
        atomic_write_text(readme, r)


def markers(name: str) -> tuple[str, str]:
    """The README markers between which section ``name`` is copied (the tutorial's are the plain ones)."""
    return (START, END) if name == "tutorial" else (f"<!-- results:{name}:start -->", f"<!-- results:{name}:end -->")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", default="tutorial", help="section name in docs/results.md (default tutorial)")
    ap.add_argument("--catalog", default="tutorial")
    ap.add_argument("--catalog-options", default="{}", help="JSON column mapping for a file catalog")
    ap.add_argument("--text-encoder", default="minilm")
    ap.add_argument("--image-encoder", default="efficientnet-lite0", help="'none' for text only")
    ap.add_argument("--epochs", type=int, default=None,
                    help="fix every head's budget (default: the data-aware budget, as the notebooks)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--work-dir", default=str(ROOT / "work"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse the suite and peers already trained in --work-dir (same data, settings, seeds)")
    ap.add_argument("--notebook-run", help="folder of a scripts/run_notebooks.py run whose work dir to reuse and "
                    "whose timings.json to quote (implies --reuse and --work-dir <folder>/work)")
    a = ap.parse_args(argv)
    timings = None
    if a.notebook_run:
        a.reuse, a.work_dir = True, str(Path(a.notebook_run) / "work")
        timings = Path(a.notebook_run) / "timings.json"
        if not timings.is_file():
            raise SystemExit(f"{timings} is missing: is {a.notebook_run} a finished run_notebooks.py --out folder?")
        run_params = json.loads(timings.read_text()).get("params", {})   # the run's -p values win
        for key, attr in (("catalog", "catalog"), ("text_encoder", "text_encoder"),
                          ("image_encoder", "image_encoder"), ("epochs", "epochs"), ("seeds", "seeds"),
                          ("device", "device")):
            if key in run_params:
                setattr(a, attr, "none" if run_params[key] is None else run_params[key])
        if "catalog_options" in run_params:
            a.catalog_options = json.dumps(run_params["catalog_options"])
    none = lambda v: None if str(v).lower() in ("none", "null", "") else v  # noqa: E731
    body = measure(a.name, a.catalog, json.loads(a.catalog_options), none(a.text_encoder), none(a.image_encoder),
                   a.epochs, a.seeds, Path(a.work_dir), a.device, reuse=a.reuse, notebook_timings=timings)
    write(a.name, body)
    print(f"## {a.name}\n\n{body}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
