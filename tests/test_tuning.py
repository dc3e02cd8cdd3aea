"""sk.tune: objective parsing, constrained Optuna search, the returned config reproduces its score, and
on the tutorial catalog the tuned config is at least as good as one-hot on the stated objective."""
import contextlib
import io
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import semcat_kit as sk
from semcat_kit import cli
from semcat_kit.encode.embeddings import Embeddings
from semcat_kit.experiments.tuning import Constraint, parse_objective, tune

torch.set_num_threads(1)


# ------------------------------------------------------------------------------ objective
def test_parse_objective_forms():
    o = parse_objective("hdist@5; top1 >= baseline - 0.5pt, macro_f1 ≥ baseline - 0.5pt")
    assert o.metric == "hdist@5" and o.minimize
    assert [(c.metric, c.op, c.ref, c.shift, c.unit) for c in o.constraints] == [
        ("top1", ">=", "baseline", -0.5, "pt"), ("macro_f1", ">=", "baseline", -0.5, "pt")]
    o = parse_objective("top1; mistake_severity <= one-hot - 10% and top5 >= 0.9")
    assert not o.minimize
    assert (o.constraints[0].ref, o.constraints[0].shift, o.constraints[0].unit) == ("onehot", -10.0, "%")
    assert o.constraints[1].value == 0.9 and o.constraints[1].ref is None
    assert str(parse_objective("hdist@5; top1 >= baseline - 0.5pt")) == "lowest hdist@5 with top1 >= baseline - 0.5pt"
    for bad, msg in [("", "must be a string"), ("top 1", "not a metric name"), ("top1; top5 > 0.3", "cannot read"),
                     ("top1; top5 >= best", "cannot read")]:
        with pytest.raises(ValueError, match=msg):
            parse_objective(bad)


def test_constraint_bounds_and_violations():
    refs = {"baseline": pd.Series({"top1": 0.90, "hdist@5": 2.0}), "onehot": pd.Series({"hdist@5": 2.0})}
    c = Constraint("top1", ">=", ref="baseline", shift=-0.5, unit="pt")
    assert c.bound(refs) == pytest.approx(0.895)
    assert c.violation(pd.Series({"top1": 0.89}), refs) == pytest.approx(0.005)
    assert c.violation(pd.Series({"top1": 0.9}), refs) < 0
    c = Constraint("hdist@5", "<=", ref="onehot", shift=-20, unit="%")
    assert c.bound(refs) == pytest.approx(1.6)
    assert c.violation(pd.Series({"hdist@5": 1.7}), refs) == pytest.approx(0.1)
    o = parse_objective("hdist@5; top1 >= baseline - 0.5pt")
    # feasibility first, then the metric
    assert o.key(pd.Series({"top1": 0.95, "hdist@5": 3.0}), refs) < o.key(pd.Series({"top1": 0.5, "hdist@5": 0.1}), refs)


# ------------------------------------------------------------------------------ search (synthetic)
def _data(seed=0):
    tax = sk.Taxonomy.from_paths([f"T{i % 2} > M{i % 4} > L{i}" for i in range(12)])
    rng = np.random.default_rng(seed)
    C = tax.n_classes
    cent = rng.normal(size=(C, 10))

    def make(m, off, noise):
        y = np.concatenate([np.arange(C), rng.integers(0, C, m - C)])
        x = (cent[y] + noise * rng.normal(size=(m, 10))).astype(np.float32)
        return Embeddings([f"i{off + j}" for j in range(m)], x, None, np.ones(m, bool), np.zeros(m, bool)), y

    return tax, make(200, 0, 0.8), make(120, 1000, 0.8)


SMALL_SPACE = {"steps": (20, 60), "proj_dim": [16], "hidden": [32], "k": (2, 5)}


def test_tune_records_trials_and_returns_a_reproducible_best():
    tax, tr, va = _data()
    nb = sk.similarity.tree_neighbors(tax, 5)
    base = sk.TrainConfig(batch_size=32, lr=5e-3)
    res = tune(tr, va, taxonomy=tax, neighbors=nb, objective="hdist@5; top1 >= onehot - 2pt", n_trials=5,
               base_config=base, search_space=SMALL_SPACE, progress=False)
    t = res.trials
    assert len(t) == 5 and {"smoothing", "alpha", "steps", "crm", "value", "violation", "feasible", "val_top1",
                            "val_hdist@5", "seconds"} <= set(t.columns)
    assert t.loc[0, "smoothing"] == "onehot" and not t.loc[0, "crm"]         # trial 0: the one-hot default
    assert set(res.references) == {"onehot"}
    keys = [res.objective.key(pd.Series({k[4:]: v for k, v in r.items() if k.startswith("val_")}), res.references)
            for r in t.to_dict("records")]
    assert res.objective.key(res.scores, res.references) == min(keys)
    assert res.config.early_stopping is None and res.config.batch_size == 32
    # the returned config reproduces the recorded validation score
    run = sk.train(*tr, taxonomy=tax, neighbors=nb, config=res.config, progress=False)
    again = sk.evaluate(run.predict_proba(va[0]), va[1], tax, neighbors=nb, crm=res.crm)
    assert again["hdist@5"] == pytest.approx(res.scores["hdist@5"], abs=1e-6)


