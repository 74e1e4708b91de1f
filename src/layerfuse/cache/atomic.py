"""Atomic writes, checksums, temporary names that say who wrote them, and one-line write errors.

Every file or folder layerfuse keeps is written under a temporary name beside its target and
renamed into place, so a reader sees the old version or the new one, never half of one. The
temporary names carry the writer's process id (``.tmp-<pid>-…``), so a name left behind by a
killed writer can be told from one still being written (:func:`stale_temporaries`).

A write that fails because the disk is full, the file system is read-only, permission is missing
or a file stands where a folder should be raises :class:`WriteError` (a
:class:`~layerfuse.errors.LayerfuseError`): one line naming the path and what to do, with the
temporary file removed.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from layerfuse.errors import LayerfuseError

__all__ = [
    "sha256_file",
    "sampled_sha256",
    "atomic_write_bytes",
    "atomic_save_npy",
    "atomic_folder",
    "WriteError",
    "cache_writes",
    "TMP_PREFIX",
    "temp_prefix",
    "stale_temporaries",
    "remove_stale_temporaries",
    "path_size",
]

#: Every temporary name starts with this, then the writer's pid and a dash.
TMP_PREFIX = ".tmp-"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a whole file, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def sampled_sha256(path: Path, stride: int = 1 << 21, block: int = 1 << 12) -> str:
    """Hex sha256 of ``block`` bytes every ``stride`` bytes of a file, plus its last block.

    Reads about 0.2 % of a file (1 MB of 538 MB with the defaults), and any damaged run of
    ``stride + block`` bytes or more covers a whole sampled block, so it changes this digest.
    Used as the cheap check on every load; :func:`sha256_file` is the full one.
    """
    h = hashlib.sha256()
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        for offset in list(range(0, size, stride)) + [max(0, size - block)]:
            f.seek(offset)
            h.update(f.read(block))
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


# ---------------------------------------------------------------------------------------------
# One-line write errors

_REASONS = {
    errno.ENOSPC: ("no space left on device", "free some space"),
    errno.EDQUOT: ("disk quota exceeded", "free some space"),
    errno.EROFS: ("read-only file system", "use a writable location"),
    errno.EACCES: ("permission denied", "fix the permissions"),
    errno.EPERM: ("operation not permitted", "fix the permissions"),
    errno.ENOTDIR: ("a file stands where a folder is needed", "remove that file"),
    errno.EEXIST: ("a file stands where a folder is needed", "remove that file"),
}


class WriteError(LayerfuseError):
    """A write refused by the file system (full, read-only, no permission, a file in the way)."""

    def __init__(self, path: Path, reason: str, fix: str):
        self.path, self.reason, self.fix = Path(path), reason, fix
        super().__init__(f"{path}: {reason} while writing; {fix} or write somewhere else")


def _write_error(path: Path, exc: OSError) -> WriteError | None:
    """The WriteError for an OSError a user can act on, else None (a bug: let it propagate)."""
    code = getattr(exc, "errno", None)
    if code not in _REASONS:
        return None
    reason, fix = _REASONS[code]
    return WriteError(path, reason, fix)


def _io_error_from_text(exc: Exception) -> OSError | None:
    """The OSError behind a writer's own error: safetensors reports a full disk as
    ``SafetensorError('… No space left on device (os error 28)')``, numpy as ``OSError('8192 requested and 8160
    written')`` without an errno (a short write to a regular file: the disk is full)."""
    text = str(exc)
    if " requested and " in text and text.rstrip().endswith("written"):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    for code in _REASONS:
        if f"code: {code}," in text or f"[Errno {code}]" in text or f"(os error {code})" in text:
            return OSError(code, os.strerror(code))
    return None


@contextmanager
def _writing(path: Path):
    """Turn an actionable OSError raised in the block into a :class:`WriteError` naming ``path``."""
    try:
        yield
    except WriteError:
        raise
    except OSError as exc:
        err = _write_error(path, exc if exc.errno is not None else _io_error_from_text(exc) or exc)
        if err is None:
            raise
        raise err from None
    except Exception as exc:  # noqa: BLE001 -- library writers that wrap OSError in their own type
        os_exc = _io_error_from_text(exc)
        if os_exc is None:
            raise
        raise _write_error(path, os_exc) from None


@contextmanager
def cache_writes(root: Path):
    """Re-word a :class:`WriteError` under the cache root ``root`` as a cache-root error.

    The message names the root, the file being written (relative to the root) and says to free
    space or pass another ``cache_dir`` (``--cache-dir``, ``$LAYERFUSE_CACHE``).
    """
    try:
        with _writing(Path(root)):
            yield
    except WriteError as exc:
        try:
            rel = exc.path.relative_to(root)
        except ValueError:
            rel = exc.path
        what = f" while writing {rel}" if str(rel) not in ("", ".") else ""
        raise LayerfuseError(f"cache root {root}: {exc.reason}{what}; {exc.fix} or pass another `cache_dir` "
                             "(or set $LAYERFUSE_CACHE)") from None


# ---------------------------------------------------------------------------------------------
# Temporary names


def temp_prefix(name: str = "") -> str:
    """``.tmp-<pid>-`` (plus ``name-``): the prefix of this process's temporary files and folders."""
    return f"{TMP_PREFIX}{os.getpid()}-" + (f"{name}-" if name else "")


def _writer_pid(name: str) -> int | None:
    if not name.startswith(TMP_PREFIX):
        return None
    head = name[len(TMP_PREFIX):].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _is_stale(path: Path) -> bool:
    """A temporary left by a writer that is gone: its pid no longer runs, or the process now
    holding that pid started after the temporary was made (the pid was reused). Names of the
    old unnamed form (``.tmp-XXXX``, ``.<name>-XXXX``) are stale once a day old."""
    try:
        made = path.lstat().st_mtime
    except OSError:
        return False
    pid = _writer_pid(path.name)
    if pid is None:
        return time.time() - made > 86400
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's live process
        return False
    started = _process_start(pid)
    return started is not None and started > made + 2.0  # btime is whole seconds


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), from /proc/<pid>/stat and /proc/stat's boot
    time; None where /proc does not say (then a running pid counts as the writer)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime, counted after "(comm)"
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def stale_temporaries(folder: Path, recursive: bool = True) -> list[Path]:
    """Temporary files and folders under ``folder`` whose writer is gone (see :func:`_is_stale`)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out, todo = [], [folder]
    while todo:
        d = todo.pop()
        try:
            children = list(d.iterdir())
        except OSError:
            continue
        for p in children:
            if p.name.startswith(".") and p.name != ".locks" and _looks_temporary(p) and _is_stale(p):
                out.append(p)
            elif recursive and p.is_dir() and not p.is_symlink():
                todo.append(p)
    return sorted(out)


def _looks_temporary(p: Path) -> bool:
    if p.name.startswith((TMP_PREFIX, ".assemble-")):
        return True
    # atomic_folder's names before pids were recorded: .<target>-XXXXXXXX (mkdtemp's 8 characters)
    return p.is_dir() and len(p.name.rsplit("-", 1)[-1]) == 8 and "-" in p.name


def remove_stale_temporaries(folder: Path, recursive: bool = True) -> tuple[int, int]:
    """Delete what :func:`stale_temporaries` finds; return (how many, bytes freed)."""
    n = size = 0
    for p in stale_temporaries(folder, recursive):
        size += path_size(p)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        n += 1
    return n, size


def path_size(p: Path) -> int:
    """Bytes of a file, or of every file under a folder (0 when it vanished meanwhile)."""
    try:
        if p.is_dir() and not p.is_symlink():
            return sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())
        return p.lstat().st_size
    except OSError:
        return 0


# ---------------------------------------------------------------------------------------------
# Atomic writes


def _mkdir(folder: Path) -> None:
    with _writing(folder):
        folder.mkdir(parents=True, exist_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync it, and rename it into place."""
    path = Path(path)
    _mkdir(path.parent)
    tmp = None
    try:
        with _writing(path):
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix())
            _usual_mode(fd)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def atomic_save_npy(path: Path, array: np.ndarray) -> str:
    """Save an array atomically; return the sha256 of the file written."""
    path = Path(path)
    _mkdir(path.parent)
    tmp = None
    try:
        with _writing(path):
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(), suffix=".npy")
            _usual_mode(fd)
            with os.fdopen(fd, "wb") as f:
                np.save(f, np.ascontiguousarray(array))
                f.flush()
                os.fsync(f.fileno())
            digest = sha256_file(Path(tmp))
            os.replace(tmp, path)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return digest


@contextmanager
def atomic_folder(target: Path):
    """Yield a temporary folder beside ``target``; when the block succeeds it replaces ``target``
    (with the mode a plain mkdir would give, not mkdtemp's owner-only one).

    The temporary folder is removed whatever happens; a disk-full or read-only error raised in the
    block becomes a one-line :class:`WriteError` naming ``target``.
    """
    target = Path(target)
    _mkdir(target.parent)
    with _writing(target):
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=temp_prefix(target.name)))
    try:
        with _writing(target):
            os.chmod(tmp, _DIR_MODE)
            yield tmp
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
