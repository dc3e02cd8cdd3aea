"""Full-batch fitting (semcat_kit.learn.solver, solver="lbfgs"): convergence, stacking, the solver choice."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import semcat_kit as sk
from semcat_kit.learn.solver import lbfgs
from semcat_kit.learn.training import train_stacked

LINEAR = dict(hidden=0, proj_dim=0, input_norm=False, focal_gamma=0.0)


def _problem(n=400, d=12, di=6, C=6, seed=0, image=True):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    I = rng.normal(size=(n, di)).astype(np.float32) if image else None
    W = rng.normal(size=(d, C))
    y = (X @ W + rng.gumbel(size=(n, C))).argmax(1)
    paths = [f"{'A' if c % 2 else 'B'} > c{c}" for c in range(C)]
    tax = sk.Taxonomy.from_paths(paths)
    y = tax.index_of([paths[c] for c in y])
    mask_i = np.zeros(n, bool)
    if image:
        mask_i[:] = True
        mask_i[::7] = False                 # some products without an image
    emb = sk.Embeddings(np.arange(n).astype(str), X, I, np.ones(n, bool), mask_i)
    return tax, emb, y


def _split(emb, y, val=0.25):
    n = len(y)
    cut = int(n * (1 - val))
    return (emb.take(np.arange(cut)), y[:cut]), (emb.take(np.arange(cut, n)), y[cut:])


def test_batched_lbfgs_solves_independent_quadratics():
    # f_k(x) = 1/2 (x - a_k)' A_k (x - a_k): K problems of different conditioning, solved at once
    g = torch.Generator().manual_seed(0)
    K, P = 4, 30
    a = torch.randn(K, P, generator=g, dtype=torch.float64)
    Q = torch.linalg.qr(torch.randn(K, P, P, generator=g, dtype=torch.float64))[0]
    eig = torch.stack([torch.logspace(0, e, P, dtype=torch.float64) for e in (0, 1, 2, 3)])
    A = Q @ torch.diag_embed(eig) @ Q.transpose(1, 2)

    def fun(x, idx):
        r = x - a[idx]
        Ar = torch.einsum("kij,kj->ki", A[idx], r)
        return 0.5 * (r * Ar).sum(1), Ar

    res = lbfgs(fun, torch.zeros(K, P, dtype=torch.float64), max_iter=2000, gtol=1e-9, ftol=0.0)
    assert bool(res.converged.all())
    assert torch.allclose(res.x, a, atol=1e-6)
    # harder problems need more steps; the easy one is not held back by them (it leaves the stack)
    assert res.iterations[0] < res.iterations[3]
    # every evaluation is counted once per problem it covered: the widths sum to the problem-evaluations
    widths = []

    def counted(x, idx):
        widths.append(int(idx.numel()))
        return fun(x, idx)

    res2 = lbfgs(counted, torch.zeros(K, P, dtype=torch.float64), max_iter=2000, gtol=1e-9, ftol=0.0)
    assert res2.evaluations == len(widths) and res2.problem_evaluations == sum(widths)
    assert res2.evaluations < res2.problem_evaluations < K * res2.evaluations


def test_full_batch_linear_head_reaches_the_logistic_regression_optimum():
    from sklearn.linear_model import LogisticRegression

    tax, emb, y = _problem(image=False)
    cfg = sk.TrainConfig(**LINEAR, C=1.0, tol=1e-7, max_iter=2000)
    run = sk.train(emb, y, taxonomy=tax, config=cfg, progress=False)
    assert run.solver["method"] == "lbfgs" and run.solver["converged"]
    lr = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(emb.text, y)
    w = run.model.mlp[-1].weight.detach().numpy()
    b = run.model.mlp[-1].bias.detach().numpy()
    # same objective: mean cross-entropy + ||W||^2 / (2 C N), intercept not penalised
    assert np.abs(w - lr.coef_).max() < 2e-3
    assert np.abs((b - b.mean()) - (lr.intercept_ - lr.intercept_.mean())).max() < 2e-3
    assert np.abs(run.predict_proba(emb) - lr.predict_proba(emb.text)).max() < 1e-3


def _ill_conditioned(n=1500, d=40, C=8, seed=0):
    """Correlated features whose covariance eigenvalues span 4 orders of magnitude (as fused
    embeddings do), labels from a linear model with noise."""
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    X = (rng.normal(size=(n, d)) * np.logspace(-2, 0, d)) @ Q.T + 0.3
    y = (X @ rng.normal(size=(d, C)) * 20 + rng.gumbel(size=(n, C))).argmax(1)
    paths = [f"{'A' if c % 2 else 'B'} > c{c}" for c in range(C)]
    tax = sk.Taxonomy.from_paths(paths)
    y = tax.index_of([paths[c] for c in y])
    emb = sk.Embeddings(np.arange(n).astype(str), X.astype(np.float32), None, np.ones(n, bool), np.zeros(n, bool))
    return tax, emb, y


def test_the_feature_basis_is_an_exact_change_of_variables():
    """W U = A diag(d), b' = b + W m: the same logits and the same penalty, and back again."""
    from semcat_kit._core.contracts import as_embedding_table
    from semcat_kit.learn.solver import FeatureBasis, StackedHeads

    tax, emb, y = _ill_conditioned()
    head = sk.FusionHead(40, 0, tax.n_classes, hidden=0, proj_dim=0, input_norm=False, dropout=0.0).eval()
    stack = StackedHeads.for_head(head)
    feats = stack.features(as_embedding_table(emb, "train"))
    basis = FeatureBasis.of(feats)
    chunked = FeatureBasis.of(feats, chunk_bytes=4 * 40 * 128)          # 128 rows a chunk: the same basis
    assert torch.allclose(chunked.variance, basis.variance, rtol=1e-4, atol=1e-9)
    assert torch.allclose(chunked.rotated.abs(), basis.rotated.abs(), atol=1e-3)
    # an orthonormal eigenbasis of the centred features' covariance, eigenvalues ascending
    U = basis.rotation.double()
    assert torch.allclose(U.T @ U, torch.eye(40, dtype=torch.float64), atol=1e-5)
    Xc = feats[:, :-1].double() - feats[:, :-1].double().mean(0)
    cov = Xc.T @ Xc / len(Xc)
    assert torch.allclose(U.T @ cov @ U, torch.diag(basis.variance), atol=1e-6 * float(basis.variance.max()))
    assert float(basis.variance.max() / basis.variance.min()) > 1e3
    x = torch.randn(3, stack.n_params, generator=torch.Generator().manual_seed(1))
    l2 = torch.tensor([1e-2, 1e-4, 1e-6])
    v = torch.linspace(0.05, 0.25, tax.n_classes, dtype=torch.float64)         # per-output curvature
    d = basis.scales(l2, v)
    # d_cj = (v_c s_j + lambda)^(-1/2) on the weights, v_c^(-1/2) on the biases
    d1 = d[0].view(tax.n_classes, 41)[1]
    expect = (v[1] * basis.variance + 1e-2).rsqrt().float()
    assert torch.allclose(d1[:40], expect, rtol=1e-5) and float(d1[40]) == pytest.approx(float(v[1]) ** -0.5)
    a = basis.to_basis(x, d, tax.n_classes)
    assert torch.allclose(basis.from_basis(a, d, tax.n_classes), x, atol=1e-4)
    z_orig = stack.logits(x, feats)
    z_basis = stack.logits(a * d, basis.rotated)
    assert torch.allclose(z_orig, z_basis, atol=1e-4 * float(z_orig.abs().max()))
    pen = stack.penalised
    w_orig = (x[:, pen] ** 2).sum(1)
    w_basis = ((a * d)[:, pen] ** 2).sum(1)
    assert torch.allclose(w_orig, w_basis, rtol=1e-4)


