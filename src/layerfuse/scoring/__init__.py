"""Layer scoring: how well each layer (and averaged window of layers) separates the classes,
measured on the training split only, and the selection of layers from those scores.
"""

from .features import average_layers
from .layer_profile import ANALYSIS_COLUMN, SCORES, LayerProfile
from .layer_scores import cv_probe, eval_test_column, score_layers
from .selection import STRATEGIES, LayerSelection, select_layers

__all__ = [
    "average_layers",
    "ANALYSIS_COLUMN",
    "SCORES",
    "LayerProfile",
    "cv_probe",
    "eval_test_column",
    "score_layers",
    "STRATEGIES",
    "LayerSelection",
    "select_layers",
]
