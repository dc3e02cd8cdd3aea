"""Fitting heads to convergence on in-memory data: a batched L-BFGS over stacked problems.

A head fitted with minibatch AdamW stops where its step budget ends; LogisticRegression stops at
its optimum. For training sets that fit in memory this module fits heads the second way: the whole
training set at every step, quasi-Newton (L-BFGS) directions, a backtracking (Armijo) line search,
and convergence tests on the gradient and on the objective.

**The objective** of problem ``k`` (one configuration at one regularisation strength) is the mean
training loss plus an L2 penalty on its weights (biases and normalisation parameters are not
penalised)::

    F_k(theta) = 1/N sum_i [ focal_weight * FL(z_i, y_i; gamma) + kl_weight * KL(t_{y_i} || softmax(z_i)) ]
                 + lambda_k / 2 * ||W||^2,          z_i = head(x_i; theta)

the same loss as the minibatch trainer (:func:`semcat_kit.learn.losses.combined_loss`, or the BCE of
taxonomy codes) with the soft targets ``t_y`` built once per class. For the linear head
(``hidden=0, proj_dim=0``) with ``gamma = 0`` this is a soft-target multinomial logistic
regression: convex, one optimum, and with one-hot targets exactly scikit-learn's
``LogisticRegression(C)`` objective with ``lambda = 1 / (C N)``.

**Stacking.** K problems with the same head architecture are fitted at once: their parameters
are the rows of one ``(K, P)`` tensor. For the linear head the fused features ``h_i`` (with a 1
for the bias) are computed once and the K heads' logits are one GEMM
``[h, 1] (N, F+1) x W^T (F+1, K C)``; other heads run through ``torch.func.vmap`` over their
stacked parameters. Each problem keeps its own L-BFGS memory, step size and convergence test, so
a stacked fit equals K separate fits up to floating-point summation order; problems that have
converged leave the stack (later steps compute only the others).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

__all__ = ["lbfgs", "LBFGSResult", "StackedHeads", "FeatureBasis", "fit_stacked", "fit_path", "PathResult",
           "memory_bytes", "default_threads", "IN_MEMORY_BYTES"]

#: Training features (float32) up to this size are fitted full-batch by ``solver="auto"``.
IN_MEMORY_BYTES = 2 << 30
#: (s, y) pairs an L-BFGS problem keeps (scipy's default). 30 pairs took 10 % fewer objective
#: evaluations on the tutorial suite (22 % for the code heads), but the recursion reads every pair
#: twice a step: on the tutorial it grew from 7 % to ~20 % of the fit, and it dominates on small
#: catalogs (a 750-product sample), where a step's GEMMs are small.
LBFGS_HISTORY = 10
#: Validation products from which :func:`fit_path` walks the C grid from its weak end; with fewer, one
#: product moves top-1 by half a point or more, the curve along C is bumpy, and the grid is scanned
#: from its strong end instead (stopping at the first C that does not improve), the safer bias on
#: small data.
WALK_MIN_VAL = 300


@dataclass
class LBFGSResult:
    """What :func:`lbfgs` returns: the solutions and, per problem, how the fit ended."""

    x: torch.Tensor                 # (K, P)
    f: torch.Tensor                 # (K,) final objective
    iterations: torch.Tensor        # (K,) accepted steps
    converged: torch.Tensor         # (K,) bool: gradient or objective test met (not max_iter / line search)
    evaluations: int                # objective + gradient evaluations of the stack (of any width)
    grad_max: torch.Tensor          # (K,) max |gradient| at the solution
    problem_evaluations: int = 0    # evaluations summed over the problems each one covered (its width)


def lbfgs(fun: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]], x0: torch.Tensor, *,
          max_iter: int = 500, gtol: float = 1e-5, ftol: float = 1e-10, history: int = 10, c1: float = 1e-4,
          max_line_search: int = 30, callback: Callable[[int, torch.Tensor], None] | None = None,
          rgtol: float = 0.0, gscale: torch.Tensor | None = None) -> LBFGSResult:
    """Minimise K independent smooth functions at once with limited-memory BFGS.

    Each problem has its own two-loop recursion (Nocedal & Wright, Algorithm 7.4) over its last
    ``history`` pairs ``(s, y)`` (pairs with ``s·y <= 1e-10 |y|^2`` are skipped, which keeps the
    inverse-Hessian approximation positive definite), its own initial scaling
    ``gamma = s·y / y·y``, and its own backtracking line search: a step ``t`` is accepted when
    ``f(x + t d) <= f(x) + c1 t g·d`` (Armijo), otherwise it shrinks by safeguarded quadratic
    interpolation. The first step of a problem is ``min(1, 1 / ||g||_1)`` long.

    A problem stops when ``max |g| <= min(gtol, rgtol * max |g(x0)|)`` (``rgtol = 0``: ``gtol``
    alone; a relative tolerance makes a warm start that is already within ``gtol`` of a new
    problem's optimum still reduce its gradient), when an accepted step lowers ``f`` by no more than
    ``ftol * max(|f|, 1)`` (scipy's ``factr`` test), after ``max_iter`` steps, or when the line
    search cannot decrease ``f`` (at the limits of floating point).

    Parameters
    ----------
    fun : callable
        ``fun(x, idx) -> (f, g)``: objectives ``(k,)`` and gradients ``(k, P)`` of the problems
        ``idx`` (a LongTensor of ``k`` problem indices) at ``x`` ``(k, P)``.
    x0 : tensor (K, P)
        Starting points.
    callback : callable, optional
        ``callback(iteration, active)`` after every step (``active``: the problems still running).
    gscale : tensor (K, P), optional
        The gradient tests use ``max |g / gscale|``: the gradient in other variables (a
        preconditioned problem measures its gradient in the original parameters).
    """
    K, P = x0.shape
    x = x0.detach().clone()
    idx_all = torch.arange(K, device=x.device)
    f, g = fun(x, idx_all)
    f, g = f.detach().clone(), g.detach().clone()
    m = max(1, int(history))
    S = x.new_zeros(m, K, P)
    Y = x.new_zeros(m, K, P)
    rho = x.new_zeros(m, K)
    gamma = x.new_ones(K)
    has_pair = torch.zeros(K, dtype=torch.bool, device=x.device)
    iters = torch.zeros(K, dtype=torch.long, device=x.device)
    gnorm = (lambda gg, rows: gg.abs().amax(1)) if gscale is None else \
        (lambda gg, rows: (gg / gscale[rows]).abs().amax(1))
    g0 = gnorm(g, idx_all)
    gtol = torch.clamp(rgtol * g0, max=gtol) if rgtol > 0 else torch.full_like(g0, gtol)
    converged = g0 <= gtol
    active = ~converged & torch.isfinite(f)
    evals, pushes, pevals = 1, 0, K
    for it in range(int(max_iter)):
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        every = idx.numel() == K
        xa, fa, ga = (x, f.clone(), g) if every else (x[idx], f[idx], g[idx])
        # two-loop recursion for every problem at once (views of the history, no gathered copies;
        # a finished problem's direction is computed and dropped), newest pair first; empty
        # (rho = 0) slots change nothing. Dot products are batched GEMVs, updates in place.
        q = -g
        slots = [(pushes - 1 - j) % m for j in range(min(pushes, m))]
        alphas = []
        for j in slots:
            a = rho[j] * _dots(S[j], q)
            alphas.append(a)
            q.addcmul_(a[:, None], Y[j], value=-1.0)
        q.mul_(gamma[:, None])
        for j, a in zip(reversed(slots), reversed(alphas)):
            b = rho[j] * _dots(Y[j], q)
            q.addcmul_((a - b)[:, None], S[j])
        if not every:
            q = q[idx]
        d = q
        gd = _dots(ga, d)
        uphill = ~(gd < 0)
        if uphill.any():          # not a descent direction (numerical trouble): steepest descent
            d[uphill] = -ga[uphill]
            gd[uphill] = -(ga[uphill] ** 2).sum(1)
        t = torch.where(has_pair[idx], torch.ones_like(fa), torch.clamp(1.0 / ga.abs().sum(1), max=1.0))
        x_new = xa + t[:, None] * d
        f_new, g_new = fun(x_new, idx)
        evals += 1
        pevals += int(idx.numel())
        ok = (f_new <= fa + c1 * t * gd) & torch.isfinite(f_new)
        for _ in range(max_line_search):
            if bool(ok.all()):
                break
            bad = (~ok).nonzero().squeeze(1)
            # minimiser of the quadratic through f(0), f'(0) and f(t), kept in [0.1 t, 0.5 t]
            fb = torch.where(torch.isfinite(f_new[bad]), f_new[bad], fa[bad] + 1e30)
            denom = 2.0 * (fb - fa[bad] - gd[bad] * t[bad])
            t_q = torch.where(denom > 0, -gd[bad] * t[bad] ** 2 / denom.clamp_min(1e-300), 0.5 * t[bad])
            t[bad] = torch.minimum(torch.maximum(t_q, 0.1 * t[bad]), 0.5 * t[bad])
            x_new[bad] = xa[bad] + t[bad][:, None] * d[bad]
            fb_new, gb_new = fun(x_new[bad], idx[bad])
            evals += 1
            pevals += int(bad.numel())
            f_new[bad], g_new[bad] = fb_new, gb_new
            ok[bad] = (fb_new <= fa[bad] + c1 * t[bad] * gd[bad]) & torch.isfinite(fb_new)
        s = x_new - xa
        yv = g_new - ga
        sy = _dots(s, yv)
        yy = _dots(yv, yv)
        good = ok & (sy > 1e-10 * yy) & (yy > 0)
        slot = pushes % m
        gz = good[:, None]
        S[slot, idx] = torch.where(gz, s, torch.zeros((), dtype=s.dtype, device=s.device))
        Y[slot, idx] = torch.where(gz, yv, torch.zeros((), dtype=s.dtype, device=s.device))
        rho[slot, idx] = torch.where(good, 1.0 / torch.where(good, sy, torch.ones_like(sy)), torch.zeros_like(sy))
        gamma[idx] = torch.where(good, sy / torch.where(good, yy, torch.ones_like(yy)), gamma[idx])
        has_pair[idx] = has_pair[idx] | good
        pushes += 1
        acc = idx[ok]
        x[acc] = x_new[ok].detach()
        f[acc] = f_new[ok].detach()
        g[acc] = g_new[ok].detach()
        iters[acc] += 1
        g_ok = gnorm(g[idx], idx) <= gtol[idx]
        f_ok = ok & ((fa - f_new).abs() <= ftol * torch.maximum(torch.maximum(fa.abs(), f_new.abs()),
                                                                 torch.ones_like(fa)))
        converged[idx] = g_ok | f_ok
        active[idx] = ~(g_ok | f_ok | ~ok)
        if callback is not None:
            callback(it, active)
    return LBFGSResult(x=x, f=f, iterations=iters, converged=converged, evaluations=evals,
                       grad_max=gnorm(g, idx_all), problem_evaluations=pevals)


def _dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products of two ``(K, P)`` tensors (pairwise summation: a batched GEMV
    accumulates in float32 blocks and was both slower and too coarse for the line search)."""
    return (a * b).sum(1)


# ----------------------------------------------------------------------------- problems
@dataclass
class StackedHeads:
    """K copies of one head architecture with their parameters as the rows of one ``(K, P)`` tensor.

    ``linear=True`` (a :class:`~semcat_kit.learn.model.FusionHead` with ``hidden=0, proj_dim=0``)
    fits only the output layer on fused features computed once (everything before it has no
    trainable parameter, or its ``LayerNorm`` is kept at its initial identity affine map);
    otherwise every parameter is fitted through ``torch.func.vmap``.
    """

    template: torch.nn.Module
    linear: bool
    names: list = field(default_factory=list)
    shapes: list = field(default_factory=list)
    penalised: torch.Tensor | None = None        # (P,) bool: weights under the L2 penalty

    @classmethod
    def for_head(cls, head) -> "StackedHeads":
        linear = head.config["hidden"] == 0 and head.config["proj_dim"] == 0 and head.gate is None
        st = cls(template=head, linear=linear)
        if linear:
            out = head.mlp[-1]
            st.names, st.shapes = ["weight+bias"], [(out.out_features, out.in_features + 1)]
            pen = torch.ones(out.out_features, out.in_features + 1, dtype=torch.bool)
            pen[:, -1] = False
            st.penalised = pen.reshape(-1)
        else:
            pens = []
            for name, p in head.named_parameters():
                st.names.append(name)
                st.shapes.append(tuple(p.shape))
                is_weight = name.endswith("weight") and p.ndim == 2     # Linear weights; not biases / LayerNorm
                pens.append(torch.full((p.numel(),), is_weight, dtype=torch.bool))
            st.penalised = torch.cat(pens)
        return st

    @property
    def n_params(self) -> int:
        return int(sum(math.prod(s) for s in self.shapes))

    def flat(self, head) -> torch.Tensor:
        """(P,) parameters of ``head`` in this layout."""
        if self.linear:
            out = head.mlp[-1]
            return torch.cat([out.weight.detach(), out.bias.detach()[:, None]], dim=1).reshape(-1)
        return torch.cat([p.detach().reshape(-1) for p in head.parameters()])

    def load(self, head, x: torch.Tensor) -> None:
        """Copy the (P,) parameters ``x`` into ``head``."""
        with torch.no_grad():
            if self.linear:
                out = head.mlp[-1]
                w = x.reshape(out.out_features, out.in_features + 1)
                out.weight.copy_(w[:, :-1])
                out.bias.copy_(w[:, -1])
                return
            a = 0
            for p in head.parameters():
                p.copy_(x[a:a + p.numel()].view_as(p))
                a += p.numel()

    def features(self, data, rows: slice | None = None) -> torch.Tensor:
        """Fused features ``[h, 1]`` of the table's rows for the linear head (no gradient)."""
        head = self.template
        sl = rows if rows is not None else slice(None)
        with torch.no_grad():
            h = head.fused(*_inputs(data, sl))
            return torch.cat([h, torch.ones(h.shape[0], 1, dtype=h.dtype, device=h.device)], dim=1)

    def logits(self, x: torch.Tensor, inputs) -> torch.Tensor:
        """(N, k, out) logits of the k heads ``x`` (k, P); ``inputs``: the features ``[h, 1]`` for
        the linear head, else the ``(text, image, image_mask, text_mask)`` tuple."""
        k = x.shape[0]
        if self.linear:
            out_dim, width = self.shapes[0]
            return (inputs @ x.reshape(k * out_dim, width).T).view(inputs.shape[0], k, out_dim)
        from torch.func import functional_call, vmap

        def one(flat):
            params, a = {}, 0
            for name, shape in zip(self.names, self.shapes):
                n = math.prod(shape)
                params[name] = flat[a:a + n].view(shape)
                a += n
            return functional_call(self.template, params, inputs)
        return vmap(one)(x).transpose(0, 1)


def _inputs(data, rows: slice):
    """``(text, image, image_mask, text_mask)`` of a slice of an in-memory embedding table."""
    text = data.text[rows].float() if data.text is not None else None
    image = data.image[rows].float() if data.image is not None else None
    return text, image, data.image_mask[rows], data.text_mask[rows]


def memory_bytes(n_rows: int, width: int) -> int:
    """float32 bytes of an ``(n_rows, width)`` feature matrix."""
    return int(n_rows) * int(width) * 4


def _row_chunk(n: int, per_row: int, budget: int = 1 << 25) -> int:
    """Rows per chunk so that a chunk's ``per_row`` floats stay under ``budget`` (128 MB)."""
    return max(1, min(n, budget // max(1, per_row)))


@dataclass
class FeatureBasis:
    """The training features of a linear stack in the eigenbasis of their covariance: the
    preconditioner of :func:`fit_stacked`.

    With ``S = U diag(s) U^T`` the covariance of the centred features ``X - m``, a linear head
    ``z = X W^T + b`` is fitted in the variables ``A``, ``b'`` with ``(W U)_cj = A_cj d_cj``,
    ``b'_c = (b + W m)_c = A_c0 d_c0`` and scales::

        d_cj = (v_c s_j + lambda)^(-1/2),      d_c0 = v_c^(-1/2)   (the bias)

    ``v_c`` the curvature of output ``c`` under the intercept-only model
    (:meth:`~semcat_kit.learn.losses.StackedLoss.output_variance`: ``pi_c (1 - pi_c)``). Then
    ``z = [(X - m) U] (A * d)^T + b'`` and ``||W||^2 = ||A * d||^2``: the same objective (an exact
    change of variables) whose Hessian at the intercept-only model has a unit diagonal in ``A``.
    Embedding features are strongly correlated (covariance eigenvalues over several orders of
    magnitude) and classes are many and uneven: plain L-BFGS spends most of its steps on that
    spread. ``bench/bench_solver.py`` (record: docs/bench/solver.md) fits the suite's six soft-label
    problems stacked at C = 0.1 / 1 / 10 / 100 both ways with the default tolerance: 1.7x (tutorial)
    and 1.3x (toys) fewer evaluations, 1.5x less time with the eigendecomposition included, and
    final objectives lower for every problem at every C but the tutorial's C = 100, where they range
    from 1.5e-2 lower to 1.0e-3 higher (relative; 2026-12-08, load 1.3-1.7).
    """

    mean: torch.Tensor        # (D,)
    rotation: torch.Tensor    # (D, D) eigenvectors U (columns)
    variance: torch.Tensor    # (D,) eigenvalues s (float64)
    rotated: torch.Tensor     # (N, D + 1): [(X - m) U, 1]

    @classmethod
    def of(cls, feats: torch.Tensor, chunk_bytes: int = 1 << 26) -> "FeatureBasis":
        """The basis of fused features ``[h, 1]`` (:meth:`StackedHeads.features`), in row chunks of
        about ``chunk_bytes`` (64 MB: no centred copy of the whole matrix is made)."""
        X = feats[:, :-1]
        n, D = X.shape
        mean = X.mean(0)
        step = _row_chunk(n, D, chunk_bytes // 4)
        cov = torch.zeros(D, D, dtype=torch.float64, device=X.device)
        for a in range(0, n, step):
            xc = X[a:a + step] - mean
            cov += (xc.T @ xc).double()
        s, U = torch.linalg.eigh(cov / max(1, n))
        U = U.to(X.dtype)
        rotated = torch.empty(n, D + 1, dtype=X.dtype, device=X.device)
        rotated[:, D] = 1.0
        for a in range(0, n, step):
            torch.matmul(X[a:a + step] - mean, U, out=rotated[a:a + step, :D])
        return cls(mean=mean, rotation=U, variance=s.clamp_min(0.0), rotated=rotated)

    def scales(self, l2: torch.Tensor, output_variance: torch.Tensor) -> torch.Tensor:
        """``(k, out * (D + 1))`` scales ``d`` of k problems' parameters (``l2``: their penalties)."""
        v = output_variance.to(self.variance)[:, None]                                   # (out, 1)
        d = (v[None] * self.variance[None, None, :] + l2.to(self.variance)[:, None, None]).rsqrt()
        d = torch.cat([d, v.rsqrt()[None].expand(d.shape[0], -1, -1)], dim=2)            # (k, out, D + 1)
        return d.to(self.rotated.dtype).reshape(d.shape[0], -1)

    def to_basis(self, x: torch.Tensor, scales: torch.Tensor, out_dim: int) -> torch.Tensor:
        """Original parameters ``[W, b]`` ``(k, P)`` -> ``A`` in this basis."""
        k = x.shape[0]
        wb = x.view(k, out_dim, -1)
        W, b = wb[..., :-1], wb[..., -1]
        a = torch.cat([W @ self.rotation, (b + W @ self.mean)[..., None]], dim=2).reshape(k, -1)
        return a / scales

    def from_basis(self, a: torch.Tensor, scales: torch.Tensor, out_dim: int) -> torch.Tensor:
        """``A`` ``(k, P)`` -> the original parameters ``[W, b]``."""
        k = a.shape[0]
        ab = (a * scales).view(k, out_dim, -1)
        W = ab[..., :-1] @ self.rotation.T
        b = ab[..., -1] - W @ self.mean
        return torch.cat([W, b[..., None]], dim=2).reshape(k, -1)


def fit_stacked(stack: StackedHeads, loss, l2, data, x0: torch.Tensor, *, max_iter: int = 500,
                gtol: float = 1e-4, ftol: float = 1e-10, history: int = LBFGS_HISTORY, callback=None,
                rgtol: float = 0.0, basis: FeatureBasis | bool = True) -> LBFGSResult:
    """Fit K problems (one row of ``x0`` each) on the training table ``data`` to convergence.

    Problem ``k`` minimises ``1/N sum_i loss_k(z_ik) + l2_k / 2 * ||theta_k[penalised]||^2``
    (``loss``: a :class:`semcat_kit.learn.losses.StackedLoss` over the training rows); the gradient
    comes from autograd through the stacked logits, in row chunks so that at most ~128 MB of
    logits live at once.

    ``basis`` (linear heads): the :class:`FeatureBasis` the problems are solved in (``True``:
    computed here from ``data``; ``False``: plain L-BFGS on the original parameters). The result's
    ``x`` is in the original parameters either way, and the gradient tests (``gtol``, ``grad_max``)
    measure the gradient in the weights (rotated: ``W U``, the same Euclidean length) and biases.
    """
    n = len(data)
    l2 = torch.as_tensor(np.asarray(l2, dtype=np.float64), dtype=x0.dtype, device=x0.device).reshape(-1)
    pen = stack.penalised.to(x0.device)
    out_dim = stack.shapes[0][0] if stack.linear else stack.template.out_dim
    if stack.linear and basis is True:
        basis = FeatureBasis.of(stack.features(data))
    if not stack.linear or basis is False:
        basis = None
    feats = basis.rotated if basis is not None else (stack.features(data) if stack.linear else None)

    def fun(x, idx):
        k = x.shape[0]
        xg = x.detach().requires_grad_(True)
        chunk = _row_chunk(n, k * (out_dim * 4 + (0 if stack.linear else 2048)))
        total = torch.zeros(k, dtype=torch.float64, device=x.device)
        for a in range(0, n, chunk):
            rows = slice(a, min(n, a + chunk))
            z = stack.logits(xg, feats[rows] if stack.linear else _inputs(data, rows))
            per = loss(z, rows, idx).sum(0)
            (per.sum() / n).backward()
            total += per.detach().double() / n
        with torch.no_grad():
            w = xg.detach() * pen
            total += 0.5 * l2[idx].double() * (w * w).sum(1, dtype=torch.float64)
            grad = xg.grad.addcmul_(l2[idx][:, None], w)
        return total.to(x.dtype), grad

    if basis is None:
        return lbfgs(fun, x0, max_iter=max_iter, gtol=gtol, ftol=ftol, history=history, callback=callback,
                     rgtol=rgtol)
    var = loss.output_variance() if hasattr(loss, "output_variance") else torch.ones(out_dim, dtype=torch.float64)
    d = basis.scales(l2, var.to(x0.device))

    def fun_basis(a, idx):          # the same objective in A: W-space value, gradient times d (chain rule)
        dk = d if idx.numel() == d.shape[0] else d[idx]
        f, g = fun(a * dk, idx)
        return f, g.mul_(dk)

    r = lbfgs(fun_basis, basis.to_basis(x0, d, out_dim), max_iter=max_iter, gtol=gtol, ftol=ftol, history=history,
              callback=callback, rgtol=rgtol, gscale=d)
    r.x = basis.from_basis(r.x, d, out_dim)
    return r


@dataclass
class PathResult:
    """What :func:`fit_path` returns, per problem ``k``: the chosen parameters and the path."""

    x: torch.Tensor                  # (K, P) parameters at the chosen C
    C: list                          # chosen C per problem
    history: list                    # per problem: a list of dicts, one per C of the path


def fit_path(stack: StackedHeads, loss, data, *, Cs: Sequence[float], val=None, x0: torch.Tensor | None = None,
             max_iter: int = 500, tol: float = 1e-4, progress: bool = False, desc: str = "fit",
             stop_early: bool = True, score: Callable[[torch.Tensor], torch.Tensor] | None = None,
             warm_start: bool = False, rgtol: float = 0.0, start: float | None = None,
             threads: int | None = None, precondition: "bool | FeatureBasis" = True) -> PathResult:
    """Fit K problems along a regularisation path and keep, per problem, the C that validates best.

    ``C`` is LogisticRegression's inverse regularisation strength: ``lambda = 1 / (C N)`` on the mean
    loss. Each C starts from ``x0`` (zeros by default), as LogisticRegression fits each C of its grid.
    With ``val`` (a table and its labels) every C fitted is scored by validation top-1 and the best is
    kept per problem (ties: the smaller C, as :class:`~semcat_kit.experiments.baselines.LogisticBaseline`
    does); without it the only C must be given (one value).

    **Which Cs are fitted.** ``stop_early=False``: every C of the grid. ``stop_early=True`` (default):
    a walk on the grid that assumes validation top-1 is unimodal in C (as it is in practice along a
    regularisation path), so it finds the C the full grid would choose while fitting fewer:

    1. fit ``start`` (given: the walk runs whatever the validation size; default: the grid's
       second-largest C; on embedding features validation top-1
       peaks at the weak end of the grid, C = 10-100 on the tutorial, toys and Myntra catalogs);
    2. walk towards weaker regularisation while top-1 strictly improves;
    3. if the first step up did not improve, walk towards stronger regularisation instead while
       top-1 does not get worse (a tie moves to the smaller C, as the full grid's tie rule).

    On a small, noisy validation split the curve has bumps (80 products: top-1 moves in steps of
    1.25 points) and the walk would keep the maximum nearest its start, at the weak end, where a sweep
    keeps the global one. Below ``WALK_MIN_VAL`` (300) validation products the grid is therefore scanned
    from its smallest C instead, each problem stopping at its first C that does not improve (the
    bias towards stronger regularisation suits small data). ``stop_early=False`` sweeps.

    Each problem walks on its own; a round fits every problem that still walks, each at its own C,
    as one stacked problem. Where the peak is at the weak end (the tutorial) this fits 2 of the 4
    default Cs instead of all; the Cs it skips are the strongly regularised ones, which validate worst.

    ``warm_start=True`` starts each C at the problem's previous fit instead: fewer steps, but on a
    large catalog the warm start can already lie within the absolute gradient tolerance ``tol`` of
    the next problem and stop there with 0 steps (full Myntra, 31k products: one-hot macro-F1 0.639
    at the C that stopped, 0.793 cold-started; both from ``make results``). ``rgtol``
    (:func:`lbfgs`) makes a warm-started C reduce its starting gradient by that factor.
    ``score`` maps one head's outputs ``(n, out)`` to class scores ``(n, C)`` for validation (the code
    scores of taxonomy-code heads); default: the outputs are the class logits.

    ``threads``: torch threads for the fit (restored after); default
    :func:`semcat_kit._core.threads.choose_threads` (``SEMCAT_THREADS``, else the cores other
    processes leave free: oversubscribed threads spin-wait and slow a fit far beyond its share of
    the cores), as the minibatch trainer, chosen again before every round of the path (a load that
    came or went during a long fit: a spike at its start no longer holds it at one thread). Each
    history row records the count its round ran under (``"threads"``).

    ``precondition`` (linear heads): solve every C in the eigenbasis of the training features'
    covariance (:class:`FeatureBasis`, computed once for the path, or given: the basis of ``data``'s
    features, shared by stacks on the same features); ``False``: plain L-BFGS.

    ``history[k]`` lists the Cs problem ``k`` was fitted at, in increasing C.
    """
    import time

    from .._core.progress import progress as _progress
    from .._core.threads import choose_threads, torch_threads

    cap = torch.get_num_threads()
    with torch_threads(threads) as nthreads:
        Cs = sorted(float(c) for c in Cs)
        if not Cs or any(not (c > 0 and math.isfinite(c)) for c in Cs):
            raise ValueError(f"Cs must be positive finite numbers, not {Cs}")
        if val is None and len(Cs) > 1:
            raise ValueError("choosing C among several needs validation data (val=...)")
        K, n = loss.k, len(data)
        device = next(stack.template.parameters()).device
        zero = x0.clone() if x0 is not None else torch.zeros(K, stack.n_params, device=device)
        walk = stop_early and val is not None and len(Cs) > 2 and (start is not None or len(val[1]) >= WALK_MIN_VAL)
        if start is None or not walk:
            s0 = max(0, len(Cs) - 2) if walk else 0
        else:
            if float(start) not in Cs:
                raise ValueError(f"start={start} is not one of the grid's Cs {Cs}")
            s0 = Cs.index(float(start))
        pos = [s0] * K                       # index of the next C per problem (None: done)
        up = [True] * K                      # walking towards weaker regularisation
        last = zero.clone() if warm_start else None     # each problem's latest fit (warm starts)
        best_x, best_i = zero.clone(), [s0] * K
        best_score = torch.full((K,), -1.0, dtype=torch.float64)
        hist = [[] for _ in range(K)]
        vfeat = None
        if val is not None:
            vdata, yv = val
            yv = torch.as_tensor(np.asarray(yv), dtype=torch.long)
            vfeat = stack.features(vdata) if stack.linear else None
        if isinstance(precondition, FeatureBasis):
            if precondition.rotated.shape[0] != n:
                raise ValueError(f"precondition: a FeatureBasis of {precondition.rotated.shape[0]} rows for "
                                 f"{n} training rows; pass the basis of these rows' features, or True")
            basis = precondition if stack.linear else False
        else:
            basis = FeatureBasis.of(stack.features(data)) if stack.linear and precondition else False
        bar = _progress(total=len(Cs), desc=desc, unit="C", disable=not progress, leave=False)
        rounds = 0
        while True:
            run = [k for k in range(K) if pos[k] is not None]
            if not run:
                break
            if threads is None and rounds > 0:          # the load may have changed since the last round
                nthreads = choose_threads(cap=cap)
                if nthreads != torch.get_num_threads():
                    torch.set_num_threads(nthreads)
            t0 = time.perf_counter()
            sel = torch.tensor(run, dtype=torch.long, device=device)
            Ck = [Cs[pos[k]] for k in run]
            first = rounds == 0
            begin = last[sel] if warm_start and not first else zero[sel]
            sub = loss if len(run) == K else _SubLoss(loss, sel)
            r = fit_stacked(stack, sub, [1.0 / (c * n) for c in Ck], data, begin, max_iter=max_iter, gtol=tol,
                            rgtol=rgtol if warm_start and not first else 0.0, basis=basis)
            if warm_start:
                last[sel] = r.x
            secs = time.perf_counter() - t0
            if val is not None:
                top1, nll = _validate(stack, r.x, vdata, vfeat, yv, score=score)
            for j, k in enumerate(run):
                i, c = pos[k], Ck[j]
                row = {"C": c, "l2": 1.0 / (c * n), "seconds": secs / len(run), "evaluations": r.evaluations,
                       "round_problems": len(run), "problem_evaluations": r.problem_evaluations, "threads": nthreads,
                       "loss": float(r.f[j]), "iterations": int(r.iterations[j]), "converged": bool(r.converged[j]),
                       "grad_max": float(r.grad_max[j])}
                if val is None:
                    best_x[k], best_i[k] = r.x[j], i
                    hist[k].append(row)
                    pos[k] = None
                    continue
                v = float(top1[j])
                hist[k].append({**row, "val_top1": v, "val_loss": float(nll[j])})
                prev = float(best_score[k])
                improved = v > prev or (not up[k] and v == prev)     # walking down, a tie moves to the smaller C
                if improved:
                    best_x[k], best_i[k], best_score[k] = r.x[j], i, v
                if not walk:                                  # the scan: up the grid, stopping early if asked
                    stop = stop_early and not improved and i != s0
                    pos[k] = i + 1 if i + 1 < len(Cs) and not stop else None
                    continue
                if i == s0:                                   # the start: go up first (or down at the grid's top)
                    pos[k] = i + 1 if i + 1 < len(Cs) else (i - 1 if i > 0 else None)
                    up[k] = i + 1 < len(Cs)
                elif up[k] and improved:
                    pos[k] = i + 1 if i + 1 < len(Cs) else None
                elif up[k] and i == s0 + 1:                   # the first step up did not help: walk down
                    up[k] = False
                    pos[k] = s0 - 1 if s0 > 0 else None
                elif not up[k] and improved:
                    pos[k] = i - 1 if i > 0 else None
                else:
                    pos[k] = None
            rounds += 1
            bar.update(1)
        bar.close()
        for k in range(K):
            hist[k].sort(key=lambda h: h["C"])
        return PathResult(x=best_x, C=[Cs[i] for i in best_i], history=hist)


class _SubLoss:
    """A :class:`~semcat_kit.learn.losses.StackedLoss` restricted to some of its problems."""

    def __init__(self, loss, sel: torch.Tensor):
        self.loss, self.sel = loss, sel

    @property
    def k(self) -> int:
        return int(self.sel.numel())

    def output_variance(self) -> torch.Tensor:
        return self.loss.output_variance()

    def __call__(self, z, rows, problems):
        return self.loss(z, rows, self.sel.to(problems.device)[problems])


@torch.no_grad()
def _validate(stack, x, vdata, vfeat, yv, chunk: int = 8192, score=None):
    """Validation top-1 and mean NLL of the true class, per problem: ``(K,)`` each."""
    K = x.shape[0]
    hits = torch.zeros(K, dtype=torch.float64)
    nll = torch.zeros(K, dtype=torch.float64)
    n = len(yv)
    for a in range(0, n, chunk):
        rows = slice(a, min(n, a + chunk))
        z = stack.logits(x, vfeat[rows] if stack.linear else _inputs(vdata, rows)).float()
        if score is not None:
            z = torch.stack([score(z[:, k]) for k in range(K)], 1)
        yb = yv[rows].to(z.device)
        hits += (z.argmax(2) == yb[:, None]).sum(0).double().cpu()
        logp = torch.log_softmax(z, dim=2).gather(2, yb[:, None, None].expand(-1, K, 1)).squeeze(2)
        nll -= logp.sum(0).double().cpu()
    return hits / n, nll / n


def default_threads() -> int:
    """Torch threads for a fit that shares the machine: :func:`semcat_kit._core.threads.choose_threads`
    (``SEMCAT_THREADS`` when set; else the cores this process may use less those other processes
    keep busy, at least 1, at most the caller's torch threads): what :func:`fit_path` runs under
    when it is not given ``threads``.

    Oversubscribed torch threads spin-wait for each other and slow a run far more than its share
    of the cores would (16-31x measured with 4 busy processes on 2 cores; bench/bench_trainer_bound.py).
    """
    from .._core.threads import choose_threads

    return choose_threads()
