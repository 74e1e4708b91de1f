"""Input checks shared by every stage: texts, labels, lists given as comma-separated strings, and
names of fusions, heads and layer strategies. Each failure is a :class:`LayerfuseError` naming the
parameter and what to do.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from layerfuse.errors import LayerfuseError


def check_texts(X, what: str = "X") -> list[str]:
    if isinstance(X, str):
        raise LayerfuseError(f"{what} must be a list of texts, not a single string: wrap it in a list")
    try:
        texts = list(X)
    except TypeError as e:
        raise LayerfuseError(f"{what} must be a list of texts, got {type(X).__name__}") from e
    for i, t in enumerate(texts):
        if isinstance(t, np.ndarray) and t.shape == ():
            t = t.item()
        if not isinstance(t, str):
            raise LayerfuseError(f"{what}[{i}] is {type(t).__name__}, expected a text (str)")
        if not t.strip():
            raise LayerfuseError(f"{what}[{i}] is empty: every example needs some text")
        texts[i] = t
    if not texts:
        raise LayerfuseError(f"{what} is empty")
    return texts


def encode_labels(y: Any, n: int, what: str = "y") -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise LayerfuseError(
            f"{what} must be a 1-D array with one label per row of X ({n}), got shape {y.shape}"
        )
    classes, yi = np.unique(y, return_inverse=True)
    return classes, yi.astype(np.int64)


def parse_list(value: str | Sequence[str] | None, what: str) -> list[str]:
    if value is None:
        return []
    items = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if str(v).strip()]
    if not items:
        raise LayerfuseError(f"{what} is empty")
    return list(dict.fromkeys(items))


def validate_choices(fusions: Sequence[str], heads: Sequence[str], layers: str, source: str = "") -> None:
    """Fail before any model runs when a fusion, head or layer strategy name is unknown."""
    from layerfuse.model.fusion import FUSIONS
    from layerfuse.model.heads import HEADS
    from layerfuse.scoring.selection import parse_strategy

    pre = f"{source}: " if source else ""
    for f in fusions:
        if f not in FUSIONS:
            raise LayerfuseError(f"{pre}unknown fusion '{f}': choose from {', '.join(FUSIONS)}")
    for h in heads:
        if h not in HEADS:
            raise LayerfuseError(f"{pre}unknown head '{h}': choose from {', '.join(HEADS)}")
    parse_strategy(layers, 1)


def as_labels(y, n: int, what: str, n_classes: int | None = None) -> np.ndarray:
    a = np.asarray(y)
    if a.ndim != 1:
        raise LayerfuseError(f"{what} has shape {a.shape}: pass a 1-D array of integer class ids")
    if a.dtype.kind not in "iub":
        if a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
            a = a.astype(np.int64)
        else:
            raise LayerfuseError(
                f"{what} holds {a.dtype} values: pass integer class ids 0..C-1 (map label names to ids first)"
            )
    a = a.astype(np.int64)
    if a.shape[0] != n:
        raise LayerfuseError(f"{what} has {a.shape[0]} labels but the sources have {n} rows: pass one label per row")
    if n_classes is not None and a.size and (a.min() < 0 or a.max() >= n_classes):
        raise LayerfuseError(
            f"{what} holds class ids {int(a.min())}..{int(a.max())} but n_classes={n_classes}: "
            f"pass ids in 0..{n_classes - 1} or a larger n_classes"
        )
    return a
