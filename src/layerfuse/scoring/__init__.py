"""TODO scoring
"""

from .features import as_layers, average_layers, label_digest, layer_f32, standardise, window_depth
from .kernels import Scorer
from .layer_profile import (
    ANALYSIS_COLUMN,
    CHEAP_SCORES,
    SCORE_COLUMN,
    SCORES,
    LayerProfile,
    best_row,
    check_score_column,
    nan_to_none,
    score_value,
    top_layers,
    train_side_rows,
)
from .layer_scores import cv_probe, eval_test_column, score_layers
from .selection import STRATEGIES, LayerSelection, parse_strategy, select_layers
from .solver import fit_logistic
from .threads import big_threads, torch_threads

__all__ = [
    "as_layers",
    "label_digest",
    "layer_f32",
    "standardise",
    "window_depth",
    "average_layers",
    "Scorer",
    "ANALYSIS_COLUMN",
    "SCORES",
    "CHEAP_SCORES",
    "SCORE_COLUMN",
    "nan_to_none",
    "LayerProfile",
    "train_side_rows",
    "check_score_column",
    "score_value",
    "best_row",
    "top_layers",
    "score_layers",
    "cv_probe",
    "eval_test_column",
    "STRATEGIES",
    "LayerSelection",
    "parse_strategy",
    "select_layers",
    "fit_logistic",
    "torch_threads",
    "big_threads",
]
