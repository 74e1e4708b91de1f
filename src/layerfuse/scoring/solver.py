"""The batched multinomial logistic-regression probe: all CV folds fitted at once by L-BFGS after
a whitening change of variables.
"""

from __future__ import annotations

import math

import torch

from layerfuse.config import DEFAULT_PROBE_MAX_ITER, DEFAULT_PROBE_TOL
from layerfuse.scoring.threads import torch_threads

__all__ = ["LARGE_PROBE", "fit_logistic", "logits", "weight_grad"]

# N * d * folds * classes above which a fit counts as large: its [N, F*C] work runs on ``threads``
# and, whitened by ``eig``, it multiplies pre-whitened features (e.g. R52: 52 classes x 5 folds).
LARGE_PROBE = 2e8

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
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
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
    ``W = U diag(1/sqrt(0.5 s + l2)) V`` instead, and for many columns with the features whitened
    once (``xs U diag(r)``) so that an evaluation's products use V directly. ``threads`` is used for an
    evaluation's [N, F*C] work when it is large (many classes: the two [N, d] x [d, F*C] products
    and the softmax between them); the rest runs on the caller's setting.
    ``init`` (W [d, F, C], b [F, C]) starts L-BFGS there instead of at zero, e.g. from the
    neighbouring layer's solution: the optimum is the same (the problem is strictly convex), a
    start near it needs fewer evaluations.

    Longer than 80 lines on purpose: the whitening maps and the loss closure share the factor and
    the weights, and one place for the whole solver keeps its maths readable top to bottom.
    """
    n, d = xs.shape
    F = train_mask.shape[1]
    C = n_classes
    M = train_mask.to(torch.float32)
    nf = M.sum(0).clamp_min(1.0)
    wts = (M / nf)[:, :, None]  # N, F, 1: each row's weight in problem f's mean loss
    large = n * d * F * C > LARGE_PROBE  # e.g. 52 classes x 5 folds
    big = threads if large else None
    if eig is not None:
        evals, evecs = eig
        r = (0.5 * evals.clamp_min(0.0) + l2).rsqrt()[:, None]  # d, 1

        def to_w(v: torch.Tensor) -> torch.Tensor:
            return evecs @ (r * v)

        def to_v_grad(g: torch.Tensor) -> torch.Tensor:
            return r * (evecs.T @ g)

        def to_v(w: torch.Tensor) -> torch.Tensor:
            return (evecs.T @ w) / r

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

        def to_v(w: torch.Tensor) -> torch.Tensor:
            return Lc.T @ w

    # What an evaluation multiplies: the features by W (= to_w(V)), or, for many columns with
    # ``eig``, the whitened features xs U diag(r) by V itself (an [N, d] x [d, d] product once
    # instead of U diag(r) V twice per evaluation; with few columns it costs more than it saves,
    # SST-2: ~20 evaluations of 10 columns). penalty_w(weights) is what the l2 penalty pairs them
    # with: W itself, or r^2 V (0.5 l2 ||W||^2 = 0.5 l2 ||r V||^2); back maps a gradient to V.
    if eig is not None and large:
        feats = xs @ (evecs * r.T)
        r2 = r * r

        def data_weights(v: torch.Tensor) -> torch.Tensor:
            return v

        def penalty_w(m: torch.Tensor) -> torch.Tensor:
            return r2 * m

        def back(g: torch.Tensor) -> torch.Tensor:
            return g

    else:
        feats, data_weights, back = xs, to_w, to_v_grad

        def penalty_w(m: torch.Tensor) -> torch.Tensor:
            return m

    sb = math.sqrt(2.0)  # the bias's curvature is bounded by 0.5 -> scale by 1/sqrt(0.5)
    V = torch.zeros(d + 1, F * C, dtype=torch.float32)
    if init is not None:
        W0, b0 = init
        V[:d] = to_v(W0.reshape(d, F * C).to(torch.float32))
        V[d] = b0.reshape(F * C).to(torch.float32) / sb
    V.requires_grad_(True)
    n_eval = [0]

    yidx = yi.view(n, 1, 1).expand(n, F, 1)
    minus_one = torch.full((n, F, 1), -1.0, dtype=torch.float32)

    def closure() -> torch.Tensor:
        n_eval[0] += 1
        v = V.detach()
        Wd, b = data_weights(v[:d]), sb * v[d]  # what multiplies feats (W, or V when pre-whitened)
        Wp = penalty_w(Wd)
        # The loss and its residual in place on one [N, F, C] block: softmax as exp(Z - max) / sum,
        # the label's logit and the "- Y" by index instead of products with the one-hot matrix.
        with torch_threads(big):
            Z = logits(feats, Wd, b, large).reshape(n, F, C)
            zy = Z.gather(2, yidx)[..., 0]  # N, F: the label's logit
            zmax = Z.amax(2, keepdim=True)
            E = Z.sub_(zmax).exp_()
            s = E.sum(2, keepdim=True)
            nll = s.log()[..., 0] + zmax[..., 0] - zy  # N, F
            loss = (nll * wts[..., 0]).sum() + 0.5 * l2 * (Wd * Wp).sum()
            R = E.div_(s).scatter_add_(2, yidx, minus_one).mul_(wts).view(n, F * C)  # (P - Y) * wts
            gW = weight_grad(feats, R, Wp, l2)
        g = torch.empty_like(v)
        g[:d] = back(gW)
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
    v = V.detach()
    W, b = to_w(v[:d]), sb * v[d]
    return W.view(d, F, C), b.view(F, C), n_eval[0]
