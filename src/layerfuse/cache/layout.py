"""Where things live under the cache root, and the keys that name cache entries."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from layerfuse.errors import LayerfuseError

__all__ = ["FORMAT_VERSION", "make_key", "entries_root", "cache_root", "locks_root", "profile_checkpoint_dir", "grid_checkpoint_dir"]



#: Bumped when the layout of a cache entry changes; part of every key.
FORMAT_VERSION = 1


def make_key(fields: dict) -> str:
    """16-hex fingerprint of everything that changes the numbers."""
    blob = json.dumps({"format": FORMAT_VERSION, **fields}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def entries_root(root: Path) -> Path:
    """The folder of embedding cache entries under the cache root."""
    return root / "embeddings"


def locks_root(root: Path) -> Path:
    """Where per-entry lock files live (hidden, so never counted as entries nor swept as temporaries)."""
    return entries_root(root) / ".locks"

# ---------------------------------------------------------------------------------------------
# Cache root


def cache_root(root: str | os.PathLike | None = None) -> Path:
    """Where layerfuse keeps dequantised models and embedding caches.

    Order: the explicit argument, ``$LAYERFUSE_CACHE``, ``$XDG_CACHE_HOME/layerfuse``,
    ``~/.cache/layerfuse``.

    A root that exists but is not a folder (``--cache-dir`` pointing at a file) is refused with a
    one-line :class:`~layerfuse.errors.LayerfuseError`.
    """
    if root is not None:
        p, how = Path(root).expanduser(), "cache_dir (--cache-dir)"
    elif os.environ.get("LAYERFUSE_CACHE"):
        p, how = Path(os.environ["LAYERFUSE_CACHE"]).expanduser(), "$LAYERFUSE_CACHE"
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
        p, how = base / "layerfuse", "$XDG_CACHE_HOME" if xdg else "the home folder"
    if p.exists() and not p.is_dir():
        raise LayerfuseError(f"cache root {p} is a file, not a folder (set by {how}): pass a folder as "
                             "cache_dir (--cache-dir or $LAYERFUSE_CACHE), or move the file away")
    return p


def profile_checkpoint_dir(cache_dir=None) -> Path:
    """Where :func:`prepare_models` keeps finished layer profiles: ``profiles/`` under the cache root."""

    return cache_root(cache_dir) / "profiles"


def grid_checkpoint_dir(cache_dir=None) -> Path:
    """Where grid rows are checkpointed by default: ``grid/`` under the cache root."""

    return cache_root(cache_dir) / "grid"
