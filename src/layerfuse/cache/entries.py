"""On-disk cache of per-layer pooled embeddings.

Layout of one entry (one model × one list of texts × max length × dtype × depth × storage)::

    <root>/embeddings/<key>/
        meta.json               what produced it (shown to the user as the fingerprint)
        order.npy               processing order (texts sorted by token length)
        text_hashes.npy         one 16-byte digest per text, in the texts' order, so a request for
                                some of these texts is served from this entry (see subset_rows)
        text_tokens.npy         each text's token count before truncation (truncation of a subset)
        <pooling>/chunk-00000.npy   [depth+1, n, d] rows of order[0:n]
        <pooling>/chunk-00000.json  sha256 of the .npy, written after it: no json, no chunk
        <pooling>/final.npy     [depth+1, N, d] in the texts' own order, memory-mapped on read
        <pooling>/final.json    sha256 + shape of final.npy

Every file is written to a temporary name and renamed into place, so an interrupted run leaves
only whole chunks behind and the next run resumes after the last one. A chunk or final file
whose checksum does not match is deleted and recomputed, never used; a damaged ``meta.json``,
``order.npy`` or ``text_hashes.npy`` (empty, truncated, ``[]``) reads as absent and is rebuilt.
A process that computes an entry holds its lock (:meth:`CacheEntry.lock`), so two runs of the
same extraction share one entry: the second waits, then finds it finished.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from layerfuse.cache.atomic import (
    atomic_save_npy,
    atomic_write_bytes,
    cache_writes,
    remove_stale_temporaries,
    sha256_file,
    temp_prefix,
)
from layerfuse.cache.layout import entries_root, locks_root

__all__ = ["CacheEntry", "text_hashes", "subset_rows", "entry", "remove_entry", "dtype_in_cache"]



def _verified_record(npy: Path, js: Path, verify: bool = True) -> dict | None:
    """The JSON record written after ``npy`` if both exist and the checksum matches.

    A pair whose record is not a JSON object with a ``sha256`` (``[]``, truncated, binary) or
    whose checksum does not match is deleted, so it is recomputed, never served. An ``npy``
    without its record is left alone: it is either being finished by another process right now
    (the record is written just after the rename) or overwritten by the next writer.
    """
    if not js.exists() or not npy.exists():
        return None
    try:
        record = json.loads(js.read_text())
        if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
            raise ValueError("not a checksum record")
        if verify and sha256_file(npy) != record["sha256"]:
            raise ValueError("checksum mismatch")
    except (OSError, ValueError, UnicodeDecodeError):
        npy.unlink(missing_ok=True)
        js.unlink(missing_ok=True)
        return None
    return record


def _load_small(path: Path) -> np.ndarray | None:
    """A small array file, or None when it is missing or damaged in any way (empty, truncated,
    garbage: np.load raises EOFError, ValueError, OSError or worse for those)."""
    try:
        return np.load(path, allow_pickle=False)
    except Exception:  # noqa: BLE001 -- any unreadable file is treated as absent and rebuilt
        return None


# Entry locks this process holds: lock file path -> [descriptor, holders].
_HELD: dict[str, list] = {}
_HELD_GUARD = threading.Lock()


@dataclass
class CacheEntry:
    """One cache entry folder; all reads check checksums."""

    path: Path

    @property
    def key(self) -> str:
        return self.path.name

    # -- meta -----------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        """The cache root this entry lives under (``<root>/embeddings/<key>``)."""
        return self.path.parent.parent

    def read_meta(self) -> dict | None:
        """``meta.json`` as a dict, or None when missing or damaged (then the entry is rebuilt)."""
        try:
            meta = json.loads((self.path / "meta.json").read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            return None
        if not isinstance(meta, dict) or not isinstance(meta.get("fields", {}), dict):
            return None
        return meta

    def write_meta(self, meta: dict) -> None:
        with cache_writes(self.root):
            atomic_write_bytes(self.path / "meta.json", json.dumps(meta, indent=1, sort_keys=True).encode())

    def read_order(self) -> np.ndarray | None:
        o = _load_small(self.path / "order.npy")
        return o if o is not None and o.ndim == 1 and o.dtype.kind in "iu" else None

    def write_order(self, order: np.ndarray) -> None:
        with cache_writes(self.root):
            atomic_save_npy(self.path / "order.npy", order.astype(np.int64))

    def read_text_hashes(self) -> np.ndarray | None:
        """The per-text digests, or None when missing or damaged (an empty file, say)."""
        h = _load_small(self.path / "text_hashes.npy")
        return h if h is not None and h.dtype == np.dtype("S16") and h.ndim == 1 else None

    def write_text_hashes(self, hashes: np.ndarray, full_tokens: np.ndarray | None = None) -> None:
        """Per text: its digest and, when known, its token count before truncation."""
        with cache_writes(self.root):
            if full_tokens is not None:
                atomic_save_npy(self.path / "text_tokens.npy", full_tokens)
            atomic_save_npy(self.path / "text_hashes.npy", hashes)

    def read_text_tokens(self) -> np.ndarray | None:
        t = _load_small(self.path / "text_tokens.npy")
        h = self.read_text_hashes()
        return t if t is not None and h is not None and t.shape == h.shape else None

    # -- concurrency ----------------------------------------------------------------------------
    def lock(self) -> "CacheEntry":
        """Wait until no other process computes this entry, then hold it until :meth:`unlock`.

        An exclusive ``flock`` on ``<root>/embeddings/.locks/<key>.lock`` (outside the entry, so
        removing the entry keeps the lock); the kernel drops it when this process exits, however
        it exits, so a killed writer never blocks the next run. Within one process the lock is
        shared (counted), so an entry object still alive in a traceback cannot block a retry in
        the same process. Stale temporary files a killed writer left inside the entry are removed
        once the lock is held.
        """
        import fcntl

        if getattr(self, "_lock_path", None) is not None:
            return self
        folder = locks_root(self.root)
        path = str(folder / f"{self.key}.lock")
        with _HELD_GUARD:
            held = _HELD.get(path)
            if held is not None:
                held[1] += 1
            else:
                with cache_writes(self.root):
                    folder.mkdir(parents=True, exist_ok=True)
                    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
                fcntl.flock(fd, fcntl.LOCK_EX)
                _HELD[path] = [fd, 1]
        self._lock_path = path
        remove_stale_temporaries(self.path)
        return self

    def unlock(self) -> None:
        """Release :meth:`lock` (the last holder in this process closes the descriptor, which
        releases the flock)."""
        path = getattr(self, "_lock_path", None)
        if path is None:
            return
        self._lock_path = None
        with _HELD_GUARD:
            held = _HELD.get(path)
            if held is not None:
                held[1] -= 1
                if held[1] == 0:
                    os.close(held[0])
                    del _HELD[path]

    def __del__(self):  # a lock is never held past the entry object's life
        self.unlock()

    # -- chunks ---------------------------------------------------------------------------------
    def _chunk_paths(self, pooling: str, index: int) -> tuple[Path, Path]:
        base = self.path / pooling / f"chunk-{index:05d}"
        return base.with_suffix(".npy"), base.with_suffix(".json")

    def write_chunk(self, pooling: str, index: int, array: np.ndarray, info: dict) -> None:
        npy, js = self._chunk_paths(pooling, index)
        with cache_writes(self.root):
            digest = atomic_save_npy(npy, array)
            record = {**info, "sha256": digest, "shape": list(array.shape), "dtype": str(array.dtype)}
            atomic_write_bytes(js, json.dumps(record).encode())

    def chunk_info(self, pooling: str, index: int, verify: bool = True) -> dict | None:
        """The chunk's record if it is whole and its checksum matches; a bad chunk is removed."""
        return _verified_record(*self._chunk_paths(pooling, index), verify=verify)

    def read_chunk(self, pooling: str, index: int) -> np.ndarray:
        npy, _ = self._chunk_paths(pooling, index)
        return np.load(npy)

    # -- final arrays ---------------------------------------------------------------------------
    def final_path(self, pooling: str) -> Path:
        return self.path / pooling / "final.npy"

    def has_final(self, pooling: str, verify: bool = True) -> bool:
        npy = self.final_path(pooling)
        return _verified_record(npy, npy.with_suffix(".json"), verify=verify) is not None

    def open_final(self, pooling: str) -> np.ndarray:
        return np.load(self.final_path(pooling), mmap_mode="r")

    def finalise(self, pooling: str, n_chunks: int, order: np.ndarray, shape: tuple, dtype) -> None:
        """Assemble the chunks into final.npy in the texts' own order, then drop the chunks.

        Written one layer at a time, front to back, and hashed as it is written: the rows of a
        layer gathered from the memory-mapped chunks into the texts' order, so the file is neither
        scattered into row by row nor read back for its checksum."""
        folder = self.path / pooling
        dtype = np.dtype(dtype)
        tmp = None
        with cache_writes(self.root):
            try:
                chunks = [np.load(self._chunk_paths(pooling, i)[0], mmap_mode="r") for i in range(n_chunks)]
                rows = sum(c.shape[1] for c in chunks)
                if rows != shape[1]:
                    raise RuntimeError(f"chunks of {self.path / pooling} hold {rows} rows, expected {shape[1]}")
                source_row = np.empty(shape[1], dtype=np.int64)  # final row r is sorted row source_row[r]
                source_row[np.asarray(order)] = np.arange(shape[1])
                digest = hashlib.sha256()
                header = io.BytesIO()
                np.lib.format.write_array_header_1_0(
                    header, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                             "shape": tuple(int(x) for x in shape)})
                fd, tmp = tempfile.mkstemp(dir=folder, prefix=temp_prefix(), suffix=".npy")
                with os.fdopen(fd, "wb") as f:
                    for block in _final_blocks(header.getvalue(), chunks, source_row, shape[0], dtype):
                        f.write(block)
                        digest.update(block)
                    f.flush()
                    os.fsync(f.fileno())
                del chunks
                os.replace(tmp, self.final_path(pooling))
            finally:
                if tmp is not None and os.path.exists(tmp):
                    os.unlink(tmp)
            atomic_write_bytes(
                self.final_path(pooling).with_suffix(".json"),
                json.dumps({"sha256": digest.hexdigest(), "shape": list(shape), "dtype": str(dtype)}).encode(),
            )
        for p in folder.glob("chunk-*"):
            p.unlink(missing_ok=True)

    def verify_all(self) -> tuple[int, list[Path]]:
        """Check every chunk and final array against its record; delete the damaged ones (they are
        recomputed when next needed). Returns (how many were checked, the damaged ``.npy`` paths)."""
        checked, damaged = 0, []
        for js in sorted(self.path.glob("*/*.json")):
            npy = js.with_suffix(".npy")
            if npy.exists():
                checked += 1
                if _verified_record(npy, js) is None:
                    damaged.append(npy)
        return checked, damaged

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())


