"""compare(): one row per config with mean/std over seeds, CRM rows from the same runs, long form,
kept runs; default_suite and format_table."""
import copy

import numpy as np
import pandas as pd
import pytest
import torch

from semcat_kit import Taxonomy
from semcat_kit.experiments.comparison import CompareRuns, compare, default_suite, format_table
from semcat_kit.encode.embeddings import Embeddings
from semcat_kit.judge.metrics import evaluate
from semcat_kit.labels.similarity import tree_neighbors
from semcat_kit.learn.training import TrainConfig

torch.set_num_threads(1)
FAST = dict(epochs=6, batch_size=32, proj_dim=32, hidden=64, lr=5e-3)


def _data(seed=0, dt=12):
    rng = np.random.default_rng(seed)
    tax = Taxonomy.from_paths([f"T{i % 2} > M{i % 4} > L{i}" for i in range(12)])
    C = tax.n_classes
    centres = rng.normal(size=(C, dt))

    def make(m, off):
        y = np.concatenate([np.arange(C), rng.integers(0, C, m - C)])
        x = (centres[y] + 0.4 * rng.normal(size=(m, dt))).astype(np.float32)
        return Embeddings(np.array([f"i{off + j}" for j in range(m)]), x, None, np.ones(m, bool),
                          np.zeros(m, bool)), y

    return tax, make(300, 0), make(100, 300), make(120, 400)


@pytest.fixture(scope="module")
def result():
    tax, tr, va, te = _data()
    nb = tree_neighbors(tax, 11)
    configs = {"one-hot": TrainConfig(**FAST), "tree": TrainConfig(**FAST, smoothing="tree", k=4),
               "codes": TrainConfig(**FAST, label_repr="codes")}
    df = compare(configs, train=tr, val=va, test=te, taxonomy=tax, neighbors=nb, seeds=(0, 1, 2),
                 crm_for="best", progress=False)
    return tax, nb, te, configs, df


def test_summary_shape_and_values(result):
    tax, nb, te, configs, df = result
    assert [i for i in df.index if not i.endswith(" + CRM")] == ["one-hot", "tree", "codes"]
    crm_rows = [i for i in df.index if i.endswith(" + CRM")]
    assert len(crm_rows) == 1 and df.loc[crm_rows[0], "crm"]
    base = crm_rows[0][: -len(" + CRM")]
    assert df.index.get_loc(crm_rows[0]) == df.index.get_loc(base) + 1   # right after its base row
    # "best" = highest mean top1 among the trained configs
    trained = df[~df["crm"]]
    assert base == trained["top1_mean"].idxmax()
    for col in ("top1_mean", "top1_std", "top5_mean", "macro_f1_mean", "mistake_severity_mean", "hdist@5_mean",
                "nbrs@5_mean", "best_epoch_mean", "train_seconds_mean"):
        assert col in df.columns, col
    assert (df["n_seeds"] == 3).all()
    assert (df.loc[["one-hot", "tree"], "top1_mean"] > 0.9).all() and df.loc["codes", "top1_mean"] > 0.6
    # mean/std are exactly those of the per-seed rows, which are exactly evaluate() of the kept runs
    runs = df.attrs["runs"]
    assert isinstance(runs, CompareRuns) and set(runs) == {(n, s) for n in configs for s in (0, 1, 2)}
    per_seed = [evaluate(runs[("tree", s)].predict_proba(te[0]), te[1], tax, neighbors=nb)["top1"] for s in (0, 1, 2)]
    assert df.loc["tree", "top1_mean"] == pytest.approx(np.mean(per_seed))
    assert df.loc["tree", "top1_std"] == pytest.approx(np.std(per_seed, ddof=1))
    # the CRM row re-decodes the same runs
    crm_seed = [evaluate(runs[(base, s)].predict_proba(te[0]), te[1], tax, neighbors=nb, crm=True)["top1"]
                for s in (0, 1, 2)]
    assert df.loc[crm_rows[0], "top1_mean"] == pytest.approx(np.mean(crm_seed))
    assert df.loc[crm_rows[0], "best_epoch_mean"] == df.loc[base, "best_epoch_mean"]
    # each run's test top-1 as scored, kept for paired comparisons
    assert set(runs.test_top1) == set(runs)
    for key, run in runs.items():
        np.testing.assert_array_equal(runs.test_top1[key], run.predict_proba(te[0]).argmax(1))
    # seeds really differ
    w = [runs[("one-hot", s)].model.mlp[-1].weight for s in (0, 1, 2)]
    assert not torch.equal(w[0], w[1])


