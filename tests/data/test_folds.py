"""Stratified CV folds without scikit-learn: the same rows as its StratifiedKFold, so profiles and
CV scores keep their values."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

from layerfuse.data.sampling import stratified_fold_ids, stratified_folds
from layerfuse.errors import LayerfuseError


def _sklearn_fold_ids(y, folds, seed):
    from sklearn.model_selection import StratifiedKFold

    ids = np.full(len(y), -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f, (_, held) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)):
            ids[held] = f
    return ids


@pytest.mark.parametrize("trial", range(40))
def test_same_folds_as_scikit_learn(trial):
    rng = np.random.default_rng(trial)
    n, n_classes, folds = int(rng.integers(12, 300)), int(rng.integers(2, 9)), int(rng.integers(2, 7))
    y = rng.choice(n_classes, size=n, p=rng.dirichlet(np.full(n_classes, 0.6)))
    if trial % 3 == 0:  # string labels, numbered by first appearance as scikit-learn does
        y = np.array([f"class {v}" for v in y])
    if np.bincount(np.unique(y, return_inverse=True)[1]).max() < folds:
        pytest.skip("every class rarer than the folds: both refuse")
    seed = int(rng.integers(0, 10_000))
    assert (stratified_fold_ids(y, folds, seed) == _sklearn_fold_ids(y, folds, seed)).all()


def test_folds_cover_every_row_once_and_stratify():
    y = np.repeat([0, 1, 2], [50, 30, 20])
    pairs = stratified_folds(y, 5, seed=3)
    held = np.concatenate([h for _, h in pairs])
    assert sorted(held) == list(range(100))
    for fit, h in pairs:
        assert np.intersect1d(fit, h).size == 0 and len(fit) + len(h) == 100
        assert list(np.bincount(y[h])) == [10, 6, 4]
    assert not (stratified_fold_ids(y, 5, 3) == stratified_fold_ids(y, 5, 4)).all()


def test_bad_fold_counts_are_clear_errors():
    y = np.array([0, 0, 1, 1, 1])
    with pytest.raises(LayerfuseError, match="2 to 5 folds"):
        stratified_fold_ids(y, 1)
    with pytest.raises(LayerfuseError, match="2 to 5 folds"):
        stratified_fold_ids(y, 6)
    with pytest.raises(LayerfuseError, match="at least 4 examples"):
        stratified_fold_ids(y, 4)
    with pytest.raises(LayerfuseError, match="one-dimensional"):
        stratified_fold_ids(y.reshape(-1, 1), 2)


def test_profiling_does_not_import_scikit_learn():
    """A profile worker process pays no scikit-learn import (about 1.35 s)."""
    code = ("import sys, numpy as np; from layerfuse.scoring import score_layers; "
            "rng = np.random.default_rng(0); y = np.repeat([0, 1], 30); "
            "X = (rng.normal(size=(3, 60, 8)) + y[None, :, None]).astype('float32'); "
            "score_layers(X, y, folds=3, windows=2, progress=False); "
            "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
