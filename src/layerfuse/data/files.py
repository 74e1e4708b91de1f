"""Datasets: the four built-in benchmarks and the user's own files.

A :class:`Dataset` is a list of class names plus up to three splits (``train``, optional
``validation``, ``test``), each a list of texts with integer labels indexing ``classes``.

Built-in data (``sst2``, ``mr``, ``r8``, ``r52``) ships as ``layerfuse/_data/<name>.jsonl.gz``
with an ``index.json`` describing it; both are written by ``scripts/build_datasets.py`` and read
lazily through :mod:`importlib.resources` (nothing is decompressed at import).

User files are CSV, TSV, JSONL or Parquet (chosen by extension or ``format=``). Every problem a
user can fix raises :class:`~layerfuse.errors.LayerfuseError` with ``file:line`` (the header of
a CSV/TSV file is line 1) and what to do about it.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import sys
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
from layerfuse.data.sampling import holdout
from layerfuse.errors import LayerfuseError

__all__ = ["Table", "add_row", "read_file", "sort_classes", "FORMATS", "EXTENSIONS", "load_files", "read_texts"]

FORMATS: tuple[str, ...] = ("csv", "tsv", "jsonl", "parquet")

EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
_FORMAT_ALIASES = {"ndjson": "jsonl", "jsonlines": "jsonl", "pq": "parquet", "tab": "tsv"}


# ---------------------------------------------------------------------------------------------
# User files


class Table:
    """Rows read from one file: texts, label strings (none when read without a label column) and
    where each row is (for messages)."""

    def __init__(self, path: Path, unit: str):
        self.path = path
        self.unit = unit  # "line" (text formats) or "row" (Parquet)
        self.texts: list[str] = []
        self.labels: list[str] = []
        self.where: list[int] = []

    def at(self, n: int) -> str:
        return f"{self.path}:{n}" if self.unit == "line" else f"{self.path}: row {n}"


def _resolve_format(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        f = str(fmt).strip().lower().lstrip(".")
        f = _FORMAT_ALIASES.get(f, f)
        if f not in FORMATS:
            raise LayerfuseError(f"unknown format '{fmt}' (format=): use one of {', '.join(FORMATS)}")
        return f
    ext = path.suffix.lower()
    if ext in EXTENSIONS:
        return EXTENSIONS[ext]
    raise LayerfuseError(
        f"{path}: cannot tell the format from the extension '{ext or '(none)'}'; use a .csv, .tsv, .jsonl, "
        f".ndjson or .parquet name"
        + (" (a .txt of one text per line is what `layerfuse predict --input` reads)" if ext == ".txt" else "")
        + f", or pass format={'|'.join(FORMATS)} from Python")


def _resolve_column(kind: str, wanted: str, found: list[str], where: str, fmt: str) -> str:
    """The column/field to use for ``wanted``: exact match, else a unique case-insensitive one."""
    if wanted in found:
        if found.count(wanted) > 1:
            raise LayerfuseError(f"{where}: column '{wanted}' appears {found.count(wanted)} times in the header; "
                                 f"rename the duplicates")
        return wanted
    loose = [f for f in found if f.strip().lower() == wanted.strip().lower()]
    if len(loose) == 1:
        return loose[0]
    word = "fields" if fmt == "jsonl" else "columns"
    shown = ", ".join(repr(f) for f in found[:20]) + (", ..." if len(found) > 20 else "") or "none"
    extra = " in the header row (the first line must name the columns)" if fmt in ("csv", "tsv") else ""
    raise LayerfuseError(f"{where}: no {kind} {word[:-1]} '{wanted}'{extra}; {word} found: {shown}; "
                         f"pass --{kind}-column NAME")


def _decode(path: Path, data: bytes, encoding: str) -> str:
    try:
        codec = codecs.lookup(encoding)
    except LookupError:
        raise LayerfuseError(f"unknown encoding '{encoding}' (`encoding`) for {path}; use e.g. utf-8 or latin-1") from None
    if codec.name == "utf-8" and data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            what_to_do = "the file looks like UTF-16: pass `encoding` utf-16"
        else:
            what_to_do = "pass `encoding` latin-1 (or cp1252, or whatever encoding the file really uses)"
        raise LayerfuseError(f"{path}:{line}: byte 0x{data[e.start]:02x} at column {col} is not valid "
                             f"{encoding}; {what_to_do}") from None


def _label_str(value: Any) -> str | None:
    """A label as a stripped string; None if missing/empty; raises TypeError for a bad type."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return None
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if isinstance(value, str):
        return value.strip() or None
    raise TypeError(type(value).__name__)


