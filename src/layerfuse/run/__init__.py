"""TODO run
"""

from .checkpoints import grid_row_key, has_checkpoint, load_or_fit
from .complementarity import complementarity, linear_cka
from .config_file import load_config_file, merge_config
from .grid import GridResult, extraction_settings, grid_configs, model_sets, run_grid, validation_key
from .prepare import ModelPrep, prepare_models, profile_key
from .workers import exit_with_parent, fit_rows_in_workers, worker_threads

__all__ = [
    "load_or_fit",
    "has_checkpoint",
    "grid_row_key",
    "linear_cka",
    "complementarity",
    "merge_config",
    "load_config_file",
    "GridResult",
    "model_sets",
    "grid_configs",
    "run_grid",
    "validation_key",
    "extraction_settings",
    "ModelPrep",
    "prepare_models",
    "profile_key",
    "worker_threads",
    "fit_rows_in_workers",
    "exit_with_parent",
]
