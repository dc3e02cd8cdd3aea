"""StreamingEvaluator: the same Series as metrics.evaluate on the concatenated input, whatever the
chunking, on the Google taxonomy (5,595 classes of depths 1..7) and the tutorial tree, with ties,
one-hot rows, padded neighbour tables, CRM, tensors and logits; and its refusals."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import semcat_kit as sk
from semcat_kit.judge.decoding import topk
from semcat_kit.judge.metrics import evaluate
from semcat_kit.judge.streaming import StreamingEvaluator, topk_torch

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def google(google_taxonomy_file):
    return sk.Taxonomy.from_google_taxonomy(google_taxonomy_file)


@pytest.fixture(scope="module")
def tutorial():
    return sk.Taxonomy.from_paths(sk.datasets.load_fashion_tutorial()["label"])


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _real_shaped(tax, n, seed=0):
    """Peaked probabilities like a trained head's: mass near the true class and its siblings, a
    long tail of tiny values, a few exactly one-hot rows (thousands of tied zeros) and some
    mistakes; labels drawn Zipf-like so many classes are absent and some are deep or shallow."""
    rng = np.random.default_rng(seed)
    C = tax.n_classes
    ranks = rng.zipf(1.3, size=n) % C
    perm = rng.permutation(C)
    y = perm[ranks]
    z = rng.normal(0, 1.5, size=(n, C))
    z[np.arange(n), y] += rng.uniform(0, 9, size=n)
    sib = tax.level_index(np.arange(C), 1)
    same_top = sib[None, :] == sib[y][:, None]
    z += np.where(same_top, rng.uniform(0, 3, size=(n, 1)), 0)
    p = _softmax(z)
    onehot = rng.choice(n, size=max(1, n // 50), replace=False)
    p[onehot] = 0
    p[onehot, rng.integers(0, C, size=len(onehot))] = 1            # right or wrong, ties everywhere else
    p[onehot[:2]] = 0
    p[onehot[:2], :4] = 0.25                                        # ties inside the top-k
    return p, y


def _neighbors(C, k=20, seed=1, pad_rows=0.2):
    rng = np.random.default_rng(seed)
    nb = np.stack([rng.choice(C, size=k, replace=False) for _ in range(C)]).astype(np.int64)
    padded = rng.random(C) < pad_rows
    cut = rng.integers(0, k, size=C)
    nb[padded[:, None] & (np.arange(k)[None, :] >= cut[:, None])] = -1     # -1 padding at the end of a row
    return nb


def _stream(ev, p, y, sizes):
    a = 0
    for s in sizes:
        ev.update(p[a:a + s], y[a:a + s])
        a += s
    assert a == len(y)
    return ev.compute()


def _assert_same(got: pd.Series, want: pd.Series):
    assert list(got.index) == list(want.index)
    assert got.name == want.name and got.attrs == want.attrs
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=0, atol=1e-9, equal_nan=True,
                               err_msg=str(pd.DataFrame({"got": got, "want": want})))


def test_equals_evaluate_on_the_google_taxonomy(google):
    p, y = _real_shaped(google, 1500)
    nb = _neighbors(google.n_classes)
    assert (nb == -1).any() and len(set(google.depth(np.arange(google.n_classes)).tolist())) == 7
    want = evaluate(p, y, google, neighbors=nb, ks=(1, 5, 20))
    for sizes in ([1500], [1, 499, 7, 993], [256] * 5 + [220]):
        got = _stream(StreamingEvaluator(google, neighbors=nb, ks=(1, 5, 20)), p, y, sizes)
        _assert_same(got, want)
    # tensors are evaluated as tensors (on their device), same numbers
    got = _stream(StreamingEvaluator(google, neighbors=nb), torch.from_numpy(p), torch.from_numpy(y), [600, 900])
    _assert_same(got, want)
    assert want["mistake_severity"] > 0 and 0 < want["nbrs@20"] < 1 and 0 < want["ece"]


def test_equals_evaluate_random_inputs_other_ks_and_crm(tutorial):
    rng = np.random.default_rng(3)
    C = tutorial.n_classes
    p = rng.dirichlet(np.full(C, 0.05), size=700).astype(np.float64)
    y = rng.integers(0, C, size=700)
    nb = _neighbors(C, k=3)                                          # narrower than k-1 for k=10
    for kw in (dict(ks=(3, 10)), dict(ks=(1, 5, 20), crm=True), dict(ks=(2,), crm=True, top_m=12),
               dict(ks=(1000,))):                                    # k capped at C
        with warnings.catch_warnings(record=True) as w_want:
            warnings.simplefilter("always")
            want = evaluate(p, y, tutorial, neighbors=nb, **kw)
        with warnings.catch_warnings(record=True) as w_got:
            warnings.simplefilter("always")
            got = _stream(StreamingEvaluator(tutorial, neighbors=nb, **kw), p, y, [333, 1, 366])
        _assert_same(got, want)
        assert [str(w.message) for w in w_got] == [str(w.message) for w in w_want]
    # no neighbours: no nbrs@k keys; all right: severity NaN
    want = evaluate(np.eye(C)[y], y, tutorial)
    _assert_same(_stream(StreamingEvaluator(tutorial), np.eye(C)[y], y, [350, 350]), want)
    assert np.isnan(want["mistake_severity"])


def test_from_logits_and_float16_tensors(tutorial):
    rng = np.random.default_rng(5)
    logits = torch.from_numpy(rng.normal(0, 3, size=(300, tutorial.n_classes)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, tutorial.n_classes, size=300))
    want = evaluate(torch.softmax(logits, 1).numpy(), y.numpy(), tutorial, ks=(1, 5))
    ev = StreamingEvaluator(tutorial, ks=(1, 5), from_logits=True)
    for a in range(0, 300, 128):
        ev.update(logits[a:a + 128], y[a:a + 128])
    _assert_same(ev.compute(), want)
    fast = StreamingEvaluator(tutorial, ks=(1, 5), from_logits=True, check=False)      # no host syncs
    fast.update(logits[:100], y[:100])
    fast.update(logits[100:], y[100:])
    _assert_same(fast.compute(), want)
    with pytest.raises(ValueError, match=r"y rows 300\.\.301: .*outside"):
        ev.update(torch.zeros((2, tutorial.n_classes)), torch.tensor([0, tutorial.n_classes + 3]))
    ev.reset()
    assert ev.n == 0
    with pytest.raises(ValueError, match="nothing to evaluate"):
        ev.compute()


def test_topk_torch_matches_decoding_topk_with_ties():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 4, size=(400, 50)).astype(np.float32)          # many ties, straddling the k-th
    s[:5] = 0.0
    for k in (1, 3, 7, 50):
        np.testing.assert_array_equal(topk_torch(torch.from_numpy(s), k).numpy(), topk(s, k))
    assert topk_torch(torch.zeros((0, 5)), 3).shape == (0, 3)


def test_refusals_name_the_rows(tutorial):
    C = tutorial.n_classes
    ev = StreamingEvaluator(tutorial)
    ev.update(np.full((4, C), 1 / C), [0, 1, 2, 3])
    logits = np.zeros((3, C))
    logits[1, 0] = -2.0
    with pytest.raises(ValueError, match=r"probs rows 4\.\.6: .*negative values in rows \[1\].*logits"):
        ev.update(logits, [0, 1, 2])
    bad = torch.full((2, C), 1 / C)
    bad[1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"probs rows 4\.\.5: .*NaN or infinite values in rows \[1\]"):
        ev.update(bad, [0, 1])
    with pytest.raises(ValueError, match=r"y rows 4\.\.5: .*outside \[0, " + str(C)):
        ev.update(np.full((2, C), 1 / C), [0, C])
    with pytest.raises(ValueError, match=r"has 3 columns but the taxonomy|must be a 2-D float"):
        ev.update(torch.full((2, 3), 1 / 3), [0, 1])
    assert ev.n == 4                                                  # refused chunks are not counted
    with pytest.raises(ValueError, match="neighbors cover 2 classes"):
        StreamingEvaluator(tutorial, neighbors=np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="each of ks must be a positive integer"):
        StreamingEvaluator(tutorial, ks=(0,))


# ------------------------------------------------------------------ one input, one answer (tests/test_contracts.py)
from test_contracts import BAD_LABELS, BAD_NEIGHBORS, BAD_PROBS, GOOD_P, GOOD_Y, TAX  # noqa: E402


@pytest.mark.parametrize("as_tensor", [False, True])
@pytest.mark.parametrize("case", BAD_PROBS, ids=[c[0] for c in BAD_PROBS])
def test_contract_bad_probabilities(case, as_tensor):
    _, p, exc, msg = case
    with pytest.raises(exc, match=msg):
        StreamingEvaluator(TAX).update(torch.from_numpy(p) if as_tensor else p, GOOD_Y)


@pytest.mark.parametrize("case", BAD_LABELS, ids=[c[0] for c in BAD_LABELS])
def test_contract_bad_labels(case):
    _, y, exc, msg = case
    with pytest.raises(exc, match=msg):
        StreamingEvaluator(TAX).update(GOOD_P, y)


@pytest.mark.parametrize("case", BAD_NEIGHBORS, ids=[c[0] for c in BAD_NEIGHBORS])
def test_contract_bad_neighbors(case):
    _, nb, exc, msg = case
    with pytest.raises(exc, match=msg):
        StreamingEvaluator(TAX, neighbors=nb[0])
