"""The per-layer score kernels behind a profile: CV probe, nearest centroid, k-NN, Fisher ratio and
LogME, sharing labels, folds and the k-NN subsample across layers (:class:`Scorer`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from layerfuse.data.sampling import stratified_fold_ids
from layerfuse.model.metrics import macro_f1_per_fold
from layerfuse.scoring.solver import fit_logistic
from layerfuse.scoring.threads import torch_threads

__all__ = ["Scorer"]

# --------------------------------------------------------------------------------------------
# scoring context: folds, labels and per-score kernels
# --------------------------------------------------------------------------------------------


class Scorer:
    """Everything that is shared across layers: labels, folds, kNN queries, settings."""

    def __init__(self, yi: np.ndarray, n_classes: int, folds: int, seed: int, settings: dict):
        self.n = len(yi)
        self.C = n_classes
        self.big_threads = settings.get("big_threads")
        self.F = folds
        self.settings = settings
        self.fold_np = stratified_fold_ids(yi, folds, seed)
        self.yi_np = yi
        self.fold = torch.from_numpy(self.fold_np)
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
        # each layer's probe (W, b), kept for the warm starts of later layers, windows and top-k
        # (d x folds x classes floats per layer: 0.6 MB for SmolLM2 on R52)
        self.solutions: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    # ---- warm starts ---------------------------------------------------------------------------
    def warm_start(self, kind: str, layers: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """A start near the probe's optimum for a block, from the layers probed before it: the
        previous layer's solution for a layer (neighbouring layers of the residual stream are
        alike), the mean of the members' solutions for an averaged window, each member's solution
        divided by k, stacked, for the concatenation of k layers (its logits are then the members'
        mean). None when a needed layer has not been probed. The optimum does not depend on the
        start (the problem is strictly convex); on R52 (52 classes) a third fewer evaluations
        reach the cap or the tolerance (docs/benchmarks.md)."""
        if kind == "layer":
            return self.solutions.get(layers[0] - 1)
        sols = [self.solutions.get(i) for i in layers]
        if not sols or any(s is None for s in sols):
            return None
        b = torch.stack([s[1] for s in sols]).mean(0)
        if kind == "window":
            return torch.stack([s[0] for s in sols]).mean(0), b
        if kind == "topk":
            return torch.cat([s[0] / len(sols) for s in sols], dim=0), b
        return None

    # ---- probe -----------------------------------------------------------------------------
    def probe(self, xs: torch.Tensor, gram: torch.Tensor | None, eig=None,
              block: tuple[str, Sequence[int]] | None = None) -> dict:
        """CV probe scores of one standardised block. ``block`` (kind, layers), as in a profile
        row, starts the fit from :meth:`warm_start` and keeps a layer's solution for the next."""
        s = self.settings
        init = self.warm_start(*block) if block is not None else None
        W, b, n_eval = fit_logistic(
            xs, self.yi, self.C, self.train_mask, l2=s["probe_l2"], max_iter=s["probe_max_iter"],
            tol=s["probe_tol"], gram=gram, eig=eig, threads=s.get("probe_threads") or self.big_threads,
            init=init,
        )
        if block is not None and block[0] == "layer":
            self.solutions[int(block[1][0])] = (W, b)
        d = xs.shape[1]
        Z = (xs @ W.view(d, -1) + b.view(-1)).view(self.n, self.F, self.C)
        pred = Z[self.arange, self.fold].argmax(1).numpy()
        correct = (pred == self.yi_np).astype(np.float64)
        fold_n = np.bincount(self.fold_np, minlength=self.F)
        acc = np.bincount(self.fold_np, weights=correct, minlength=self.F) / np.maximum(fold_n, 1)
        f1 = macro_f1_per_fold(self.yi_np, pred, self.fold_np, self.F, self.C)
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
        ref = sub.to(torch.bfloat16)  # bf16 products, fp32 accumulation: faster, same ranks (docs/benchmarks.md)
        lab_all = self.yi[idx]
        correct = 0
        chunk = max(1, int(2**23 // max(m, 1)))  # bound the similarity block to ~16 MB
        for s0 in range(0, m, chunk):
            rows = torch.arange(s0, min(s0 + chunk, m))
            with torch_threads(self.big_threads):
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
