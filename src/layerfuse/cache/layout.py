"""Where each part of the cache lives under the cache root, and how cache keys are made.

The only module that knows the layout::

    <root>/embeddings/<key>/   per-layer pooled embeddings (:mod:`layerfuse.cache.entries`)
    <root>/profiles/<key>.json finished layer profiles
    <root>/grid/<key>/         trained heads of finished grid rows
    <root>/models/<key>/       dequantised copies of GGUF models
    <root>/gguf/               GGUF files assembled from packaged chunks
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

__all__ = ["FORMAT_VERSION", "PARTS", "make_key", "cache_root", "entries_root", "models_root", "gguf_root",
           "fingerprints_file", "profile_checkpoint_dir", "grid_checkpoint_dir"]

#: The parts of the cache (a folder each under the root), and how each comes back when deleted.
PARTS = {
    "embeddings": "per-layer pooled embeddings (extract, profile, fuse, run); recomputed when needed",
    "profiles": "finished layer profiles (profile, fuse, run); scored again when needed",
    "grid": "trained heads of finished grid rows (fuse, run); retrained when needed",
    "models": "dequantised copies of GGUF models; rebuilt from the GGUF when needed",
    "gguf": "GGUF files assembled from the packaged chunks; reassembled when needed",
}

#: Bumped when the layout of a cache entry changes; part of every key.
FORMAT_VERSION = 1


def make_key(fields: dict) -> str:
    """16-hex fingerprint of everything that changes the numbers."""
    blob = json.dumps({"format": FORMAT_VERSION, **fields}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def entries_root(root: Path) -> Path:
    """Embedding cache entries, one folder per key."""
    return Path(root) / "embeddings"


def models_root(root: Path) -> Path:
    """Dequantised copies of GGUF models, one folder per GGUF digest."""
    return Path(root) / "models"


def gguf_root(root: Path) -> Path:
    """GGUF files joined from packaged chunks."""
    return Path(root) / "gguf"


def fingerprints_file(root: Path) -> Path:
    """Remembered weight fingerprints of large files (keyed by path, size and mtime)."""
    return Path(root) / "fingerprints.json"


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
    """Where :func:`~layerfuse.run.prepare.prepare_models` keeps finished layer profiles."""
    return cache_root(cache_dir) / "profiles"


def grid_checkpoint_dir(cache_dir=None) -> Path:
    """Where grid rows are checkpointed by default: ``grid/`` under the cache root."""

    return cache_root(cache_dir) / "grid"