def add_row(table: Table, n: int, text: Any, label: Any, text_col: str, label_col: str | None) -> None:
    """Check and append one row; with ``label_col`` None only the text is checked and kept."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        text = ""
    if not isinstance(text, str):
        raise LayerfuseError(f"{table.at(n)}: text in '{text_col}' is a {type(text).__name__}, not a string; "
                             f"check `text_column`")
    if not text.strip():
        raise LayerfuseError(f"{table.at(n)}: empty text in '{text_col}'; fill it in or remove the row")
    if label_col is None:
        table.texts.append(text)
        table.where.append(n)
        return
    try:
        lab = _label_str(label)
    except TypeError as e:
        raise LayerfuseError(f"{table.at(n)}: label in '{label_col}' is a {e}, expected a string or a number; "
                             f"fix the label or check `label_column`") from None
    if lab is None:
        raise LayerfuseError(f"{table.at(n)}: missing label in '{label_col}'; every row needs a label "
                             f"(fill it in or remove the row)")
    table.texts.append(text)
    table.labels.append(lab)
    table.where.append(n)


def _columns(text_col: str, label_col: str | None) -> str:
    """The wanted columns for messages: ``'text', 'label'`` (or just ``'text'``)."""
    return f"'{text_col}'" + (f", '{label_col}'" if label_col is not None else "")


def _example(text_col: str, label_col: str | None) -> str:
    """A sample JSON object with the wanted fields, for messages."""
    return f"{{\"{text_col}\": \"...\"" + (f", \"{label_col}\": \"...\"" if label_col is not None else "") + "}"


def _read_delimited(path: Path, text: str, fmt: str, text_col: str, label_col: str | None) -> Table:
    delim = "," if fmt == "csv" else "\t"
    if csv.field_size_limit() < sys.maxsize // 2:
        try:
            csv.field_size_limit(sys.maxsize)
        except OverflowError:  # pragma: no cover -- platforms with 32-bit long
            csv.field_size_limit(2**31 - 1)
    try:
        rows = _csv_rows(text, delim, quoting=True)
    except csv.Error as e:
        if fmt == "csv":
            line, msg = e.args
            raise LayerfuseError(f"{path}:{line}: malformed CSV ({msg}); a field that contains commas, quotes or "
                                 f"line breaks must be in double quotes, with inner quotes doubled") from None
        try:  # a plain TSV, where double quotes are ordinary characters
            rows = _csv_rows(text, delim, quoting=False)
        except csv.Error as e2:
            line, msg = e2.args
            raise LayerfuseError(f"{path}:{line}: malformed TSV ({msg}); fix or remove that line") from None
    table = Table(path, "line")
    header: list[str] | None = None
    ti = li = 0
    for line, row in rows:
        if header is None:
            header = [h.strip() for h in row]
            where = f"{path}:{line}"
            _check_delimiter(header, fmt, text_col, where)
            ti = header.index(_resolve_column("text", text_col, header, where, fmt))
            if label_col is not None:
                li = header.index(_resolve_column("label", label_col, header, where, fmt))
            continue
        if len(row) != len(header) and not (len(row) > len(header) and not any(f.strip() for f in row[len(header):])):
            raise LayerfuseError(
                f"{path}:{line}: {len(row)} fields but the header has {len(header)}; "
                + ("put fields that contain commas in double quotes" if fmt == "csv"
                   else "a TSV field must not contain a tab (use CSV or JSONL for such texts)"))
        if label_col is None:
            add_row(table, line, row[ti], None, header[ti], None)
        else:
            add_row(table, line, row[ti], row[li], header[ti], header[li])
    if header is None:
        raise LayerfuseError(f"{path}: file is empty; expected a header row naming the columns "
                             f"({_columns(text_col, label_col)}) and one row per example")
    return table


def _check_delimiter(header: list[str], fmt: str, text_col: str, where: str) -> None:
    """A one-column header holding the other format's delimiter means the extension is wrong."""
    other, name, ext = ("\t", "tabs", ".tsv") if fmt == "csv" else (",", "commas", ".csv")
    if len(header) == 1 and header[0] != text_col and other in header[0]:
        raise LayerfuseError(f"{where}: the header is one {fmt.upper()} column holding {name} "
                             f"({header[0][:60]!r}): the delimiter looks wrong, is this a {ext[1:].upper()} "
                             f"file? Rename it to {ext}")


