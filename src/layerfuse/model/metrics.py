"""The classification metrics every stage reports: accuracy and macro-F1 (overall and per CV fold),
and the mean ± population std over seeds.
"""

from __future__ import annotations

import numpy as np

__all__ = ["classification_metrics", "mean_std", "macro_f1_per_fold"]

# --------------------------------------------------------------------------------------------
# metrics and split


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 over the labels present in ``y_true`` or ``y_pred`` (as scikit-learn)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.size == 0:
        return {"acc": float("nan"), "macro_f1": float("nan")}
    labels = np.union1d(y_true, y_pred)
    f1s = []
    for c in labels:
        tp = np.sum((y_true == c) & (y_pred == c))
        fp = np.sum((y_true != c) & (y_pred == c))
        fn = np.sum((y_true == c) & (y_pred != c))
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return {"acc": float(np.mean(y_true == y_pred)), "macro_f1": float(np.mean(f1s))}


def mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def macro_f1_per_fold(true: np.ndarray, pred: np.ndarray, fold: np.ndarray, F: int, C: int):
    """Macro-F1 per fold over the labels present in that fold's truth or predictions."""
    conf = np.bincount((fold * C + true) * C + pred, minlength=F * C * C).reshape(F, C, C)
    tp = np.diagonal(conf, axis1=1, axis2=2).astype(np.float64)
    rows = conf.sum(2)
    cols = conf.sum(1)
    denom = rows + cols
    present = denom > 0
    f1 = np.where(present, 2 * tp / np.maximum(denom, 1), 0.0)
    return f1.sum(1) / np.maximum(present.sum(1), 1)
