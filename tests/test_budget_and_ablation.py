"""Issue 12 training options: step budget (min_steps), linear head (hidden=0), focal/KL weights,
per-class smoothing mass (alpha_by="similarity"); frequency buckets and the loss ablation suite."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

import semcat_kit as sk
from semcat_kit import soft_labels as soft
from semcat_kit.experiments.comparison import compare, loss_suite
from semcat_kit.encode.embeddings import Embeddings
from semcat_kit.judge.frequency import bucket_metrics, frequency_buckets, frequency_cutoffs
from semcat_kit.learn.model import FusionHead
from semcat_kit.labels.similarity import class_alpha, tree_neighbors

torch.set_num_threads(1)


def _data(n=112, seed=0, noise=0.5, counts=None):
    tax = sk.Taxonomy.from_paths([f"T{i % 2} > M{i % 4} > L{i}" for i in range(12)])
    rng = np.random.default_rng(seed)
    C = tax.n_classes
    cent = np.random.default_rng(0).normal(size=(C, 10))
    if counts is not None:
        y = np.repeat(np.arange(C), counts)
    else:
        y = np.concatenate([np.arange(C), rng.integers(0, C, n - C)])
    x = (cent[y] + noise * rng.normal(size=(len(y), 10))).astype(np.float32)
    return tax, Embeddings([f"{seed}-{i}" for i in range(len(y))], x, None, np.ones(len(y), bool),
                           np.zeros(len(y), bool)), y


# ------------------------------------------------------------------------------ step budget
def test_min_steps_raises_the_epochs_of_small_catalogs_only():
    cfg = sk.TrainConfig(epochs=2, min_steps=20, batch_size=32, solver="minibatch")   # a step budget: minibatch
    assert cfg.epochs_for(112) == 5            # 4 steps per epoch -> 5 epochs reach 20 steps
    assert cfg.epochs_for(10_000) == 2         # 313 steps per epoch: epochs already exceed min_steps
    assert sk.TrainConfig(epochs=3).epochs_for(10) == 3
    tax, emb, y = _data()
    run = sk.train(emb, y, taxonomy=tax, config=cfg.replace(early_stopping=None), progress=False)
    assert len(run.history) == 5 and run.best_epoch == 5
    assert run.history["lr"].iloc[-1] < 0.01 * cfg.lr             # decayed to ~0 at the end of the budget
    # the cosine schedule spans the whole budget: half way through it is still well above 0
    assert run.history["lr"].iloc[1] > 0.5 * cfg.lr
    with pytest.raises(ValueError, match="min_steps"):
        sk.TrainConfig(min_steps=-1)


# ------------------------------------------------------------------------------ linear head
def test_linear_head_has_one_layer_and_round_trips(tmp_path):
    tax, emb, y = _data()
    run = sk.train(emb, y, taxonomy=tax, config=sk.TrainConfig(epochs=3, hidden=0, proj_dim=16, batch_size=32,
                                                               early_stopping=None), progress=False)
    lin = [m for m in run.model.mlp if isinstance(m, torch.nn.Linear)]
    assert len(lin) == 1 and lin[0].in_features == run.config.proj_dim and lin[0].out_features == tax.n_classes
    again = FusionHead(**run.model.config)
    again.load_state_dict(run.model.state_dict())
    sk.export_head(run, tmp_path / "h", onnx=False, pt2=False)
    head = sk.load_head(tmp_path / "h")
    np.testing.assert_allclose(head.predict_proba(emb), run.predict_proba(emb), atol=1e-5)
    with pytest.raises(ValueError, match="hidden must be a non-negative int"):
        FusionHead(10, None, 3, hidden=-1)


# ------------------------------------------------------------------------------ focal / KL weights
def test_kl_only_and_focal_only_losses():
    tax, emb, y = _data()
    base = dict(epochs=2, batch_size=32, early_stopping=None, smoothing="tree", alpha=0.2, k=4,
                solver="minibatch")   # the per-epoch loss parts are the minibatch loop's history
    kl_only = sk.train(emb, y, taxonomy=tax, config=sk.TrainConfig(focal_weight=0.0, **base), progress=False)
    h = kl_only.history
    np.testing.assert_allclose(h["loss"], h["kl"], rtol=1e-5)
    assert (h["focal"] > 0).all()             # still logged, not trained on
    focal_only = sk.train(emb, y, taxonomy=tax, config=sk.TrainConfig(kl_weight=0.0, **base), progress=False)
    np.testing.assert_allclose(focal_only.history["loss"], focal_only.history["focal"], rtol=1e-5)
    with pytest.raises(ValueError, match="both 0: nothing to train"):
        sk.TrainConfig(focal_weight=0.0, kl_weight=0.0)


# ------------------------------------------------------------------------------ per-class smoothing mass
def test_alpha_by_similarity_gives_each_class_its_own_mass():
    tax = sk.Taxonomy.from_paths([f"T{i % 2} > M{i % 4} > L{i}" for i in range(12)] + ["Z"])
    C = tax.n_classes
    rng = np.random.default_rng(0)
    nb = sk.similarity.label_neighbors(rng.normal(size=(C, 6)), k=4)
    const = soft.build("semantic", C, 0.2, neighbors=nb, temperature=0.5)
    t = soft.build("semantic", C, 0.2, neighbors=nb, temperature=0.5, alpha_by="similarity")
    a_c = class_alpha(nb, 0.2)
    w = t.weights.astype(np.float64)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(1.0 - w[:, 0], a_c, atol=1e-6)              # mass moved off each class
    # neighbours keep their relative weights
    r = const.weights[:, 1:] / const.weights[:, 1:].sum(1, keepdims=True)
    np.testing.assert_allclose(w[:, 1:] / w[:, 1:].sum(1, keepdims=True), r, atol=1e-5)
    assert np.ptp(1.0 - w[:, 0]) > 0.01                                     # not the same mass everywhere
    # tree kind: similarity of the tree neighbours
    tt = soft.build("tree", C, 0.2, taxonomy=tax, k=4, alpha_by="similarity")
    np.testing.assert_allclose(1.0 - tt.weights[:, 0], class_alpha(tree_neighbors(tax, 4), 0.2), atol=1e-6)
    with pytest.raises(ValueError, match="no neighbours"):
        soft.build("uniform", C, 0.2, alpha_by="similarity")
    with pytest.raises(ValueError, match="alpha_by must be"):
        soft.build("semantic", C, 0.2, neighbors=nb, alpha_by="more")
    with pytest.raises(ValueError, match="alpha_by='similarity'"):
        sk.TrainConfig(alpha_by="similarity")                             # one-hot has no neighbours
    cfg = sk.TrainConfig(smoothing="tree", k=4, alpha=0.2, alpha_by="similarity", epochs=1, batch_size=32,
                         early_stopping=None)
    tax2, emb, y = _data()
    sk.train(emb, y, taxonomy=tax2, config=cfg, progress=False)


# ------------------------------------------------------------------------------ frequency buckets
def test_frequency_buckets_thirds_and_thresholds():
    counts = np.array([50, 40, 30, 30, 10, 9, 8, 5, 2, 1, 1, 0])
    y = np.repeat(np.arange(12), counts)
    b = frequency_buckets(y, 12)
    assert list(b[:4]) == ["head"] * 4 and list(b[4:8]) == ["torso"] * 4 and list(b[8:]) == ["tail"] * 4
    # equal counts are never split; the cut-offs give the sizes closest to thirds (1 / 3 / 2, not 4 / 0 / 2)
    y2 = np.repeat(np.arange(6), [5, 3, 3, 3, 1, 1])
    assert frequency_cutoffs(y2, 6) == (3, 5)
    assert list(frequency_buckets(y2, 6)) == ["head", "torso", "torso", "torso", "tail", "tail"]
    b3 = frequency_buckets(y, 12, thresholds=(5, 30))
    assert list(b3) == ["head"] * 4 + ["torso"] * 4 + ["tail"] * 4
    with pytest.raises(ValueError, match="class indices"):
        frequency_buckets(np.array([0, 13]), 12)


def test_frequency_buckets_heavy_ties_keep_every_bucket():
    # a long tail of singletons (as on the toys catalog: 90 of 235 classes have 1 training item) used to
    # swallow the tail bucket into the torso; every bucket must now be non-empty and near a third
    rng = np.random.default_rng(0)
    counts = np.concatenate([rng.integers(12, 600, 70), rng.integers(2, 12, 75), np.ones(90, int)])
    rng.shuffle(counts)
    y = np.repeat(np.arange(len(counts)), counts)
    b = frequency_buckets(y, len(counts))
    sizes = {k: int((b == k).sum()) for k in ("head", "torso", "tail")}
    assert sizes["tail"] == 90 and all(v > 0 for v in sizes.values()) and sum(sizes.values()) == 235
    # ties are never split: every count value sits in exactly one bucket, and buckets are ordered by count
    for v in np.unique(counts):
        assert len(set(b[counts == v])) == 1
    assert counts[b == "head"].min() > counts[b == "torso"].max() >= counts[b == "torso"].min() > counts[b == "tail"].max()
    t1, t2 = frequency_cutoffs(y, len(counts))
    assert list(b) == list(frequency_buckets(y, len(counts), thresholds=(t1, t2)))
    # no better split exists: brute force over all pairs of cuts between distinct counts
    vals = np.unique(counts)[::-1]
    best = min(sum((s - 235 / 3) ** 2 for s in ((counts >= a).sum(), ((counts < a) & (counts >= c)).sum(),
                                               (counts < c).sum()))
               for ia, a in enumerate(vals) for c in vals[ia + 1:])
    got = sum((v - 235 / 3) ** 2 for v in sizes.values())
    assert got == pytest.approx(best)
    # degenerate counts: one value -> all head; two values -> head and tail
    assert set(frequency_buckets(np.repeat(np.arange(5), 4), 5)) == {"head"}
    b2 = frequency_buckets(np.repeat(np.arange(6), [7, 7, 7, 2, 2, 2]), 6)
    assert list(b2) == ["head"] * 3 + ["tail"] * 3
    # an unseen class (count 0) is a count like any other: it lands in the tail
    b0 = frequency_buckets(np.repeat(np.arange(7), [9, 9, 4, 4, 1, 1, 0]), 7)
    assert list(b0) == ["head", "head", "torso", "torso", "tail", "tail", "tail"]


def test_bucket_metrics_by_hand():
    tax = sk.Taxonomy.from_paths(["A > a1", "A > a2", "B > b1", "B > b2"])
    buckets = np.array(["head", "head", "tail", "torso"], dtype=object)
    y = np.array([0, 0, 1, 2, 2, 3])
    pred = np.array([0, 1, 1, 2, 0, 2])
    p = np.eye(4)[pred] * 0.9 + 0.025
    m = bucket_metrics(p, y, tax, buckets)
    assert m["n[head]"] == 3 and m["top1[head]"] == pytest.approx(2 / 3)
    from sklearn.metrics import f1_score
    assert m["macro_f1[head]"] == pytest.approx(f1_score(y, pred, labels=[0, 1], average="macro"))
    assert m["top1[tail]"] == pytest.approx(0.5) and m["mistake_severity[tail]"] == pytest.approx(
        tax.lca_distance(0, 2))
    assert m["top1[torso]"] == 0.0 and m["mistake_severity[torso]"] == pytest.approx(tax.lca_distance(2, 3))


def test_loss_suite_in_compare_with_frequency_buckets():
    tax, tr_e, tr_y = _data(n=150, seed=1)
    _, te_e, te_y = _data(n=80, seed=2, noise=0.9)
    suite = loss_suite(smoothing="tree", k=4, epochs=3, batch_size=32, proj_dim=16, hidden=32,
                       early_stopping=None)
    assert list(suite) == ["focal γ=2 only", "KL only (tree)", "focal + KL (tree)", "focal + KL, α inverse",
                           "focal + KL, α effective"]
    assert suite["focal γ=2 only"].kl_weight == 0 and suite["KL only (tree)"].focal_weight == 0
    assert suite["focal + KL, α effective"].focal_alpha == "effective"
    df = compare(suite, train=(tr_e, tr_y), test=(te_e, te_y), taxonomy=tax, seeds=(0, 1, 2), progress=False,
                 by_frequency=True)
    for b in ("head", "torso", "tail"):
        assert f"top1[{b}]_mean" in df.columns and f"macro_f1[{b}]_mean" in df.columns
    run = df.attrs["runs"][("KL only (tree)", 0)]
    buckets = frequency_buckets(tr_y, tax.n_classes)
    want = bucket_metrics(run.predict_proba(te_e), te_y, tax, buckets)
    long = df.attrs["runs"].long
    got = long[(long.config == "KL only (tree)") & (long.seed == 0)].iloc[0]
    assert got["top1[tail]"] == pytest.approx(want["top1[tail]"])


def test_auto_fields_are_decided_by_the_data_size():
    small = sk.TrainConfig().resolve(2100, n_val=300)
    assert small.min_steps == 600 and small.early_stopping is None and small.epochs == 30
    assert small.epochs_for(2100) == 67                       # 9 steps per epoch -> 67 epochs
    assert small.decided == {"epochs": 30, "min_steps": 600, "early_stopping": None}
    assert "decided by the data (2,100 train, 300 val)" in repr(small) and "min_steps=600" in repr(small)
    assert "67 epochs x 9 steps of 256 = 603 AdamW steps" in small.budget(2100)
    big = sk.TrainConfig(smoothing="tree").resolve(30_000, n_val=4000)
    assert big.early_stopping == "val_top1" and big.smoothing == "tree" and big.epochs_for(30_000) == 30
    assert sk.TrainConfig(early_stopping=None).resolve(100, n_val=5000).early_stopping is None
    with pytest.raises(ValueError, match="n_val must be a non-negative int"):
        sk.TrainConfig().resolve(100, n_val=-1)
    with pytest.raises(ValueError, match="early_stopping = 'top1'"):
        sk.TrainConfig(early_stopping="top1")
    with pytest.raises(ValueError, match="epochs must be an integer"):
        sk.TrainConfig(epochs="many")


def test_auto_fields_only_are_decided_a_given_value_is_kept():
    # an explicit value always wins, even when it equals what the data would decide
    mine = {"epochs": 30, "min_steps": 0, "early_stopping": "val_top1"}
    kept = sk.TrainConfig(**mine).resolve(2100, 300)
    assert all(getattr(kept, k) == v for k, v in mine.items()) and kept.decided == {}
    # an explicit epoch count is the whole budget (tests and quick runs stay quick)
    assert sk.TrainConfig(epochs=2).resolve(2100, 300).epochs_for(2100) == 2
    assert sk.TrainConfig(epochs=2).epochs_for(2100) == 2 and sk.TrainConfig().epochs_for(2100) == 67
    # replace() keeps what was decided unless it changes it; resolving twice changes nothing
    auto = sk.TrainConfig(smoothing="tree").resolve(2100, 300)
    again = auto.replace(seed=3)
    assert again.seed == 3 and again.decided == auto.decided and again.resolve(5, 5) == again
    assert auto.replace(epochs=5).decided == {"min_steps": 600, "early_stopping": None}
    # input_norm follows the head and the solver: normalised inputs for an MLP or a minibatch run,
    # none for the linear head fitted full-batch (convex); unknown solver: left "auto"
    assert auto.input_norm == "auto" and not auto.resolved
    assert auto.resolve(2100, 300, solver="lbfgs").input_norm is False
    assert auto.resolve(2100, 300, solver="minibatch").input_norm is True
    assert sk.TrainConfig(hidden=64).resolve(10, 0).input_norm is True
    # a stored config (to_dict of a resolved one) reloads as it trained: nothing is "auto" any more
    done = auto.resolve(2100, 300, solver="lbfgs")
    stored = sk.TrainConfig.from_dict(done.to_dict())
    assert stored.resolved and stored.resolve(99_999, 99_999, solver="minibatch") == done
    # the fields left at "auto" round-trip as "auto" (YAML, spec.json)
    assert sk.TrainConfig.from_dict(sk.TrainConfig().to_dict()) == sk.TrainConfig()
    assert sk.TrainConfig().to_dict()["epochs"] == "auto"


def test_train_decides_the_auto_fields_as_the_pipeline_does(tmp_path):
    """sk.train, Pipeline.train_config and the estimator make one decision: the run's config is it."""
    from semcat_kit.learn.estimator import SemcatClassifier

    rng = np.random.default_rng(0)
    tax = sk.Taxonomy.from_paths([f"a > {i}" for i in range(4)])
    X = rng.normal(size=(200, 8)).astype(np.float32)
    y = np.repeat(np.arange(4), 50)
    X[np.arange(200), y] += 3
    emb = sk.Embeddings(item_ids=np.array([str(i) for i in range(200)], dtype=object), text=X, image=None,
                        text_mask=np.ones(200, bool), image_mask=np.zeros(200, bool))
    tr, va = emb.take(np.arange(160)), emb.take(np.arange(160, 200))
    run = sk.train(tr, y[:160], taxonomy=tax, config=sk.TrainConfig(solver="minibatch"), progress=False,
                   val=(va, y[160:]))
    assert run.config == sk.TrainConfig(solver="minibatch").resolve(160, 40, solver="minibatch")
    assert run.config.min_steps == 600 and run.config.early_stopping is None and run.config.input_norm is True
    assert len(run.history) == run.config.epochs_for(160) == 600 and "600 AdamW steps" in run.solver["budget"]
    clf = SemcatClassifier(taxonomy=tax, solver="minibatch", epochs=3).fit(X[:160], y[:160])
    assert clf.config_.epochs == 3 and clf.config_.min_steps == 0 and clf.config_.decided["min_steps"] == 0