def test_tune_input_errors():
    tax, tr, va = _data()
    with pytest.raises(ValueError, match="not a metric of evaluate"):
        tune(tr, va, taxonomy=tax, objective="accuracy", n_trials=1, progress=False)
    with pytest.raises(ValueError, match="n_trials must be a positive int"):
        tune(tr, va, taxonomy=tax, n_trials=0, progress=False)
    with pytest.raises(ValueError, match="unknown parameter"):
        tune(tr, va, taxonomy=tax, n_trials=1, search_space={"wings": [1]}, progress=False)
    with pytest.raises(ValueError, match="pairs"):
        tune(tr[0], va, taxonomy=tax, n_trials=1, progress=False)


def test_unreachable_constraint_warns_and_returns_the_least_violating():
    tax, tr, va = _data()
    with pytest.warns(UserWarning, match="no trial met every constraint"):
        res = tune(tr, va, taxonomy=tax, objective="hdist@5; top1 >= 1.5", n_trials=2,
                   base_config=sk.TrainConfig(batch_size=32, lr=5e-3), search_space=SMALL_SPACE, progress=False)
    assert not res.feasible and not res.trials["feasible"].any()
    assert res.scores["top1"] == res.trials["val_top1"].max()


# ------------------------------------------------------------------------------ the tutorial catalog
@pytest.fixture(scope="module")
def tutorial(request):
    cat = sk.load_fashion_tutorial()
    tax = sk.Taxonomy.from_paths(cat["label"])
    enc = sk.encoders.load("minilm", device="cpu")
    emb = sk.encode_catalog(cat, text_encoder=enc, cache_dir=request.config.cache.mkdir("semcat_tutorial_text"),
                            progress=False)
    y = np.asarray(tax.index_of(cat["label"]))
    sp = sk.split(cat["label"].to_numpy(), val=0.1, test=0.2, seed=0)
    nb = sk.similarity.label_neighbors(enc.encode_texts(sk.similarity.class_texts(tax)), k=20)
    return tax, nb, (emb.take(sp.train), y[sp.train]), (emb.take(sp.val), y[sp.val])


@pytest.mark.slow
def test_tuned_config_is_at_least_as_good_as_onehot_on_the_tutorial(tutorial):
    tax, nb, tr, va = tutorial
    base = sk.TrainConfig(proj_dim=128, hidden=256)
    objective = "hdist@5; top1 >= baseline - 0.5pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)    # may find no feasible trial on a tiny budget
        res = tune(tr, va, taxonomy=tax, neighbors=nb, objective=objective, n_trials=3, base_config=base,
                   baselines={"LogisticRegression": sk.LogisticBaseline(C=10.0)},
                   search_space={"steps": (100, 250), "proj_dim": [128], "hidden": [256]}, progress=False,
                   allow_unseen_val_classes=True)
    assert res.references["baseline"]["top1"] > 0.5           # a real LogisticRegression reference
    # one-hot, trained independently with the same settings, scored on the same objective
    run = sk.train(*tr, taxonomy=tax, neighbors=nb, config=base.replace(early_stopping=None), progress=False)
    onehot = sk.evaluate(run.predict_proba(va[0]), va[1], tax, neighbors=nb)
    assert res.objective.key(res.scores, res.references) <= res.objective.key(onehot, res.references)
    # and the tuned config, retrained, scores what the tuner recorded
    run = sk.train(*tr, taxonomy=tax, neighbors=nb, config=res.config, progress=False)
    again = sk.evaluate(run.predict_proba(va[0]), va[1], tax, neighbors=nb, crm=res.crm)
    assert again["hdist@5"] == pytest.approx(res.scores["hdist@5"], abs=1e-6)


# ------------------------------------------------------------------------------ semcat tune
def test_cli_tune_writes_best_config_and_trials(tmp_path, request):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"text_encoder": "minilm", "image_encoder": None, "sample": 300,
                                   "train": {"proj_dim": 32, "hidden": 64, "batch_size": 64, "lr": 0.003}}))
    out = tmp_path / "tuned"

    def tune(n_trials: int) -> str:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = cli.main(["tune", "--catalog", "tutorial", "--config", str(cfg), "--out", str(out),
                           "--n-trials", str(n_trials), "--objective", "hdist@5; top1 >= onehot - 5pt", "--quiet",
                           "--storage", f"sqlite:///{tmp_path / 'tune.db'}",
                           "--cache-dir", str(request.config.cache.mkdir("semcat_tutorial_text"))])
        assert rc == 0, buf.getvalue()
        return buf.getvalue()

    printed = tune(2)
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["objective"] == "lowest hdist@5 with top1 >= onehot - 5pt"
    cfg2 = sk.TrainConfig.from_dict(best["train"])          # a valid semcat train section
    assert cfg2.proj_dim == 32 or "proj_dim" in pd.read_csv(out / "trials.csv").columns
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 2 and trials.loc[0, "smoothing"] == "onehot"
    assert "best of 2 trials" in printed
    # the same command with --n-trials 3 resumes the stored study: one more trial, the first two kept
    printed = tune(3)
    more = pd.read_csv(out / "trials.csv")
    assert len(more) == 3 and "best of 3 trials" in printed
    pd.testing.assert_frame_equal(more.iloc[:2].drop(columns="seconds"), trials.drop(columns="seconds"))


