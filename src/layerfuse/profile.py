"""Layer profiles: how well does each layer separate the classes, measured on train only.

The extraction stage hands over, per pooling, an array ``X`` of shape ``[L+1, N, d]`` (index 0 =
token embeddings, 1..L = transformer blocks; float16 or float32, possibly a memmap) and integer
labels ``y`` of shape ``[N]``. Everything in this module is computed on that training split.
Test data enters only through :func:`eval_test_column`, which writes a column that no selection
function reads (:data:`ANALYSIS_COLUMN`; enforced with an assertion in :func:`_train_side_rows`).

Scores (all "higher is better"), per layer and per averaged window of layers:

``probe``
    k-fold stratified CV of an L2-regularised multinomial logistic regression (one weight vector
    per class, also for binary tasks) on standardised features: ``probe_acc`` / ``probe_f1``
    (macro) are the mean over folds, ``*_std`` the population std over folds. The penalty is
    ``l2/2 * ||W||^2`` added to the *mean* log-loss (bias unpenalised), i.e. scikit-learn's
    multinomial ``LogisticRegression(C=1 / (l2 * n_train))``. All folds are trained at once as
    one batched problem: L-BFGS (torch, float32) after a change of variables that whitens
    Böhning's bound on the Hessian, ``0.5 * X'X/n + l2*I`` (a Cholesky factor, or the
    eigendecomposition when LogME has computed it anyway). That converges in ~10-25 loss
    evaluations where plain L-BFGS needs hundreds.
``centroid``
    nearest class centroid (Euclidean, standardised features), cross-validated on the same folds
    as the probe; mean accuracy over folds.
``knn``
    k-nearest-neighbour accuracy (cosine on standardised features, k=10, majority vote, ties
    broken by summed similarity), leave-one-out within a fixed random subsample of
    ``knn_sample`` rows (the same rows for every layer; all rows when N is smaller). The cost
    grows with the square of the subsample: the default 700 rows keep k-NN >= 10x cheaper than
    the probe on a 6,920 x 576 binary array (one thread), and its layer curve follows the full
    6,920-row leave-one-out curve with Spearman ~0.8 (SmolLM2 on SST-2); ``knn_sample=2000``
    gives ~0.93 at ~4x the cost.
``fisher``
    LDA separability ``tr((S_W + eps*I)^-1 S_B)`` on standardised features, with
    ``eps = fisher_shrink * tr(S_W)/d`` (shrinkage keeps it finite when d is close to N).
``logme``
    LogME (You et al., 2021): the maximised log marginal evidence per sample of a Bayesian
    linear model from features to each (centred) one-hot target, averaged over classes.

Standardisation (per feature mean/std) uses all N training rows of a layer, without labels.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import time
import warnings
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .errors import LayerfuseError

__all__ = [
    "ANALYSIS_COLUMN",
    "SCORES",
    "STRATEGIES",
    "LayerProfile",
    "LayerSelection",
    "average_layers",
    "cv_probe",
    "eval_test_column",
    "score_layers",
    "select_layers",
]

#: Per-layer test accuracy, for plots and analysis only. No selection function reads it.
ANALYSIS_COLUMN = "test_acc_analysis_only"
#: Score names accepted by :func:`score_layers`.
SCORES = ("probe", "centroid", "knn", "fisher", "logme")
CHEAP_SCORES = ("centroid", "knn", "fisher", "logme")
#: The row column that carries each score's headline number.
SCORE_COLUMN = {
    "probe": "probe_acc",
    "centroid": "centroid_acc",
    "knn": "knn_acc",
    "fisher": "fisher",
    "logme": "logme",
}
_PROBE_COLUMNS = ("probe_acc", "probe_acc_std", "probe_f1", "probe_f1_std")
#: Selection strategies accepted by :func:`select_layers` (``top-3`` is short for top-k, k=3).
STRATEGIES = ("best", "top-k", "window", "all", "auto")
_COMBINES = ("single", "average", "separate", "mix")


# --------------------------------------------------------------------------------------------
# input checks and small helpers
# --------------------------------------------------------------------------------------------


def _as_layers(X: Any, what: str = "X") -> Any:
    """Accept a numpy array/memmap (or torch tensor) of shape [L+1, N, d] without copying it."""
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    if not hasattr(X, "shape") or not hasattr(X, "dtype"):
        raise LayerfuseError(
            f"{what} must be an array of shape [layers+1, N, d], got {type(X).__name__}; "
            "pass the per-pooling array from the extraction cache"
        )
    if len(X.shape) != 3:
        raise LayerfuseError(
            f"{what} must have shape [layers+1, N, d], got shape {tuple(X.shape)}; pass one "
            "pooling's array (index 0 = token embeddings, 1..L = blocks)"
        )
    if not np.issubdtype(np.dtype(X.dtype), np.floating):
        raise LayerfuseError(f"{what} must hold floats (float16/float32), got {X.dtype}")
    if min(X.shape) < 1:
        raise LayerfuseError(f"{what} is empty (shape {tuple(X.shape)}); pass a non-empty array")
    return X


def _encode_labels(y: Any, n: int, what: str = "y") -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise LayerfuseError(
            f"{what} must be a 1-D array with one label per row of X ({n}), got shape {y.shape}"
        )
    classes, yi = np.unique(y, return_inverse=True)
    return classes, yi.astype(np.int64)


def _label_digest(y: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(y, dtype=np.int64).tobytes()).hexdigest()[:16]


def _layer_f32(X: Any, layer: int) -> torch.Tensor:
    """One layer as a float32 [N, d] tensor (reads one layer of a memmap, never the whole)."""
    a = np.asarray(X[layer])
    if a.dtype == np.float32:
        return torch.from_numpy(np.array(a, copy=True))
    return torch.from_numpy(a.astype(np.float32))


def _standardise(
    a: np.ndarray | torch.Tensor,
    stats=None,
    *,
    what: str = "features",
    inplace: bool = False,
    gram: bool = False,
):
    """Per-feature z-score. Returns (xs, (mean, 1/std), gram or None).

    ``gram=True`` also returns ``xs'xs / N`` (the correlation matrix), computed from the centred
    data so that the column variances come for free from its diagonal. Means use a
    matrix-vector product, several times faster than torch's column reductions on [N, d].
    Constant features keep scale 1. ``inplace`` reuses ``a``'s memory (only for own copies).
    """
    x = torch.as_tensor(a, dtype=torch.float32)
    n = x.shape[0]
    G = None
    if stats is None:
        ones = torch.ones(1, n, dtype=torch.float32)
        mu = (ones @ x) / n
        c = x.sub_(mu) if inplace else x - mu
        if gram:
            G = (c.T @ c) / n
            var = G.diagonal().clone()
        else:
            var = ((ones @ (c * c)) / n)[0]
        if not (torch.isfinite(mu).all() and torch.isfinite(var).all()):
            bad = int((~torch.isfinite(torch.as_tensor(a, dtype=torch.float32))).any(dim=1).sum())
            raise LayerfuseError(
                f"{what} has NaN/inf values in {max(bad, 1)} rows; re-run extraction (an fp16 "
                "overflow is likely: extract in float32)"
            )
        tiny = 1e-12 * (1.0 + mu[0].abs()) ** 2
        inv = torch.where(var > tiny, var.clamp_min(1e-30).rsqrt(), torch.ones_like(var))
        stats = (mu, inv)
        c.mul_(inv)
        if G is not None:
            G.mul_(inv[:, None]).mul_(inv[None, :])
    else:
        mu, inv = stats
        c = x.sub_(mu) if inplace else x - mu
        if not torch.isfinite(c).all():
            raise LayerfuseError(f"{what} has NaN/inf values; re-run extraction")
        c.mul_(inv)
        if gram:
            G = (c.T @ c) / n
    return c, stats, G


@contextmanager
def _torch_threads(n: int | None):
    """Run a block with ``n`` torch threads (None: unchanged), restoring the old count after.

    Why: on a machine shared with other jobs, small multi-threaded ops (d x d factorisations,
    [N, d] x [d, 10] products) can run 10-100x slower than single-threaded ones because worker
    threads wait on busy cores. Only the large products (Gram matrix, k-NN similarities) gain
    from extra threads, so everything else runs on one thread (see ``score_layers(threads=)``).
    """
    old = torch.get_num_threads()
    change = bool(n) and int(n) != old
    if change:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if change:
            torch.set_num_threads(old)


def _big_threads(threads: int | None = None) -> int:
    """Threads for the large products: ``threads`` if given, else half the cores (at least 1,
    at most torch's setting). On a 2-core machine shared with other jobs a second thread gains
    ~15% when the machine is idle and costs 1.5-3x when another job is running."""
    if threads:
        return int(threads)
    return max(1, min(torch.get_num_threads(), (os.cpu_count() or 2) // 2))


def _depth(start: int, end: int, n_layers: int) -> float:
    return (start + end) / 2 / max(n_layers, 1)


def _nan_to_none(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (np.floating,)):
        return _nan_to_none(float(v))
    if isinstance(v, (np.integer,)):
        return int(v)
    return v


def average_layers(X: Any, start: int, end: int) -> np.ndarray:
    """Mean over layers ``start..end`` inclusive of ``X [L+1, N, d]``, as float32 ``[N, d]``.

    Accumulates one layer at a time, so a float16 memmap is never converted whole.
    """
    X = _as_layers(X)
    n_rows = X.shape[0]
    if not (isinstance(start, (int, np.integer)) and isinstance(end, (int, np.integer))):
        raise LayerfuseError(f"start and end must be integers, got {start!r} and {end!r}")
    if not (0 <= start <= end < n_rows):
        raise LayerfuseError(
            f"layer window {start}..{end} is outside 0..{n_rows - 1}; pass 0 <= start <= end "
            f"<= {n_rows - 1}"
        )
    out = np.zeros(X.shape[1:], dtype=np.float32)
    for layer in range(start, end + 1):
        np.add(out, X[layer], out=out, casting="unsafe")
    out /= np.float32(end - start + 1)
    return out


# --------------------------------------------------------------------------------------------
# the batched logistic-regression probe
# --------------------------------------------------------------------------------------------


def _fit_logistic(
    xs: torch.Tensor,
    yi: torch.Tensor,
    n_classes: int,
    train_mask: torch.Tensor,
    *,
    l2: float,
    max_iter: int = 100,
    tol: float = 1e-4,
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

    big = threads if n * d * F * C > 2e8 else None  # e.g. 52 classes x 5 folds

    def closure() -> torch.Tensor:
        n_eval[0] += 1
        v = V.detach()
        W, b = unpack(v)
        with _torch_threads(big):
            Z = torch.addmm(b, xs, W).view(n, F, C)
        lse = torch.logsumexp(Z, dim=2, keepdim=True)
        P = torch.exp(Z - lse)
        nll = lse[..., 0] - (Z * Y[:, None, :]).sum(2)  # N, F
        loss = (nll * wts[..., 0]).sum() + 0.5 * l2 * (W * W).sum()
        R = ((P - Y[:, None, :]) * wts).view(n, F * C)
        with _torch_threads(big):
            gW = torch.addmm(W, xs.T, R, alpha=1.0, beta=l2)
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


def _macro_f1_per_fold(true: np.ndarray, pred: np.ndarray, fold: np.ndarray, F: int, C: int):
    """Macro-F1 per fold over the labels present in that fold's truth or predictions."""
    conf = np.bincount((fold * C + true) * C + pred, minlength=F * C * C).reshape(F, C, C)
    tp = np.diagonal(conf, axis1=1, axis2=2).astype(np.float64)
    rows = conf.sum(2)
    cols = conf.sum(1)
    denom = rows + cols
    present = denom > 0
    f1 = np.where(present, 2 * tp / np.maximum(denom, 1), 0.0)
    return f1.sum(1) / np.maximum(present.sum(1), 1)


# --------------------------------------------------------------------------------------------
# scoring context: folds, labels and per-score kernels
# --------------------------------------------------------------------------------------------


class _Scorer:
    """Everything that is shared across layers: labels, folds, kNN queries, settings."""

    def __init__(self, yi: np.ndarray, n_classes: int, folds: int, seed: int, settings: dict):
        from sklearn.model_selection import StratifiedKFold

        self.n = len(yi)
        self.C = n_classes
        self.big_threads = settings.get("big_threads")
        self.F = folds
        self.settings = settings
        fold = np.empty(self.n, dtype=np.int64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "least populated class has only k members"
            skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
            for f, (_, test) in enumerate(skf.split(np.zeros(self.n), yi)):
                fold[test] = f
        self.fold_np = fold
        self.yi_np = yi
        self.fold = torch.from_numpy(fold)
        self.yi = torch.from_numpy(yi)
        self.train_mask = (self.fold[:, None] != torch.arange(folds)[None, :]).to(torch.float32)
        self.onehot = torch.nn.functional.one_hot(self.yi, self.C).to(torch.float32)
        self.counts = self.onehot.sum(0)
        # (fold, class) membership for held-out class sums, used by the centroid score
        fc = self.fold * self.C + self.yi
        self.fold_class = torch.nn.functional.one_hot(fc, folds * self.C).to(torch.float32)
        self.fold_class_counts = self.fold_class.sum(0).view(folds, self.C)
        rng = np.random.default_rng(seed)
        m = min(self.n, int(settings["knn_sample"]))
        q = np.sort(rng.choice(self.n, size=m, replace=False)) if m < self.n else np.arange(self.n)
        self.knn_rows = torch.from_numpy(q)
        self.arange = torch.arange(self.n)

    # ---- probe -----------------------------------------------------------------------------
    def probe(self, xs: torch.Tensor, gram: torch.Tensor | None, eig=None) -> dict:
        s = self.settings
        W, b, n_eval = _fit_logistic(
            xs, self.yi, self.C, self.train_mask, l2=s["probe_l2"], max_iter=s["probe_max_iter"],
            tol=s["probe_tol"], gram=gram, eig=eig, threads=self.big_threads,
        )
        d = xs.shape[1]
        Z = (xs @ W.view(d, -1) + b.view(-1)).view(self.n, self.F, self.C)
        pred = Z[self.arange, self.fold].argmax(1).numpy()
        correct = (pred == self.yi_np).astype(np.float64)
        fold_n = np.bincount(self.fold_np, minlength=self.F)
        acc = np.bincount(self.fold_np, weights=correct, minlength=self.F) / np.maximum(fold_n, 1)
        f1 = _macro_f1_per_fold(self.yi_np, pred, self.fold_np, self.F, self.C)
        return {
            "probe_acc": float(acc.mean()),
            "probe_acc_std": float(acc.std()),
            "probe_f1": float(f1.mean()),
            "probe_f1_std": float(f1.std()),
            "probe_evals": n_eval,
        }

    # ---- nearest class centroid, CV on the probe's folds ------------------------------------
    def centroid(self, xs: torch.Tensor) -> dict:
        F, C = self.F, self.C
        total = self.onehot.T @ xs  # C, d
        held = (self.fold_class.T @ xs).view(F, C, -1)  # F, C, d
        n_train = (self.counts[None, :] - self.fold_class_counts)  # F, C
        mu = (total[None] - held) / n_train.clamp_min(1)[..., None]  # F, C, d
        mu_flat = mu.reshape(F * C, -1)
        score = 2 * (xs @ mu_flat.T) - (mu_flat * mu_flat).sum(1)[None, :]  # N, F*C
        score = score.view(self.n, F, C)
        score = score.masked_fill((n_train <= 0)[None], float("-inf"))
        pred = score[self.arange, self.fold].argmax(1).numpy()
        correct = (pred == self.yi_np).astype(np.float64)
        fold_n = np.bincount(self.fold_np, minlength=F)
        acc = np.bincount(self.fold_np, weights=correct, minlength=F) / np.maximum(fold_n, 1)
        return {"centroid_acc": float(acc.mean())}

    # ---- k-NN, cosine, leave-one-out within a fixed row subsample ----------------------------
    def knn(self, xs: torch.Tensor) -> dict:
        idx = self.knn_rows
        m = len(idx)
        k = min(int(self.settings["knn_k"]), m - 1)
        if k < 1:
            return {"knn_acc": float("nan")}
        sub = xs.index_select(0, idx) if m < self.n else xs.clone()
        sub.mul_(torch.linalg.vector_norm(sub, dim=1, keepdim=True).clamp_min(1e-12).reciprocal_())
        ref = sub.to(torch.bfloat16)  # bf16 products, fp32 accumulation: ~2x faster, same ranks
        lab_all = self.yi[idx]
        correct = 0
        chunk = max(1, int(2**23 // max(m, 1)))  # bound the similarity block to ~16 MB
        for s0 in range(0, m, chunk):
            rows = torch.arange(s0, min(s0 + chunk, m))
            with _torch_threads(self.big_threads):
                sim = (ref[rows] @ ref.T).to(torch.float32)  # q, m
                sim[torch.arange(len(rows)), rows] = float("-inf")  # leave one out
                top_s, top_i = torch.topk(sim, k, dim=1)
            lab = lab_all[top_i]  # q, k
            votes = torch.zeros(len(rows), self.C)
            votes.scatter_add_(1, lab, torch.ones_like(top_s))
            tie = torch.zeros(len(rows), self.C)
            tie.scatter_add_(1, lab, top_s)
            pred = (votes + tie / (k + 1)).argmax(1)  # |tie/(k+1)| < 1: breaks ties only
            correct += int((pred == lab_all[rows]).sum())
        return {"knn_acc": correct / m}

    # ---- Fisher / LDA separability -----------------------------------------------------------
    def fisher(self, xs: torch.Tensor, gram: torch.Tensor) -> dict:
        # S_T = gram (features are centred), S_B = D Pi D', S_W = S_T - S_B.
        # J = tr((S_W + eps I)^-1 S_B) = tr(Pi K (I - Pi K)^-1), K = D' (S_T + eps I)^-1 D
        # (Woodbury), so only a d x d Cholesky and C x C algebra are needed.
        d = xs.shape[1]
        pi = (self.counts / self.n).to(torch.float64)
        means = (self.onehot.T @ xs) / self.counts.clamp_min(1)[:, None]  # C, d
        tr_sb = float((pi[:, None] * (means.to(torch.float64) ** 2)).sum())
        tr_sw = max(float(gram.diagonal().sum()) - tr_sb, 1e-12)
        eps = self.settings["fisher_shrink"] * tr_sw / d
        A = gram + eps * torch.eye(d)
        Lc, info = torch.linalg.cholesky_ex(A)
        if int(info) != 0:  # numerically indefinite: raise the floor and retry once
            A = gram + (eps + 1e-3 * float(gram.diagonal().mean())) * torch.eye(d)
            Lc = torch.linalg.cholesky(A)
        Dm = means.T.contiguous()  # d, C
        Kh = torch.linalg.solve_triangular(Lc, Dm, upper=False).to(torch.float64)
        K = Kh.T @ Kh  # C, C
        PK = pi[:, None] * K
        eye = torch.eye(self.C, dtype=torch.float64)
        J = torch.trace(torch.linalg.solve((eye - PK).T, PK.T).T)
        return {"fisher": float(J)}

    # ---- LogME -------------------------------------------------------------------------------
    def logme(self, xs: torch.Tensor, eig) -> dict:
        n, d = xs.shape
        if eig is None:
            eig = torch.linalg.eigh(xs.T @ xs / n)
        evals, evecs = eig  # of F'F / n
        sigma = (evals.to(torch.float64) * n).clamp_min(0.0)  # eigenvalues of F'F
        Yc = self.onehot - self.onehot.mean(0, keepdim=True)  # centred targets: free intercept
        q = (evecs.T @ (xs.T @ Yc)).to(torch.float64)  # d, C: V' F' y
        yy = (Yc.to(torch.float64) ** 2).sum(0)  # C
        return {"logme": float(_logme_from_spectrum(sigma, q, yy, n).mean())}


def _logme_from_spectrum(sigma: torch.Tensor, q: torch.Tensor, yy: torch.Tensor, n: int):
    """LogME evidence per sample for each target column, from F'F's spectrum.

    sigma [D] eigenvalues of F'F, q [D, K] = V'F'y per target, yy [K] = ||y||^2.
    Fixed-point updates of the prior precision alpha and noise precision beta (You et al. 2021,
    MacKay's evidence framework); all terms are written with q so that zero eigenvalues are safe.
    """
    D = sigma.shape[0]
    K = q.shape[1]
    alpha = torch.ones(K, dtype=torch.float64)
    beta = torch.ones(K, dtype=torch.float64)
    s = sigma[:, None]
    q2 = q * q
    for _ in range(100):
        den = alpha[None] + beta[None] * s  # D, K
        gamma = (beta[None] * s / den).sum(0)
        m2 = (beta[None] ** 2 * q2 / den**2).sum(0)  # ||m||^2
        mq = (beta[None] * q2 / den).sum(0)  # m'F'y
        mGm = (beta[None] ** 2 * s * q2 / den**2).sum(0)  # m'F'F m
        res = (yy - 2 * mq + mGm).clamp_min(1e-12)  # ||F m - y||^2
        new_alpha = gamma / m2.clamp_min(1e-12)
        new_beta = (n - gamma).clamp_min(1e-12) / res
        done = bool(
            ((new_alpha - alpha).abs() <= 1e-6 * alpha).all()
            and ((new_beta - beta).abs() <= 1e-6 * beta).all()
        )
        alpha, beta = new_alpha, new_beta
        if done:
            break
    den = alpha[None] + beta[None] * s
    m2 = (beta[None] ** 2 * q2 / den**2).sum(0)
    mq = (beta[None] * q2 / den).sum(0)
    mGm = (beta[None] ** 2 * s * q2 / den**2).sum(0)
    res = (yy - 2 * mq + mGm).clamp_min(1e-12)
    evidence = (
        n / 2 * torch.log(beta)
        + D / 2 * torch.log(alpha)
        - n / 2 * math.log(2 * math.pi)
        - beta / 2 * res
        - alpha / 2 * m2
        - 0.5 * torch.log(den).sum(0)
    )
    return evidence / n


# --------------------------------------------------------------------------------------------
# LayerProfile
# --------------------------------------------------------------------------------------------


@dataclass
class LayerProfile:
    """Scores for every layer (and averaged window) of one model + pooling, on train data.

    ``rows``: one dict per layer / window / top-k concatenation with ``kind`` ("layer",
    "window", "topk"), ``start``, ``end``, ``layers`` (list), ``depth`` (layer / L; the middle
    of the span for windows) and one column per score (see :data:`SCORE_COLUMN`).
    ``agreement``: Spearman correlation across layers of each cheap score with ``probe_acc``.
    ``timings``: seconds; ``prep`` (float conversion, standardisation, X'X, shared) and one key
    per score for the layer rows, then ``windows``, ``topk`` and ``total`` wall time.
    """

    rows: list[dict]
    agreement: dict[str, float | None] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    n_layers: int = 0
    n_samples: int = 0
    n_features: int = 0
    classes: list = field(default_factory=list)
    folds: int = 5
    seed: int = 0
    name: str | None = None
    settings: dict = field(default_factory=dict)

    # ---- views -------------------------------------------------------------------------------
    def layer_rows(self) -> list[dict]:
        return [dict(r) for r in self.rows if r["kind"] == "layer"]

    def window_rows(self) -> list[dict]:
        return [dict(r) for r in self.rows if r["kind"] == "window"]

    def columns(self) -> list[str]:
        cols: list[str] = []
        for r in self.rows:
            for k in r:
                if k not in cols:
                    cols.append(k)
        return cols

    def to_rows(self) -> list[dict]:
        """Copies of all rows (``layers`` stays a list)."""
        return [{**r, "layers": list(r["layers"])} for r in self.rows]

    def best(self, score: str = "probe_acc", kind: str | None = "layer") -> dict:
        """The row with the highest ``score`` (ties: the earliest row, i.e. the shallower layer).

        ``kind`` restricts the rows ("layer", "window", "topk"; None = all).
        """
        return dict(_best_row(_train_side_rows(self), score, kind))

    # ---- serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "n_layers": self.n_layers,
            "n_samples": self.n_samples,
            "n_features": self.n_features,
            "classes": [_nan_to_none(c) for c in self.classes],
            "folds": self.folds,
            "seed": self.seed,
            "settings": dict(self.settings),
            "agreement": {k: _nan_to_none(v) for k, v in self.agreement.items()},
            "timings": {k: _nan_to_none(v) for k, v in self.timings.items()},
            "rows": [{k: _nan_to_none(v) for k, v in r.items()} for r in self.to_rows()],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "LayerProfile":
        if not isinstance(d, dict) or "rows" not in d:
            raise LayerfuseError("not a layer profile: expected a JSON object with 'rows'")
        rows = []
        for r in d["rows"]:
            r = {k: (float("nan") if v is None else v) for k, v in r.items()}
            r["layers"] = [int(x) for x in r.get("layers") or range(r["start"], r["end"] + 1)]
            rows.append(r)
        return cls(
            rows=rows,
            agreement={k: (float("nan") if v is None else v)
                       for k, v in d.get("agreement", {}).items()},
            timings=dict(d.get("timings", {})),
            n_layers=int(d.get("n_layers", 0)),
            n_samples=int(d.get("n_samples", 0)),
            n_features=int(d.get("n_features", 0)),
            classes=list(d.get("classes", [])),
            folds=int(d.get("folds", 5)),
            seed=int(d.get("seed", 0)),
            name=d.get("name"),
            settings=dict(d.get("settings", {})),
        )

    def to_json(self, path: str | Path) -> Path:
        """Write the profile as JSON, atomically (a reader never sees half a file)."""
        from .cache import _atomic_write_bytes

        path = Path(path)
        _atomic_write_bytes(path, (json.dumps(self.to_dict(), indent=2) + "\n").encode("utf-8"))
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> "LayerProfile":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LayerfuseError(f"{path}: no such profile file; run `layerfuse profile` first")
        except json.JSONDecodeError as e:
            raise LayerfuseError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})")
        return cls.from_dict(data)

    def to_csv(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        cols = self.columns()
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=cols)
            w.writeheader()
            for r in self.rows:
                out = {}
                for c in cols:
                    v = r.get(c, "")
                    if c == "layers":
                        v = " ".join(str(x) for x in v)
                    elif isinstance(v, float) and not math.isfinite(v):
                        v = ""
                    out[c] = v
                w.writerow(out)
        return path


# --------------------------------------------------------------------------------------------
# score_layers
# --------------------------------------------------------------------------------------------


def _parse_scores(scores: Any) -> tuple[str, ...]:
    if isinstance(scores, str):
        scores = [s.strip() for s in scores.split(",") if s.strip()]
    scores = tuple(dict.fromkeys(str(s).lower() for s in scores))
    bad = [s for s in scores if s not in SCORES]
    if bad or not scores:
        raise LayerfuseError(
            f"unknown score(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(SCORES)}"
        )
    return scores


class _Clock:
    def __init__(self):
        self.t: dict[str, float] = {}

    def add(self, key: str, dt: float) -> None:
        self.t[key] = self.t.get(key, 0.0) + dt


def _score_features(
    sc: _Scorer,
    a: torch.Tensor,
    scores: Sequence[str],
    clock: _Clock | None,
    what: str = "X",
    inplace: bool = False,
) -> dict:
    """All requested scores of one [N, d] float32 feature block.

    Shared per-block work ("prep"): standardisation, the Gram matrix X'X/N (probe
    preconditioner, Fisher, LogME) and, when LogME is requested, its eigendecomposition, which
    the probe then uses as its preconditioner instead of a Cholesky factor.
    """
    t0 = time.perf_counter()
    need_gram = any(s in scores for s in ("probe", "fisher", "logme"))
    with _torch_threads(sc.big_threads):
        xs, _, gram = _standardise(a, what=what, inplace=inplace, gram=need_gram)
    t1 = time.perf_counter()
    eig = torch.linalg.eigh(gram) if "logme" in scores else None
    t2 = time.perf_counter()
    if clock is not None:
        clock.add("prep", t2 - t0)
        clock.add("prep_eigh", t2 - t1)
    out: dict = {}
    for name in scores:
        t1 = time.perf_counter()
        if name == "probe":
            out.update(sc.probe(xs, gram, eig))
        elif name == "centroid":
            out.update(sc.centroid(xs))
        elif name == "knn":
            out.update(sc.knn(xs))
        elif name == "fisher":
            out.update(sc.fisher(xs, gram))
        elif name == "logme":
            out.update(sc.logme(xs, eig))
        if clock is not None:
            clock.add(name, time.perf_counter() - t1)
    return out


def _spearman(a: Sequence[float], b: Sequence[float]) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    from scipy.stats import spearmanr

    return float(spearmanr(a[ok], b[ok]).statistic)


def score_layers(
    X: Any,
    y: Any,
    *,
    folds: int = 5,
    seed: int = 0,
    scores: Sequence[str] | str = SCORES,
    windows: int = 4,
    window_scores: Sequence[str] | str | None = None,
    topk: int = 3,
    progress: bool = True,
    name: str | None = None,
    probe_l2: float = 1e-2,
    probe_max_iter: int = 100,
    probe_tol: float = 1e-4,
    knn_k: int = 10,
    knn_sample: int = 700,
    fisher_shrink: float = 0.1,
    threads: int | None = None,
) -> LayerProfile:
    """Score every layer of ``X [L+1, N, d]`` against labels ``y [N]`` (training split only).

    ``windows``: also score the mean of ``w`` consecutive layers for every width ``2..windows``
    and every start (0 or 1 disables). ``window_scores``: which scores to run on windows
    (default: the same as ``scores``). ``topk``: also CV-probe the concatenation of the ``topk`` best
    layers (by ``probe_acc``), which ``select_layers("auto")`` compares against (0 disables).
    ``threads``: torch threads for the whole call. None (default): the large products (Gram
    matrix, k-NN similarities, many-class probes) use half the cores and everything else one
    thread: close to the fastest on an idle machine, and it avoids 3-10x slowdowns when other
    jobs share the cores. See the module docstring for what each score means.
    """
    t_start = time.perf_counter()
    X = _as_layers(X)
    n_rows, n, d = (int(s) for s in X.shape)
    L = n_rows - 1
    classes, yi = _encode_labels(y, n)
    scores = _parse_scores(scores)
    window_scores = scores if window_scores is None else _parse_scores(window_scores)
    if len(classes) < 2:
        raise LayerfuseError(
            f"y has a single class ({classes[0]!r}); layer scores need at least 2 classes"
        )
    if not isinstance(folds, (int, np.integer)) or folds < 2:
        raise LayerfuseError(f"folds must be an integer >= 2, got {folds!r}")
    if n < 2 * folds:
        raise LayerfuseError(f"{n} rows are too few for {folds}-fold CV; pass at least {2 * folds}")
    windows = int(windows or 0)
    if windows < 0:
        raise LayerfuseError(f"windows must be >= 0 (0 or 1 = no windows), got {windows}")
    if probe_l2 <= 0:
        raise LayerfuseError(f"probe_l2 must be > 0, got {probe_l2}")
    settings = {
        "scores": list(scores),
        "windows": windows,
        "window_scores": list(window_scores),
        "topk": int(topk),
        "probe_l2": float(probe_l2),
        "probe_max_iter": int(probe_max_iter),
        "probe_tol": float(probe_tol),
        "knn_k": int(knn_k),
        "knn_sample": int(knn_sample),
        "fisher_shrink": float(fisher_shrink),
        "standardise": "per layer, mean/std over all training rows",
        "label_digest": _label_digest(yi),
    }
    big = _big_threads(threads)
    with _torch_threads(int(threads) if threads else 1), torch.no_grad():
        sc = _Scorer(yi, len(classes), int(folds), int(seed), {**settings, "big_threads": big})
        clock = _Clock()
        layer_rows: list[dict] = []
        window_rows: list[dict] = []
        max_w = min(windows, n_rows)
        recent: deque[torch.Tensor] = deque(maxlen=max(max_w - 1, 0))
        from tqdm.auto import tqdm

        bar = tqdm(
            total=n_rows, desc=f"profile {name}" if name else "profile", unit="layer",
            disable=not progress, leave=True, dynamic_ncols=True,
        )
        try:
            for layer in range(n_rows):
                t0 = time.perf_counter()
                a = _layer_f32(X, layer)
                clock.add("prep", time.perf_counter() - t0)
                clock.add("prep_read", time.perf_counter() - t0)
                row = {"kind": "layer", "start": layer, "end": layer, "layers": [layer],
                       "depth": layer / max(L, 1)}
                row.update(_score_features(sc, a, scores, clock, f"X[{layer}]", inplace=max_w < 2))
                layer_rows.append(row)
                # windows ending at this layer: running sums over the previous layers
                t_w = time.perf_counter()
                if max_w >= 2 and recent:
                    acc = a.clone()
                    for width, prev in enumerate(reversed(recent), start=2):
                        acc += prev
                        start = layer - width + 1
                        w_row = {"kind": "window", "start": start, "end": layer,
                                 "layers": list(range(start, layer + 1)),
                                 "depth": _depth(start, layer, L)}
                        w_row.update(_score_features(sc, acc / width, window_scores, None,
                                                     f"window {start}..{layer}", True))
                        window_rows.append(w_row)
                if max_w >= 2:
                    recent.append(a)
                clock.add("windows", time.perf_counter() - t_w)
                if "probe_acc" in row:
                    bar.set_postfix(acc=f"{row['probe_acc']:.3f}", refresh=False)
                bar.update(1)
        finally:
            bar.close()
        recent.clear()
        window_rows.sort(key=lambda r: (r["end"] - r["start"], r["start"]))
        rows = layer_rows + window_rows
        # concatenation of the top-k layers, as a candidate for select_layers("auto")
        t_k = time.perf_counter()
        k = min(int(topk or 0), n_rows)
        if "probe" in scores and k >= 2:
            top = sorted(_top_layers(layer_rows, "probe_acc", k))
            feats = torch.cat([_layer_f32(X, i) for i in top], dim=1)
            k_row = {"kind": "topk", "start": min(top), "end": max(top), "layers": top,
                     "depth": float("nan")}
            k_row.update(_score_features(sc, feats, ("probe",), None, "top-k", True))
            del feats
            rows.append(k_row)
        clock.add("topk", time.perf_counter() - t_k)
    agreement: dict[str, float | None] = {}
    if "probe" in scores:
        ref = [r["probe_acc"] for r in layer_rows]
        for s in scores:
            if s in CHEAP_SCORES:
                agreement[s] = _spearman([r[SCORE_COLUMN[s]] for r in layer_rows], ref)
    timings = {k: round(v, 4) for k, v in clock.t.items()}
    timings["total"] = round(time.perf_counter() - t_start, 4)
    return LayerProfile(
        rows=rows,
        agreement=agreement,
        timings=timings,
        n_layers=L,
        n_samples=n,
        n_features=d,
        classes=[c.item() if hasattr(c, "item") else c for c in classes],
        folds=int(folds),
        seed=int(seed),
        name=name,
        settings=settings,
    )


def cv_probe(
    features: Any, y: Any, *, folds: int = 5, seed: int = 0, l2: float = 1e-2
) -> dict:
    """CV probe accuracy / macro-F1 of one ``[N, d]`` feature matrix (same probe as the profile)."""
    a = np.asarray(features, dtype=np.float32)
    if a.ndim != 2:
        raise LayerfuseError(f"features must have shape [N, d], got {a.shape}")
    classes, yi = _encode_labels(y, a.shape[0])
    if len(classes) < 2:
        raise LayerfuseError("y has a single class; the probe needs at least 2 classes")
    settings = {"probe_l2": float(l2), "probe_max_iter": 100, "probe_tol": 1e-4,
                "knn_sample": 0, "knn_k": 10, "fisher_shrink": 0.1,
                "big_threads": _big_threads()}
    with _torch_threads(1), torch.no_grad():
        sc = _Scorer(yi, len(classes), int(folds), int(seed), settings)
        out = _score_features(sc, a, ("probe",), None)
    return out


# --------------------------------------------------------------------------------------------
# test column (analysis only)
# --------------------------------------------------------------------------------------------


def eval_test_column(
    profile: LayerProfile,
    X_train: Any,
    y_train: Any,
    X_test: Any,
    y_test: Any,
    *,
    progress: bool = False,
) -> LayerProfile:
    """Add ``test_acc_analysis_only`` to every layer row: test accuracy of a probe fit on all
    of train (same standardisation and penalty as the CV probe).

    For plots and analysis only: selection functions strip this column before they look at
    the rows. Returns the same (mutated) profile.
    """
    X_train = _as_layers(X_train, "X_train")
    X_test = _as_layers(X_test, "X_test")
    if X_train.shape[0] != profile.n_layers + 1 or X_train.shape[2] != profile.n_features:
        raise LayerfuseError(
            f"X_train has shape {tuple(X_train.shape)} but the profile was scored on "
            f"{profile.n_layers + 1} layers x {profile.n_features} features; pass the same array"
        )
    if X_test.shape[0] != X_train.shape[0] or X_test.shape[2] != X_train.shape[2]:
        raise LayerfuseError(
            f"X_test has shape {tuple(X_test.shape)}, expected [{X_train.shape[0]}, N_test, "
            f"{X_train.shape[2]}] to match X_train; pass the same model and pooling"
        )
    classes, yi = _encode_labels(y_train, X_train.shape[1], "y_train")
    digest = profile.settings.get("label_digest")
    if digest and digest != _label_digest(yi):
        raise LayerfuseError(
            "y_train differs from the labels the profile was scored on; pass the same "
            "training split"
        )
    y_test = np.asarray(y_test)
    if y_test.ndim != 1 or len(y_test) != X_test.shape[1]:
        raise LayerfuseError(
            f"y_test must have one label per row of X_test ({X_test.shape[1]}), got {y_test.shape}"
        )
    lookup = {c.item() if hasattr(c, "item") else c: i for i, c in enumerate(classes)}
    yt = np.array([lookup.get(v.item() if hasattr(v, "item") else v, -1) for v in y_test])
    l2 = float(profile.settings.get("probe_l2", 1e-2))
    yi_t = torch.from_numpy(yi)
    mask = torch.ones(len(yi), 1)
    from tqdm.auto import tqdm

    by_layer = {r["start"]: r for r in profile.rows if r["kind"] == "layer"}
    big = _big_threads()
    with _torch_threads(1), torch.no_grad():
        for layer in tqdm(range(X_train.shape[0]), desc="test column", unit="layer",
                          disable=not progress):
            with _torch_threads(big):
                xs, stats, gram = _standardise(_layer_f32(X_train, layer), inplace=True,
                                               what=f"X_train[{layer}]", gram=True)
            xt, _, _ = _standardise(_layer_f32(X_test, layer), stats, what=f"X_test[{layer}]",
                                    inplace=True)
            W, b, _ = _fit_logistic(xs, yi_t, len(classes), mask, l2=l2, gram=gram, threads=big)
            pred = (xt @ W[:, 0, :] + b[0]).argmax(1).numpy()
            if layer in by_layer:
                by_layer[layer][ANALYSIS_COLUMN] = float((pred == yt).mean())
    return profile


# --------------------------------------------------------------------------------------------
# selection
# --------------------------------------------------------------------------------------------


@dataclass
class LayerSelection:
    """Which layers of one model to use and how to combine them."""

    strategy: str
    layers: list[int]
    combine: str  # "single" | "average" | "separate" | "mix"
    score: float | None = None
    reason: str = ""

    def to_dict(self) -> dict:
        return {
            "strategy": self.strategy,
            "layers": [int(x) for x in self.layers],
            "combine": self.combine,
            "score": _nan_to_none(self.score),
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "LayerSelection":
        if not isinstance(d, dict):
            raise LayerfuseError("a layer selection must be a JSON object")
        missing = [k for k in ("strategy", "layers", "combine") if k not in d]
        if missing:
            raise LayerfuseError(f"layer selection is missing {', '.join(missing)}")
        if d["combine"] not in _COMBINES:
            raise LayerfuseError(
                f"layer selection has combine={d['combine']!r}; expected one of "
                f"{', '.join(_COMBINES)}"
            )
        layers = d["layers"]
        if not isinstance(layers, list) or not layers or not all(
            isinstance(x, int) and x >= 0 for x in layers
        ):
            raise LayerfuseError(
                f"layer selection needs a non-empty list of layer indices, got {layers!r}"
            )
        score = d.get("score")
        return cls(
            strategy=str(d["strategy"]),
            layers=list(layers),
            combine=d["combine"],
            score=None if score is None else float(score),
            reason=str(d.get("reason", "")),
        )


def _train_side_rows(profile: LayerProfile) -> list[dict]:
    """The rows without the analysis-only test column: the only view selection may read."""
    rows = [{k: v for k, v in r.items() if k != ANALYSIS_COLUMN} for r in profile.rows]
    assert all(ANALYSIS_COLUMN not in r for r in rows), "selection must never read test scores"
    return rows


def _check_score_column(rows: list[dict], score: str) -> None:
    if score == ANALYSIS_COLUMN:
        raise LayerfuseError(
            f"{ANALYSIS_COLUMN} is for analysis only and never drives a choice; pick a train-side "
            "score such as probe_acc"
        )
    have = [c for c in ("probe_acc", "probe_f1", "centroid_acc", "knn_acc", "fisher", "logme")
            if any(c in r for r in rows)]
    if not any(score in r for r in rows):
        raise LayerfuseError(
            f"the profile has no {score!r} column; pick one of {', '.join(have) or '(none)'}"
        )


def _value(r: dict, score: str) -> float:
    v = r.get(score)
    return float(v) if v is not None and math.isfinite(float(v)) else float("-inf")


def _best_row(rows: list[dict], score: str, kind: str | None) -> dict:
    _check_score_column(rows, score)
    cand = [r for r in rows if kind is None or r["kind"] == kind]
    if not cand:
        raise LayerfuseError(f"the profile has no {kind or ''} rows; run score_layers first")
    return max(cand, key=lambda r: (_value(r, score), -r["start"], -r["end"]))


def _top_layers(layer_rows: list[dict], score: str, k: int) -> list[int]:
    """The k best layers by ``score`` (ties: shallower first), in rank order."""
    ranked = sorted(layer_rows, key=lambda r: (-_value(r, score), r["start"]))
    return [int(r["start"]) for r in ranked[:k]]


def _parse_strategy(strategy: Any, k: Any) -> tuple[str, Any]:
    if not isinstance(strategy, str):
        raise LayerfuseError(
            f"strategy must be a string, got {strategy!r}; choose from {', '.join(STRATEGIES)} "
            "(or top-N, e.g. top-3)"
        )
    s = strategy.strip().lower().replace("_", "-")
    m = re.fullmatch(r"top-?(\d+)", s)
    if m:
        return "top-k", int(m.group(1))  # top-N names k itself and wins over the k argument
    if s == "topk":
        s = "top-k"
    if s not in STRATEGIES:
        raise LayerfuseError(
            f"unknown layer strategy {strategy!r}; choose from {', '.join(STRATEGIES)} "
            "(or top-N, e.g. top-3)"
        )
    return s, k


def select_layers(
    profile: LayerProfile,
    strategy: str = "auto",
    k: int | None = None,
    *,
    score: str = "probe_acc",
    X: Any = None,
    y: Any = None,
    min_gain: float = 0.002,
) -> LayerSelection:
    """Pick layers from a profile. Reads train-side scores only (never the test column).

    ``best``: the single best layer. ``top-k`` (or ``top-N``): the k best layers, each a
    separate source. ``window``: the best averaged window. ``all``: every layer, for a learned
    scalar mix. ``auto``: whichever of best / window / top-k has the highest CV probe score,
    where a multi-layer choice must beat the single best layer by ``min_gain`` (accuracy
    fraction). Top-k's score in ``auto`` is the CV probe of the concatenated top-k layers: the
    profile's ``topk`` row when it holds the same layers, else computed from ``X``/``y``
    (the training array and labels) when given, else top-k is left out.
    ``k`` defaults to 3 (capped at the number of layers); an explicit ``k`` must lie in
    1..L+1. A ``top-N`` strategy name sets k = N, whatever ``k`` says.
    """
    if not isinstance(profile, LayerProfile):
        raise LayerfuseError(
            f"select_layers needs a LayerProfile, got {type(profile).__name__}; pass the result "
            "of score_layers (or LayerProfile.from_json)"
        )
    strategy, k = _parse_strategy(strategy, k)
    rows = _train_side_rows(profile)
    layer_rows = [r for r in rows if r["kind"] == "layer"]
    if not layer_rows:
        raise LayerfuseError(
            "the profile has no layer rows; run score_layers on the training array"
        )
    n_layer = len(layer_rows)
    if k is None:
        k = min(3, n_layer)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n_layer:
        raise LayerfuseError(
            f"k must be an integer from 1 to {n_layer} (the number of layers incl. embeddings), "
            f"got {k!r}"
        )
    k = int(k)
    _check_score_column(rows, score)
    label = score

    if strategy == "all":
        layers = sorted(int(r["start"]) for r in layer_rows)
        return LayerSelection("all", layers, "mix", None,
                              f"all {len(layers)} layers, combined by a learned scalar mix")

    best = _best_row(rows, score, "layer")
    if strategy == "best":
        return LayerSelection(
            "best", [int(best["start"])], "single", _value(best, score),
            f"layer {best['start']} has the highest {label} ({_value(best, score):.4f}) of "
            f"{n_layer} layers",
        )

    if strategy == "window":
        if not any(r["kind"] == "window" for r in rows):
            raise LayerfuseError(
                "the profile has no window rows; re-run score_layers with windows >= 2"
            )
        w = _best_row(rows, score, "window")
        return LayerSelection(
            "window", list(range(w["start"], w["end"] + 1)), "average", _value(w, score),
            f"mean of layers {w['start']}..{w['end']} has the highest {label} "
            f"({_value(w, score):.4f}) of the averaged windows",
        )

    top = sorted(_top_layers(layer_rows, score, k))
    concat = next((r for r in rows if r["kind"] == "topk" and sorted(r["layers"]) == top), None)
    if strategy == "top-k":
        if k == 1:
            return LayerSelection("top-k", top, "single", _value(best, score),
                                  f"top-1 = layer {top[0]} by {label}")
        if concat is not None and score in concat:
            sc_val, how = _value(concat, score), f"CV {label} of their concatenation"
        else:
            vals = [_value(r, score) for r in layer_rows if r["start"] in top]
            sc_val, how = float(np.mean(vals)), f"mean of their individual {label}"
        return LayerSelection(
            "top-k", top, "separate", sc_val,
            f"the {k} layers with the highest {label}: {', '.join(map(str, top))} ({how} "
            f"{sc_val:.4f})",
        )

    # auto: compare train-side CV scores of best / window / top-k
    cands: list[tuple[str, float, LayerSelection]] = []
    b_val = _value(best, score)
    cands.append(("best", b_val, LayerSelection("best", [int(best["start"])], "single", b_val, "")))
    if any(r["kind"] == "window" and score in r for r in rows):
        w = _best_row(rows, score, "window")
        cands.append(("window", _value(w, score), LayerSelection(
            "window", list(range(w["start"], w["end"] + 1)), "average", _value(w, score), "")))
    notes = []
    if k >= 2:
        t_val = None
        if concat is not None and score in concat:
            t_val = _value(concat, score)
        elif X is not None and y is not None and score in ("probe_acc", "probe_f1"):
            Xl = _as_layers(X)
            if Xl.shape[0] != profile.n_layers + 1 or Xl.shape[1] != profile.n_samples:
                raise LayerfuseError(
                    f"X has shape {tuple(Xl.shape)} but the profile was scored on "
                    f"[{profile.n_layers + 1}, {profile.n_samples}, ...]; pass the training array"
                )
            _, yi = _encode_labels(y, Xl.shape[1])
            digest = profile.settings.get("label_digest")
            if digest and digest != _label_digest(yi):
                raise LayerfuseError(
                    "y differs from the training labels the profile was scored on; auto may "
                    "only use the training split: pass the same y as to score_layers"
                )
            feats = torch.cat([_layer_f32(Xl, i) for i in top], dim=1)
            res = cv_probe(feats, y, folds=profile.folds, seed=profile.seed,
                           l2=float(profile.settings.get("probe_l2", 1e-2)))
            t_val = res[score]
        else:
            notes.append(f"top-{k} not scored (pass X and y, or profile with topk={k})")
        if t_val is not None:
            cands.append(("top-k", t_val, LayerSelection("top-k", top, "separate", t_val, "")))
    chosen_name, chosen_val, chosen = cands[0]
    for nm, val, sel in cands[1:]:
        if val >= b_val + min_gain and val > chosen_val:
            chosen_name, chosen_val, chosen = nm, val, sel
    summary = ", ".join(f"{nm} {val:.4f}" for nm, val, _ in cands)
    chosen.strategy = "auto"
    chosen.reason = (
        f"auto chose {chosen_name} (layers {', '.join(map(str, chosen.layers))}) by train CV "
        f"{label}: {summary}" + (f"; {'; '.join(notes)}" if notes else "")
    )
    return chosen
