""":class:`LayerProfile`: the scores of every layer and window of one model and pooling, its files
(JSON, CSV), and the row queries selection is allowed to make (train-side columns only).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from layerfuse.config import DEFAULT_FOLDS, DEFAULT_SEED
from layerfuse.errors import LayerfuseError

__all__ = ["ANALYSIS_COLUMN", "SCORES", "CHEAP_SCORES", "SCORE_COLUMN", "nan_to_none", "LayerProfile", "train_side_rows", "check_score_column", "score_value", "best_row", "top_layers"]

#: Per-layer test accuracy, for plots and analysis only. No selection function reads it.
ANALYSIS_COLUMN = "test_acc_analysis_only"
#: Score names accepted by :func:`score_layers`.
SCORES = ("probe", "centroid", "knn", "fisher", "logme")
CHEAP_SCORES = ("centroid", "knn", "fisher", "logme")
#: The row column that carries each score's headline number.
SCORE_COLUMN = {
    "probe": "probe_acc",
    "centroid": "centroid_acc",
    "knn": "knn_acc",
    "fisher": "fisher",
    "logme": "logme",
}
_PROBE_COLUMNS = ("probe_acc", "probe_acc_std", "probe_f1", "probe_f1_std")


def nan_to_none(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (np.floating,)):
        return nan_to_none(float(v))
    if isinstance(v, (np.integer,)):
        return int(v)
    return v


# --------------------------------------------------------------------------------------------
# LayerProfile
# --------------------------------------------------------------------------------------------


@dataclass
class LayerProfile:
    """Scores for every layer (and averaged window) of one model + pooling, on train data.

    ``rows``: one dict per layer / window / top-k concatenation with ``kind`` ("layer",
    "window", "topk"), ``start``, ``end``, ``layers`` (list), ``depth`` (layer / L; the middle
    of the span for windows) and one column per score (see :data:`SCORE_COLUMN`).
    ``agreement``: Spearman correlation across layers of each cheap score with ``probe_acc``.
    ``timings``: seconds; ``prep`` (float conversion, standardisation, X'X, shared) and one key
    per score for the layer rows, then ``windows``, ``topk`` and ``total`` wall time.
    """

    rows: list[dict]
    agreement: dict[str, float | None] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    n_layers: int = 0
    n_samples: int = 0
    n_features: int = 0
    classes: list = field(default_factory=list)
    folds: int = 5
    seed: int = 0
    name: str | None = None
    settings: dict = field(default_factory=dict)

    # ---- views -------------------------------------------------------------------------------
    def layer_rows(self) -> list[dict]:
        return [dict(r) for r in self.rows if r["kind"] == "layer"]

    def window_rows(self) -> list[dict]:
        return [dict(r) for r in self.rows if r["kind"] == "window"]

    def columns(self) -> list[str]:
        cols: list[str] = []
        for r in self.rows:
            for k in r:
                if k not in cols:
                    cols.append(k)
        return cols

    def to_rows(self) -> list[dict]:
        """Copies of all rows (``layers`` stays a list)."""
        return [{**r, "layers": list(r["layers"])} for r in self.rows]

    def best(self, score: str = "probe_acc", kind: str | None = "layer") -> dict:
        """The row with the highest ``score`` (ties: the earliest row, i.e. the shallower layer).

        ``kind`` restricts the rows ("layer", "window", "topk"; None = all).
        """
        return dict(best_row(train_side_rows(self), score, kind))

    def headline(self, score: str = "probe_acc") -> dict:
        """The rows a summary shows: the ``best`` layer, the ``last`` layer and the best averaged
        window (``best_window``, None without window rows), all by a train-side ``score``."""
        windows = self.window_rows()
        return {"best": self.best(score), "last": self.layer_rows()[-1],
                "best_window": self.best(score, kind="window") if windows else None}

    # ---- serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "n_layers": self.n_layers,
            "n_samples": self.n_samples,
            "n_features": self.n_features,
            "classes": [nan_to_none(c) for c in self.classes],
            "folds": self.folds,
            "seed": self.seed,
            "settings": dict(self.settings),
            "agreement": {k: nan_to_none(v) for k, v in self.agreement.items()},
            "timings": {k: nan_to_none(v) for k, v in self.timings.items()},
            "rows": [{k: nan_to_none(v) for k, v in r.items()} for r in self.to_rows()],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "LayerProfile":
        if not isinstance(d, dict) or "rows" not in d:
            raise LayerfuseError("not a layer profile: expected a JSON object with 'rows'")
        rows = []
        for r in d["rows"]:
            r = {k: (float("nan") if v is None else v) for k, v in r.items()}
            r["layers"] = [int(x) for x in r.get("layers") or range(r["start"], r["end"] + 1)]
            rows.append(r)
        return cls(
            rows=rows,
            agreement={k: (float("nan") if v is None else v)
                       for k, v in d.get("agreement", {}).items()},
            timings=dict(d.get("timings", {})),
            n_layers=int(d.get("n_layers", 0)),
            n_samples=int(d.get("n_samples", 0)),
            n_features=int(d.get("n_features", 0)),
            classes=list(d.get("classes", [])),
            folds=int(d.get("folds", DEFAULT_FOLDS)),
            seed=int(d.get("seed", DEFAULT_SEED)),
            name=d.get("name"),
            settings=dict(d.get("settings", {})),
        )

    def to_json(self, path: str | Path) -> Path:
        """Write the profile as JSON, atomically (a reader never sees half a file)."""
        from layerfuse.cache.atomic import atomic_write_bytes

        path = Path(path)
        atomic_write_bytes(path, (json.dumps(self.to_dict(), indent=2) + "\n").encode("utf-8"))
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> "LayerProfile":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LayerfuseError(f"{path}: no such profile file; run `layerfuse profile` first")
        except json.JSONDecodeError as e:
            raise LayerfuseError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})")
        return cls.from_dict(data)

    def to_csv(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        cols = self.columns()
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=cols)
            w.writeheader()
            for r in self.rows:
                out = {}
                for c in cols:
                    v = r.get(c, "")
                    if c == "layers":
                        v = " ".join(str(x) for x in v)
                    elif isinstance(v, float) and not math.isfinite(v):
                        v = ""
                    out[c] = v
                w.writerow(out)
        return path


def train_side_rows(profile: LayerProfile) -> list[dict]:
    """The rows without the analysis-only test column: the only view selection may read."""
    rows = [{k: v for k, v in r.items() if k != ANALYSIS_COLUMN} for r in profile.rows]
    assert all(ANALYSIS_COLUMN not in r for r in rows), "selection must never read test scores"
    return rows


def check_score_column(rows: list[dict], score: str) -> None:
    if score == ANALYSIS_COLUMN:
        raise LayerfuseError(
            f"{ANALYSIS_COLUMN} is for analysis only and never drives a choice; pick a train-side "
            "score such as probe_acc"
        )
    have = [c for c in ("probe_acc", "probe_f1", "centroid_acc", "knn_acc", "fisher", "logme")
            if any(c in r for r in rows)]
    if not any(score in r for r in rows):
        raise LayerfuseError(
            f"the profile has no {score!r} column; pick one of {', '.join(have) or '(none)'}"
        )


def score_value(r: dict, score: str) -> float:
    v = r.get(score)
    return float(v) if v is not None and math.isfinite(float(v)) else float("-inf")


def best_row(rows: list[dict], score: str, kind: str | None) -> dict:
    check_score_column(rows, score)
    cand = [r for r in rows if kind is None or r["kind"] == kind]
    if not cand:
        raise LayerfuseError(f"the profile has no {kind or ''} rows; run score_layers first")
    return max(cand, key=lambda r: (score_value(r, score), -r["start"], -r["end"]))


def top_layers(layer_rows: list[dict], score: str, k: int) -> list[int]:
    """The k best layers by ``score`` (ties: shallower first), in rank order."""
    ranked = sorted(layer_rows, key=lambda r: (-score_value(r, score), r["start"]))
    return [int(r["start"]) for r in ranked[:k]]
