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
whose checksum does not match is deleted and recomputed, never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from layerfuse.cache.atomic import atomic_save_npy, atomic_write_bytes, sha256_file
from layerfuse.cache.layout import entries_root

__all__ = ["CacheEntry", "text_hashes", "subset_rows", "entry", "remove_entry"]



def _verified_record(npy: Path, js: Path, verify: bool = True) -> dict | None:
    """The JSON record written after ``npy`` if both exist and the checksum matches; a damaged
    or half-written pair is deleted so it is recomputed, never served."""
    if not js.exists() or not npy.exists():
        return None
    try:
        record = json.loads(js.read_text())
        if verify and sha256_file(npy) != record["sha256"]:
            raise ValueError("checksum mismatch")
    except (OSError, ValueError, KeyError):
        npy.unlink(missing_ok=True)
        js.unlink(missing_ok=True)
        return None
    return record


@dataclass
class CacheEntry:
    """One cache entry folder; all reads check checksums."""

    path: Path

    @property
    def key(self) -> str:
        return self.path.name

    # -- meta -----------------------------------------------------------------------------------
    def read_meta(self) -> dict | None:
        try:
            return json.loads((self.path / "meta.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def write_meta(self, meta: dict) -> None:
        atomic_write_bytes(self.path / "meta.json", json.dumps(meta, indent=1, sort_keys=True).encode())

    def read_order(self) -> np.ndarray | None:
        try:
            return np.load(self.path / "order.npy")
        except (OSError, ValueError):
            return None

    def write_order(self, order: np.ndarray) -> None:
        atomic_save_npy(self.path / "order.npy", order.astype(np.int64))

    def read_text_hashes(self) -> np.ndarray | None:
        try:
            h = np.load(self.path / "text_hashes.npy")
        except (OSError, ValueError):
            return None
        return h if h.dtype == np.dtype("S16") and h.ndim == 1 else None

    def write_text_hashes(self, hashes: np.ndarray, full_tokens: np.ndarray | None = None) -> None:
        """Per text: its digest and, when known, its token count before truncation."""
        if full_tokens is not None:
            atomic_save_npy(self.path / "text_tokens.npy", full_tokens)
        atomic_save_npy(self.path / "text_hashes.npy", hashes)

    def read_text_tokens(self) -> np.ndarray | None:
        try:
            t = np.load(self.path / "text_tokens.npy")
        except (OSError, ValueError):
            return None
        h = self.read_text_hashes()
        return t if h is not None and t.shape == h.shape else None

    # -- chunks ---------------------------------------------------------------------------------
    def _chunk_paths(self, pooling: str, index: int) -> tuple[Path, Path]:
        base = self.path / pooling / f"chunk-{index:05d}"
        return base.with_suffix(".npy"), base.with_suffix(".json")

    def write_chunk(self, pooling: str, index: int, array: np.ndarray, info: dict) -> None:
        npy, js = self._chunk_paths(pooling, index)
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
        """Assemble the chunks into final.npy in the texts' own order, then drop the chunks."""
        folder = self.path / pooling
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npy")
        os.close(fd)
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
            start = 0
            for i in range(n_chunks):
                chunk = self.read_chunk(pooling, i)
                n = chunk.shape[1]
                out[:, order[start : start + n], :] = chunk
                start += n
            assert start == shape[1], (start, shape)
            out.flush()
            del out
            digest = sha256_file(Path(tmp))
            os.replace(tmp, self.final_path(pooling))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        atomic_write_bytes(
            self.final_path(pooling).with_suffix(".json"),
            json.dumps({"sha256": digest, "shape": list(shape), "dtype": str(np.dtype(dtype))}).encode(),
        )
        for p in folder.glob("chunk-*"):
            p.unlink(missing_ok=True)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())


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


def entry(root: Path, key: str) -> CacheEntry:
    return CacheEntry(entries_root(root) / key)


def remove_entry(e: CacheEntry) -> None:
    shutil.rmtree(e.path, ignore_errors=True)
