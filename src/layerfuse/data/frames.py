"""Data the way the Python ecosystem holds it: pandas DataFrames and Hugging Face ``datasets``.

Accepted wherever training data is (``load_dataset(train=...)``, ``extract(train=...)``, a run
config's ``data.train``, ``LayerFusionClassifier.fit``, ``--train`` on the command line):

* a :class:`pandas.DataFrame` with a text and a label column;
* a :class:`datasets.Dataset`, or a :class:`datasets.DatasetDict` (its ``train`` split; its
  ``test`` and ``validation`` splits when present);
* the folder :meth:`datasets.Dataset.save_to_disk` / :meth:`datasets.DatasetDict.save_to_disk`
  wrote (a path, as a string or :class:`~pathlib.Path`).

Columns are found the way :mod:`layerfuse.data.files` finds them (exact name, else a unique
case-insensitive match) and every problem is one :class:`~layerfuse.errors.LayerfuseError` naming
the table, the row and the column: a missing column lists the columns there are. Labels become
strings as in files; a ``datasets`` ``ClassLabel`` column gives its names, not its ids. Neither
pandas nor ``datasets`` is imported unless such an object or folder is passed.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from layerfuse.config import (
    DEFAULT_ENCODING,
    DEFAULT_LABEL_COLUMN,
    DEFAULT_SPLIT_SEED,
    DEFAULT_TEST_FRACTION,
    DEFAULT_TEXT_COLUMN,
)
from layerfuse.data.dataset import Dataset, Split
from layerfuse.data.files import Table, add_row, read_file, sort_classes
from layerfuse.data.sampling import holdout
from layerfuse.errors import LayerfuseError

__all__ = ["is_table_like", "is_saved_dataset", "table_texts", "table_texts_labels", "load_frames"]

_SAVED_MARKERS = ("dataset_dict.json", "state.json")


def is_saved_dataset(obj: Any) -> bool:
    """Whether ``obj`` is a path to a folder written by ``datasets``' ``save_to_disk``."""
    if not isinstance(obj, (str, os.PathLike)):
        return False
    try:  # a text passed where a path could be: too long a name, a NUL byte
        p = Path(obj)
        return p.is_dir() and any((p / m).is_file() for m in _SAVED_MARKERS)
    except (OSError, ValueError):
        return False


def _kind(obj: Any) -> str | None:
    """``dataframe``, ``dataset``, ``datasetdict``, ``saved`` or None, without importing anything."""
    mod = type(obj).__module__ or ""
    name = type(obj).__name__
    if mod.startswith("pandas") and name == "DataFrame":
        return "dataframe"
    if mod.startswith("datasets"):
        if name == "DatasetDict":
            return "datasetdict"
        if name == "Dataset":
            return "dataset"
        if name in ("IterableDataset", "IterableDatasetDict"):
            raise LayerfuseError(f"a streaming datasets.{name} cannot be read whole: load it without "
                                 "streaming=True, or materialise it with Dataset.from_list(list(stream.take(N)))")
    if is_saved_dataset(obj):
        return "saved"
    return None


def is_table_like(obj: Any) -> bool:
    """Whether ``obj`` is a DataFrame, a ``datasets`` Dataset/DatasetDict or a saved-dataset folder."""
    return _kind(obj) is not None


def _load_saved(path) -> Any:
    try:
        import datasets
    except ImportError:
        raise LayerfuseError(f"{path}: reading a folder saved with save_to_disk needs the datasets package: "
                             "pip install datasets") from None
    try:
        return datasets.load_from_disk(str(path))
    except Exception as e:  # noqa: BLE001 - datasets raises many types
        raise LayerfuseError(f"{path}: cannot read as a saved dataset ({type(e).__name__}: {e}); "
                             "save it again with Dataset.save_to_disk") from None


def _split_of(obj: Any, split: str, what: str, *, required: bool = True):
    """``obj[split]`` of a DatasetDict (None if absent and not required)."""
    if split in obj:
        return obj[split]
    if required:
        raise LayerfuseError(f"{what} has no '{split}' split; splits found: {', '.join(map(repr, obj)) or 'none'}; "
                             f"pass one split, e.g. dataset_dict['{next(iter(obj), 'train')}']")
    return None