def test_the_preconditioned_fit_reaches_the_same_optimum_in_fewer_evaluations():
    """On ill-conditioned features the fit in the feature basis ends at the plain fit's optimum
    (one convex objective; both run to a tight tolerance) in fewer objective evaluations, at a weak
    and at a strong regularisation, with soft targets and one-hot ones stacked (measured: 349
    against 501)."""
    from semcat_kit._core.contracts import as_embedding_table
    from semcat_kit.learn.losses import LossSpec, StackedLoss
    from semcat_kit.learn.solver import StackedHeads, fit_stacked

    tax, emb, y = _ill_conditioned()
    C = tax.n_classes
    head = sk.FusionHead(40, 0, C, hidden=0, proj_dim=0, input_norm=False, dropout=0.0).eval()
    stack = StackedHeads.for_head(head)
    data = as_embedding_table(emb, "train")
    nb = sk.similarity.tree_neighbors(tax, k=3)
    soft = sk.soft_labels.build("tree", C, 0.5, neighbors=nb, taxonomy=tax, k=3)
    loss = StackedLoss([LossSpec(targets=None, gamma=0.0), LossSpec(targets=soft, gamma=0.0)],
                       torch.as_tensor(y), C)
    n = len(y)
    l2 = [1.0 / (100.0 * n), 1.0 / (0.1 * n)]           # C = 100 and C = 0.1
    x0 = torch.zeros(2, stack.n_params)
    plain = fit_stacked(stack, loss, l2, data, x0, gtol=1e-6, ftol=0.0, max_iter=5000, basis=False)
    pre = fit_stacked(stack, loss, l2, data, x0, gtol=1e-6, ftol=0.0, max_iter=5000)
    assert bool(pre.converged.all())
    # both end at float32's resolution of the objective; the preconditioned fit no higher
    assert torch.allclose(pre.f, plain.f, rtol=1e-4), (pre.f, plain.f)
    assert bool((pre.f <= plain.f * (1 + 1e-6)).all()), (pre.f, plain.f)
    P = lambda x: torch.softmax(stack.logits(x, stack.features(data)), 2)          # noqa: E731
    assert float((P(pre.x) - P(plain.x)).abs().max()) < 5e-3
    assert pre.evaluations < 0.8 * plain.evaluations, (pre.evaluations, plain.evaluations)