def test_head_without_projection_fuses_the_full_embeddings(tmp_path):
    head = FusionHead(8, 6, 5, proj_dim=0, hidden=0)
    lin = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    assert lin[0].in_features == 8 + 6 + 2 and not any(isinstance(m, torch.nn.Linear) for m in head.text_proj)
    out = head.eval()(torch.randn(4, 8), torch.randn(4, 6), image_mask=torch.tensor([1, 0, 1, 1]).bool())
    assert out.shape == (4, 5) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="gated.*proj_dim > 0"):
        FusionHead(8, 6, 5, fusion="gated", proj_dim=0)
    tax, emb, y = _data()
    run = sk.train(emb, y, taxonomy=tax, config=sk.TrainConfig(epochs=2, proj_dim=0, hidden=0, batch_size=32,
                                                               early_stopping=None), progress=False)
    sk.export_head(run, tmp_path / "h", onnx=False, pt2=False)
    np.testing.assert_allclose(sk.load_head(tmp_path / "h").predict_proba(emb), run.predict_proba(emb), atol=1e-5)


def test_head_without_input_norm_sees_the_embeddings_as_they_come(tmp_path):
    head = FusionHead(8, 6, 5, proj_dim=0, hidden=0, input_norm=False, dropout=0.0).eval()
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in head.modules())
    x, v = torch.randn(3, 8), torch.randn(3, 6)
    lin = head.mlp[1]
    want = torch.cat([x, v, torch.ones(3, 2)], 1) @ lin.weight.T + lin.bias   # exactly a linear model
    torch.testing.assert_close(head(x, v), want)
    with pytest.raises(ValueError, match="input_norm must be True, False or 'auto'"):
        sk.TrainConfig(input_norm="no")
    tax, emb, y = _data()
    run = sk.train(emb, y, taxonomy=tax, config=sk.TrainConfig(epochs=2, input_norm=False, batch_size=32,
                                                               early_stopping=None), progress=False)
    assert run.model.config["input_norm"] is False
    sk.export_head(run, tmp_path / "h", onnx=False, pt2=False)
    np.testing.assert_allclose(sk.load_head(tmp_path / "h").predict_proba(emb), run.predict_proba(emb), atol=1e-5)