def _resolve(kind: str, wanted: str, found: list[str], what: str) -> str:
    if wanted in found:
        return wanted
    loose = [f for f in found if str(f).strip().lower() == str(wanted).strip().lower()]
    if len(loose) == 1:
        return loose[0]
    shown = ", ".join(repr(f) for f in found[:20]) + (", ..." if len(found) > 20 else "") or "none"
    raise LayerfuseError(f"{what}: no {kind} column '{wanted}'; columns found: {shown}; "
                         f"pass {kind}_column=NAME (--{kind}-column on the command line)")


def _cell(v: Any) -> Any:
    """A pandas/numpy cell as a plain Python value (NaN and NA become None)."""
    if isinstance(v, np.generic):
        v = v.item()
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if type(v).__name__ in ("NAType", "NaTType"):
        return None
    return v


class _RowTable(Table):
    """Rows of a DataFrame (named by index label) or a Dataset (by 0-based row, as ``ds[i]``)."""

    def __init__(self, what: str, unit: str):
        super().__init__(what, "row")
        self.what, self.row_unit = what, unit

    def at(self, n) -> str:
        return f"{self.what}: row at index {n!r}" if self.row_unit == "index" else f"{self.what}[{n}]"


def _columns_of(obj, kind: str) -> list[str]:
    return [str(c) for c in obj.columns] if kind == "dataframe" else list(obj.column_names)


def _read_table(obj: Any, text_column: str, label_column: str | None, what: str) -> _RowTable:
    """Texts (and label strings unless ``label_column`` is None) of one DataFrame or Dataset."""
    kind = _kind(obj)
    if kind == "saved":
        obj = _load_saved(obj)
        kind = _kind(obj)
    if kind == "datasetdict":
        obj = _split_of(obj, "train", what)
        kind = "dataset"
    if kind not in ("dataframe", "dataset"):
        raise LayerfuseError(f"{what} is a {type(obj).__name__}: pass a pandas DataFrame, a datasets.Dataset or "
                             "DatasetDict, a folder saved with save_to_disk, or a data file")
    cols = _columns_of(obj, kind)
    if kind == "dataframe" and len(set(cols)) != len(cols):
        dup = next(c for c in cols if cols.count(c) > 1)
        raise LayerfuseError(f"{what}: column '{dup}' appears {cols.count(dup)} times; rename the duplicates")
    tk = _resolve("text", text_column, cols, what)
    lk = _resolve("label", label_column, cols, what) if label_column is not None else None
    if kind == "dataframe":
        table = _RowTable(what, "index")
        original = list(obj.columns)
        texts = obj[original[cols.index(tk)]].tolist()
        labels = obj[original[cols.index(lk)]].tolist() if lk is not None else [None] * len(texts)
        where = obj.index.tolist()
    else:
        table = _RowTable(what, "row")
        texts = list(obj[tk])
        labels = _dataset_labels(obj, lk) if lk is not None else [None] * len(texts)
        where = list(range(len(texts)))
    for n, t, lab in zip(where, texts, labels):
        add_row(table, _cell(n) if kind == "dataframe" else n, _cell(t), _cell(lab), tk, lk)
    if not table.texts:
        raise LayerfuseError(f"{what} has no rows; pass at least one example per class")
    return table


def _dataset_labels(ds, column: str) -> list:
    """A Dataset column's values; a ClassLabel column as its names."""
    values = list(ds[column])
    feature = ds.features.get(column)
    names = getattr(feature, "names", None)
    if names and hasattr(feature, "int2str"):
        return [None if v is None or v < 0 else names[v] for v in values]
    return values


def _describe(obj: Any, role: str) -> str:
    if isinstance(obj, (str, os.PathLike)):
        return str(obj)
    return f"{role} ({type(obj).__name__})"


def table_texts(obj: Any, text_column: str = DEFAULT_TEXT_COLUMN, what: str = "X") -> list[str]:
    """The texts of a DataFrame, Dataset or saved-dataset folder, in order (no labels read)."""
    if _kind(obj) == "datasetdict" or (_kind(obj) == "saved" and _kind(_load_saved(obj)) == "datasetdict"):
        d = obj if _kind(obj) == "datasetdict" else _load_saved(obj)
        raise LayerfuseError(f"{what} is a DatasetDict with splits {', '.join(map(repr, d))}: pass one split, "
                             f"e.g. {what}['{next(iter(d), 'test')}']")
    return list(_read_table(obj, text_column, None, _describe(obj, what)).texts)


