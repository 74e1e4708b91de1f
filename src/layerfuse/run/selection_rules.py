"""How a configuration is chosen on train, and how the rules are compared without touching test.

A grid row is one configuration (model set × fusion × head). The rules, all on training data only:

* ``validation``: the row with the best mean validation macro-F1 over its seeds, each seed a 10 %
  carve of train (:func:`layerfuse.run.grid.validation_key`; the rule used so far);
* ``cv``: the best mean macro-F1 over a stratified k-fold CV on train (:func:`cv_scores`: each
  fold's model is trained on the other folds, with its own inner carve for early stopping, and
  scores the held-out fold, so every training text is scored once);
* ``cv-1se``: the one-standard-error rule on those CV scores: among the rows within one standard
  error (of the best row's fold scores) of the best, the one with the fewest sources, then the best
  score. A fusion has to beat its simpler ingredients by more than the CV noise to be chosen.

:func:`compare_rules` runs nested CV on train: in each outer fold every rule chooses on the outer
training part only, and its pick is scored on the outer held-out part, beside the best single
source there. It answers "how often is each rule's pick beaten by the best single source" with
no test data at all.
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np

from layerfuse.errors import LayerfuseError

__all__ = ["RULES", "cv_scores", "add_cv_scores", "choose", "compare_rules", "stratified_folds"]

RULES = ("validation", "cv", "cv-1se")


def stratified_folds(y: np.ndarray, folds: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(fit_rows, held_rows)`` per stratified fold (shuffled with ``seed``); classes rarer than
    ``folds`` only warn, as in scikit-learn."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y)
    if folds < 2 or folds > len(y):
        raise LayerfuseError(f"CV needs 2 to {len(y)} folds, got {folds}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def cv_scores(sources: list[np.ndarray], y, *, n_classes: int, fusion: str = "concat", head: str = "mlp",
              folds: int = 5, seed: int = 0, **fit_kw) -> dict:
    """Stratified k-fold CV of one configuration on training arrays.

    Returns ``f1_mean``, ``f1_std``, ``f1_se`` (std / sqrt(folds)), ``acc_mean``, ``fold_f1`` and
    ``oof_pred`` (every row's prediction by the fold model that did not train on it).
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
    f1 = np.asarray(f1s)
    std = float(f1.std(ddof=1)) if len(f1) > 1 else 0.0
    return {"f1_mean": float(f1.mean()), "f1_std": std, "f1_se": std / np.sqrt(len(f1)),
            "acc_mean": float(np.mean(accs)), "fold_f1": [float(v) for v in f1], "oof_pred": pred, "folds": folds}


def add_cv_scores(rows: list[dict], results: list, score: Callable[[tuple, str, str], dict], folds: int,
                  log: Callable = print) -> None:
    """Add ``cv_f1_mean``, ``cv_f1_se``, ``cv_acc_mean`` to every grid row (``results[i]`` is its
    ``(subset, fusion, head, SeedResult)``); ``score(subset, fusion, head)`` gives the row's CV
    scores on train (e.g. :func:`layerfuse.run.grid.cv_scorer`, which keeps them beside the row
    checkpoints)."""
    for row, (subset, f, h, _) in zip(rows, results):
        cv = score(tuple(subset), f, h)
        row.update(cv_f1_mean=cv["f1_mean"], cv_f1_se=cv["f1_se"], cv_acc_mean=cv["acc_mean"])
        log(f"  {row['models']:<40} {row['fusion']:<14} {h:<6} {folds}-fold CV macro-F1 on train "
            f"{100 * cv['f1_mean']:.2f} ± {100 * cv['f1_se']:.2f}")


def choose(rows: Sequence[dict], rule: str) -> int:
    """Index of the row ``rule`` picks. ``validation`` reads ``val_f1_mean`` / ``val_acc_mean``;
    the CV rules read ``cv_f1_mean``, ``cv_f1_se`` and ``n_models`` (rows without CV scores rank
    last). Ties keep the earlier row (singles come first in a grid)."""
    from layerfuse.run.grid import validation_key

    if not rows:
        raise LayerfuseError("no rows to choose from")
    if rule == "validation":
        return max(range(len(rows)), key=lambda i: validation_key(rows[i]))
    if rule not in RULES:
        raise LayerfuseError(f"unknown selection rule '{rule}': choose from {', '.join(RULES)}")
    score = [rows[i].get("cv_f1_mean") if rows[i].get("cv_f1_mean") is not None else -1.0 for i in range(len(rows))]
    best = max(range(len(rows)), key=lambda i: score[i])
    if rule == "cv":
        return best
    bar = score[best] - float(rows[best].get("cv_f1_se") or 0.0)
    near = [i for i in range(len(rows)) if score[i] >= bar - 1e-12]
    return min(near, key=lambda i: (rows[i].get("n_models", 1), -score[i], i))


def compare_rules(configs: Sequence[tuple], sources: list[list[np.ndarray]], y, *, n_classes: int,
                  rules: Sequence[str] = RULES, outer_folds: int = 3, inner_folds: int = 3, seed: int = 0,
                  log: Callable = print, **fit_kw) -> dict:
    """Nested CV on train: how each rule's pick does on held-out training data.

    ``configs``: ``(source indices, fusion, head)`` triples; ``sources[i]``: source ``i``'s
    training arrays. In each of ``outer_folds`` folds, every configuration is trained on the outer
    training part (its validation carve gives the ``validation`` rule) and CV-scored there with
    ``inner_folds`` folds (the CV rules); each rule picks one, and every configuration is scored
    (macro-F1) on the outer held-out part. Per rule: mean held-out F1 of its picks, how often the
    pick is beaten by the best single-source configuration on that held-out part, and the mean
    regret against the best configuration there (an oracle, shown only to size the gap).
    """
    from layerfuse.model.metrics import classification_metrics
    from layerfuse.model.training import fit_head

    y = np.asarray(y, dtype=np.int64)
    configs = [(tuple(s), f, h) for s, f, h in configs]
    singles = [i for i, (s, _, _) in enumerate(configs) if len(s) == 1]
    if not singles:
        raise LayerfuseError("compare_rules needs at least one single-source configuration")
    per_rule = {r: {"held_f1": [], "beaten_by_best_single": 0, "regret": [], "picks": []} for r in rules}
    outer = []
    for k, (fit_rows, held) in enumerate(stratified_folds(y, outer_folds, seed)):
        rows, held_f1 = [], []
        for subset, f, h in configs:
            arrays = [a for i in subset for a in sources[i]]
            m = fit_head([a[fit_rows] for a in arrays], y[fit_rows], n_classes=n_classes, fusion=f, head=h,
                         seed=seed, **fit_kw)
            held_f1.append(classification_metrics(y[held], m.predict([a[held] for a in arrays]))["macro_f1"])
            cv = cv_scores([a[fit_rows] for a in arrays], y[fit_rows], n_classes=n_classes, fusion=f, head=h,
                           folds=inner_folds, seed=seed, **fit_kw)
            rows.append({"n_models": len(subset), "val_f1_mean": m.val_f1, "val_acc_mean": m.val_acc,
                         "cv_f1_mean": cv["f1_mean"], "cv_f1_se": cv["f1_se"]})
        best_single = max(held_f1[i] for i in singles)
        oracle = max(held_f1)
        for r in rules:
            i = choose(rows, r)
            d = per_rule[r]
            d["picks"].append(i)
            d["held_f1"].append(held_f1[i])
            d["beaten_by_best_single"] += int(held_f1[i] < best_single - 1e-12)
            d["regret"].append(oracle - held_f1[i])
        outer.append({"fold": k, "rows": rows, "held_f1": held_f1})
        log(f"  outer fold {k + 1}/{outer_folds}: " + ", ".join(
            f"{r} → {per_rule[r]['picks'][-1]} ({100 * per_rule[r]['held_f1'][-1]:.2f})" for r in rules)
            + f"; best single {100 * best_single:.2f}")
    summary = {r: {"held_f1_mean": float(np.mean(d["held_f1"])), "beaten_by_best_single": d["beaten_by_best_single"],
                   "of": outer_folds, "regret_mean": float(np.mean(d["regret"])), "picks": d["picks"]}
               for r, d in per_rule.items()}
    return {"rules": summary, "outer": outer, "configs": [[list(s), f, h] for s, f, h in configs],
            "outer_folds": outer_folds, "inner_folds": inner_folds, "seed": seed}