def test_every_C_of_the_path_is_fitted_from_the_start_as_logistic_regression_fits_it():
    """On a large catalog the gradient of the mean loss is small: a warm start from C = 1 lies within
    the absolute tolerance of the C = 10 problem already and stops with 0 steps (what full Myntra
    hit: one-hot macro-F1 0.639 instead of 0.793). Each C starts from zero instead, so the path's fit
    at a C is the single fit at that C."""
    from semcat_kit.learn.losses import LossSpec, StackedLoss
    from semcat_kit.learn.solver import StackedHeads, fit_path

    tax, emb, y = _problem(n=80000, d=12, C=6, image=False, seed=3)
    (tr, ytr), (va, yva) = _split(emb, y, val=0.2)
    cfg = sk.TrainConfig(**LINEAR, Cs=(1.0, 10.0), tol=1e-4)
    run = sk.train(tr, ytr, val=(va, yva), taxonomy=tax, config=cfg, progress=False)
    h = run.history
    assert (h["iterations"] > 0).all(), h[["C", "iterations", "grad_max"]]
    one = sk.train(tr, ytr, taxonomy=tax, config=sk.TrainConfig(**LINEAR, C=run.solver["C"], tol=1e-4),
                   progress=False)
    np.testing.assert_allclose(run.predict_proba(va), one.predict_proba(va), atol=1e-6)
    # the warm-started path (kept as an option) shows the trap: C = 10 does not move (plain L-BFGS,
    # whose absolute gradient test is met by the warm start)
    head = sk.FusionHead(12, 0, tax.n_classes, hidden=0, proj_dim=0, input_norm=False, dropout=0.0).eval()
    stack = StackedHeads.for_head(head)
    from semcat_kit._core.contracts import as_embedding_table

    data = as_embedding_table(tr, "train")
    loss = StackedLoss([LossSpec(targets=None, gamma=0.0)], torch.as_tensor(ytr), tax.n_classes)
    warm = fit_path(stack, loss, data, Cs=(1.0, 10.0), val=(as_embedding_table(va, "val"), yva), warm_start=True,
                    stop_early=False, precondition=False)
    assert warm.history[0][1]["iterations"] == 0
    rel = fit_path(stack, loss, data, Cs=(1.0, 10.0), val=(as_embedding_table(va, "val"), yva), warm_start=True,
                   stop_early=False, rgtol=0.1, precondition=False)
    assert rel.history[0][1]["iterations"] > 0