def _final_blocks(header: bytes, chunks: list, source_row: np.ndarray, layers: int, dtype):
    """The bytes of a final array file in order: its header, then each layer's rows in the texts'
    order (as ``memoryview``s of C-contiguous arrays)."""
    yield memoryview(header)
    for layer in range(layers):
        rows = np.concatenate([c[layer] for c in chunks], axis=0)[source_row]
        yield memoryview(np.ascontiguousarray(rows, dtype=dtype)).cast("B")


def text_hashes(texts) -> np.ndarray:
    """One 16-byte BLAKE2b digest per text (``S16`` array), to find texts again in other entries."""
    return np.array([hashlib.blake2b(t.encode("utf-8"), digest_size=16).digest() for t in texts], dtype="S16")


def subset_rows(have: np.ndarray, want: np.ndarray) -> np.ndarray | None:
    """Row in ``have`` of every hash in ``want``, or None when any is missing."""
    index = {h: i for i, h in enumerate(have.tolist())}
    rows = [index.get(h) for h in want.tolist()]
    if any(r is None for r in rows):
        return None
    return np.asarray(rows, dtype=np.int64)


def dtype_in_cache(root: Path, fields: dict, choices, prefer: str) -> str | None:
    """The compute dtype of an entry (finished or not) that matches ``fields`` in everything but
    the dtype: ``prefer`` when one exists with it, else another of ``choices``, else None.

    ``fields`` are an entry's key fields with ``depth`` None meaning "every layer". Lets
    ``dtype="auto"`` finish or reuse what an earlier run computed when the automatic choice
    would now come out differently (a busy CPU times bfloat16 differently).
    """
    found = set()
    folder = entries_root(root)
    if not folder.is_dir():
        return None
    want = {k: v for k, v in fields.items() if k not in ("dtype", "depth")}
    for d in folder.glob("[!.]*"):
        meta = CacheEntry(d).read_meta()
        if not meta:
            continue
        f = meta.get("fields", {})
        if {k: v for k, v in f.items() if k not in ("dtype", "depth")} != want or f.get("dtype") not in choices:
            continue
        depth = f.get("depth", -1)
        if (depth == meta.get("n_layers") if fields.get("depth") is None else depth >= fields["depth"]):
            found.add(f["dtype"])
    if prefer in found:
        return prefer
    return sorted(found)[0] if found else None


def entry(root: Path, key: str) -> CacheEntry:
    """The entry ``key`` under the cache root ``root`` (it may not exist yet)."""
    return CacheEntry(entries_root(root) / key)


def remove_entry(e: CacheEntry) -> None:
    """Delete an entry folder (its lock file, outside it, stays)."""
    shutil.rmtree(e.path, ignore_errors=True)