def _csv_rows(text: str, delim: str, *, quoting: bool) -> list[tuple[int, list[str]]]:
    """(first line number, fields) of every non-blank record; csv.Error args become (line, msg)."""
    kw = dict(delimiter=delim, strict=True) if quoting else dict(delimiter=delim, quoting=csv.QUOTE_NONE)
    reader = csv.reader(io.StringIO(text, newline=""), **kw)
    out = []
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise csv.Error(start, str(e)) from None
        line, start = start, reader.line_num + 1
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        out.append((line, row))
    return out


def _read_jsonl(path: Path, text: str, text_col: str, label_col: str | None) -> Table:
    table = Table(path, "line")
    seen_any = False
    for n, raw in enumerate(text.split("\n"), 1):
        raw = raw.rstrip("\r")
        if not raw.strip():
            continue
        seen_any = True
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise LayerfuseError(f"{path}:{n}: invalid JSON ({e.msg} at column {e.colno}); each line must be one "
                                 f"JSON object such as {_example(text_col, label_col)}") from None
        if not isinstance(obj, dict):
            raise LayerfuseError(f"{path}:{n}: expected a JSON object, got a {type(obj).__name__}; each line must be "
                                 f"one object such as {_example(text_col, label_col)}")
        keys = list(obj)
        tk = _resolve_column("text", text_col, keys, f"{path}:{n}", "jsonl")
        if label_col is None:
            add_row(table, n, obj[tk], None, tk, None)
            continue
        lk = _resolve_column("label", label_col, keys, f"{path}:{n}", "jsonl")
        add_row(table, n, obj[tk], obj[lk], tk, lk)
    if not seen_any:
        raise LayerfuseError(f"{path}: file is empty; expected one JSON object per line with "
                             + (f"fields '{text_col}' and '{label_col}'" if label_col is not None
                                else f"field '{text_col}'"))
    return table


def _read_parquet(path: Path, text_col: str, label_col: str | None) -> Table:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise LayerfuseError(f"{path}: reading Parquet needs pyarrow, which is not installed; "
                             f"pip install pyarrow (or convert the file to CSV or JSONL)") from None
    try:
        tbl = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 -- pyarrow raises many types
        raise LayerfuseError(f"{path}: cannot read as Parquet ({type(e).__name__}: {e}); check the file "
                             f"or convert it to CSV or JSONL") from None
    cols = list(tbl.column_names)
    tk = _resolve_column("text", text_col, cols, str(path), "parquet")
    lk = _resolve_column("label", label_col, cols, str(path), "parquet") if label_col is not None else None
    table = Table(path, "row")
    texts = tbl.column(tk).to_pylist()
    labels = tbl.column(lk).to_pylist() if lk is not None else [None] * len(texts)
    for i, (t, lab) in enumerate(zip(texts, labels), 1):
        add_row(table, i, t, lab, tk, lk)
    return table


def read_file(path: Path, fmt: str | None, text_col: str, label_col: str | None, encoding: str) -> Table:
    """Read one user file; ``label_col`` None reads texts only (no label is read or required)."""
    if not path.exists():
        raise LayerfuseError(f"{path}: file not found; check the path (relative paths start at {Path.cwd()})")
    if path.is_dir():
        raise LayerfuseError(f"{path}: is a directory, not a data file; pass the path of a CSV, TSV, JSONL or "
                             f"Parquet file")
    f = _resolve_format(path, fmt)
    if f == "parquet":
        table = _read_parquet(path, text_col, label_col)
    else:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise LayerfuseError(f"{path}: cannot read ({e.strerror}); check the path and permissions") from None
        if not data.strip():
            raise LayerfuseError(f"{path}: file is empty; expected "
                                 + ("one JSON object per line" if f == "jsonl" else "a header row and one row per example"))
        text = _decode(path, data, encoding)
        if f == "jsonl":
            table = _read_jsonl(path, text, text_col, label_col)
        else:
            table = _read_delimited(path, text, f, text_col, label_col)
    if not table.texts:
        raise LayerfuseError(f"{path}: no data rows"
                             + (" after the header" if f in ("csv", "tsv") else "")
                             + "; add one row per example")
    return table


