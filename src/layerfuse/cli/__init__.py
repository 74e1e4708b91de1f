"""TODO cli
"""

from .args import add_data_args, add_extract_args, add_workers_arg, config_from_args, workers_arg
from .listing import CACHE_PARTS, cmd_cache, cmd_datasets, cmd_models, cmd_report
from .main import build_parser, main, quiet_libraries
from .output import emit_json, mb, shorten
from .predict import cmd_predict
from .stages import cmd_extract, cmd_fuse, cmd_profile, cmd_run

__all__ = [
    "add_data_args",
    "add_extract_args",
    "config_from_args",
    "workers_arg",
    "add_workers_arg",
    "CACHE_PARTS",
    "cmd_cache",
    "cmd_datasets",
    "cmd_models",
    "cmd_report",
    "quiet_libraries",
    "build_parser",
    "main",
    "shorten",
    "mb",
    "emit_json",
    "cmd_predict",
    "cmd_extract",
    "cmd_profile",
    "cmd_fuse",
    "cmd_run",
]