def test_cli_tune_bad_objective_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sample: 50\n")
    rc = cli.main(["tune", "--catalog", "tutorial", "--config", str(cfg), "--out", str(tmp_path / "o"),
                   "--objective", "top1; top5 > 3"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("semcat: error: objective") and "cannot read the constraint" in err


# ------------------------------------------------------------------------------ resumable (issue 24)
def _complete(db):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name="semcat-tune", storage=f"sqlite:///{db}")
    except KeyError:                        # not created yet
        return []
    return [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]


def test_killed_tune_resumes_from_its_storage(tmp_path):
    """A study killed with SIGKILL mid-search resumes from sqlite: finished trials are kept (same
    numbers, params and scores), the interrupted one is marked failed and run again, and only the
    missing trials are run."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import optuna

    here = Path(__file__).parent
    db = tmp_path / "tune.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parent), str(here), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(here / "_tune_kill_case.py"), str(db), "200", str(tmp_path / "o.json")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    t0 = time.time()
    try:
        while len(_complete(db)) < 3:
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.time() - t0 < 300, "the study did not finish 3 trials in 300 s"
            time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    before = {t.number: (t.params, t.value) for t in _complete(db)}
    n_before = len(before)
    assert n_before >= 3 and not (tmp_path / "o.json").exists()
    import _tune_kill_case as case

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = case.run(str(db), n_before + 2)
    study = res.study
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states.count(optuna.trial.TrialState.COMPLETE) + states.count(optuna.trial.TrialState.PRUNED) == n_before + 2
    after = {t.number: (t.params, t.value) for t in study.get_trials(deepcopy=False)
             if t.state == optuna.trial.TrialState.COMPLETE}
    assert {k: after[k] for k in before} == before                         # nothing re-run, nothing lost
    interrupted = [t.number for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.FAIL]
    if interrupted:          # killed inside a trial (almost always): said, and not counted
        assert any("interrupted" in str(w.message) for w in caught)
    assert set(res.trials["number"]) == set(after) and res.trials.loc[res.trials["value"].idxmax(), "value"] == \
        pytest.approx(res.scores["top1"])
    # a third call with the same budget runs nothing; another objective on the same study is refused
    again = case.run(str(db), n_before + 2)
    assert len(again.study.trials) == len(study.trials)
    train, val, tax = case.data()
    with pytest.raises(ValueError, match="other data or another objective"):
        sk.tune(train, val, taxonomy=tax, objective="top5", n_trials=1, storage=f"sqlite:///{db}",
                base_config=sk.TrainConfig(**case.BASE), search_space=case.SPACE, progress=False)


def test_pruner_stops_hopeless_trials(tmp_path):
    """With the median pruner, minibatch trials whose per-epoch validation top-1 trails the earlier
    trials' median are stopped (state PRUNED) and leave no row in the trials table; full-batch
    (L-BFGS) trials are not watched (a callback would make them minibatch runs)."""
    import optuna

    import _tune_kill_case as case

    train, val, tax = case.data()
    space = {**case.SPACE, "steps": (30, 120), "smoothing": ["onehot"], "proj_dim": [8, 64], "hidden": [8, 64]}
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    # slow learners (lr 1e-4, focal γ=2) so that some trials trail the median for the pruner to stop
    res = sk.tune(train, val, taxonomy=tax, objective="top1", n_trials=12, search_space=space, pruner=pruner,
                  base_config=sk.TrainConfig(**{**case.BASE, "lr": 1e-4, "solver": "minibatch", "focal_gamma": 2.0}),
                  progress=False)
    states = [t.state for t in res.study.trials]
    pruned = [t for t in res.study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, states
    for t in pruned:                         # each stopped from its reported epochs, below the median
        step = max(t.intermediate_values)
        done = [o.intermediate_values[step] for o in res.study.trials
                if o.state == optuna.trial.TrialState.COMPLETE and step in o.intermediate_values]
        assert t.intermediate_values[step] < np.median(done) + 1e-12
    assert len(res.trials) == states.count(optuna.trial.TrialState.COMPLETE)
    assert {t.user_attrs["config"]["solver"] for t in res.study.trials if "config" in t.user_attrs} == {"minibatch"}
    full = sk.tune(train, val, taxonomy=tax, objective="top1", n_trials=3, search_space=space, pruner=pruner,
                   base_config=sk.TrainConfig(**{**case.BASE, "solver": "lbfgs"}), progress=False)   # full-batch
    assert all(t.state == optuna.trial.TrialState.COMPLETE and not t.intermediate_values for t in full.study.trials)
    with pytest.raises(ValueError, match="pruner must be"):
        sk.tune(train, val, taxonomy=tax, objective="top1", n_trials=1, pruner="hyperband")
