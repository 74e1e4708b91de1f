"""TODO cache
"""

from .atomic import atomic_folder, atomic_save_npy, atomic_write_bytes, sha256_file
from .entries import CacheEntry, entry, remove_entry, subset_rows, text_hashes
from .layout import FORMAT_VERSION, cache_root, entries_root, grid_checkpoint_dir, make_key, profile_checkpoint_dir

__all__ = [
    "sha256_file",
    "atomic_write_bytes",
    "atomic_save_npy",
    "atomic_folder",
    "CacheEntry",
    "text_hashes",
    "subset_rows",
    "entry",
    "remove_entry",
    "FORMAT_VERSION",
    "make_key",
    "entries_root",
    "cache_root",
    "profile_checkpoint_dir",
    "grid_checkpoint_dir",
]
