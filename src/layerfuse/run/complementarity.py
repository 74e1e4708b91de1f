"""How complementary two models are on the validation split: linear CKA of their selected
representations and how often both are wrong together.
"""

from __future__ import annotations

import itertools

import numpy as np

__all__ = ["linear_cka", "complementarity"]


def linear_cka(a: np.ndarray, b: np.ndarray) -> float:
    """Linear centred kernel alignment between two representations of the same examples."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    num = np.linalg.norm(a.T @ b) ** 2
    den = np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)
    return float(num / den) if den > 0 else 0.0


def complementarity(preps, results, y_train, val_fraction: float, sources_train) -> list[dict]:
    """Per model pair on the validation split (carved from train, first seed): linear CKA of the
    selected representations, and how often both single-model heads are wrong together compared
    with what independent errors would give. Low CKA and few shared errors suggest fusion can help.
    ``sources_train``: per model, the training sources run_grid already built (reused, not rebuilt)."""
    from layerfuse.data.sampling import stratified_validation_split

    if len(preps) < 2 or val_fraction <= 0:
        return []
    singles = {s[0]: r for (s, f, h, r) in results if len(s) == 1}
    # The validation rows that the first seed's single-model heads never trained on.
    first_seed = next(iter(singles.values())).seeds[0] if singles else 0
    _, val = stratified_validation_split(y_train, fraction=val_fraction, seed=first_seed)
    wrong = {}
    for i, prep in enumerate(preps):
        if i in singles:
            srcs = [a[val] for a in sources_train[i]]
            pred = singles[i].models[0].predict(srcs)
            wrong[i] = pred != y_train[val]
    rows = []
    for i, j in itertools.combinations(range(len(preps)), 2):
        a = np.concatenate([s[val].reshape(len(val), -1) for s in sources_train[i]], 1)
        b = np.concatenate([s[val].reshape(len(val), -1) for s in sources_train[j]], 1)
        row = {"a": preps[i].ref, "b": preps[j].ref, "cka": linear_cka(a.astype(np.float64), b.astype(np.float64))}
        if i in wrong and j in wrong:
            ei, ej = wrong[i].mean(), wrong[j].mean()
            both = float((wrong[i] & wrong[j]).mean())
            row.update(err_a=float(ei), err_b=float(ej), both_wrong=both, both_wrong_if_independent=float(ei * ej),
                       oracle_acc=float(1 - both))
        rows.append(row)
    return rows
