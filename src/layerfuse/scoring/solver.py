"""The batched multinomial logistic-regression probe: all CV folds fitted at once by L-BFGS after
a whitening change of variables.
"""

from __future__ import annotations

import math

import torch

from layerfuse.config import DEFAULT_PROBE_MAX_ITER, DEFAULT_PROBE_TOL
from layerfuse.scoring.threads import torch_threads

__all__ = ["fit_logistic", "logits", "weight_grad"]

# --------------------------------------------------------------------------------------------
# the batched logistic-regression probe
# --------------------------------------------------------------------------------------------


def logits(xs: torch.Tensor, W: torch.Tensor, b: torch.Tensor, large: bool) -> torch.Tensor:
    """``xs @ W + b`` [N, k]. For a few columns it is computed as ``(W' xs')'``: the same product,
    which MKL runs 2-3x faster than ``xs @ W`` for [N, d] x [d, k <= ~32] on one thread (AMD EPYC,
    docs/benchmarks.md#the-probes-products); many-class products on several threads keep the
    plain form, which is faster there."""
    if large:
        return torch.addmm(b, xs, W)
    return torch.addmm(b[:, None], W.T, xs.T).T


def weight_grad(xs: torch.Tensor, R: torch.Tensor, W: torch.Tensor, l2: float) -> torch.Tensor:
    """``xs' R + l2 W`` [d, k], computed as ``(R' xs + l2 W')'``: 3-5x faster than ``xs' R`` with MKL
    for skinny R on one thread, never slower with several (same section of docs/benchmarks.md)."""
    return torch.addmm(W.T, R.T, xs, alpha=1.0, beta=l2).T


def fit_logistic(
    xs: torch.Tensor,
    yi: torch.Tensor,
    n_classes: int,
    train_mask: torch.Tensor,
    *,
    l2: float,
    max_iter: int = DEFAULT_PROBE_MAX_ITER,
    tol: float = DEFAULT_PROBE_TOL,
    gram: torch.Tensor | None = None,
    eig: tuple[torch.Tensor, torch.Tensor] | None = None,
    threads: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Fit one multinomial logistic regression per column of ``train_mask`` at once.

    xs [N, d] float32 (standardised), yi [N] long, train_mask [N, F] (1 = row trains problem f).
    Minimises, for every f, ``mean_{train f} CE + l2/2 ||W_f||^2`` (bias unpenalised).
    Returns W [d, F, C], b [F, C] and the number of loss evaluations.

    The problems are independent, so L-BFGS on their sum is L-BFGS on each (the line search is
    shared). Variables are changed to ``W = L^-T V`` with ``L L^T = 0.5 X'X/N + l2 I``
    (Böhning's bound on the Hessian, from all N rows), which makes the problem close to
    isotropic: ~10-25 evaluations reach the tolerance where plain L-BFGS needs hundreds.
    With ``eig`` (eigenvalues, eigenvectors of the Gram matrix) the same whitening is done as
    ``W = U diag(1/sqrt(0.5 s + l2)) V`` instead. ``threads`` is used for the two [N, d] x
    [d, F*C] products when they are large (many classes); the rest runs on the caller's setting.

    Longer than 80 lines on purpose: the whitening maps and the loss closure share the factor and
    the weights, and one place for the whole solver keeps its maths readable top to bottom.
    """
    n, d = xs.shape
    F = train_mask.shape[1]
    C = n_classes
    M = train_mask.to(torch.float32)
    nf = M.sum(0).clamp_min(1.0)
    Y = torch.nn.functional.one_hot(yi, C).to(torch.float32)  # N, C
    wts = (M / nf)[:, :, None]  # N, F, 1: each row's weight in problem f's mean loss
    if eig is not None:
        evals, evecs = eig
        r = (0.5 * evals.clamp_min(0.0) + l2).rsqrt()[:, None]  # d, 1

        def to_w(v: torch.Tensor) -> torch.Tensor:
            return evecs @ (r * v)

        def to_v_grad(g: torch.Tensor) -> torch.Tensor:
            return r * (evecs.T @ g)

    else:
        if gram is None:
            gram = xs.T @ xs / n
        eye = torch.eye(d, dtype=torch.float32)
        jitter = 1e-6 * float(gram.diagonal().mean().clamp_min(1e-12))
        while True:
            Lc, info = torch.linalg.cholesky_ex(0.5 * gram + (l2 + jitter) * eye)
            if int(info) == 0:
                break
            jitter *= 10.0

        def to_w(v: torch.Tensor) -> torch.Tensor:
            return torch.linalg.solve_triangular(Lc.T, v, upper=True)

        def to_v_grad(g: torch.Tensor) -> torch.Tensor:
            return torch.linalg.solve_triangular(Lc, g, upper=False)

    sb = math.sqrt(2.0)  # the bias's curvature is bounded by 0.5 -> scale by 1/sqrt(0.5)
    V = torch.zeros(d + 1, F * C, dtype=torch.float32, requires_grad=True)
    n_eval = [0]

    def unpack(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return to_w(v[:d]), sb * v[d]

    large = n * d * F * C > 2e8  # e.g. 52 classes x 5 folds
    big = threads if large else None

    def closure() -> torch.Tensor:
        n_eval[0] += 1
        v = V.detach()
        W, b = unpack(v)
        with torch_threads(big):
            Z = logits(xs, W, b, large).reshape(n, F, C)
        lse = torch.logsumexp(Z, dim=2, keepdim=True)
        P = torch.exp(Z - lse)
        nll = lse[..., 0] - (Z * Y[:, None, :]).sum(2)  # N, F
        loss = (nll * wts[..., 0]).sum() + 0.5 * l2 * (W * W).sum()
        R = ((P - Y[:, None, :]) * wts).view(n, F * C)
        with torch_threads(big):
            gW = weight_grad(xs, R, W, l2)
        g = torch.empty_like(v)
        g[:d] = to_v_grad(gW)
        g[d] = sb * R.sum(0)
        V.grad = g
        return loss

    opt = torch.optim.LBFGS(
        [V],
        lr=1.0,
        max_iter=max_iter,
        history_size=10,
        tolerance_grad=tol,
        tolerance_change=1e-10,
        line_search_fn="strong_wolfe",
    )
    opt.step(closure)
    W, b = unpack(V.detach())
    return W.view(d, F, C), b.view(F, C), n_eval[0]
