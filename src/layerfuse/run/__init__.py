"""Orchestration used by ``fuse`` and ``run``: prepare each model (extract, profile, select), train
the fusion grid with checkpoints, pick the best row on validation.
"""

from .complementarity import complementarity, linear_cka
from .config_file import load_config_file, merge_config
from .grid import GridResult, grid_configs, run_grid, validation_key
from .prepare import ModelPrep, prepare_models

__all__ = [
    "complementarity",
    "linear_cka",
    "load_config_file",
    "merge_config",
    "GridResult",
    "grid_configs",
    "run_grid",
    "validation_key",
    "ModelPrep",
    "prepare_models",
]
