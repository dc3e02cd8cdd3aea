"""One input, one answer: the same bad input fed to every public entry point gives the same error.

Each row of the tables below is one bad input (probabilities, labels, neighbours, k, device,
precision); each entry point takes it where it takes that kind of input. All of them must raise
the same exception type with the same message core (semcat_kit._core.contracts).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import semcat_kit as sk
from semcat_kit import contracts, decoding, hedging, metrics, see, viz
from semcat_kit.labels.similarity import Neighbors

PATHS = ["A > a1", "A > a2", "B > b1", "B > b2"]
TAX = sk.Taxonomy.from_paths(PATHS)
C = TAX.n_classes
GOOD_P = np.full((4, C), 1.0 / C)
GOOD_Y = np.array([0, 1, 2, 3])
NB = Neighbors(np.array([[1, 2], [0, 3], [3, 0], [2, 1]]), np.array([[.9, .1], [.9, .1], [.9, .1], [.9, .1]],
                                                                       dtype=np.float32))
CATALOG = pd.DataFrame({"item_id": ["i0", "i1", "i2", "i3"], "title": ["t"] * 4, "label": PATHS,
                        "image_path": [None] * 4})


# ------------------------------------------------------------------ entry points taking (probs, y)
def _evaluate(p, y):
    return sk.evaluate(p, y, TAX)


def _per_class(p, y):
    return metrics.per_class_report(p, y, TAX)


def _per_sample(p, y):
    return metrics.per_sample_report(p, y, TAX)


def _reliability(p, y):
    return metrics.reliability_table(p, y)


def _label_issues(p, y):
    return see.label_issues(p, y)


def _mispredictions(p, y):
    return see.mispredictions(CATALOG.iloc[: len(np.atleast_2d(p))].reset_index(drop=True)
                                     if np.ndim(p) == 2 else CATALOG, p, y, TAX)


def _severity_table(p, y):
    return see.severity_table({"m": (p, y)}, TAX)


def _severity_histogram(p, y):
    return viz.severity_histogram({"m": (p, y)}, TAX)


def _top_confusions(p, y):
    return see.top_confusions(p, y, TAX, cls=0)


def _confusion_heatmap(p, y):
    return viz.confusion_heatmap(p, y, TAX, cls=0)


def _calibrate_hedging(p, y):
    return hedging.calibrate_hedging(p, y, TAX, precisions=(0.5,))


def _hedge_scores(p, y):
    return hedging.hedge_scores(p, y, TAX)


def _hedging_metrics(p, y):
    return metrics.hedging_metrics(p, y, p, y, TAX, precisions=(0.5,))


def _ps_curve(p, y):
    return hedging.precision_specificity_curve(p, y, TAX)


PROB_Y_ENTRIES = [_evaluate, _per_class, _per_sample, _reliability, _label_issues, _mispredictions,
                  _severity_table, _severity_histogram, _top_confusions, _confusion_heatmap,
                  _calibrate_hedging, _hedge_scores, _hedging_metrics, _ps_curve]
PROB_ENTRIES = PROB_Y_ENTRIES + [lambda p, y: decoding.crm_predict(p, TAX), lambda p, y: decoding.crm_rerank(p, TAX),
                                 lambda p, y: hedging.hedge(p, TAX, 0.5), lambda p, y: hedging.hedge_paths(p, TAX),
                                 lambda p, y: hedging.node_probabilities(p, TAX)]

BAD_PROBS = [
    ("logits", np.array([[2.0, -1.0, 0.5, 0.1]] * 4), ValueError, r"negative values in rows \[0, 1, 2, 3\]"),
    ("not normalised", np.array([[0.5, 0.5, 0.5, 0.5]] * 4), ValueError, r"rows \[0, 1, 2, 3\] sum to 2"),
    ("nan", np.where(np.eye(4, C, dtype=bool), np.nan, 0.25), ValueError, r"NaN or infinite values in rows \[0, 1, 2, 3\]"),
    ("columns", np.full((4, 3), 1 / 3), ValueError, r"has 3 columns but the taxonomy has 4 classes"),
]


@pytest.mark.parametrize("case", BAD_PROBS, ids=[c[0] for c in BAD_PROBS])
@pytest.mark.parametrize("entry", PROB_ENTRIES)
def test_bad_probabilities_same_answer_everywhere(entry, case):
    _, p, exc, msg = case
    if entry is _reliability or entry is _label_issues:
        if case[0] == "columns":
            pytest.skip("no taxonomy: any column count is valid")
    with pytest.raises(exc, match=msg):
        entry(p, GOOD_Y)


BAD_LABELS = [
    ("out of range", np.array([0, 1, 2, 7]), ValueError, r"rows \[3\] hold class indices \[7\] outside \[0, 4\)"),
    ("negative", np.array([0, -1, 2, 3]), ValueError, r"rows \[1\] hold class indices \[-1\] outside \[0, 4\)"),
    ("fractional", np.array([0, 1.5, 2, 3]), ValueError, r"non-integer values in rows \[1\]"),
    ("bool", np.array([True, False, True, False]), ValueError, r"must hold integer class indices or label paths"),
    ("length", np.array([0, 1, 2]), ValueError, r"has 3 entries but"),
    ("2-D", np.array([[0, 1], [2, 3]]), ValueError, r"must be 1-D"),
    ("unknown path", np.array(["A > a1", "A > zz", "B > b1", "B > b2"], dtype=object), ValueError,
     r"not classes of this taxonomy: row 1: 'A > zz'"),
]


@pytest.mark.parametrize("case", BAD_LABELS, ids=[c[0] for c in BAD_LABELS])
@pytest.mark.parametrize("entry", PROB_Y_ENTRIES)
def test_bad_labels_same_answer_everywhere(entry, case):
    _, y, exc, msg = case
    if entry in (_reliability, _label_issues) and case[0] == "unknown path":
        pytest.skip("no taxonomy to map label paths")
    with pytest.raises(exc, match=msg):
        entry(GOOD_P, y)


def test_bad_labels_same_answer_in_training():
    emb = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    cfg = sk.TrainConfig(epochs=1, early_stopping=None, device="cpu")
    for name, y, exc, msg in BAD_LABELS:
        if name in ("length", "2-D"):
            continue        # the training message names the embeddings it must align with
        with pytest.raises(exc, match=msg):
            sk.train(emb, y, taxonomy=TAX, config=cfg, progress=False)


def test_integral_floats_are_indices_everywhere():
    y = GOOD_Y.astype(float)
    ref = sk.evaluate(GOOD_P, GOOD_Y, TAX)
    pd.testing.assert_series_equal(sk.evaluate(GOOD_P, y, TAX), ref)
    assert see.label_issues(GOOD_P, y)["given"].tolist() == GOOD_Y.tolist()
    assert len(see.severity_table({"m": (GOOD_P, y)}, TAX))


def test_unknown_label_is_both_key_and_value_error():
    with pytest.raises(KeyError):
        sk.evaluate(GOOD_P, ["A > a1", "A > zz", "B > b1", "B > b2"], TAX)
    with pytest.raises(contracts.UnknownLabelError):
        see.severity_table({"m": (GOOD_P, ["A > zz"] * 4)}, TAX)


# ------------------------------------------------------------------ neighbours
BAD_NEIGHBORS = [
    ("too few classes", (np.array([[1], [0], [0]]), np.ones((3, 1), np.float32)), ValueError,
     r"neighbors cover 3 classes but the taxonomy has 4"),
    ("index out of range", (np.array([[1], [9], [0], [0]]), np.ones((4, 1), np.float32)), ValueError,
     r"rows \[1\] hold values outside \[-1, 4\)"),
]


@pytest.mark.parametrize("case", BAD_NEIGHBORS, ids=[c[0] for c in BAD_NEIGHBORS])
@pytest.mark.parametrize("entry", [
    lambda nb: sk.evaluate(GOOD_P, GOOD_Y, TAX, neighbors=nb[0]),
    lambda nb: see.neighbor_table(nb, TAX),
    lambda nb: see.neighborhood_confusion(GOOD_P, GOOD_Y, TAX, cls=0, neighbors=nb),
    lambda nb: contracts.as_neighbors(nb, C),
], ids=["evaluate", "neighbor_table", "neighborhood_confusion", "contracts"])
def test_bad_neighbors_same_answer_everywhere(entry, case):
    _, nb, exc, msg = case
    with pytest.raises(exc, match=msg):
        entry(nb)


# ------------------------------------------------------------------ k
K_ENTRIES = {
    "evaluate ks": lambda k: sk.evaluate(GOOD_P, GOOD_Y, TAX, ks=(k,)),
    "topk": lambda k: decoding.topk(GOOD_P, k),
    "crm_predict": lambda k: decoding.crm_predict(GOOD_P, TAX, top_k=k),
    "mispredictions top": lambda k: see.mispredictions(CATALOG, GOOD_P, GOOD_Y, TAX, top=k),
    "neighbor_table k": lambda k: see.neighbor_table(NB, TAX, k=k),
    "hdist@k": lambda k: metrics.hierarchical_distance_at_k(np.zeros((4, 2), dtype=int), GOOD_Y, TAX, k),
}


@pytest.mark.parametrize("k", [0, -1, 1.5, True, "3"])
@pytest.mark.parametrize("entry", list(K_ENTRIES.values()), ids=list(K_ENTRIES))
def test_bad_k_same_answer_everywhere(entry, k):
    with pytest.raises(ValueError, match=r"must be a positive integer, got"):
        entry(k)


# ------------------------------------------------------------------ device, precision
@pytest.mark.parametrize("device,msg", [
    ("gpu", r"'gpu' is not a device"),
    ("cuda", r"CUDA is not available on this machine"),
    ("mps", r"MPS is not available on this machine"),
])
def test_bad_device_same_answer_everywhere(device, msg, tmp_path):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("MPS is available here")
    emb = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    entries = [lambda: contracts.resolve_device(device),
               lambda: sk.encoders.encoder_device(device)]
    if device != "gpu":     # a misspelt device is refused when the config is built
        entries.append(lambda: sk.train(emb, GOOD_Y, taxonomy=TAX, progress=False,
                                        config=sk.TrainConfig(epochs=1, early_stopping=None, device=device)))
    else:
        entries.append(lambda: sk.TrainConfig(device=device))
    for entry in entries:
        with pytest.raises(ValueError, match=msg if device != "gpu" or entry is not entries[-1]
                           else r"'gpu' is not allowed"):
            entry()


def test_precision_is_validated_and_resolved():
    with pytest.raises(ValueError, match=r"TrainConfig.precision = 'fp8' is not allowed"):
        sk.TrainConfig(precision="fp8")
    cpu = torch.device("cpu")
    assert contracts.resolve_precision("auto", cpu) == torch.float32
    assert contracts.resolve_precision("bf16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match=r"'fp16' needs a CUDA device"):
        contracts.resolve_precision("fp16", cpu)


def test_bf16_training_on_cpu_runs_and_differs_from_fp32():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(C), 16)
    emb = (np.eye(C)[y] @ rng.normal(size=(C, 16)) + 0.1 * rng.normal(size=(len(y), 16))).astype(np.float32)
    base = dict(epochs=3, early_stopping=None, device="cpu", proj_dim=8, hidden=8, batch_size=16, solver="minibatch")   # autocast is a minibatch feature
    a = sk.train(emb, y, taxonomy=TAX, config=sk.TrainConfig(**base), progress=False)
    b = sk.train(emb, y, taxonomy=TAX, config=sk.TrainConfig(**base, precision="bf16"), progress=False)
    assert np.isfinite(b.history["loss"]).all()
    assert not np.allclose(a.history["loss"], b.history["loss"], rtol=0, atol=0)   # bf16 really used
