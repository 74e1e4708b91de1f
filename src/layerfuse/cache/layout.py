"""TODO docstring
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

__all__ = ["FORMAT_VERSION", "make_key", "entries_root", "cache_root", "profile_checkpoint_dir", "grid_checkpoint_dir"]



#: Bumped when the layout of a cache entry changes; part of every key.
FORMAT_VERSION = 1


def make_key(fields: dict) -> str:
    """16-hex fingerprint of everything that changes the numbers."""
    blob = json.dumps({"format": FORMAT_VERSION, **fields}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def entries_root(root: Path) -> Path:
    return root / "embeddings"

# ---------------------------------------------------------------------------------------------
# Cache root


def cache_root(root: str | os.PathLike | None = None) -> Path:
    """Where layerfuse keeps dequantised models and embedding caches.

    Order: the explicit argument, ``$LAYERFUSE_CACHE``, ``$XDG_CACHE_HOME/layerfuse``,
    ``~/.cache/layerfuse``.
    """
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("LAYERFUSE_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "layerfuse"


def profile_checkpoint_dir(cache_dir=None) -> Path:
    """Where :func:`prepare_models` keeps finished layer profiles: ``profiles/`` under the cache root."""

    return cache_root(cache_dir) / "profiles"


def grid_checkpoint_dir(cache_dir=None) -> Path:
    """Where grid rows are checkpointed by default: ``grid/`` under the cache root."""

    return cache_root(cache_dir) / "grid"
