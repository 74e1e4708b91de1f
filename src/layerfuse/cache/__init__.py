"""The cache root: embedding entries, dequantised model copies, atomic writes and their checks.

See docs/guarantees.md for what the cache promises (resume, damage detection, concurrency) and
the tests that prove it.
"""

from .atomic import (
    WriteError,
    atomic_folder,
    atomic_save_npy,
    atomic_write_bytes,
    cache_writes,
    remove_stale_temporaries,
    sampled_sha256,
    sha256_file,
    stale_temporaries,
)
from .entries import CacheEntry, dtype_in_cache, entry, remove_entry, subset_rows, text_hashes
from .layout import (
    FORMAT_VERSION,
    PARTS,
    cache_root,
    entries_root,
    grid_checkpoint_dir,
    locks_root,
    make_key,
    profile_checkpoint_dir,
)

__all__ = [
    "sha256_file",
    "sampled_sha256",
    "atomic_write_bytes",
    "atomic_save_npy",
    "atomic_folder",
    "WriteError",
    "cache_writes",
    "stale_temporaries",
    "remove_stale_temporaries",
    "CacheEntry",
    "dtype_in_cache",
    "text_hashes",
    "subset_rows",
    "entry",
    "remove_entry",
    "FORMAT_VERSION",
    "PARTS",
    "make_key",
    "entries_root",
    "locks_root",
    "cache_root",
    "entries_root",
    "grid_checkpoint_dir",
    "make_key",
    "profile_checkpoint_dir",
]
