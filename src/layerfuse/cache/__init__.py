"""The on-disk cache: where everything lives under the cache root (:mod:`.layout`), atomic writes
(:mod:`.atomic`) and embedding entries made of checksummed chunks (:mod:`.entries`).
"""

from .atomic import atomic_folder, atomic_save_npy, atomic_write_bytes, sha256_file
from .entries import CacheEntry, entry, remove_entry, subset_rows, text_hashes
from .layout import PARTS, cache_root, entries_root, grid_checkpoint_dir, make_key, profile_checkpoint_dir

__all__ = [
    "atomic_folder",
    "atomic_save_npy",
    "atomic_write_bytes",
    "sha256_file",
    "CacheEntry",
    "entry",
    "remove_entry",
    "subset_rows",
    "text_hashes",
    "PARTS",
    "cache_root",
    "entries_root",
    "grid_checkpoint_dir",
    "make_key",
    "profile_checkpoint_dir",
]
