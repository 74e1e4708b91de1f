"""Stratified, seeded sampling: subsamples, held-out test splits and the validation carve.

Every function is deterministic for a given seed and keeps at least one example per class on
each side where the class has two.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from layerfuse.config import DEFAULT_SEED, DEFAULT_VAL_FRACTION
from layerfuse.errors import LayerfuseError
from layerfuse.validation import as_labels

__all__ = ["seeded_rng", "allocate", "pick", "holdout", "stratified_validation_split", "stratified_fold_ids",
           "stratified_folds"]

# ---------------------------------------------------------------------------------------------
# Stratified selection


def seeded_rng(seed: int, *salt: str) -> np.random.Generator:
    words = [int(seed) % (1 << 64)]
    for s in salt:
        words.append(int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], "little"))
    return np.random.default_rng(np.random.SeedSequence(words))


def allocate(counts: np.ndarray, total: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Integer quotas proportional to ``counts`` with ``lo <= q <= hi`` and ``sum(q) == total``
    (as far as the bounds allow), by largest remainder; ties go to the lower class index."""
    counts = np.asarray(counts, dtype=np.int64)
    N = int(counts.sum())
    ideal = counts * (total / N) if N else np.zeros(len(counts))
    q = np.clip(np.floor(ideal).astype(np.int64), lo, hi)
    while q.sum() < total:
        room = q < hi
        if not room.any():
            break
        gap = np.where(room, ideal - q, -np.inf)
        q[int(np.argmax(gap))] += 1
    while q.sum() > total:
        room = q > lo
        if not room.any():
            break
        over = np.where(room, q - ideal, -np.inf)
        q[int(np.argmax(over))] -= 1
    return q


def pick(labels: np.ndarray, quotas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sorted row indices with ``quotas[c]`` random rows of each class ``c``."""
    chosen = []
    for c, q in enumerate(quotas):
        if q <= 0:
            continue
        rows = np.flatnonzero(labels == c)
        chosen.append(rows if q >= len(rows) else rng.choice(rows, size=int(q), replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def holdout(labels: np.ndarray, n_classes: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train_rows, test_rows); every class keeps at least one row in train."""
    counts = np.bincount(labels, minlength=n_classes)
    total = int(round(len(labels) * fraction))
    quotas = allocate(counts, total, np.zeros(n_classes, dtype=np.int64), np.maximum(counts - 1, 0))
    test = pick(labels, quotas, seeded_rng(seed, "holdout"))
    mask = np.ones(len(labels), dtype=bool)
    mask[test] = False
    return np.flatnonzero(mask), test


def stratified_validation_split(y, fraction: float = DEFAULT_VAL_FRACTION, seed: int = DEFAULT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (train_idx, val_idx), stratified by class and deterministic in ``seed``.

    About ``round(fraction * N)`` examples go to validation, shared among classes in proportion to
    their size (largest remainder, ties broken by a seeded draw). A class never gives its last
    example, so every class with at least one example (two or more in particular) stays in train;
    singleton classes are train-only. Both index arrays are sorted.
    """
    y = np.asarray(y)
    y = as_labels(y, y.shape[0] if y.ndim == 1 else -1, "y")
    if not (isinstance(fraction, (int, float)) and 0 < fraction < 1):
        raise LayerfuseError(f"validation fraction must be between 0 and 1 (exclusive), got {fraction!r}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    caps = counts - 1
    want = fraction * counts
    n_val = np.minimum(np.floor(want).astype(np.int64), caps)
    target = min(int(math.floor(fraction * len(y) + 0.5)), int(caps.sum()))
    # Hand out the remaining slots by largest fractional part (random tie-break), within caps.
    order = np.lexsort((rng.random(len(classes)), -(want - np.floor(want))))
    while n_val.sum() < target:
        moved = False
        for j in order:
            if n_val.sum() >= target:
                break
            if n_val[j] < caps[j]:
                n_val[j] += 1
                moved = True
        if not moved:
            break
    val_parts = []
    for c, k in zip(classes, n_val):
        idx = np.flatnonzero(y == c)
        if k:
            val_parts.append(rng.permutation(idx)[:k])
        else:
            rng.permutation(idx)  # keep the stream aligned across classes
    val_idx = np.sort(np.concatenate(val_parts)) if val_parts else np.empty(0, dtype=np.int64)
    mask = np.ones(len(y), dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask).astype(np.int64), val_idx.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Stratified folds


def stratified_fold_ids(y, folds: int, seed: int = DEFAULT_SEED) -> np.ndarray:
    """The fold (``0 .. folds-1``) that holds out each row: stratified by class, shuffled with ``seed``.

    Fold ``f`` holds out the rows where the result is ``f``: the same rows as scikit-learn's
    ``StratifiedKFold(folds, shuffle=True, random_state=seed)`` (so profiles and CV scores keep
    their values), without importing scikit-learn, which costs every worker process about 1.35 s.
    Classes are numbered by first appearance; dealing the rows sorted by class round robin gives
    each class its count per fold, and each class's fold ids are shuffled by one
    ``RandomState(seed)`` in class order. A class rarer than ``folds`` is missing from some
    folds (scikit-learn warns about it); only when every class is rarer than ``folds`` is it an error.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise LayerfuseError(f"labels for stratified folds must be one-dimensional, got shape {y.shape}")
    n = len(y)
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or not 2 <= folds <= n:
        raise LayerfuseError(f"stratified CV needs 2 to {n} folds (one row per fold at least), got {folds!r}")
    _, first, inverse = np.unique(y, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    codes = rank[inverse.reshape(-1)]
    counts = np.bincount(codes)
    if (counts < folds).all():
        raise LayerfuseError(
            f"stratified {folds}-fold CV needs a class with at least {folds} examples; the largest has "
            f"{int(counts.max())}: pass fewer folds or more data"
        )
    rng = np.random.RandomState(int(seed))
    ids = np.empty(n, dtype=np.int64)
    start = 0
    for k, c in enumerate(counts):
        block = np.sort(np.arange(start, start + c) % folds)
        rng.shuffle(block)
        ids[codes == k] = block
        start += c
    return ids


def stratified_folds(y, folds: int, seed: int = DEFAULT_SEED) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(fit_rows, held_rows)`` of each fold of :func:`stratified_fold_ids`, both sorted."""
    ids = stratified_fold_ids(y, folds, seed)
    return [(np.flatnonzero(ids != f), np.flatnonzero(ids == f)) for f in range(folds)]
