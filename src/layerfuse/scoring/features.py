"""Feature blocks for scoring: one layer as float32, per-feature standardisation (with the Gram
matrix), averaged layer windows, and the label digest a profile records.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from layerfuse.errors import LayerfuseError

__all__ = ["as_layers", "label_digest", "layer_f32", "standardise", "window_depth", "average_layers"]

# --------------------------------------------------------------------------------------------
# input checks and small helpers
# --------------------------------------------------------------------------------------------


def as_layers(X: Any, what: str = "X") -> Any:
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


def label_digest(y: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(y, dtype=np.int64).tobytes()).hexdigest()[:16]


def layer_f32(X: Any, layer: int) -> torch.Tensor:
    """One layer as a float32 [N, d] tensor (reads one layer of a memmap, never the whole)."""
    a = np.asarray(X[layer])
    if a.dtype == np.float32:
        return torch.from_numpy(np.array(a, copy=True))
    return torch.from_numpy(a.astype(np.float32))


def standardise(
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


def window_depth(start: int, end: int, n_layers: int) -> float:
    return (start + end) / 2 / max(n_layers, 1)


def average_layers(X: Any, start: int, end: int) -> np.ndarray:
    """Mean over layers ``start..end`` inclusive of ``X [L+1, N, d]``, as float32 ``[N, d]``.

    Accumulates one layer at a time, so a float16 memmap is never converted whole.
    """
    X = as_layers(X)
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