def table_texts_labels(obj: Any, text_column: str = DEFAULT_TEXT_COLUMN, label_column: str | None = DEFAULT_LABEL_COLUMN,
                       what: str = "X") -> tuple[list[str], list[str]]:
    """Texts and label strings of a DataFrame, Dataset (a DatasetDict: its ``train`` split) or folder.

    With ``label_column`` None only the texts are read (the labels come back empty).
    """
    t = _read_table(obj, text_column, label_column, _describe(obj, what))
    return list(t.texts), list(t.labels)


def _part(obj: Any, role: str, text_column: str, label_column: str, encoding: str, fmt: str | None) -> Table:
    if is_table_like(obj):
        return _read_table(obj, text_column, label_column, role)
    return read_file(Path(obj), fmt, text_column, label_column, encoding)


def _name_of(obj: Any) -> str:
    if isinstance(obj, (str, os.PathLike)):
        return Path(obj).name or "data"
    return "dataframe" if _kind(obj) == "dataframe" else "dataset"


def load_frames(
    train: Any,
    test: Any = None,
    *,
    text_column: str = DEFAULT_TEXT_COLUMN,
    label_column: str = DEFAULT_LABEL_COLUMN,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = DEFAULT_SPLIT_SEED,
    encoding: str = DEFAULT_ENCODING,
    format: str | None = None,  # noqa: A002 -- mirrors load_files; used when test is a file
) -> Dataset:
    """A :class:`Dataset` from a DataFrame, ``datasets`` object or saved folder (``test`` may also be a file).

    Parameters
    ----------
    train, test
        DataFrame, ``datasets.Dataset``/``DatasetDict``, a ``save_to_disk`` folder, or a data file
        (one of the two at least is a table: two files go to :func:`layerfuse.data.files.load_files`). A DatasetDict for ``train`` gives its ``train`` split, and, when
        ``test`` is None, its ``test`` (and ``validation``) split too.
    text_column, label_column : str
        Column names.
    test_fraction, seed
        Without a test split, a stratified ``test_fraction`` of train (seeded) is held out.
    encoding, format
        For a ``test`` given as a file.

    Returns
    -------
    Dataset
        Classes are the sorted train labels (numerically when they all look like numbers).
    """
    role = _describe(train, "train")
    base = _load_saved(train) if _kind(train) == "saved" else train
    others: dict[str, tuple[Any, str]] = {}  # split -> (object, name in messages)
    if test is not None:
        others["test"] = (test, _describe(test, "test"))
    if _kind(base) == "datasetdict":
        for split in ("test", "validation"):
            if split not in others and split in base:
                others[split] = (base[split], f"{role}['{split}']")
        base = _split_of(base, "train", role)
        role = f"{role}['train']"
    tr = _part(base, role, text_column, label_column, encoding, format)
    classes = sort_classes(tr.labels)
    if len(classes) < 2:
        raise LayerfuseError(f"{role}: every one of the {len(tr.labels)} rows has the label '{classes[0]}'; "
                             "a classifier needs at least two classes (check label_column)")
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[lab] for lab in tr.labels], dtype=np.int64)
    parts = {"train": Split(tr.texts, y)}
    for split, (obj, name) in others.items():
        part = _part(obj, name, text_column, label_column, encoding, format)
        unseen = next(((lab, n) for lab, n in zip(part.labels, part.where) if lab not in index), None)
        if unseen is not None:
            raise LayerfuseError(f"{part.at(unseen[1])}: label '{unseen[0]}' never occurs in the training data "
                                 f"{role}; fix the label or add training examples for it")
        parts[split] = Split(part.texts, np.array([index[lab] for lab in part.labels], dtype=np.int64))
    if "test" in parts:
        source = f"{role}, test {others['test'][1]}"
    else:
        if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) \
                or not 0.0 < float(test_fraction) < 1.0:
            raise LayerfuseError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction!r}")
        tr_rows, te_rows = holdout(y, len(classes), float(test_fraction), seed)
        if len(te_rows) == 0:
            raise LayerfuseError(f"{role}: too few rows ({len(y)}) to hold out a {test_fraction:g} test split with "
                                 "every class kept in train; add rows, raise test_fraction, or pass test=")
        full = parts["train"]
        parts["train"], parts["test"] = full.take(tr_rows), full.take(te_rows)
        source = f"{role} (test: stratified {test_fraction:g} holdout, seed {seed})"
    order = {s: parts[s] for s in ("train", "validation", "test") if s in parts}
    return Dataset(name=_name_of(train), classes=classes, splits=order, source=source)
