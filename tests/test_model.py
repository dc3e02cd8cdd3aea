"""FusionHead: shapes per fusion mode, missing modalities, modality dropout, config round trip, errors."""
import pytest
import torch

from semcat_kit.learn.model import FusionHead


def _inputs(n=12, dt=8, di=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dt, generator=g), torch.randn(n, di, generator=g)


@pytest.mark.parametrize("fusion", ["concat", "gated", "text", "image", "text-only", "image-only"])
def test_output_shape_each_fusion(fusion):
    torch.manual_seed(0)
    t, v = _inputs()
    head = FusionHead(8, 6, n_classes=5, fusion=fusion, proj_dim=4, hidden=16).eval()
    out = head(t, v)
    assert out.shape == (12, 5)
    assert torch.isfinite(out).all()


def test_single_modality_data():
    t, v = _inputs()
    head = FusionHead(8, None, 5, proj_dim=4, hidden=16).eval()
    assert head(t, None).shape == (12, 5)
    head = FusionHead(0, 6, 5, proj_dim=4, hidden=16).eval()
    assert head(None, v).shape == (12, 5)
    assert head.config["text_dim"] is None


def test_out_dim_for_codes():
    t, v = _inputs()
    head = FusionHead(8, 6, n_classes=50, out_dim=9, proj_dim=4, hidden=16)
    assert head(t, v).shape == (12, 9)
    assert head.config["out_dim"] == 9


@pytest.mark.parametrize("fusion", ["concat", "gated"])
def test_config_rebuilds_same_function(fusion):
    torch.manual_seed(1)
    t, v = _inputs()
    head = FusionHead(8, 6, 5, fusion=fusion, proj_dim=4, hidden=16, dropout=0.3, modality_dropout=0.2).eval()
    twin = FusionHead(**head.config)
    twin.load_state_dict(head.state_dict())
    twin.eval()
    mask = torch.tensor([True, False] * 6)
    assert torch.equal(head(t, v, image_mask=mask), twin(t, v, image_mask=mask))
    assert twin.config == head.config


@pytest.mark.parametrize("fusion", ["concat", "gated"])
@pytest.mark.parametrize("missing", ["image", "text"])
def test_a_missing_modality_is_ignored(fusion, missing):
    torch.manual_seed(2)
    t, v = _inputs()
    head = FusionHead(8, 6, 5, fusion=fusion, proj_dim=4, hidden=16).eval()
    mask = {f"{missing}_mask": torch.zeros(12, dtype=torch.bool)}
    other = (t, v * 100 + 3) if missing == "image" else (-t * 7, v)      # the masked input changed
    assert torch.allclose(head(t, v, **mask), head(*other, **mask))
    # and it does matter when present
    assert not torch.allclose(head(t, v), head(*other))


def test_presence_flags_change_concat_input():
    """In concat mode the presence flags reach the MLP: a zero image projection with the flag on
    differs from a missing image."""
    torch.manual_seed(4)
    t, _ = _inputs()
    head = FusionHead(8, 6, 5, proj_dim=4, hidden=16).eval()
    with torch.no_grad():
        head.image_proj[1].weight.zero_()
        head.image_proj[1].bias.zero_()
    v = torch.randn(12, 6)
    on = head(t, v, image_mask=torch.ones(12, dtype=torch.bool))
    off = head(t, v, image_mask=torch.zeros(12, dtype=torch.bool))
    assert not torch.allclose(on, off)


def test_modality_dropout_drops_exactly_one_modality_in_training():
    torch.manual_seed(5)
    t, v = _inputs(n=200)
    head = FusionHead(8, 6, 5, proj_dim=4, hidden=16, dropout=0.0, modality_dropout=0.9)
    head.train()
    out = head(t, v)
    head.eval()
    full = head(t, v)
    no_img = head(t, v, image_mask=torch.zeros(200, dtype=torch.bool))
    no_txt = head(t, v, text_mask=torch.zeros(200, dtype=torch.bool))
    is_full = torch.isclose(out, full, atol=1e-6).all(1)
    is_noimg = torch.isclose(out, no_img, atol=1e-6).all(1)
    is_notxt = torch.isclose(out, no_txt, atol=1e-6).all(1)
    assert (is_full | is_noimg | is_notxt).all()
    assert is_noimg.sum() > 40 and is_notxt.sum() > 40 and is_full.sum() > 5
    # a sample with only one modality never loses it
    head.train()
    only_text = head(t, v, image_mask=torch.zeros(200, dtype=torch.bool))
    head.eval()
    assert torch.allclose(only_text, no_img, atol=1e-6)


def test_eval_mode_is_deterministic():
    t, v = _inputs()
    head = FusionHead(8, 6, 5, proj_dim=4, hidden=16, modality_dropout=0.5).eval()
    assert torch.equal(head(t, v), head(t, v))