def test_long_table_and_attrs_survive_pandas_ops(result):
    tax, nb, te, configs, df = result
    long = df.attrs["runs"].long
    assert len(long) == 3 * 3 + 3 and set(long.columns) >= {"config", "seed", "crm", "top1", "mistake_severity"}
    again = long.groupby("config")["top1"].mean()
    assert np.allclose(again[df.index].to_numpy(), df["top1_mean"].to_numpy())
    # copies share (not deep-copy) the runs, and concatenating two tables does not choke on attrs
    assert df.copy().attrs["runs"] is df.attrs["runs"] and copy.deepcopy(df).attrs["runs"] is df.attrs["runs"]
    both = pd.concat([df, df.rename(index=lambda s: s + " (b)")])
    assert len(both) == 2 * len(df)


def test_long_option_and_explicit_crm_list(tmp_path):
    tax, tr, va, te = _data(1)
    configs = {"a": TrainConfig(**FAST), "b / LS": TrainConfig(**FAST, smoothing="uniform")}
    long = compare(configs, train=tr, val=None, test=te, taxonomy=tax, seeds=(3, 4, 5), crm_for=["b / LS"],
                   long=True, progress=False, checkpoint_dir=tmp_path)
    assert list(long["config"]) == ["a"] * 3 + ["b / LS"] * 3 + ["b / LS + CRM"] * 3
    assert list(long["seed"]) == [3, 4, 5] * 3
    assert long.attrs["runs"][("b / LS", 4)].config.seed == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b_LS"]
    assert sorted(p.name for p in (tmp_path / "b_LS").iterdir()) == ["seed3", "seed4", "seed5"]
    assert (long["best_epoch"] == FAST["epochs"]).all()     # no validation: all epochs


def test_bad_arguments():
    tax, tr, va, te = _data()
    ok = {"a": TrainConfig(**FAST)}
    kw = dict(train=tr, val=va, test=te, taxonomy=tax, progress=False)
    with pytest.raises(ValueError, match="at least 3 distinct"):
        compare(ok, seeds=(0, 1), **kw)
    with pytest.raises(ValueError, match=r"crm_for names \['zz'\] are not configurations"):
        compare(ok, crm_for="zz", **kw)
    with pytest.raises(TypeError, match=r"configs\['a'\] is a dict"):
        compare({"a": {"epochs": 1}}, **kw)
    with pytest.raises(ValueError, match=r"configurations \['s'\] use neighbour soft labels"):
        compare({"s": TrainConfig(smoothing="semantic")}, **kw)
    with pytest.raises(ValueError, match="reserved for CRM rows"):
        compare({"x + CRM": TrainConfig(**FAST)}, **kw)
    with pytest.raises(ValueError, match="cannot resume"):
        compare(ok, resume="x", **kw)
    with pytest.raises(ValueError, match="test must be a pair"):
        compare(ok, **{**kw, "test": te[0]})


def test_default_suite():
    suite = default_suite(epochs=7, k=15, batch_size=128, curriculum=True)
    assert len(suite) == 8 and all(c.epochs == 7 and c.batch_size == 128 for c in suite.values())
    kinds = [(c.smoothing, c.curriculum, c.label_repr) for c in suite.values()]
    assert kinds == [("onehot", "constant", "onehot"), ("uniform", "constant", "onehot"),
                     ("topk", "constant", "onehot"), ("semantic", "constant", "onehot"),
                     ("semantic", "linear", "onehot"), ("tree", "constant", "onehot"),
                     ("threshold", "constant", "onehot"),       # registered kinds each give a row
                     ("onehot", "constant", "codes")]
    assert all(c.k == 15 for c in list(suite.values())[2:6]) and suite["uniform LS α=0.1"].alpha == 0.1
    # without the curriculum row (the default: a curriculum is a minibatch-only idea)
    assert list(default_suite(k=15)) == [n for n in suite if not n.endswith("+ curriculum")]


def test_format_table(result):
    *_, df = result
    md = format_table(df, metrics=["top1", "mistake_severity"], digits=2)
    lines = md.splitlines()
    assert lines[0] == "| config | top1 | mistake_severity |" and lines[1] == "|---|---:|---:|"
    assert len(lines) == 2 + len(df)
    r = df.loc["tree"]
    assert f"| tree | {r['top1_mean']:.2f} ± {r['top1_std']:.2f} |" in md
    with pytest.raises(ValueError, match=r"metrics \['accuracy'\] are not in this table"):
        format_table(df, metrics=["accuracy"])


