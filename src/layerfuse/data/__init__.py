"""TODO data
"""

from .builtin import BUILTIN_NAMES, list_builtin, load_builtin
from .dataset import SPLIT_NAMES, Dataset, Split, texts_fingerprint
from .files import EXTENSIONS, FORMATS, load_files, read_texts
from .loading import load_data, load_dataset
from .sampling import allocate, holdout, pick, seeded_rng, stratified_validation_split

__all__ = [
    "BUILTIN_NAMES",
    "list_builtin",
    "load_builtin",
    "SPLIT_NAMES",
    "texts_fingerprint",
    "Split",
    "Dataset",
    "FORMATS",
    "EXTENSIONS",
    "load_files",
    "read_texts",
    "load_dataset",
    "load_data",
    "seeded_rng",
    "allocate",
    "pick",
    "holdout",
    "stratified_validation_split",
]