def _unimodal(v) -> bool:
    top = int(np.argmax(v))
    return all(a <= b for a, b in zip(v[:top], v[1:top + 1])) and all(a >= b for a, b in zip(v[top:], v[top + 1:]))


def _path_problem(seed, n, d, noise):
    from semcat_kit._core.contracts import as_embedding_table
    from semcat_kit.learn.losses import LossSpec, StackedLoss
    from semcat_kit.learn.solver import StackedHeads

    tax, emb, y = _problem(n=n, d=d, C=6, image=False, seed=seed)
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(len(y)) < noise, rng.integers(0, 6, len(y)), y)        # label noise: C matters
    (tr, ytr), (va, yva) = _split(emb, y, val=0.4)
    head = sk.FusionHead(d, 0, 6, hidden=0, proj_dim=0, input_norm=False, dropout=0.0).eval()
    stack = StackedHeads.for_head(head)
    loss = StackedLoss([LossSpec(targets=None, gamma=0.0)], torch.as_tensor(ytr), 6)
    return stack, loss, as_embedding_table(tr, "train"), (as_embedding_table(va, "val"), yva)


PATH_CS = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0)


@pytest.mark.parametrize("seed, n, d, noise", [(0, 800, 12, 0.1), (1, 800, 30, 0.2), (8, 1000, 40, 0.1),
                                               (2, 3000, 12, 0.3)])
def test_the_C_walk_keeps_the_C_of_the_full_sweep_with_fewer_fits(seed, n, d, noise):
    """With >= WALK_MIN_VAL validation products fit_path walks the grid from its second-largest C;
    where validation top-1 is unimodal along C (checked on the sweep) it keeps the sweep's C (ties:
    the smaller) and skips the strongly regularised end. Peaks at 10 (a tie at 100), at 0.1 (a walk
    down) and on a plateau."""
    from semcat_kit.learn.solver import WALK_MIN_VAL, fit_path

    stack, loss, data, val = _path_problem(seed, n, d, noise)
    assert len(val[1]) >= WALK_MIN_VAL
    sweep = fit_path(stack, loss, data, Cs=PATH_CS, val=val, stop_early=False)
    curve = [h["val_top1"] for h in sweep.history[0]]
    assert [h["C"] for h in sweep.history[0]] == list(PATH_CS) and _unimodal(curve), curve
    walk = fit_path(stack, loss, data, Cs=PATH_CS, val=val)
    fitted = [h["C"] for h in walk.history[0]]
    assert walk.C == sweep.C and len(fitted) < len(PATH_CS) and 1e-3 not in fitted, (curve, fitted)
    assert fitted == sorted(fitted) and 10.0 in fitted         # started at the second-largest C
    at = fitted.index(walk.C[0])                              # its fit at the chosen C is the sweep's
    assert walk.history[0][at]["val_top1"] == pytest.approx(curve[PATH_CS.index(walk.C[0])])
    with pytest.raises(ValueError, match="not one of the grid"):
        fit_path(stack, loss, data, Cs=PATH_CS, val=val, start=5.0)


