"""The trainable part: sources, fusion modules, heads, training with early stopping, metrics, and
saving trained networks.
"""

from .fusion import FUSIONS, Fusion, ScalarMix, build_fusion, register_fusion
from .heads import HEADS, FusionClassifierNet, build_head
from .lexical import TfidfSource, is_lexical
from .metrics import classification_metrics
from .saving import load_net, load_seeds, save_net, save_seeds
from .sources import COMBINES, SourceSpec, build_sources
from .stacking import StackFusion
from .training import SeedResult, TrainedModel, evaluate, fit_head, fit_seeds

__all__ = [
    "TfidfSource",
    "is_lexical",
    "StackFusion",
    "FUSIONS",
    "Fusion",
    "ScalarMix",
    "build_fusion",
    "register_fusion",
    "HEADS",
    "FusionClassifierNet",
    "build_head",
    "classification_metrics",
    "load_net",
    "load_seeds",
    "save_net",
    "save_seeds",
    "COMBINES",
    "SourceSpec",
    "build_sources",
    "SeedResult",
    "TrainedModel",
    "evaluate",
    "fit_head",
    "fit_seeds",
]
