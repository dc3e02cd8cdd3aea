"""Losses: focal, class weights, sparse soft KL vs dense, combined, code BCE."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from semcat_kit import Taxonomy
from semcat_kit import losses as L
from semcat_kit import soft_labels as sl
from semcat_kit.labels.similarity import label_neighbors


def dense_kl(logits, y, T):
    """Reference: materialise the dense target rows and use F.kl_div in float64."""
    t = torch.as_tensor(T, dtype=torch.float64)[y]
    return F.kl_div(F.log_softmax(logits.double(), 1), t, reduction="none").sum(1)


def make_targets(kind, C, alpha, seed, k=6):
    rng = np.random.default_rng(seed)
    nb = label_neighbors(rng.normal(size=(C, 5)), k)
    return sl.build(kind, C, alpha, neighbors=nb, temperature=0.3)


@settings(max_examples=40, deadline=None)
@given(C=st.integers(1, 30), B=st.integers(1, 9), alpha=st.floats(0, 1), seed=st.integers(0, 10_000),
       kind=st.sampled_from(["onehot", "uniform", "topk", "semantic"]), scale=st.sampled_from([0.1, 3.0, 30.0]))
def test_soft_kl_equals_dense(C, B, alpha, seed, kind, scale):
    t = make_targets(kind, C, alpha, seed)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, C, generator=g) * scale
    y = torch.randint(0, C, (B,), generator=g)
    got = L.soft_kl(z, y, t, reduction="none")
    ref = dense_kl(z, y, t.dense())
    torch.testing.assert_close(got.double(), ref, atol=1e-5 * max(1.0, scale / 3), rtol=1e-5)
    assert L.soft_kl(z, y, t).item() == pytest.approx(ref.mean().item(), abs=1e-4 * max(1.0, scale))
    assert L.soft_kl(z, y, t, reduction="sum").item() == pytest.approx(ref.sum().item(), abs=1e-3 * max(1, scale))


def test_soft_kl_with_general_floor_overlap():
    # floor + sparse mass on the same entries, hand-built
    t = sl.SoftTargets(np.array([[0, 2, -1], [1, 0, 2], [2, -1, -1]]),
                       np.array([[0.5, 0.2, 0], [0.3, 0.3, 0.1], [0.7, 0, 0]]), floor=0.3)
    z = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [5.0, 1.0, -3.0]])
    y = torch.tensor([0, 1, 2])
    torch.testing.assert_close(L.soft_kl(z, y, t, "none").double(), dense_kl(z, y, t.dense()), atol=1e-6, rtol=1e-6)


def test_soft_kl_gradient_matches_dense():
    t = make_targets("semantic", 40, 0.3, 1)
    t = sl.SoftTargets(t.indices, t.weights * 0.9, 0.1)
    z1 = torch.randn(8, 40, requires_grad=True)
    z2 = z1.detach().clone().requires_grad_(True)
    y = torch.randint(0, 40, (8,))
    L.soft_kl(z1, y, t).backward()
    dense_kl(z2, y, t.dense()).mean().backward()
    torch.testing.assert_close(z1.grad, z2.grad.float(), atol=1e-6, rtol=1e-5)
    # the KL gradient is (p - t) / B
    p = torch.softmax(z2.detach(), 1)
    torch.testing.assert_close(z1.grad, (p - torch.tensor(t.dense())[y]) / 8, atol=1e-6, rtol=1e-5)


def test_soft_kl_zero_when_prediction_equals_target():
    t = make_targets("topk", 12, 0.4, 3)
    t = sl.SoftTargets(t.indices, t.weights * 0.8, 0.2)
    y = torch.arange(12)
    z = torch.log(torch.tensor(t.dense())) + 7.0  # softmax(z) == target
    assert L.soft_kl(z, y, t).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("kind", ["topk", "uniform", "onehot"])
def test_soft_kl_extreme_logits_and_bf16(kind):
    C = 50
    t = make_targets(kind, C, 0.2, 7)
    g = torch.Generator().manual_seed(0)
    z = (torch.randint(0, 2, (16, C), generator=g).float() * 2 - 1) * 1e4
    y = torch.randint(0, C, (16,), generator=g)
    z.requires_grad_(True)
    loss = L.soft_kl(z, y, t, reduction="none")
    assert torch.isfinite(loss).all()
    loss.mean().backward()
    assert torch.isfinite(z.grad).all()
    ref = dense_kl(z.detach(), y, t.dense())
    torch.testing.assert_close(loss.detach().double(), ref, rtol=1e-5, atol=1e-2)
    zb = (torch.randn(16, C, generator=g) * 4).bfloat16()
    lb = L.soft_kl(zb, y, t, reduction="none")
    assert lb.dtype == torch.float32
    torch.testing.assert_close(lb.double(), dense_kl(zb.float(), y, t.dense()), atol=1e-5, rtol=1e-5)


def test_soft_kl_errors():
    t = make_targets("topk", 10, 0.2, 0)
    with pytest.raises(ValueError, match="11 columns but the soft targets cover 10"):
        L.soft_kl(torch.zeros(2, 11), torch.tensor([0, 1]), t)
    with pytest.raises(ValueError, match=r"y\[1\] = 10"):
        L.soft_kl(torch.zeros(2, 10), torch.tensor([0, 10]), t)
    with pytest.raises(ValueError, match="integer class indices"):
        L.soft_kl(torch.zeros(2, 10), torch.tensor([0.0, 1.0]), t)
    with pytest.raises(TypeError, match="SoftTargets"):
        L.soft_kl(torch.zeros(2, 10), torch.tensor([0, 1]), t.dense())
    with pytest.raises(ValueError, match="reduction"):
        L.soft_kl(torch.zeros(2, 10), torch.tensor([0, 1]), t, reduction="avg")


def test_focal_gamma0_is_cross_entropy():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 17, generator=g) * 3
    y = torch.randint(0, 17, (64,), generator=g)
    torch.testing.assert_close(L.focal_loss(z, y, gamma=0.0), F.cross_entropy(z, y))
    torch.testing.assert_close(L.focal_loss(z, y, gamma=0.0, reduction="none"), F.cross_entropy(z, y, reduction="none"))
    w = torch.rand(17, generator=g) + 0.5
    torch.testing.assert_close(L.focal_loss(z, y, gamma=0.0, alpha=w, reduction="sum"),
                               F.cross_entropy(z, y, weight=w, reduction="sum"))


def test_focal_formula_and_downweighting():
    z = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([0, 2])
    a = torch.tensor([0.5, 1.0, 2.0])
    p = torch.softmax(z.double(), 1)[torch.arange(2), y]
    ref = -a[y].double() * (1 - p) ** 2 * torch.log(p)
    torch.testing.assert_close(L.focal_loss(z, y, 2.0, a, "none").double(), ref, rtol=1e-6, atol=1e-7)
    # an easy example loses far more weight than a hard one when gamma grows
    ce = L.focal_loss(z, y, 0.0, reduction="none")
    fl = L.focal_loss(z, y, 2.0, reduction="none")
    assert (fl / ce)[0] < (fl / ce)[1] < 1
    assert L.focal_loss(z, y, 2.0, alpha=3.0).item() == pytest.approx(3 * fl.mean().item(), rel=1e-6)


def test_focal_extreme_logits_and_bf16():
    z = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]], requires_grad=True)
    y = torch.tensor([0, 0])
    loss = L.focal_loss(z, y, gamma=2.0, reduction="none")
    assert loss[0].item() == 0.0 and loss[1].item() == pytest.approx(2e4)
    loss.sum().backward()
    assert torch.isfinite(z.grad).all()
    zb = torch.randn(8, 5).bfloat16()
    y = torch.randint(0, 5, (8,))
    torch.testing.assert_close(L.focal_loss(zb, y), L.focal_loss(zb.float(), y))
    with pytest.raises(ValueError, match="one weight per class"):
        L.focal_loss(zb, y, alpha=torch.ones(4))


def test_class_weights():
    counts = np.array([1000, 100, 10, 0])
    for mode in L.WEIGHT_MODES:
        w = L.class_weights(counts, mode)
        assert w.dtype == torch.float32 and w.shape == (4,)
        assert torch.isfinite(w).all() and w.mean().item() == pytest.approx(1.0, rel=1e-6)
    assert torch.allclose(L.class_weights(counts, "none"), torch.ones(4))
    inv = L.class_weights(counts, "inverse").numpy()
    assert inv[1] / inv[0] == pytest.approx(10) and inv[3] == pytest.approx(inv[2] * 10)  # 0 counts as 1
    eff = L.class_weights(counts, "effective", beta=0.99).numpy()
    raw = (1 - 0.99) / (1 - 0.99 ** np.array([1000, 100, 10, 1.0]))
    np.testing.assert_allclose(eff, raw / raw.mean(), rtol=1e-6)
    assert eff[0] < eff[1] < eff[2] < eff[3]
    # effective weights interpolate: beta -> 0 is uniform, beta -> 1 approaches inverse frequency
    np.testing.assert_allclose(L.class_weights(counts, "effective", beta=0.0).numpy(), 1.0)
    np.testing.assert_allclose(L.class_weights(counts, "effective", beta=1 - 1e-9).numpy(), inv, rtol=1e-3)
    with pytest.raises(ValueError, match=r"counts\[1\] = -1"):
        L.class_weights([3, -1], "inverse")
    with pytest.raises(ValueError, match="mode"):
        L.class_weights([3, 1], "sqrt")


def test_combined_loss_parts():
    t = make_targets("semantic", 20, 0.3, 5)
    z = torch.randn(10, 20, requires_grad=True)
    y = torch.randint(0, 20, (10,))
    out = L.combined_loss(z, y, t, gamma=1.5, alpha=None, kl_weight=0.7)
    assert set(out) == {"total", "focal", "kl"}
    torch.testing.assert_close(out["focal"], L.focal_loss(z, y, 1.5))
    torch.testing.assert_close(out["kl"], L.soft_kl(z, y, t))
    torch.testing.assert_close(out["total"], out["focal"] + 0.7 * out["kl"])
    out["total"].backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    none = L.combined_loss(z, y, None, gamma=0.0)
    assert none["kl"].item() == 0.0
    torch.testing.assert_close(none["total"], F.cross_entropy(z, y))


def test_code_bce_loss_matches_code_scores():
    tax = Taxonomy.from_paths(["A > B > C", "A > B > D", "A > E", "F > G"])
    codes = sl.taxonomy_codes(tax)
    x = torch.randn(6, codes.shape[1]) * 2
    y = torch.tensor([0, 1, 2, 3, 0, 2])
    ref = -sl.code_scores(x, codes)[torch.arange(6), y]
    torch.testing.assert_close(L.code_bce_loss(x, y, codes, reduction="none"), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(L.code_bce_loss(x, y, codes), ref.mean(), atol=1e-5, rtol=1e-5)
    perfect = (torch.tensor(codes)[y] * 2 - 1) * 50
    assert L.code_bce_loss(perfect, y, codes).item() < 1e-12
    with pytest.raises(ValueError, match=r"y\[0\] = 9"):
        L.code_bce_loss(x, torch.tensor([9, 0, 0, 0, 0, 0]), codes)


def test_soft_kl_on_real_myntra_taxonomy(myntra_styles):
    df = myntra_styles.dropna(subset=["masterCategory", "subCategory", "articleType"])
    tax = Taxonomy.from_paths(df.masterCategory + " > " + df.subCategory + " > " + df.articleType)
    y = torch.as_tensor(tax.index_of((df.masterCategory + " > " + df.subCategory + " > " + df.articleType)[:256]))
    z = torch.randn(256, tax.n_classes, generator=torch.Generator().manual_seed(0)) * 5
    for kind in ("tree", "uniform"):
        t = sl.build(kind, tax.n_classes, 0.2, taxonomy=tax, k=8, beta=2.0)
        torch.testing.assert_close(L.soft_kl(z, y, t, "none").double(), dense_kl(z, y, t.dense()),
                                   atol=2e-5, rtol=1e-5)


def test_check_labels_false_skips_only_the_label_range_sync(monkeypatch):
    """The trainer validates labels once and passes check_labels=False: the losses then never read
    a label back to the host (no .min()/.max() sync per step); the values are unchanged; shape and
    dtype checks (no sync) stay."""
    t = make_targets("topk", 10, 0.2, 0)
    z, y = torch.randn(6, 10), torch.tensor([0, 3, 9, 1, 1, 4])
    want = L.combined_loss(z, y, t, alpha=torch.ones(10))
    synced = []
    real_int = int

    class Spy(torch.Tensor):
        pass

    def no_sync(self):
        synced.append(self)
        raise AssertionError("label read back to the host")
    ys = y.as_subclass(Spy)
    monkeypatch.setattr(Spy, "__int__", no_sync, raising=False)
    monkeypatch.setattr(Spy, "item", no_sync, raising=False)
    got = L.combined_loss(z, ys, t, alpha=torch.ones(10), check_labels=False)
    assert not synced
    for k in want:
        torch.testing.assert_close(got[k].as_subclass(torch.Tensor), want[k])
    with pytest.raises(AssertionError, match="host"):                 # the default still checks
        L.combined_loss(z, ys, t, alpha=torch.ones(10))
    with pytest.raises(ValueError, match="integer class indices"):
        L.focal_loss(z, torch.zeros(6), check_labels=False)
    assert real_int(L.code_bce_loss(torch.zeros(2, 3), torch.tensor([0, 1]), torch.eye(3)[:2], check_labels=False) > 0)
