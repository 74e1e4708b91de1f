"""How a configuration is chosen on train, and how the rules are compared without touching test.

A grid row is one configuration (model set × fusion × head). The rules, all on training data only:

* ``validation``: the row with the best mean validation score over its seeds, each seed a 10 %
  carve of train (:func:`layerfuse.run.grid.validation_key`; the first rule);
* ``cv``: the best mean score over a stratified k-fold CV on train (:func:`cv_scores`: each
  fold's model is trained on the other folds, with its own inner carve for early stopping, and
  scores the held-out fold, so every training text is scored once);
* ``cv-1se``: the one-standard-error rule on those CV scores: among the rows within one standard
  error (of the best row's fold scores) of the best, the one with the fewest sources, then the best
  score. A fusion has to beat its simpler ingredients by more than the CV noise to be chosen.

:func:`compare_rules` runs nested CV on train: in each outer fold every rule chooses on the outer
training part only, and its pick is scored on the outer held-out part, beside the best single
source there. It answers "how often is each rule's pick beaten by the best single source" with
no test data at all.

Every rule ranks by one **metric** (:data:`METRICS`): ``macro-f1`` (each class counts alike) or
``accuracy`` (each text counts alike; the default, chosen by this nested CV on R8 and R52:
benchmarks/choose_metric.py), the other breaking ties for ``validation``. The CV rules and the
greedy search (:mod:`layerfuse.run.search`) read the chosen metric's fold mean and standard error
(:func:`cv_metric`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from layerfuse.config import (
    DEFAULT_CHOOSE_METRIC,
    DEFAULT_CV_FOLDS,
    DEFAULT_FUSION,
    DEFAULT_HEAD,
    DEFAULT_NESTED_FOLDS,
    DEFAULT_SEED,
)
from layerfuse.data.sampling import stratified_folds
from layerfuse.errors import LayerfuseError

__all__ = ["RULES", "METRICS", "cv_scores", "cv_metric", "metric_label", "complete_cv", "add_cv_scores", "choose", "compare_rules",
           "stratified_folds"]

RULES = ("validation", "cv", "cv-1se")
#: What a rule ranks by; the value is the prefix of the score keys (``f1_mean``, ``cv_acc_se``, ...).
METRICS = {"macro-f1": "f1", "accuracy": "acc"}


def cv_scores(sources: list[np.ndarray], y, *, n_classes: int, fusion: str = DEFAULT_FUSION, head: str = DEFAULT_HEAD,
              folds: int = DEFAULT_CV_FOLDS, seed: int = DEFAULT_SEED, **fit_kw) -> dict:
    """Stratified k-fold CV of one configuration on training arrays.

    Returns per metric (``f1``: macro-F1, ``acc``: accuracy) ``*_mean``, ``*_std``, ``*_se``
    (std / sqrt(folds)) and ``fold_*``, and ``oof_pred`` (every row's prediction by the fold model
    that did not train on it).
    ``fit_kw`` goes to :func:`~layerfuse.model.training.fit_head` (its ``val_fraction`` carve is
    taken from each fold's training part).
    """
    from layerfuse.model.metrics import classification_metrics
    from layerfuse.model.training import fit_head

    y = np.asarray(y, dtype=np.int64)
    pred = np.full(len(y), -1, dtype=np.int64)
    f1s, accs = [], []
    for fit_rows, held in stratified_folds(y, folds, seed):
        m = fit_head([a[fit_rows] for a in sources], y[fit_rows], n_classes=n_classes, fusion=fusion, head=head,
                     seed=seed, **fit_kw)
        pred[held] = m.predict([a[held] for a in sources])
        s = classification_metrics(y[held], pred[held])
        f1s.append(s["macro_f1"])
        accs.append(s["acc"])
    return {**_fold_summary("f1", f1s), **_fold_summary("acc", accs), "oof_pred": pred, "folds": folds}


def _fold_summary(prefix: str, values) -> dict:
    v = np.asarray(values, dtype=np.float64)
    std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return {f"{prefix}_mean": float(v.mean()), f"{prefix}_std": std, f"{prefix}_se": std / np.sqrt(len(v)),
            f"fold_{prefix}": [float(x) for x in v]}


def complete_cv(cv: dict, y, seed: int = DEFAULT_SEED) -> dict:
    """``cv`` with the accuracy fold scores filled in from its ``oof_pred`` when it lacks them (CV
    checkpoints written before accuracy had a standard error): the folds are the same
    :func:`stratified_folds` ``(y, cv["folds"], seed)`` that produced the predictions."""
    from layerfuse.model.metrics import classification_metrics

    if "acc_se" in cv or "oof_pred" not in cv:
        return cv
    y = np.asarray(y)
    pred = np.asarray(cv["oof_pred"])
    accs = [classification_metrics(y[held], pred[held])["acc"]
            for _, held in stratified_folds(y, int(cv.get("folds", DEFAULT_CV_FOLDS)), seed)]
    return {**cv, **_fold_summary("acc", accs)}


def cv_metric(cv: dict, metric: str = DEFAULT_CHOOSE_METRIC) -> tuple[float, float]:
    """``(mean, standard error)`` of one metric (:data:`METRICS`) over a :func:`cv_scores` dict."""
    p = _prefix(metric)
    return float(cv[f"{p}_mean"]), float(cv.get(f"{p}_se") or 0.0)


def metric_label(metric: str) -> str:
    """A metric as tables and messages name it (``macro-F1``, ``accuracy``)."""
    return "macro-F1" if metric == "macro-f1" else metric


def _prefix(metric: str) -> str:
    if metric not in METRICS:
        raise LayerfuseError(f"unknown selection metric {metric!r}: choose from {', '.join(METRICS)}")
    return METRICS[metric]


def add_cv_scores(rows: list[dict], results: list, score: Callable[[tuple, str, str], dict], folds: int,
                  log: Callable = print, metric: str = DEFAULT_CHOOSE_METRIC) -> None:
    """Add ``cv_f1_mean``, ``cv_f1_se``, ``cv_acc_mean``, ``cv_acc_se`` to every grid row
    (``results[i]`` is its ``(subset, fusion, head, SeedResult)``); ``score(subset, fusion, head)``
    gives the row's CV scores on train (e.g. :func:`layerfuse.run.grid.cv_scorer`, which keeps them
    beside the row checkpoints). The log line shows ``metric``."""
    for row, (subset, f, h, _) in zip(rows, results):
        cv = score(tuple(subset), f, h)
        row.update(cv_f1_mean=cv["f1_mean"], cv_f1_se=cv["f1_se"], cv_acc_mean=cv["acc_mean"],
                   cv_acc_se=cv.get("acc_se"))
        mean, se = cv_metric(cv, metric)
        log(f"  {row['models']:<40} {row['fusion']:<14} {h:<6} {folds}-fold CV {metric} on train "
            f"{100 * mean:.2f} ± {100 * se:.2f}")


def choose(rows: Sequence[dict], rule: str, metric: str = DEFAULT_CHOOSE_METRIC) -> int:
    """Index of the row ``rule`` picks by ``metric`` (:data:`METRICS`). ``validation`` reads
    ``val_f1_mean`` / ``val_acc_mean`` (the metric first, the other breaking ties); the CV rules
    read ``cv_<m>_mean``, ``cv_<m>_se`` and ``n_models`` (rows without CV scores rank last). Ties
    keep the earlier row (singles come first in a grid)."""
    from layerfuse.run.grid import validation_key

    p = _prefix(metric)
    if not rows:
        raise LayerfuseError("no rows to choose from")
    if rule == "validation":
        return max(range(len(rows)), key=lambda i: validation_key(rows[i], metric))
    if rule not in RULES:
        raise LayerfuseError(f"unknown selection rule '{rule}': choose from {', '.join(RULES)}")
    key = f"cv_{p}_mean"
    score = [rows[i].get(key) if rows[i].get(key) is not None else -1.0 for i in range(len(rows))]
    best = max(range(len(rows)), key=lambda i: score[i])
    if rule == "cv":
        return best
    bar = score[best] - float(rows[best].get(f"cv_{p}_se") or 0.0)
    near = [i for i in range(len(rows)) if score[i] >= bar - 1e-12]
    return min(near, key=lambda i: (rows[i].get("n_models", 1), -score[i], i))


def compare_rules(configs: Sequence[tuple], sources: list[list[np.ndarray]], y, *, n_classes: int,
                  rules: Sequence[str] = RULES, metrics: Sequence[str] = ("macro-f1", "accuracy"), outer_folds: int = DEFAULT_NESTED_FOLDS,
                  inner_folds: int = DEFAULT_NESTED_FOLDS, seed: int = DEFAULT_SEED, log: Callable = print, **fit_kw) -> dict:
    """Nested CV on train: how each rule's pick does on held-out training data.

    ``configs``: ``(source indices, fusion, head)`` triples; ``sources[i]``: source ``i``'s
    training arrays. In each of ``outer_folds`` folds, every configuration is trained on the outer
    training part (its validation carve gives the ``validation`` rule) and CV-scored there with
    ``inner_folds`` folds (the CV rules); each rule, ranking by each of ``metrics``, picks one, and
    every configuration is scored on the outer held-out part (macro-F1 and accuracy).

    Returns ``rules``: per ``"<rule> by <metric>"``, the mean held-out macro-F1 and accuracy of its
    picks (``held_f1_mean``, ``held_acc_mean``), how often the pick is beaten by the best
    single-source configuration on that held-out part and its mean regret against the best
    configuration there (an oracle, shown only to size the gap), each per held-out metric
    (``beaten_by_best_single[metric]``, ``regret_mean[metric]``), and the ``picks``.
    """
    from layerfuse.model.metrics import classification_metrics
    from layerfuse.model.training import fit_head

    for m in metrics:
        _prefix(m)
    y = np.asarray(y, dtype=np.int64)
    configs = [(tuple(s), f, h) for s, f, h in configs]
    singles = [i for i, (s, _, _) in enumerate(configs) if len(s) == 1]
    if not singles:
        raise LayerfuseError("compare_rules needs at least one single-source configuration")
    specs = [(r, m) for m in metrics for r in rules]
    per_rule = {(r, m): {"picks": [], "held": {p: [] for p in METRICS.values()},
                         "beaten": {p: 0 for p in METRICS.values()}, "regret": {p: [] for p in METRICS.values()}}
                for r, m in specs}
    outer = []
    for k, (fit_rows, held) in enumerate(stratified_folds(y, outer_folds, seed)):
        rows, held_scores = [], {p: [] for p in METRICS.values()}
        for subset, f, h in configs:
            arrays = [a for i in subset for a in sources[i]]
            model = fit_head([a[fit_rows] for a in arrays], y[fit_rows], n_classes=n_classes, fusion=f, head=h,
                             seed=seed, **fit_kw)
            s = classification_metrics(y[held], model.predict([a[held] for a in arrays]))
            held_scores["f1"].append(s["macro_f1"])
            held_scores["acc"].append(s["acc"])
            cv = cv_scores([a[fit_rows] for a in arrays], y[fit_rows], n_classes=n_classes, fusion=f, head=h,
                           folds=inner_folds, seed=seed, **fit_kw)
            rows.append({"n_models": len(subset), "val_f1_mean": model.val_f1, "val_acc_mean": model.val_acc,
                         **{f"cv_{p}_{q}": cv[f"{p}_{q}"] for p in METRICS.values() for q in ("mean", "se")}})
        for (r, m), d in per_rule.items():
            i = choose(rows, r, m)
            d["picks"].append(i)
            for p, vals in held_scores.items():
                d["held"][p].append(vals[i])
                d["beaten"][p] += int(vals[i] < max(vals[j] for j in singles) - 1e-12)
                d["regret"][p].append(max(vals) - vals[i])
        outer.append({"fold": k, "rows": rows, "held_f1": held_scores["f1"], "held_acc": held_scores["acc"]})
        log(f"  outer fold {k + 1}/{outer_folds}: " + ", ".join(
            f"{r} by {m} → {d['picks'][-1]} (acc {100 * d['held']['acc'][-1]:.2f}, F1 {100 * d['held']['f1'][-1]:.2f})"
            for (r, m), d in per_rule.items())
            + f"; best single acc {100 * max(held_scores['acc'][j] for j in singles):.2f}")
    names = {v: k for k, v in METRICS.items()}
    summary = {f"{r} by {m}": {"rule": r, "metric": m,
                               "held_f1_mean": float(np.mean(d["held"]["f1"])),
                               "held_acc_mean": float(np.mean(d["held"]["acc"])),
                               "beaten_by_best_single": {names[p]: n for p, n in d["beaten"].items()},
                               "regret_mean": {names[p]: float(np.mean(v)) for p, v in d["regret"].items()},
                               "of": outer_folds, "picks": d["picks"]}
               for (r, m), d in per_rule.items()}
    return {"rules": summary, "outer": outer, "configs": [[list(s), f, h] for s, f, h in configs],
            "outer_folds": outer_folds, "inner_folds": inner_folds, "seed": seed}
