"""The trainer's seams: callbacks over one loop and one history, checkpoint safety, the registries
(metrics, soft-label kinds) that evaluate/compare/early stopping/tables/CLI read."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import semcat_kit as sk
from semcat_kit import comparison, losses, metrics, soft_labels, trainer as T
from semcat_kit.labels.similarity import Neighbors
from semcat_kit.learn.training import TrainConfig, load_checkpoint, train

# the minibatch trainer and its callbacks
FAST = dict(epochs=4, proj_dim=16, hidden=32, batch_size=32, lr=3e-3, device="cpu", solver="minibatch")


@pytest.fixture(scope="module")
def toy():
    paths = [f"Top{i // 4} > Leaf{i}" for i in range(8)]
    tax = sk.Taxonomy.from_paths(paths)
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(8), 24)
    centers = rng.normal(size=(8, 12))
    emb = (centers[y] + 0.3 * rng.normal(size=(len(y), 12))).astype(np.float32)
    nb = sk.similarity.label_neighbors(centers.astype(np.float32), k=3)
    return tax, emb, y, nb


# ------------------------------------------------------------------ callbacks
class Recorder(T.Callback):
    def __init__(self, stop_after=None):
        self.calls, self.stop_after = [], stop_after

    def on_train_begin(self, t):
        self.calls.append("begin")

    def on_epoch_begin(self, t):
        self.calls.append(f"epoch{t.epoch + 1}")

    def on_step_end(self, t):
        self.calls.append("step")

    def on_epoch_end(self, t):
        self.calls.append(f"end{t.epoch}:{'loss' in t.row}")
        if self.stop_after == t.epoch:
            t.stop = True

    def on_train_end(self, t):
        self.calls.append("finish")


def test_custom_callbacks_see_every_hook_and_can_stop(toy, tmp_path):
    tax, emb, y, _ = toy
    rec = Recorder(stop_after=2)
    run = train(emb, y, taxonomy=tax, config=TrainConfig(**FAST, early_stopping=None), callbacks=[rec],
                log_csv=tmp_path / "log.csv", progress=False)
    steps = int(np.ceil(len(y) / FAST["batch_size"]))
    assert rec.calls == (["begin", "epoch1"] + ["step"] * steps + ["end1:True", "epoch2"] + ["step"] * steps
                         + ["end2:True", "finish"])
    assert len(run.history) == 2
    logged = pd.read_csv(tmp_path / "log.csv")       # MetricLogger: one row per epoch, as the history
    pd.testing.assert_frame_equal(logged[["epoch", "loss"]], run.history[["epoch", "loss"]], check_dtype=False)


def test_divergence_checked_every_n_steps_still_names_the_batch(toy, monkeypatch):
    tax, emb, y, _ = toy
    real = losses.combined_loss
    n = {"calls": 0}

    def nan_at_step_3(*a, **k):
        n["calls"] += 1
        out = real(*a, **k)
        if n["calls"] == 3:
            out["total"] = out["total"] * float("nan")
        return out
    monkeypatch.setattr(losses, "combined_loss", nan_at_step_3)
    with pytest.raises(T.TrainingDivergedError, match=r"loss became nan at epoch 1, batch 3 of 6"):
        train(emb, y, taxonomy=tax, config=TrainConfig(**FAST, early_stopping=None, check_every=4), progress=False)
    assert n["calls"] == 4          # checked once after step 4 (one host sync per 4 steps), not per step


def test_batch_sampler_ranks_partition_the_global_batch():
    for chunk in (None, 7):
        one = T.BatchSampler(50, 8, torch.Generator().manual_seed(3), chunk_size=chunk).epoch()
        parts = [T.BatchSampler(50, 8, torch.Generator().manual_seed(3), rank=r, world=3, chunk_size=chunk).epoch()
                 for r in range(3)]
        # 50 rows = 6 batches of 8 + 2 rows: fewer than 3 ranks, so with 3 ranks the last 2 rows
        # join the 6th batch (every rank gets a row of every step)
        assert len(one) == 7 and all(len(p) == 6 for p in parts)
        for b in range(6):
            full = one[b] if b < 5 else torch.cat(one[5:])
            got = torch.cat([p[b] for p in parts])
            assert sorted(got.tolist()) == sorted(full.tolist())
            assert min(len(p[b]) for p in parts) >= 1
        assert sorted(torch.cat(one).tolist()) == list(range(50))   # a permutation per epoch
    two = [T.BatchSampler(33, 32, torch.Generator().manual_seed(0), rank=r, world=2).epoch() for r in range(2)]
    assert [len(b) for b in two[0]] == [17] and [len(b) for b in two[1]] == [16]
    assert len(T.BatchSampler(34, 32, torch.Generator(), world=2)) == 2          # 2 rows left: one each
    with pytest.raises(ValueError, match="1 training row.*2 processes"):
        T.BatchSampler(1, 32, torch.Generator(), world=2)
    chunked = torch.cat(T.BatchSampler(50, 8, torch.Generator().manual_seed(3), chunk_size=5, window=2).epoch())
    # blocks of 5 rows, windows of 2 blocks: each run of 10 draws comes from exactly two blocks
    assert all(len(set((chunked[i:i + 10] // 5).tolist())) == 2 for i in range(0, 50, 10))
    assert sorted(chunked.tolist()) == list(range(50))


# ------------------------------------------------------------------ checkpoints (lost-work guards)
def test_checkpoint_folder_of_another_run_is_refused(toy, tmp_path):
    tax, emb, y, _ = toy
    cfg = TrainConfig(**FAST, early_stopping=None)
    train(emb, y, taxonomy=tax, config=cfg, checkpoint_dir=tmp_path, progress=False)
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(ValueError, match=rf"checkpoint_dir {tmp_path} already holds a run at epoch 4 of 4 "
                                         r"\(config: TrainConfig\(.*lr=0.003.*\)\); pass resume="):
        train(emb, y, taxonomy=tax, config=cfg.replace(lr=0.01), checkpoint_dir=tmp_path, progress=False)
    assert (tmp_path / "last.pt").read_bytes() == before            # nothing lost
    run = train(emb, y, taxonomy=tax, config=cfg.replace(lr=0.01), checkpoint_dir=tmp_path, overwrite=True,
                progress=False)
    assert load_checkpoint(tmp_path)["config"]["lr"] == 0.01 and len(run.history) == 4


def test_checkpoint_folder_problems_found_before_epoch_1(toy, tmp_path, monkeypatch):
    tax, emb, y, _ = toy
    calls = {"n": 0}
    real = losses.combined_loss

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)
    monkeypatch.setattr(losses, "combined_loss", counting)
    cfg = TrainConfig(**FAST, early_stopping=None)
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(T.CheckpointError, match=rf"checkpoint_dir {afile} is a file, not a folder"):
        train(emb, y, taxonomy=tax, config=cfg, checkpoint_dir=afile, progress=False)
    with pytest.raises(T.CheckpointError, match=r"checkpoint_dir /proc/version/ck is not writable"):
        train(emb, y, taxonomy=tax, config=cfg, checkpoint_dir="/proc/version/ck", progress=False)
    assert calls["n"] == 0            # refused before any training step


def test_checkpoint_write_failure_names_the_folder(toy, tmp_path, monkeypatch):
    tax, emb, y, _ = toy
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        if str(f).endswith(".pt") or "last.pt" in str(f):
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *a, **k)
    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(T.CheckpointError, match=rf"could not write the checkpoint {tmp_path}/last.pt .*"
                                                r"No space left on device.*free space"):
        train(emb, y, taxonomy=tax, config=TrainConfig(**FAST, early_stopping=None), checkpoint_dir=tmp_path,
              progress=False)
    assert not any(p.name.startswith("last.pt") for p in tmp_path.iterdir())   # no half-written file


def test_resume_with_other_embeddings_same_labels_is_refused(toy, tmp_path):
    tax, emb, y, _ = toy
    cfg = TrainConfig(**FAST, early_stopping=None)
    train(emb, y, taxonomy=tax, config=cfg, checkpoint_dir=tmp_path, progress=False)
    other = emb[::-1].copy()
    with pytest.raises(ValueError, match="training embeddings differ from the checkpointed run"):
        train(other, y, taxonomy=tax, config=cfg, resume=tmp_path, progress=False)
    # the same embeddings resume (nothing left to train: all epochs done)
    again = train(emb, y, taxonomy=tax, config=cfg, resume=tmp_path, progress=False)
    assert len(again.history) == 4


# ------------------------------------------------------------------ soft-label registry
def test_threshold_kind_is_semantic_over_neighbours_above_the_threshold():
    idx = np.array([[1, 2, 3], [0, 2, -1], [3, 1, 0], [2, 0, 1]])
    sims = np.array([[.9, .6, .2], [.9, .3, 0], [.8, .55, .1], [.7, .2, .1]], dtype=np.float32)
    nb = Neighbors(idx, sims)
    t = soft_labels.build("threshold", 4, 0.2, neighbors=nb, temperature=0.5, threshold=0.5)
    d = t.dense()
    # class 0: neighbours 1 (.9) and 2 (.6) pass, 3 (.2) does not
    w = np.exp(np.array([.9, .6]) / 0.5)
    w /= w.sum()
    np.testing.assert_allclose(d[0], [0.8, 0.2 * w[0], 0.2 * w[1], 0], atol=1e-6)
    # class 1: only neighbour 0 passes -> all alpha on it
    np.testing.assert_allclose(d[1], [0.2, 0.8, 0, 0], atol=1e-6)
    # threshold below every similarity = semantic
    np.testing.assert_allclose(soft_labels.build("threshold", 4, 0.2, neighbors=nb, temperature=0.5,
                                                 threshold=-1).dense(),
                               soft_labels.build("semantic", 4, 0.2, neighbors=nb, temperature=0.5).dense())
    # threshold above every similarity = one-hot
    np.testing.assert_allclose(soft_labels.build("threshold", 4, 0.2, neighbors=nb, threshold=0.95).dense(),
                               np.eye(4))
    with pytest.raises(ValueError, match="needs neighbors"):
        soft_labels.build("threshold", 4, 0.2)
    with pytest.raises(ValueError, match=r"does not take \['beta2'\]"):
        soft_labels.build("threshold", 4, 0.2, neighbors=nb, beta2=1)


def test_threshold_kind_reaches_config_suite_cli_and_training(toy, capsys):
    tax, emb, y, nb = toy
    assert "threshold" in soft_labels.KINDS
    cfg = TrainConfig(**FAST, smoothing="threshold", sim_threshold=0.0, k=3, early_stopping=None)
    assert soft_labels.config_params("threshold", cfg) == {"temperature": cfg.temperature, "threshold": 0.0}
    run = train(emb, y, taxonomy=tax, neighbors=nb, config=cfg, progress=False)
    assert run.history["kl"].gt(0).all()
    with pytest.raises(ValueError, match="smoothing='threshold' needs neighbors"):
        train(emb, y, taxonomy=tax, config=cfg, progress=False)
    with pytest.raises(ValueError, match=r"TrainConfig.sim_threshold = 2 is out of range"):
        TrainConfig(sim_threshold=2)
    suite = comparison.default_suite(epochs=2, k=3)
    assert suite["top-3 semantic, sim ≥ 0.5"].smoothing == "threshold"
    from semcat_kit import cli
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    assert "threshold" in out and "sim_threshold" in out


def test_a_kind_registered_once_is_everywhere(toy):
    tax, emb, y, nb = toy

    def first_neighbour_only(C, a, *, neighbors, **_):
        idx = neighbors.indices[:, :1]
        return soft_labels.spread_targets(C, a, idx, (idx >= 0).astype(float))
    kind = soft_labels.TargetKind("nearest1", first_neighbour_only, needs_neighbors=True,
                                  doc="all alpha on the nearest neighbour", suite_name="nearest neighbour")
    soft_labels.register_kind(kind)
    try:
        cfg = TrainConfig(**FAST, smoothing="nearest1", early_stopping=None)       # config accepts it
        assert "nearest neighbour" in comparison.default_suite(epochs=1)           # the suite has a row
        run = train(emb, y, taxonomy=tax, neighbors=nb, config=cfg, progress=False)  # training builds it
        assert len(run.history) == 4
        with pytest.raises(ValueError, match="already registered"):
            soft_labels.register_kind(kind)
    finally:
        del soft_labels.TARGET_KINDS["nearest1"]
        soft_labels.KINDS = tuple(soft_labels.TARGET_KINDS)


# ------------------------------------------------------------------ metric registry
def test_metric_registry_describes_evaluate_and_directions(toy):
    tax, *_ = toy
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(tax.n_classes), size=20)
    yy = rng.integers(0, tax.n_classes, 20)
    C = tax.n_classes
    nb = Neighbors((np.arange(C)[:, None] + np.arange(1, 4)[None, :]) % C, np.ones((C, 3), np.float32))
    for with_nb in (False, True):
        s = sk.evaluate(p, yy, tax, neighbors=nb if with_nb else None)
        assert list(s.index) == metrics.metric_names(tax, neighbors=with_nb)
    for name, low in [("top1", False), ("val_hdist@5", True), ("mistake_severity_mean", True), ("val_loss", True),
                      ("acc_level_2", False), ("train_seconds", True), ("nbrs@5", False), ("ece", True)]:
        assert metrics.lower_is_better(name) is low, name
    assert metrics.metric_info("val_nbrs@20").needs_neighbors
    assert TrainConfig(early_stopping="val_hdist@5").minimize and not TrainConfig().minimize
    with pytest.raises(KeyError, match="not a registered metric"):
        metrics.metric_info("accuracy")
    with pytest.raises(ValueError, match="already registered"):
        metrics.register_metric(metrics.Metric("top{k}", "dup"))
    assert set(metrics.METRIC_DEFINITIONS) >= {"top1", "hdist@{k}", "nbrs@{k}", "ece"}


def test_format_table_marks_directions_from_the_registry():
    df = pd.DataFrame({"top1_mean": [0.9], "top1_std": [0.01], "hdist@5_mean": [1.2], "hdist@5_std": [0.1]},
                      index=["one-hot"])
    md = comparison.format_table(df, metrics=["top1", "hdist@5"], directions=True)
    assert md.splitlines()[0] == "| config | top1 ↑ | hdist@5 ↓ |"


# ------------------------------------------------------------------ memory-mapped training tables
def test_memory_mapped_embeddings_train_like_in_memory(toy, tmp_path):
    """A memory-mapped (lazy) table gives the same batches' contents: with one chunk covering the
    whole table the chunked sampler is a plain permutation, so the run equals the in-memory one."""
    from semcat_kit import contracts

    tax, emb, y, nb = toy
    mm = np.lib.format.open_memmap(tmp_path / "text.npy", mode="w+", dtype=np.float16, shape=emb.shape)
    mm[:] = emb
    mm.flush()
    mm = np.load(tmp_path / "text.npy", mmap_mode="r")
    table = contracts.as_embedding_table(mm, "emb")
    assert isinstance(table, contracts.LazyEmbeddingTable)           # not copied into memory
    ref = train(mm.astype(np.float32), y, taxonomy=tax, config=TrainConfig(**FAST, early_stopping=None),
                progress=False)
    lazy = train(mm, y, taxonomy=tax, config=TrainConfig(**FAST, early_stopping=None, shuffle_chunk=10_000),
                 progress=False)
    for k, v in ref.model.state_dict().items():
        assert torch.allclose(v, lazy.model.state_dict()[k], atol=1e-6), k
    # blocks of 2 rows (windows of 64 blocks = 128 rows from random places) on a table sorted by
    # class still learn the toy problem as well as a full permutation
    long = {**FAST, "epochs": 12}
    full = train(mm, y, taxonomy=tax, config=TrainConfig(**long, early_stopping=None), progress=False)
    chunked = train(mm, y, taxonomy=tax, config=TrainConfig(**long, early_stopping=None, shuffle_chunk=2),
                    progress=False)
    acc = lambda r: (r.predict_proba(mm).argmax(1) == y).mean()    # noqa: E731
    assert acc(full) > 0.85 and acc(chunked) >= acc(full) - 0.05, (acc(full), acc(chunked))


def test_memory_mapped_nan_rows_are_named(tmp_path):
    from semcat_kit import contracts

    x = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=(70_000, 4))
    x[:] = 1.0
    x[66_000] = np.nan
    x.flush()
    with pytest.raises(ValueError, match=r"emb.text has NaN or infinite values at row 66000"):
        contracts.as_embedding_table(np.load(tmp_path / "x.npy", mmap_mode="r"), "emb")


def test_store_view_embeddings_train_and_predict_like_in_memory(toy, tmp_path):
    """An Embeddings whose vectors are a StoreRows view on the embedding store (encode_catalog at
    scale) trains to the same head as the in-memory arrays and predicts the same probabilities,
    without materialising the table (the lazy path reads rows batch by batch)."""
    from semcat_kit import contracts
    from semcat_kit.encode.store import StoreRows, VectorStore, content_keys

    tax, emb, y, nb = toy
    emb = np.asarray(emb, dtype=np.float32)
    st = VectorStore(tmp_path / "store", emb.shape[1], base_rows=16, merge_factor=4)
    keys = content_keys([f"item-{i}" for i in range(len(emb))])
    order = np.random.default_rng(0).permutation(len(emb))            # written in another order
    for a in range(0, len(emb), 37):
        st.put(keys[order[a:a + 37]], emb[order[a:a + 37]])
        st.flush()
    view = st.locate(keys)
    assert isinstance(view, StoreRows) and view.found.all() and len(st.shard_files) > 1
    e = sk.Embeddings(np.arange(len(emb)).astype(str), view, None, np.ones(len(emb), bool), np.zeros(len(emb), bool))
    assert isinstance(e.text, StoreRows)
    assert isinstance(contracts.as_embedding_table(e, "emb"), contracts.LazyEmbeddingTable)
    cfg = TrainConfig(**FAST, early_stopping=None, shuffle_chunk=10_000)
    ref = train(emb, y, taxonomy=tax, config=cfg, progress=False)
    got = train(e, y, taxonomy=tax, config=cfg, progress=False)
    for k, v in ref.model.state_dict().items():
        assert torch.allclose(v, got.model.state_dict()[k], atol=1e-6), k
    np.testing.assert_allclose(got.predict_proba(e.take(np.arange(10))), ref.predict_proba(emb[:10]), atol=1e-6)


def test_fp16_steps_go_through_a_grad_scaler_saved_in_checkpoints(toy, tmp_path):
    """fp16 (CUDA in TrainConfig; the Trainer itself on CPU here) scales the loss so small
    gradients do not underflow, unscales before the AdamW step, and the scaler's state is part of
    a checkpoint; fp32 and bf16 use none."""
    tax, emb, y, nb = toy
    from semcat_kit import contracts
    from semcat_kit.learn.model import FusionHead

    data = contracts.as_embedding_table(emb)

    def make(dtype):
        torch.manual_seed(0)
        model = FusionHead(12, None, 8, proj_dim=16, hidden=32)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        loss = lambda z, yb, t: {"total": losses.focal_loss(z, yb, check_labels=False)}   # noqa: E731
        return T.Trainer(model, opt, sched, data, y, loss, epochs=2, batch_size=32, device=torch.device("cpu"),
                         dtype=dtype, generator=torch.Generator().manual_seed(0),
                         callbacks=[T.Checkpoint(tmp_path / str(dtype), 1)])
    assert not make(torch.float32).scaler.is_enabled() and not make(torch.bfloat16).scaler.is_enabled()
    t = make(torch.float16)
    assert t.scaler.is_enabled()
    before = [p.detach().clone() for p in t.module.parameters()]
    t.fit()
    assert all(np.isfinite(h["loss"]) for h in t.history)
    assert any(not torch.equal(a, b) for a, b in zip(before, t.module.parameters()))     # it learned
    ck = load_checkpoint(tmp_path / str(torch.float16))
    assert ck["grad_scaler"]["scale"] == t.scaler.get_scale() and ck["grad_scaler"]["scale"] > 0
    fresh = make(torch.float16)
    fresh.restore(ck)
    assert fresh.scaler.get_scale() == t.scaler.get_scale()