def test_a_small_validation_split_scans_C_from_the_strong_end():
    """Below WALK_MIN_VAL validation products the curve is bumpy (here 208 products, a peak at
    C = 0.01 behind a dip): a walk from the weak end would stop on a bump near C = 10; the scan from
    the smallest C stops after the peak and keeps the sweep's C."""
    from semcat_kit.learn.solver import WALK_MIN_VAL, fit_path

    stack, loss, data, val = _path_problem(5, 520, 120, 0.3)
    assert len(val[1]) < WALK_MIN_VAL
    sweep = fit_path(stack, loss, data, Cs=PATH_CS, val=val, stop_early=False)
    curve = [h["val_top1"] for h in sweep.history[0]]
    assert not _unimodal(curve) and sweep.C == [1e-2], curve
    scan = fit_path(stack, loss, data, Cs=PATH_CS, val=val)
    assert scan.C == sweep.C and [h["C"] for h in scan.history[0]] == [1e-3, 1e-2, 0.1]
    walk = fit_path(stack, loss, data, Cs=PATH_CS, val=val, start=10.0)   # what the walk would keep
    assert walk.C != sweep.C


def test_linear_stacks_on_the_same_features_share_one_feature_basis(monkeypatch):
    """The softmax heads and the taxonomy-code head are two stacks (different outputs) on the same
    fused features: one eigendecomposition serves both."""
    from semcat_kit.learn import solver

    calls = []
    real = solver.FeatureBasis.of.__func__

    def counted(cls, feats):
        calls.append(feats.shape)
        return real(cls, feats)

    monkeypatch.setattr(solver.FeatureBasis, "of", classmethod(counted))
    tax, emb, y = _problem()
    (tr, ytr), va = _split(emb, y)
    configs = [sk.TrainConfig(**LINEAR, smoothing="onehot", Cs=(0.1, 1.0)),
               sk.TrainConfig(**LINEAR, smoothing="tree", k=3, alpha=0.3, Cs=(0.1, 1.0)),
               sk.TrainConfig(**LINEAR, label_repr="codes", Cs=(0.1, 1.0))]
    runs = train_stacked(tr, ytr, configs, taxonomy=tax, val=va, progress=False)
    assert [r.solver["stacked_with"] for r in runs] == [2, 2, 1]
    assert len(calls) == 1, calls


def test_stacked_training_equals_one_run_at_a_time():
    tax, emb, y = _problem()
    (tr, ytr), va = _split(emb, y)
    nb = sk.similarity.tree_neighbors(tax, k=3)
    tight = dict(Cs=(0.1, 1.0), tol=1e-6, max_iter=2000)     # both fits run to the optimum, not to a looser stop
    configs = [sk.TrainConfig(**LINEAR, smoothing="onehot", **tight),
               sk.TrainConfig(**LINEAR, smoothing="semantic", k=3, alpha=0.2, **tight),
               sk.TrainConfig(**LINEAR, smoothing="tree", k=3, alpha=0.3, **tight),
               sk.TrainConfig(**LINEAR, smoothing="uniform", alpha=0.1, focal_alpha="inverse", **tight)]
    stacked = train_stacked(tr, ytr, configs, taxonomy=tax, neighbors=nb, val=va, progress=False)
    assert all(r.solver["stacked_with"] == len(configs) for r in stacked)
    for cfg, run in zip(configs, stacked):
        alone = sk.train(tr, ytr, taxonomy=tax, neighbors=nb, config=cfg, val=va, progress=False)
        assert run.solver["C"] == alone.solver["C"]
        # one convex optimum: the same head up to float32 summation order
        assert np.abs(run.predict_proba(va[0]) - alone.predict_proba(va[0])).max() < 2e-3


