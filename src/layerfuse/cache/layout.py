"""Where each part of the cache lives under the cache root, and how cache keys are made.

The only module that knows the layout::

    <root>/embeddings/<key>/   per-layer pooled embeddings (:mod:`layerfuse.cache.entries`)
    <root>/embeddings/.locks/  one lock file per entry being written
    <root>/profiles/<key>.json finished layer profiles
    <root>/grid/<key>/         trained heads of finished grid rows
    <root>/grid/<key>-cvK.json K-fold CV scores of a grid row on train (CV rules, greedy search)
    <root>/models/<key>/       dequantised copies of GGUF models
    <root>/gguf/               GGUF files assembled from packaged chunks
    <root>/hf/                 Hugging Face folders unpacked from packaged zips or `models install`
    <root>/hardware/           the bf16/fp32 measurement per CPU model (``dtype="auto"``)
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from layerfuse.errors import LayerfuseError

__all__ = ["FORMAT_VERSION", "PARTS", "MODEL_PARTS", "make_key", "cache_root", "entries_root", "locks_root", "models_root",
           "gguf_root", "hf_root", "hardware_root", "fingerprints_file", "profile_checkpoint_dir", "grid_checkpoint_dir"]


#: The parts of the cache (a folder each under the root), and how each comes back when deleted.
PARTS = {
    "embeddings": "per-layer pooled embeddings (extract, profile, fuse, run); recomputed when needed",
    "profiles": "finished layer profiles (profile, fuse, run); scored again when needed",
    "grid": "trained heads of finished grid rows and their CV scores (fuse, run); retrained when needed",
    "models": "dequantised copies of GGUF models; rebuilt from the GGUF when needed",
    "gguf": "GGUF files assembled from the packaged chunks; reassembled when needed",
    "hf": "Hugging Face folders unpacked from packaged zips or `layerfuse models install`; unpacked again when needed",
    "hardware": "the bf16/fp32 speed measurement per CPU model that --dtype auto reads; measured again when needed",
}

#: Parts that hold models or facts about this machine, not results of a run: a temporary cache
#: root (the estimator's default) links to the user's copies of these instead of rebuilding them.
MODEL_PARTS = ("models", "gguf", "hf", "hardware")

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


def hf_root(root: Path) -> Path:
    """Hugging Face model folders unpacked from packaged zips or installed by ``models install``."""
    return Path(root) / "hf"


def hardware_root(root: Path) -> Path:
    """Kept measurements of this machine's CPU (what ``dtype="auto"`` decides from)."""
    return Path(root) / "hardware"


def fingerprints_file(root: Path) -> Path:
    """Remembered weight fingerprints of large files (keyed by path, size and mtime)."""
    return Path(root) / "fingerprints.json"


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
        p, how = Path(root).expanduser(), "`cache_dir`"
    elif os.environ.get("LAYERFUSE_CACHE"):
        p, how = Path(os.environ["LAYERFUSE_CACHE"]).expanduser(), "$LAYERFUSE_CACHE"
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
        p, how = base / "layerfuse", "$XDG_CACHE_HOME" if xdg else "the home folder"
    if p.exists() and not p.is_dir():
        raise LayerfuseError(f"cache root {p} is a file, not a folder (set by {how}): pass a folder as "
                             "`cache_dir` (or $LAYERFUSE_CACHE), or move the file away")
    return p


def profile_checkpoint_dir(cache_dir=None) -> Path:
    """Where :func:`~layerfuse.run.prepare.prepare_models` keeps finished layer profiles."""
    return cache_root(cache_dir) / "profiles"


def grid_checkpoint_dir(cache_dir=None) -> Path:
    """Where grid rows are checkpointed by default: ``grid/`` under the cache root."""
    return cache_root(cache_dir) / "grid"
