"""Input checks shared by every stage: texts, labels, lists given as comma-separated strings, and
names of fusions, heads and layer strategies. Each failure is a :class:`LayerfuseError` naming the
parameter and what to do.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from layerfuse.errors import LayerfuseError

__all__ = ["check_texts", "encode_labels", "as_labels", "check_choice", "parse_list", "validate_choices"]


def check_texts(X, what: str = "X") -> list[str]:
    """``X`` as a list of non-empty strings (a single string, a non-text or an empty one is an error)."""
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
    """Labels of any kind as ``(sorted classes, int64 index per row)``; ``n`` rows expected."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise LayerfuseError(
            f"{what} must be a 1-D array with one label per row of X ({n}), got shape {y.shape}"
        )
    classes, yi = np.unique(y, return_inverse=True)
    return classes, yi.astype(np.int64)


def check_choice(value: Any, choices: Sequence[str], noun: str) -> str:
    """``value`` if it is one of ``choices``, else an error naming ``noun`` and every choice."""
    if value not in choices:
        raise LayerfuseError(f"unknown {noun} {value!r}: choose from {', '.join(choices)}")
    return value


def parse_list(value: str | Sequence[str] | None, what: str, *, choices: Sequence[str] | None = None,
               noun: str | None = None) -> list[str]:
    """A comma-separated string or a sequence as a list of distinct, stripped names (order kept).

    None gives ``[]``; an empty list is an error naming ``what``. With ``choices``, every item must
    be one of them (the error names ``noun``, default ``what``)."""
    if value is None:
        return []
    items = [str(v).strip() for v in (value.split(",") if isinstance(value, str) else value) if str(v).strip()]
    if not items:
        hint = f": choose one or more of {', '.join(choices)}" if choices else ""
        raise LayerfuseError(f"{what} is empty{hint}")
    for v in items if choices is not None else ():
        check_choice(v, choices, noun or what)
    return list(dict.fromkeys(items))


def validate_choices(fusions: Sequence[str], heads: Sequence[str], layers: str, source: str = "",
                     rule: str | None = None, metric: str | None = None) -> None:
    """Fail before any model runs when a fusion, head, layer strategy or (given) grid selection
    rule or metric name is unknown; ``source`` (a file, "command line") starts the message."""
    from layerfuse.model.fusion import FUSIONS
    from layerfuse.model.heads import HEADS
    from layerfuse.run.selection_rules import METRICS, RULES
    from layerfuse.scoring.selection import parse_strategy

    try:
        for f in fusions:
            check_choice(f, list(FUSIONS), "fusion")
        for h in heads:
            check_choice(h, list(HEADS), "head")
        parse_strategy(layers, 1)
        if rule is not None:
            check_choice(rule, RULES, "fusion.choose_by")
        if metric is not None:
            check_choice(metric, list(METRICS), "fusion.choose_metric")
    except LayerfuseError as e:
        raise LayerfuseError(f"{source}: {e}" if source else str(e)) from None


def as_labels(y, n: int, what: str, n_classes: int | None = None) -> np.ndarray:
    """Integer class ids ``0..n_classes-1`` as int64, one per row of ``n`` (already-encoded labels)."""
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
