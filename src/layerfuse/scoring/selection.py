"""Choosing layers from a profile (best, top-k, window, all, auto). Reads train-side scores only:
the analysis-only test column is stripped before any choice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from layerfuse.config import DEFAULT_MIN_GAIN, DEFAULT_SELECT, DEFAULT_TOPK
from layerfuse.errors import LayerfuseError
from layerfuse.model.sources import SourceSpec, check_layers
from layerfuse.scoring.features import as_layers, label_digest, layer_f32
from layerfuse.scoring.layer_profile import (
    LayerProfile,
    best_row,
    check_score_column,
    nan_to_none,
    score_value,
    top_layers,
    train_side_rows,
)
from layerfuse.scoring.layer_scores import cv_probe
from layerfuse.validation import encode_labels

__all__ = ["STRATEGIES", "LayerSelection", "parse_strategy", "select_layers"]

#: Selection strategies accepted by :func:`select_layers` (``top-3`` is short for top-k, k=3).
STRATEGIES = ("best", "top-k", "window", "all", "auto")


# --------------------------------------------------------------------------------------------
# selection
# --------------------------------------------------------------------------------------------


@dataclass
class LayerSelection:
    """Which layers of one model to use and how to combine them (one of
    :data:`~layerfuse.model.sources.COMBINES`), with the strategy, its CV score and the reason.

    :meth:`source` turns it into the :class:`~layerfuse.model.sources.SourceSpec` the fusion reads.
    """

    strategy: str
    layers: list[int]
    combine: str
    score: float | None = None
    reason: str = ""

    def __post_init__(self):
        self.layers = check_layers(self.layers, self.combine, "layer selection")

    def source(self, model: str, pooling: str, fingerprint: str = "") -> SourceSpec:
        """These layers of ``model``'s ``pooling`` embeddings, as a fusion source."""
        return SourceSpec(model, pooling, list(self.layers), self.combine, fingerprint)

    def to_dict(self) -> dict:
        return {
            "strategy": self.strategy,
            "layers": [int(x) for x in self.layers],
            "combine": self.combine,
            "score": nan_to_none(self.score),
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "LayerSelection":
        if not isinstance(d, dict):
            raise LayerfuseError("a layer selection must be a JSON object")
        missing = [k for k in ("strategy", "layers", "combine") if k not in d]
        if missing:
            raise LayerfuseError(f"layer selection is missing {', '.join(missing)}")
        score = d.get("score")
        return cls(
            strategy=str(d["strategy"]),
            layers=d["layers"],
            combine=d["combine"],
            score=None if score is None else float(score),
            reason=str(d.get("reason", "")),
        )


def parse_strategy(strategy: Any, k: Any) -> tuple[str, Any]:
    if not isinstance(strategy, str):
        raise LayerfuseError(
            f"strategy must be a string, got {strategy!r}; choose from {', '.join(STRATEGIES)} "
            "(or top-N, e.g. top-3)"
        )
    s = strategy.strip().lower().replace("_", "-")
    m = re.fullmatch(r"top-?(\d+)", s)
    if m:
        return "top-k", int(m.group(1))  # top-N names k itself and wins over the k argument
    if s == "topk":
        s = "top-k"
    if s not in STRATEGIES:
        raise LayerfuseError(
            f"unknown layer strategy {strategy!r}; choose from {', '.join(STRATEGIES)} "
            "(or top-N, e.g. top-3)"
        )
    return s, k


def select_layers(
    profile: LayerProfile,
    strategy: str = DEFAULT_SELECT,
    k: int | None = None,
    *,
    score: str = "probe_acc",
    X: Any = None,
    y: Any = None,
    min_gain: float = DEFAULT_MIN_GAIN,
) -> LayerSelection:
    """Pick layers from a profile. Reads train-side scores only (never the test column).

    ``best``: the single best layer. ``top-k`` (or ``top-N``): the k best layers, each a
    separate source. ``window``: the best averaged window. ``all``: every layer, for a learned
    scalar mix. ``auto``: whichever of best / window / top-k has the highest CV probe score,
    where a multi-layer choice must beat the single best layer by ``min_gain`` (accuracy
    fraction). Top-k's score in ``auto`` is the CV probe of the concatenated top-k layers: the
    profile's ``topk`` row when it holds the same layers, else computed from ``X``/``y``
    (the training array and labels) when given, else top-k is left out.
    ``k`` defaults to 3 (capped at the number of layers); an explicit ``k`` must lie in
    1..L+1. A ``top-N`` strategy name sets k = N, whatever ``k`` says.

    A little over 80 lines: the signature and this docstring are a third of it, and the
    strategies read best side by side as one ``if`` chain.
    """
    if not isinstance(profile, LayerProfile):
        raise LayerfuseError(
            f"select_layers needs a LayerProfile, got {type(profile).__name__}; pass the result "
            "of score_layers (or LayerProfile.from_json)"
        )
    strategy, k = parse_strategy(strategy, k)
    rows = train_side_rows(profile)
    layer_rows = [r for r in rows if r["kind"] == "layer"]
    if not layer_rows:
        raise LayerfuseError(
            "the profile has no layer rows; run score_layers on the training array"
        )
    n_layer = len(layer_rows)
    k = _check_k(k, n_layer)
    check_score_column(rows, score)
    label = score

    if strategy == "all":
        layers = sorted(int(r["start"]) for r in layer_rows)
        return LayerSelection("all", layers, "mix", None,
                              f"all {len(layers)} layers, combined by a learned scalar mix")

    best = best_row(rows, score, "layer")
    if strategy == "best":
        return LayerSelection(
            "best", [int(best["start"])], "single", score_value(best, score),
            f"layer {best['start']} has the highest {label} ({score_value(best, score):.4f}) of "
            f"{n_layer} layers",
        )

    if strategy == "window":
        if not any(r["kind"] == "window" for r in rows):
            raise LayerfuseError(
                "the profile has no window rows; re-run score_layers with windows >= 2"
            )
        w = best_row(rows, score, "window")
        return LayerSelection(
            "window", list(range(w["start"], w["end"] + 1)), "average", score_value(w, score),
            f"mean of layers {w['start']}..{w['end']} has the highest {label} "
            f"({score_value(w, score):.4f}) of the averaged windows",
        )

    top = sorted(top_layers(layer_rows, score, k))
    concat = next((r for r in rows if r["kind"] == "topk" and sorted(r["layers"]) == top), None)
    if strategy == "top-k":
        if k == 1:
            return LayerSelection("top-k", top, "single", score_value(best, score),
                                  f"top-1 = layer {top[0]} by {label}")
        if concat is not None and score in concat:
            sc_val, how = score_value(concat, score), f"CV {label} of their concatenation"
        else:
            vals = [score_value(r, score) for r in layer_rows if r["start"] in top]
            sc_val, how = float(np.mean(vals)), f"mean of their individual {label}"
        return LayerSelection(
            "top-k", top, "separate", sc_val,
            f"the {k} layers with the highest {label}: {', '.join(map(str, top))} ({how} "
            f"{sc_val:.4f})",
        )

    return _choose_auto(profile, rows, layer_rows, best, top, concat, k, score, X, y, min_gain)


def _check_k(k, n_layer: int) -> int:
    """``k`` for top-k: the default (capped at the number of layers) or an integer in 1..n_layer."""
    if k is None:
        return min(DEFAULT_TOPK, n_layer)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n_layer:
        raise LayerfuseError(
            f"k must be an integer from 1 to {n_layer} (the number of layers incl. embeddings), "
            f"got {k!r}"
        )
    return int(k)


def _choose_auto(profile: LayerProfile, rows: list[dict], layer_rows: list[dict], best: dict, top: list[int],
                 concat: dict | None, k: int, score: str, X: Any, y: Any, min_gain: float) -> LayerSelection:
    """``auto``: compare the train-side CV scores of best / window / top-k (see :func:`select_layers`)."""
    label = score
    cands: list[tuple[str, float, LayerSelection]] = []
    b_val = score_value(best, score)
    cands.append(("best", b_val, LayerSelection("best", [int(best["start"])], "single", b_val, "")))
    if any(r["kind"] == "window" and score in r for r in rows):
        w = best_row(rows, score, "window")
        cands.append(("window", score_value(w, score), LayerSelection(
            "window", list(range(w["start"], w["end"] + 1)), "average", score_value(w, score), "")))
    notes = []
    if k >= 2:
        t_val = None
        if concat is not None and score in concat:
            t_val = score_value(concat, score)
        elif X is not None and y is not None and score in ("probe_acc", "probe_f1"):
            Xl = as_layers(X)
            if Xl.shape[0] != profile.n_layers + 1 or Xl.shape[1] != profile.n_samples:
                raise LayerfuseError(
                    f"X has shape {tuple(Xl.shape)} but the profile was scored on "
                    f"[{profile.n_layers + 1}, {profile.n_samples}, ...]; pass the training array"
                )
            _, yi = encode_labels(y, Xl.shape[1])
            digest = profile.settings.get("label_digest")
            if digest and digest != label_digest(yi):
                raise LayerfuseError(
                    "y differs from the training labels the profile was scored on; auto may "
                    "only use the training split: pass the same y as to score_layers"
                )
            feats = torch.cat([layer_f32(Xl, i) for i in top], dim=1)
            res = cv_probe(feats, y, folds=profile.folds, seed=profile.seed,
                           l2=float(profile.settings.get("probe_l2", 1e-2)))
            t_val = res[score]
        else:
            notes.append(f"top-{k} not scored (pass X and y, or profile with topk={k})")
        if t_val is not None:
            cands.append(("top-k", t_val, LayerSelection("top-k", top, "separate", t_val, "")))
    chosen_name, chosen_val, chosen = cands[0]
    for nm, val, sel in cands[1:]:
        if val >= b_val + min_gain and val > chosen_val:
            chosen_name, chosen_val, chosen = nm, val, sel
    summary = ", ".join(f"{nm} {val:.4f}" for nm, val, _ in cands)
    chosen.strategy = "auto"
    chosen.reason = (
        f"auto chose {chosen_name} (layers {', '.join(map(str, chosen.layers))}) by train CV "
        f"{label}: {summary}" + (f"; {'; '.join(notes)}" if notes else "")
    )
    return chosen
