"""Atomic writes: a reader sees the old file or folder or the whole new one, never half of it.

Files are written to a temporary name in the same folder and renamed into place; files and
folders get the mode a plain write or mkdir would give them (0666 / 0777 less the umask).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = ["sha256_file", "atomic_write_bytes", "atomic_save_npy", "atomic_folder"]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


# mkstemp/mkdtemp make files and folders for their owner only; one renamed into place gets the mode
# an ordinary write or mkdir would have given it (0o666 / 0o777 less the umask, read once at import).
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK
_DIR_MODE = 0o777 & ~_UMASK


def _usual_mode(fd: int) -> None:
    if hasattr(os, "fchmod"):  # POSIX
        os.fchmod(fd, _FILE_MODE)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    _usual_mode(fd)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_save_npy(path: Path, array: np.ndarray) -> str:
    """Save an array atomically; return the sha256 of the file written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npy")
    _usual_mode(fd)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, np.ascontiguousarray(array))
            f.flush()
            os.fsync(f.fileno())
        digest = sha256_file(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return digest


@contextmanager
def atomic_folder(target: Path):
    """Yield a temporary folder beside ``target``; when the block succeeds it replaces ``target``
    (with the mode a plain mkdir would give, not mkdtemp's owner-only one)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        os.chmod(tmp, _DIR_MODE)
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
