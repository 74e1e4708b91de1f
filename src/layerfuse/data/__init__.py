"""Datasets: the four built-in ones shipped inside the package and the user's own files.
"""

from .builtin import BUILTIN_NAMES, list_builtin, load_builtin
from .dataset import Dataset, Split, texts_fingerprint
from .files import FORMATS, load_files, read_texts
from .frames import is_table_like, load_frames
from .loading import load_data, load_dataset
from .sampling import stratified_validation_split

__all__ = [
    "BUILTIN_NAMES",
    "list_builtin",
    "load_builtin",
    "Dataset",
    "Split",
    "texts_fingerprint",
    "FORMATS",
    "load_files",
    "read_texts",
    "is_table_like",
    "load_frames",
    "load_data",
    "load_dataset",
    "stratified_validation_split",
]
