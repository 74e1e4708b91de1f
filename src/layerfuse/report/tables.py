"""Tables as CSV, JSON, Markdown and aligned terminal text, and JSON encoding of numpy values.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from layerfuse.errors import LayerfuseError

__all__ = ["write_table", "json_default", "file_slug", "pct", "text_table"]

# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------


def _columns(rows: list[dict]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        for c in r:
            if c not in cols:
                cols.append(c)
    return cols


def _cell(v: Any, md: bool = False) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        return " ".join(str(x) for x in v)
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if not math.isfinite(v):
            return ""
        if md:
            return f"{v:.4f}" if abs(v) < 1000 else f"{v:.4g}"
        return repr(v)
    if isinstance(v, (np.integer,)):
        return str(int(v))
    s = str(v)
    return s.replace("|", "\\|").replace("\n", " ") if md else s


def _jsonable(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return v if math.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return v


def write_table(rows: Iterable[Mapping[str, Any]] | Any, path: str | Path) -> Path:
    """Write rows (dicts; or anything with ``to_rows()``) as .csv, .json or .md by extension."""
    if hasattr(rows, "to_rows"):
        rows = rows.to_rows()
    rows = [dict(r) for r in rows]
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in (".csv", ".json", ".md"):
        raise LayerfuseError(
            f"{path}: unknown table format {ext or '(none)'}; use .csv, .json or .md"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = _columns(rows)
    if ext == ".json":
        path.write_text(json.dumps([_jsonable(r) for r in rows], indent=2) + "\n", encoding="utf-8")
    elif ext == ".csv":
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(cols)
            for r in rows:
                w.writerow([_cell(r.get(c)) for c in cols])
    else:
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        for r in rows:
            lines.append("| " + " | ".join(_cell(r.get(c), md=True) for c in cols) + " |")
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# Stage outputs: what `layerfuse profile`, `fuse` and `run` write into their --out folder
# --------------------------------------------------------------------------------------------


def json_default(o):
    """``default=`` for json.dump: numpy scalars and arrays become plain values, the rest strings."""
    if isinstance(o, (np.integer, np.floating)):
        return _jsonable(o)
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    return str(o)


def file_slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9.]+", "-", str(text)).strip("-")[-60:] or "model"


def pct(v) -> str:
    return "—" if v is None else f"{100 * v:.2f}"


def text_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """Aligned plain-text table for a terminal; ``columns`` defaults to the first row's keys."""
    if columns is None:
        if not rows:
            return "(no rows)"
        columns = list(rows[0])
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    w = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    fmt = lambda vals: "  ".join(str(v).ljust(x) for v, x in zip(vals, w)).rstrip()  # noqa: E731
    return "\n".join([fmt(columns), fmt(["-" * x for x in w])] + [fmt(row) for row in cells])