def test_stacked_mlp_heads_keep_their_seeds():
    tax, emb, y = _problem(n=240)
    (tr, ytr), va = _split(emb, y)
    mlp = dict(hidden=16, proj_dim=8, C=1.0, max_iter=8, solver="lbfgs")   # non-convex: the first steps
    configs = [sk.TrainConfig(**mlp, seed=s) for s in (0, 1)]
    stacked = train_stacked(tr, ytr, configs, taxonomy=tax, val=va, progress=False)
    alone = [sk.train(tr, ytr, taxonomy=tax, config=c, val=va, progress=False) for c in configs]
    p = [r.predict_proba(va[0]) for r in stacked]
    q = [r.predict_proba(va[0]) for r in alone]
    assert np.abs(p[0] - p[1]).max() > 1e-3           # another seed, another start, another head
    for a, b in zip(p, q):
        assert np.abs(a - b).max() < 1e-3             # the same steps (float summation order aside)


def test_auto_solver_is_chosen_by_data_and_features_and_said():
    tax, emb, y = _problem(n=120)
    run = sk.train(emb, y, taxonomy=tax, config=sk.TrainConfig(**LINEAR, C=1.0), progress=False)
    assert run.solver["method"] == "lbfgs" and "in memory" in run.solver["why"] and "solver='lbfgs'" in repr(run)
    mb = sk.train(emb, y, taxonomy=tax, config=sk.TrainConfig(**LINEAR, epochs=1, solver="minibatch"), progress=False)
    assert mb.solver == {"method": "minibatch", "why": "solver='minibatch' in the config",
                         "budget": "1 epochs x 1 steps of 256 = 1 AdamW steps (epochs=1); no early stopping"}
    mlp = sk.train(emb, y, taxonomy=tax, config=sk.TrainConfig(epochs=1, hidden=8, proj_dim=4), progress=False)
    assert mlp.solver["method"] == "minibatch" and "MLP head" in mlp.solver["why"]     # non-convex: minibatch
    cfg = sk.TrainConfig(**LINEAR, epochs=1)
    ck = sk.train(emb, y, taxonomy=tax, config=cfg, progress=False, checkpoint_dir=_tmp_dir())
    assert ck.solver["method"] == "minibatch" and "checkpoint_dir" in ck.solver["why"]
    with pytest.raises(ValueError, match="belong to the minibatch loop"):
        sk.train(emb, y, taxonomy=tax, config=cfg.replace(solver="lbfgs"), progress=False, checkpoint_dir=_tmp_dir())
    from semcat_kit.learn import solver as S
    from semcat_kit.learn.training import choose_solver

    table = sk.contracts.as_embedding_table(emb)
    old = S.IN_MEMORY_BYTES
    try:
        S.IN_MEMORY_BYTES = 1000                   # a table "too large" for memory: minibatches, and why
        method, why = choose_solver(sk.TrainConfig(**LINEAR), table)
        assert method == "minibatch" and "GB >" in why
    finally:
        S.IN_MEMORY_BYTES = old
    # the output layer's size: 5,595 classes x (8 + 3) inputs is below the limit, a wider head is not
    from semcat_kit.learn.training import FULL_BATCH_MAX_PARAMS

    width = table.text_dim + (table.image_dim or 0) + 3
    assert choose_solver(sk.TrainConfig(**LINEAR), table, n_classes=FULL_BATCH_MAX_PARAMS // width)[0] == "lbfgs"
    method, why = choose_solver(sk.TrainConfig(**LINEAR), table, n_classes=FULL_BATCH_MAX_PARAMS // width + 1)
    assert method == "minibatch" and "head parameters >" in why and f"{FULL_BATCH_MAX_PARAMS:,}" in why


def test_the_full_batch_fit_runs_under_the_chosen_threads_and_restores_the_callers(monkeypatch):
    """SEMCAT_THREADS (else the free cores) is the thread count of the L-BFGS path too, as of the
    minibatch trainer: the objective is evaluated under it, the run records it, the caller's is restored."""
    from semcat_kit.learn import losses as L

    tax, emb, y = _problem(n=120)
    seen = []
    orig = L.StackedLoss.__call__

    def spy(self, *a, **kw):
        seen.append(torch.get_num_threads())
        return orig(self, *a, **kw)

    monkeypatch.setattr(L.StackedLoss, "__call__", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setenv("SEMCAT_THREADS", "1")
        run = sk.train(emb, y, taxonomy=tax, config=sk.TrainConfig(**LINEAR, C=1.0), progress=False)
        assert run.solver["method"] == "lbfgs" and run.solver["threads"] == 1
        assert seen and set(seen) == {1} and set(run.history["threads"]) == {1}
        assert torch.get_num_threads() == 2                     # the caller's, restored
    finally:
        torch.set_num_threads(before)


def test_the_path_chooses_its_threads_again_every_round(monkeypatch):
    """A load spike at the start of a fit (other processes busy on one of the 2 cores) gives its first
    C one thread; when it is gone the next rounds run on both, and each history row says which."""
    from semcat_kit._core import threads as T

    tax, emb, y = _problem(n=400)
    (tr, ytr), va = _split(emb, y)
    load = iter([1.0] + [0.0] * 20)
    monkeypatch.delenv("SEMCAT_THREADS", raising=False)
    monkeypatch.setattr(T, "available_cores", lambda: 2)
    monkeypatch.setattr(T, "busy_cores", lambda window=0.05: next(load))
    monkeypatch.setattr(T, "_CACHE_S", 0.0)
    T._cache.clear()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run = sk.train(tr, ytr, taxonomy=tax, val=va, progress=False,
                       config=sk.TrainConfig(**LINEAR, Cs=(0.1, 1.0, 10.0)))
        h = run.history
        assert len(h) >= 2 and h["threads"].tolist()[0] == 1 and set(h["threads"].tolist()[1:]) == {2}, h
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
        T._cache.clear()


def _tmp_dir():
    import tempfile

    return tempfile.mkdtemp(prefix="semcat-solver-test-")


def test_C_is_chosen_on_validation_and_recorded():
    tax, emb, y = _problem(n=300)
    (tr, ytr), va = _split(emb, y)
    run = sk.train(tr, ytr, taxonomy=tax, config=sk.TrainConfig(**LINEAR, Cs=(0.001, 0.1, 10.0)), val=va,
                   progress=False)
    h = run.history
    assert list(h["C"]) == [0.001, 0.1, 10.0] and {"val_top1", "val_loss", "iterations", "converged"} <= set(h)
    best = h["val_top1"].max()
    assert run.solver["C"] == h.loc[h["val_top1"] == best, "C"].min()      # ties: the smaller C
    assert run.best_epoch == int(h.index[h["C"] == run.solver["C"]][0]) + 1
    # without validation data C is chosen on a held-out tenth, then the head is refitted on every row
    alone = sk.train(tr, ytr, taxonomy=tax, config=sk.TrainConfig(**LINEAR, Cs=(0.001, 10.0)), progress=False)
    assert alone.history["refit"].fillna(False).astype(bool).iloc[-1]
    assert alone.solver["C"] in (0.001, 10.0)


def test_compare_fits_full_batch_heads_stacked_and_once_for_every_seed():
    tax, emb, y = _problem(n=300)
    (tr, ytr), va = _split(emb, y, val=0.3)
    (va_e, va_y) = va
    half = len(va_y) // 2
    val = (va_e.take(np.arange(half)), va_y[:half])
    test = (va_e.take(np.arange(half, len(va_y))), va_y[half:])
    nb = sk.similarity.tree_neighbors(tax, k=3)
    suite = {"one-hot": sk.TrainConfig(**LINEAR, Cs=(0.1, 1.0)),
             "semantic": sk.TrainConfig(**LINEAR, smoothing="semantic", k=3, Cs=(0.1, 1.0)),
             "codes": sk.TrainConfig(**LINEAR, label_repr="codes", Cs=(0.1, 1.0))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = sk.compare(suite, (tr, ytr), val, test, taxonomy=tax, neighbors=nb, progress=False)
    runs = df.attrs["runs"]
    for name in suite:
        assert runs[(name, 0)] is runs[(name, 1)] is runs[(name, 2)]      # convex: one head for every seed
        assert df.loc[name, "top1_std"] == 0
    assert runs[("one-hot", 0)].solver["stacked_with"] == 2 and runs[("codes", 0)].solver["stacked_with"] == 1
    # a taxonomy-code head chooses its C by the class scores of its codes, not by its bit logits
    assert df.loc["codes", "top1_mean"] >= df.loc["one-hot", "top1_mean"] - 0.1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here: the GPU path runs on a GPU machine")
def test_full_batch_on_cuda_equals_cpu():
    tax, emb, y = _problem(n=300)
    (tr, ytr), va = _split(emb, y)
    cfg = sk.TrainConfig(**LINEAR, Cs=(0.1, 1.0))
    cpu = sk.train(tr, ytr, taxonomy=tax, config=cfg, val=va, progress=False)
    gpu = sk.train(tr, ytr, taxonomy=tax, config=cfg.replace(device="cuda"), val=va, progress=False)
    assert gpu.device.type == "cuda" and gpu.solver["C"] == cpu.solver["C"]
    assert np.abs(gpu.predict_proba(va[0]) - cpu.predict_proba(va[0])).max() < 2e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here: the GPU path runs on a GPU machine")
def test_stacked_suite_on_cuda_equals_cpu():
    """The suite's path (several configurations stacked into one full-batch problem) on a GPU."""
    tax, emb, y = _problem(n=300)
    (tr, ytr), va = _split(emb, y)
    cfgs = [sk.TrainConfig(**LINEAR, Cs=(0.1, 1.0)), sk.TrainConfig(**LINEAR, Cs=(0.1, 1.0), smoothing="tree", alpha=0.5)]
    cpu = train_stacked(tr, ytr, cfgs, taxonomy=tax, val=va, progress=False)
    gpu = train_stacked(tr, ytr, [c.replace(device="cuda") for c in cfgs], taxonomy=tax, val=va, progress=False)
    for a, b in zip(cpu, gpu):
        assert b.device.type == "cuda" and b.solver["stacked_with"] == 2 and b.solver["C"] == a.solver["C"]
        assert np.abs(b.predict_proba(va[0]) - a.predict_proba(va[0])).max() < 2e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here: the GPU path runs on a GPU machine")
def test_minibatch_with_autocast_on_cuda_learns():
    """What stays minibatch (the store, torchrun) on a GPU under bf16 autocast: it learns as the
    float32 CPU run of the same configuration does."""
    tax, emb, y = _problem(n=300)
    (tr, ytr), va = _split(emb, y)
    cfg = sk.TrainConfig(**LINEAR, solver="minibatch", epochs=50, batch_size=32, device="cpu", precision="fp32")
    cpu = sk.train(tr, ytr, taxonomy=tax, config=cfg, val=va, progress=False)
    run = sk.train(tr, ytr, taxonomy=tax, config=cfg.replace(device="cuda", precision="bf16"), val=va, progress=False)
    assert run.device.type == "cuda" and run.solver["method"] == "minibatch"
    p = run.predict_proba(va[0])
    assert np.isfinite(p).all() and np.allclose(p.sum(1), 1, atol=1e-3)
    acc, acc_cpu = (p.argmax(1) == va[1]).mean(), (cpu.predict_proba(va[0]).argmax(1) == va[1]).mean()
    assert acc > 1.5 / tax.n_classes and abs(acc - acc_cpu) <= 0.08, (acc, acc_cpu)    # chance: 1 / C; CPU: 0.36
