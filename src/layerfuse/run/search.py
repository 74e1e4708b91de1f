"""Greedy search over model sets, for more sources than an exhaustive grid can afford.

With S sources the exhaustive grid trains ``2^S - 1`` model sets per fusion; the greedy search
trains at most ``S + (S-1) + ... `` CV scorings and usually stops after two or three steps:

1. every source alone is CV-scored on train (:func:`~layerfuse.run.selection_rules.cv_scores`);
2. from the best one, each remaining source is tried as an addition; candidates are taken in
   order of *complementarity* (how many of the current set's out-of-fold errors the candidate gets
   right), and ``beam`` limits how many are tried per step;
3. the addition with the best CV score is kept if it raises the score by more than the noise
   (``min_gain`` plus the standard error of the current set's fold scores); otherwise the search
   stops.

Everything reads training data only. :func:`greedy_paths` runs the search once per fusion over
the prepared models (``run_grid(search="greedy")`` and ``--search greedy`` use it);
:func:`greedy_configs` turns the paths into the ``configs`` of :func:`layerfuse.run.grid.run_grid`,
so the chosen sets are then trained with every seed and reported like grid rows.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from layerfuse.config import DEFAULT_CHOOSE_METRIC, DEFAULT_SEARCH_MIN_GAIN
from layerfuse.errors import LayerfuseError
from layerfuse.run.selection_rules import cv_metric

__all__ = ["greedy_model_sets", "greedy_paths", "greedy_configs", "oof_complementarity"]


def oof_complementarity(wrong_current: np.ndarray, wrong_candidate: np.ndarray) -> float:
    """Fraction of the current set's out-of-fold errors that the candidate gets right."""
    n = int(wrong_current.sum())
    return float((wrong_current & ~wrong_candidate).sum() / n) if n else 0.0


def greedy_model_sets(n_sources: int, score: Callable[[tuple[int, ...]], dict], *, min_gain: float = DEFAULT_SEARCH_MIN_GAIN,
                      beam: int | None = None, max_size: int | None = None, y=None,
                      log: Callable = print, label: Callable[[tuple[int, ...]], str] = str,
                      metric: str = DEFAULT_CHOOSE_METRIC) -> dict:
    """Greedy forward selection of a source set, ranked by ``metric`` (``macro-f1`` or ``accuracy``).

    ``score(subset)`` returns at least that metric's mean and standard error (``f1_mean``/``f1_se``
    or ``acc_mean``/``acc_se``; and ``oof_pred`` when ``y`` is given, for the complementarity
    order), e.g. :func:`~layerfuse.run.selection_rules.cv_scores` of the subset's fusion.
    Returns ``{"path": [subsets], "chosen": subset, "scores": {subset: score}, "stopped": why}``;
    ``path[0]`` is the best single source. ``label(subset)`` names a set in the log.
    """
    if n_sources < 1:
        raise LayerfuseError("greedy search needs at least one source")
    max_size = n_sources if max_size is None else max(1, min(max_size, n_sources))
    scores: dict[tuple[int, ...], dict] = {}

    def get(subset):
        if subset not in scores:
            scores[subset] = score(subset)
            mean, se = cv_metric(scores[subset], metric)
            log(f"  {label(subset)}: CV {metric} {100 * mean:.2f} ± {100 * se:.2f}")
        return scores[subset]

    def mean(subset):
        return cv_metric(get(subset), metric)[0]

    for i in range(n_sources):
        get((i,))
    current = max(((i,) for i in range(n_sources)), key=mean)
    path, stopped = [current], "every source is in the set"
    wrong = {}
    if y is not None:
        y = np.asarray(y)
        wrong = {i: scores[(i,)]["oof_pred"] != y for i in range(n_sources)}
    while len(current) < max_size:
        rest = [i for i in range(n_sources) if i not in current]
        if wrong:
            errs = np.logical_and.reduce([wrong[i] for i in current]) if len(current) > 1 else wrong[current[0]]
            rest.sort(key=lambda c: -oof_complementarity(errs, wrong[c]))
        tried = rest[:beam] if beam else rest
        cand = [tuple(sorted(current + (c,))) for c in tried]
        best = max(cand, key=mean)
        gain = mean(best) - mean(current)
        noise = min_gain + cv_metric(scores[current], metric)[1]
        if gain <= noise:
            stopped = f"best addition {label(best)} gains {100 * gain:+.2f} points, within the noise ({100 * noise:.2f})"
            break
        current = best
        path.append(current)
    else:
        if len(current) == max_size and max_size < n_sources:
            stopped = f"reached max_size {max_size}"
    log(f"  greedy search: {' → '.join(map(label, path))} ({stopped})")
    return {"path": path, "chosen": current, "scores": scores, "stopped": stopped}


def greedy_paths(names: Sequence[str], y, fusions: Sequence[str], score: Callable[[tuple[int, ...], str], dict], *,
                 candidates: Sequence[int] | None = None, min_gain: float = DEFAULT_SEARCH_MIN_GAIN, beam: int | None = None,
                 max_size: int | None = None, metric: str = DEFAULT_CHOOSE_METRIC,
                 log: Callable = print) -> dict[str, dict]:
    """:func:`greedy_model_sets` once per fusion, over the sources ``candidates`` (indices into
    ``names``; default all of them).

    ``score(subset, fusion)`` returns the CV scores of that set fused that way (a single source is
    scored once, whatever the fusion: it needs none). Returns, per fusion, ``path`` and ``chosen`` as
    indices into ``names``, ``stopped``, and ``scored`` (how many sets the search CV-scored).
    """
    candidates = list(range(len(names)) if candidates is None else candidates)
    if not candidates:
        raise LayerfuseError("greedy search needs at least one source")
    out = {}
    for f in fusions:
        log(f"greedy search, fusion {f}, over {', '.join(names[i] for i in candidates)}:")

        def local(subset, f=f):
            return score(tuple(candidates[i] for i in subset), f)

        g = greedy_model_sets(len(candidates), local, min_gain=min_gain, beam=beam, max_size=max_size, y=y, log=log,
                              metric=metric,
                              label=lambda sub: "+".join(names[candidates[i]] for i in sub))
        glob = [tuple(candidates[i] for i in s) for s in g["path"]]
        out[f] = {"path": glob, "chosen": glob[-1], "stopped": g["stopped"], "scored": len(g["scores"]),
                  "exhaustive": 2 ** len(candidates) - 1}
    return out


def greedy_configs(n_sources: int, path: Sequence[tuple[int, ...]], fusions: Sequence[str],
                   heads: Sequence[str] = ("mlp",), paths: dict[str, dict] | None = None,
                   ) -> list[tuple[tuple[int, ...], str, str]]:
    """Grid configurations for a greedy search: every source alone (the bar a fusion must clear)
    and each multi-source set on the path with every fusion; or, with ``paths`` (from
    :func:`greedy_paths`), each fusion's own path with that fusion. No configuration twice."""
    configs = [((i,), "concat", h) for i in range(n_sources) for h in heads]
    if paths is None:
        paths = {f: {"path": list(path)} for f in fusions}
    for f, g in paths.items():
        for subset in g["path"]:
            if len(subset) > 1:
                configs += [(tuple(subset), f, h) for h in heads if (tuple(subset), f, h) not in configs]
    return configs