def sort_classes(labels) -> list[str]:
    """Sorted unique labels; numerically if every label looks like a number."""
    uniq = set(labels)

    def num(s: str) -> float | None:
        try:
            v = float(s)
        except ValueError:
            return None
        return v if math.isfinite(v) else None

    if uniq and all(num(s) is not None for s in uniq):
        return sorted(uniq, key=lambda s: (num(s), s))
    return sorted(uniq)


def load_files(
    train: str | Path,
    test: str | Path | None = None,
    *,
    text_column: str = DEFAULT_TEXT_COLUMN,
    label_column: str = DEFAULT_LABEL_COLUMN,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = DEFAULT_SPLIT_SEED,
    encoding: str = DEFAULT_ENCODING,
    format: str | None = None,  # noqa: A002 -- public keyword, mirrors --format
) -> Dataset:
    """Load a dataset from the user's files.

    CSV and TSV need a header row; JSONL has one object per line; Parquet needs ``pyarrow``.
    Labels are kept as strings (JSON numbers become strings); ``classes`` are the sorted unique
    train labels (numerically when they all look like numbers). Without ``test``, a stratified
    ``test_fraction`` of ``train`` (seeded by ``seed``) becomes the test split; a class with one
    example stays in train. The dataset is named after the train file's stem.
    """
    train_p = Path(train)
    test_p = Path(test) if test is not None else None
    if test_p is None:
        if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) \
                or not 0.0 < float(test_fraction) < 1.0:
            raise LayerfuseError(f"`test_fraction` must be between 0 and 1 (exclusive), "
                                 f"got {test_fraction!r}")
    tr = read_file(train_p, format, text_column, label_column, encoding)
    classes = sort_classes(tr.labels)
    if len(classes) < 2:
        raise LayerfuseError(f"{train_p}: every one of the {len(tr.labels)} rows has the label '{classes[0]}'; "
                             f"a classifier needs at least two classes (check `label_column`)")
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[lab] for lab in tr.labels], dtype=np.int64)
    if test_p is not None:
        te = read_file(test_p, format, text_column, label_column, encoding)
        unseen: dict[str, int] = {}
        for lab, n in zip(te.labels, te.where):
            if lab not in index and lab not in unseen:
                unseen[lab] = n
        if unseen:
            (first, n), *rest = unseen.items()
            more = ", ".join(f"'{lab}' (first at {te.unit} {m})" for lab, m in rest[:5]) + (", ..." if len(rest) > 5 else "")
            also = f" (also not in train: {more})" if rest else ""
            raise LayerfuseError(f"{te.at(n)}: label '{first}' never occurs in the training file {train_p}{also}; "
                                 f"fix the label(s) or add training examples for them")
        y_te = np.array([index[lab] for lab in te.labels], dtype=np.int64)
        splits = {"train": Split(tr.texts, y), "test": Split(te.texts, y_te)}
        source = f"files: train {train_p}, test {test_p}"
    else:
        tr_rows, te_rows = holdout(y, len(classes), float(test_fraction), seed)
        if len(te_rows) == 0:
            raise LayerfuseError(f"{train_p}: too few rows ({len(y)}) to hold out a {test_fraction:g} test split "
                                 f"with every class kept in train; add rows, raise `test_fraction`, or pass a `test` file")
        full = Split(tr.texts, y)
        splits = {"train": full.take(tr_rows), "test": full.take(te_rows)}
        source = f"file {train_p} (test: stratified {test_fraction:g} holdout, seed {seed})"
    return Dataset(name=train_p.stem, classes=classes, splits=splits, source=source)


def read_texts(
    path: str | Path,
    *,
    text_column: str = DEFAULT_TEXT_COLUMN,
    encoding: str = DEFAULT_ENCODING,
    format: str | None = None,  # noqa: A002 -- public keyword, mirrors --format
) -> list[str]:
    """The texts of one file, in order, for classifying (no labels needed).

    Same formats, format detection, decoding and error messages as :func:`load_files`; any other
    column (a label column included) is ignored. Raises :class:`LayerfuseError` for every problem.
    """
    return list(read_file(Path(path), format, text_column, None, encoding).texts)