def test_hedging_columns_for_every_row(result):
    """leaf_coverage@p and friends (issue 23): thresholds calibrated on val, read on test, for every row;
    a + CRM row repeats its runs' values (hedging decodes probabilities, not the CRM ranking)."""
    import warnings

    from semcat_kit.judge.hedging import CalibrationWarning
    from semcat_kit.judge.metrics import hedging_metric_names, hedging_metrics

    tax, nb, te, configs, df = result
    for key in hedging_metric_names():
        assert f"{key}_mean" in df.columns and df[f"{key}_mean"].notna().all(), key
    _, _, va, _ = _data()
    runs = df.attrs["runs"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)    # 100 val products cannot certify 98 / 99 %
        per_seed = [hedging_metrics(runs[("tree", s)].predict_proba(va[0]), va[1],
                                    runs[("tree", s)].predict_proba(te[0]), te[1], tax) for s in (0, 1, 2)]
    for key in ("leaf_coverage@95", "hedged_precision@95", "specificity@98", "review@99"):
        assert df.loc["tree", f"{key}_mean"] == pytest.approx(np.mean([s[key] for s in per_seed])), key
    assert df.loc["tree", "leaf_coverage@95_mean"] > 0.5 and (df["review@99_mean"] == 1).all()
    crm = [i for i in df.index if i.endswith(" + CRM")][0]
    cols = [f"{k}_mean" for k in hedging_metric_names()]
    assert df.loc[crm, cols].tolist() == df.loc[crm[: -len(" + CRM")], cols].tolist()


def test_hedging_columns_are_nan_without_val():
    from semcat_kit.experiments.comparison import hedging_columns
    from semcat_kit.judge.metrics import hedging_metric_names

    cols = hedging_columns(None, None, None, None, None)
    assert list(cols) == hedging_metric_names() and all(np.isnan(v) for v in cols.values())


def test_crm_rows_are_flagged_where_the_probabilities_are_too_flat(result):
    """A starved run (one epoch at a tiny learning rate: nearly uniform probabilities) gets a flagged + CRM row
    (crm_trusted 0 and a CrmFlagWarning naming the measured rule); a converged one is trusted."""
    from semcat_kit.judge.decoding import CRM_MIN_CONFIDENCE, CrmFlagWarning, crm_trust

    tax, nb, te, configs, df = result
    crm_row = [i for i in df.index if i.endswith(" + CRM")][0]
    assert df.loc[crm_row, "crm_trusted_mean"] == 1.0 and np.isnan(df.loc["one-hot", "crm_trusted_mean"])
    tax, tr, va, te = _data(2)
    starved = {"starved": TrainConfig(**{**FAST, "epochs": 1, "lr": 1e-5}, solver="minibatch", early_stopping=None)}
    with pytest.warns(CrmFlagWarning, match=rf"'starved \+ CRM' is flagged for 3 of its 3 seed\(s\): mean top-1 "
                                            rf"probability on the validation split is 0\.\d+ < {CRM_MIN_CONFIDENCE:g}"):
        flat = compare(starved, train=tr, val=va, test=te, taxonomy=tax, seeds=(0, 1, 2), crm_for="starved",
                       progress=False)
    assert flat.loc["starved + CRM", "crm_trusted_mean"] == 0.0
    run = flat.attrs["runs"][("starved", 0)]
    assert not crm_trust(run.predict_proba(va[0])).ok


def test_crm_trust_reads_the_mean_top1_probability():
    from semcat_kit.judge.decoding import CRM_MIN_CONFIDENCE, crm_trust

    C = 50
    flat = np.full((10, C), 1.0 / C)
    t = crm_trust(flat)
    assert not t.ok and t.confidence == pytest.approx(1.0 / C) and t.threshold == CRM_MIN_CONFIDENCE
    assert "too flat for CRM" in t.reason
    peaked = np.full((10, C), 0.1 / (C - 1))
    peaked[:, 0] = 0.9
    assert crm_trust(peaked).ok and crm_trust(peaked).confidence == pytest.approx(0.9)
    edge = np.full((4, 2), 0.5)
    assert crm_trust(edge, min_confidence=0.5).ok and not crm_trust(edge, min_confidence=0.51).ok
    nothing = crm_trust(np.zeros((0, C)))
    assert nothing.ok and np.isnan(nothing.confidence)
    with pytest.raises(ValueError, match="min_confidence"):
        crm_trust(flat, min_confidence=2)


def test_each_run_predicts_the_test_rows_once_crm_rows_included():
    """A run shared by seeds (a deterministic peer) and its + CRM row are scored from one prediction
    of the test rows; its top-1 is kept in ``runs.test_top1`` for every seed."""
    from semcat_kit.experiments.baselines import LogisticBaseline

    tax, tr, va, te = _data(seed=3)
    calls = []

    class Counting(LogisticBaseline):
        def predict_proba(self, X, *a, **kw):
            calls.append(len(X))
            return super().predict_proba(X, *a, **kw)

    df = compare({"LR": Counting(C=1.0)}, train=tr, val=va, test=te, taxonomy=tax, seeds=(0, 1, 2), crm_for=["LR"],
                 progress=False)
    assert "LR + CRM" in df.index
    assert calls.count(len(te[1])) == 1, calls
    runs = df.attrs["runs"]
    np.testing.assert_array_equal(runs.test_top1[("LR", 1)], runs[("LR", 0)].predict_proba(te[0]).argmax(1))
