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

Everything reads training data only. :func:`greedy_configs` turns the path into the ``configs``
of :func:`layerfuse.run.grid.run_grid`, so the chosen sets are then trained with every seed and
reported like grid rows.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from layerfuse.errors import LayerfuseError

__all__ = ["greedy_model_sets", "greedy_configs", "oof_complementarity"]


def oof_complementarity(wrong_current: np.ndarray, wrong_candidate: np.ndarray) -> float:
    """Fraction of the current set's out-of-fold errors that the candidate gets right."""
    n = int(wrong_current.sum())
    return float((wrong_current & ~wrong_candidate).sum() / n) if n else 0.0


def greedy_model_sets(n_sources: int, score: Callable[[tuple[int, ...]], dict], *, min_gain: float = 0.0,
                      beam: int | None = None, max_size: int | None = None, y=None,
                      log: Callable = print) -> dict:
    """Greedy forward selection of a source set.

    ``score(subset)`` returns at least ``f1_mean`` and ``f1_se`` (and ``oof_pred`` when ``y`` is given,
    for the complementarity order), e.g. :func:`~layerfuse.run.selection_rules.cv_scores` of the
    subset's fusion. Returns ``{"path": [subsets], "chosen": subset, "scores": {subset: score},
    "stopped": why}``; ``path[0]`` is the best single source.
    """
    if n_sources < 1:
        raise LayerfuseError("greedy search needs at least one source")
    max_size = n_sources if max_size is None else max(1, min(max_size, n_sources))
    scores: dict[tuple[int, ...], dict] = {}

    def get(subset):
        if subset not in scores:
            scores[subset] = score(subset)
            log(f"  {subset}: CV macro-F1 {100 * scores[subset]['f1_mean']:.2f} ± {100 * scores[subset]['f1_se']:.2f}")
        return scores[subset]

    for i in range(n_sources):
        get((i,))
    current = max(((i,) for i in range(n_sources)), key=lambda s: scores[s]["f1_mean"])
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
        best = max(cand, key=lambda s: get(s)["f1_mean"])
        gain = scores[best]["f1_mean"] - scores[current]["f1_mean"]
        noise = min_gain + float(scores[current]["f1_se"])
        if gain <= noise:
            stopped = f"best addition {best} gains {100 * gain:+.2f} points, within the noise ({100 * noise:.2f})"
            break
        current = best
        path.append(current)
    else:
        if len(current) == max_size and max_size < n_sources:
            stopped = f"reached max_size {max_size}"
    log(f"  greedy search: {' → '.join(map(str, path))} ({stopped})")
    return {"path": path, "chosen": current, "scores": scores, "stopped": stopped}


def greedy_configs(n_sources: int, path: Sequence[tuple[int, ...]], fusions: Sequence[str],
                   heads: Sequence[str] = ("mlp",)) -> list[tuple[tuple[int, ...], str, str]]:
    """Grid configurations for a greedy path: every source alone (the bar a fusion must clear) and
    each multi-source set on the path with every fusion."""
    configs = [((i,), "concat", h) for i in range(n_sources) for h in heads]
    for subset in path:
        if len(subset) > 1:
            configs += [(tuple(subset), f, h) for f in fusions for h in heads]
    return configs
