"""The built-in datasets (SST-2, MR, R8, R52) shipped inside the package as gzipped JSONL, built by
``scripts/build_datasets.py``.
"""

from __future__ import annotations

import copy
import functools
import gzip
import hashlib
import json
from importlib import resources
from pathlib import Path

import numpy as np

from layerfuse.data.dataset import Dataset, Split
from layerfuse.data.files import EXTENSIONS
from layerfuse.errors import LayerfuseError

__all__ = ["BUILTIN_NAMES", "list_builtin", "load_builtin"]

BUILTIN_NAMES: tuple[str, ...] = ("sst2", "mr", "r8", "r52")


# ---------------------------------------------------------------------------------------------
# Built-in datasets


def _data_dir():
    return resources.files("layerfuse") / "_data"


@functools.lru_cache(maxsize=1)
def _index() -> dict:
    try:
        text = (_data_dir() / "index.json").read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LayerfuseError(
            "layerfuse/_data/index.json is missing from the installation; reinstall layerfuse "
            "(or run scripts/build_datasets.py in a source checkout)") from None
    return json.loads(text)


def _normalize_name(name: str) -> str:
    return "".join(ch for ch in str(name).strip().lower() if ch not in "-_ ")


def list_builtin() -> list[dict]:
    """One dict per built-in dataset (from ``index.json``; nothing is decompressed).

    Keys: ``name``, ``description``, ``source``, ``file``, ``sha256``, ``fingerprint``,
    ``classes``, ``n_classes``, ``splits`` (name -> size), ``class_counts``, ``sources``.
    """
    entries = _index()["datasets"]
    return [{"name": n, **copy.deepcopy(entries[n])} for n in BUILTIN_NAMES]


@functools.lru_cache(maxsize=None)
def _read_builtin(name: str) -> dict[str, tuple[list[str], np.ndarray]]:
    entry = _index()["datasets"][name]
    fname = entry["file"]
    try:
        blob = (_data_dir() / fname).read_bytes()
    except FileNotFoundError:
        raise LayerfuseError(f"layerfuse/_data/{fname} is missing from the installation; reinstall layerfuse") from None
    if hashlib.sha256(blob).hexdigest() != entry["sha256"]:
        raise LayerfuseError(
            f"layerfuse/_data/{fname} does not match its sha256 in index.json (corrupted install?); reinstall layerfuse")
    classes = {c: i for i, c in enumerate(entry["classes"])}
    texts: dict[str, list[str]] = {s: [] for s in entry["splits"]}
    labels: dict[str, list[int]] = {s: [] for s in entry["splits"]}
    for line in gzip.decompress(blob).decode("utf-8").split("\n"):
        if not line:
            continue
        rec = json.loads(line)
        texts[rec["split"]].append(rec["text"])
        labels[rec["split"]].append(classes[rec["label"]])
    out = {}
    for s in entry["splits"]:
        if len(texts[s]) != entry["splits"][s]:
            raise LayerfuseError(f"layerfuse/_data/{fname}: split '{s}' has {len(texts[s])} rows, "
                                 f"index.json says {entry['splits'][s]}; reinstall layerfuse")
        arr = np.asarray(labels[s], dtype=np.int64)
        arr.flags.writeable = False
        out[s] = (texts[s], arr)
    return out


def load_builtin(name: str) -> Dataset:
    """Load a built-in dataset by name (case-insensitive; ``sst-2`` and ``SST2`` work too)."""
    key = _normalize_name(name)
    if key not in BUILTIN_NAMES:
        hint = ""
        if any(str(name).lower().endswith(ext) for ext in EXTENSIONS) or Path(str(name)).is_file():
            hint = f"; to load your own file pass `train`={name}"
        raise LayerfuseError(
            f"unknown dataset '{name}': the built-in datasets are {', '.join(BUILTIN_NAMES)}{hint}")
    entry = _index()["datasets"][key]
    raw = _read_builtin(key)
    splits = {s: Split(texts, labels) for s, (texts, labels) in raw.items()}
    return Dataset(name=key, classes=list(entry["classes"]), splits=splits, source=entry["source"])