def test_gradients_reach_both_projections():
    t, v = _inputs()
    head = FusionHead(8, 6, 5, fusion="gated", proj_dim=4, hidden=16, modality_dropout=0.0)
    head(t, v).sum().backward()
    assert head.text_proj[1].weight.grad.abs().sum() > 0
    assert head.image_proj[1].weight.grad.abs().sum() > 0
    assert head.gate.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(text_dim=None, image_dim=None, n_classes=3), "at least one modality"),
    (dict(text_dim=0, image_dim=4, n_classes=3, fusion="text"), "fusion='text'"),
    (dict(text_dim=4, image_dim=None, n_classes=3, fusion="image"), "fusion='image'"),
    (dict(text_dim=4, image_dim=4, n_classes=3, fusion="sum"), "fusion must be one of"),
    (dict(text_dim=4, image_dim=4, n_classes=0), "n_classes"),
    (dict(text_dim=-1, image_dim=4, n_classes=3), "text_dim"),
    (dict(text_dim=4, image_dim=4, n_classes=3, dropout=1.0), "dropout"),
    (dict(text_dim=4, image_dim=4, n_classes=3, out_dim=0), "out_dim"),
])
def test_bad_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FusionHead(**kwargs)


def test_bad_forward_inputs():
    t, v = _inputs()
    head = FusionHead(8, 6, 5, proj_dim=4, hidden=16)
    with pytest.raises(ValueError, match=r"image embeddings have shape \(12, 5\).*\(N, 6\)"):
        head(t, v[:, :5])
    with pytest.raises(ValueError, match="needs the image embeddings"):
        head(t, None)
    with pytest.raises(ValueError, match="text has 12 rows but image has 11"):
        head(t, v[:11])
    with pytest.raises(ValueError, match="image_mask has shape"):
        head(t, v, image_mask=torch.ones(3, dtype=torch.bool))


def test_nan_in_missing_rows_does_not_leak():
    t, v = _inputs()
    v[3] = float("nan")
    head = FusionHead(8, 6, 5, proj_dim=4, hidden=16).eval()
    mask = torch.ones(12, dtype=torch.bool)
    mask[3] = False
    out = head(t, v, image_mask=mask)
    assert torch.isfinite(out).all()


def test_numpy_integer_sizes_accepted_and_config_stays_json():
    import json

    import numpy as np

    t, v = _inputs()
    head = FusionHead(np.int64(8), np.int32(6), np.int64(5), proj_dim=np.int64(4), hidden=np.int64(16),
                      out_dim=np.int64(7)).eval()
    assert head(t, v).shape == (12, 7)
    cfg = json.loads(json.dumps(head.config))
    assert cfg["text_dim"] == 8 and cfg["n_classes"] == 5 and type(head.config["image_dim"]) is int
    with pytest.raises(ValueError, match="n_classes must be a positive int"):
        FusionHead(8, 6, np.float64(5.0))


# ------------------------------------------------------------------ the trainer's fast paths (issue 28)
@pytest.mark.parametrize("proj_dim,hidden,input_norm", [(0, 0, False), (4, 16, True), (0, 16, True)])
def test_fused_zeroes_missing_parts_and_nan_placeholders_like_the_definition(proj_dim, hidden, input_norm):
    """The fused row (the linear head's concat fast path included) equals its definition: each
    modality's projection with missing rows zeroed, the presence flags; NaN placeholders in missing
    rows never leak, and gradients reach the head as through the plain formula."""
    t, v = _inputs()
    t[2], v[5] = float("nan"), float("inf")
    tm = torch.ones(12, dtype=torch.bool)
    vm = torch.ones(12, dtype=torch.bool)
    tm[2], vm[5], vm[7] = False, False, False
    head = FusionHead(8, 6, 5, proj_dim=proj_dim, hidden=hidden, input_norm=input_norm).eval()
    h = head.fused(t, v, image_mask=vm, text_mask=tm)
    tz = torch.where(tm[:, None], t, 0.0)
    vz = torch.where(vm[:, None], v, 0.0)
    want = torch.cat([head.text_proj(tz) * tm[:, None], head.image_proj(vz) * vm[:, None],
                      torch.stack([tm, vm], 1).float()], 1)
    assert torch.isfinite(h).all()
    torch.testing.assert_close(h, want)
    out = head(t, v, image_mask=vm, text_mask=tm)
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)
    assert t[2].isnan().all() and v[5].isinf().all()          # the inputs are not modified


def test_cpu_dropout_rate_scale_gradient_and_seed():
    from semcat_kit.learn.model import Dropout

    d = Dropout(0.2).train()
    x = torch.randn(512, 300, requires_grad=True)
    torch.manual_seed(0)
    y = d(x)
    kept = y != 0
    p_eff = round(0.2 * 32768) / 32768
    assert abs(kept.float().mean().item() - (1 - p_eff)) < 0.005          # 153,600 draws: 4 sd ~ 0.004
    torch.testing.assert_close(y[kept], x[kept] / (1 - p_eff))             # inverted dropout: E[y] = x
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(x.grad, kept.float() / (1 - p_eff))
    torch.manual_seed(0)
    assert torch.equal(d(x), y)                                            # the global RNG: reproducible
    # every 15-bit lane of the 64-bit draws is used: the rate holds in each of the four columns mod 4
    flat = (d(torch.ones(4096, 4)) != 0).float()
    assert all(abs(flat[:, j].mean().item() - (1 - p_eff)) < 0.03 for j in range(4))
    assert torch.equal(d.eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    assert isinstance(FusionHead(8, 6, 5, hidden=0).mlp[0], torch.nn.Dropout)   # state-dict keys unchanged
