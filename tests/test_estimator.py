"""LayerFusionClassifier follows scikit-learn's estimator conventions.

scikit-learn's own ``check_estimator`` skips an estimator whose input is text (every check but
cloning feeds numeric arrays), so the checks that do not fit run here by name, and the
conventions of the fitting checks are tested on texts with the tiny model.

Checks not run, and why:
- every check that fits on ``make_blobs``-style numeric ``X`` (``check_fit2d_*``,
  ``check_classifiers_train``, ``check_n_features_in``, ``check_dtype_object``, ...): the
  estimator's input is raw text, not a feature matrix; their text equivalents are below.
- ``check_param_validation``: it needs ``_parameter_constraints``; parameters are validated once,
  at ``fit``, with LayerfuseError messages naming the parameter (tested in the stage tests).
- ``check_classifiers_multilabel_*``: single-label classification only.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import FAST, make_texts
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import estimator_checks as ec

from layerfuse import LayerFusionClassifier

NAME = "LayerFusionClassifier"
CHECKS = [
    ec.check_estimator_cloneable,
    ec.check_no_attributes_set_in_init,
    ec.check_get_params_invariance,
    ec.check_set_params,
    ec.check_parameters_default_constructible,
    ec.check_do_not_raise_errors_in_init_or_set_params,
    ec.check_estimator_repr,
    ec.check_estimator_tags_renamed,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_sklearn_check(check, tiny_model):
    check(NAME, LayerFusionClassifier(models=tiny_model))


def test_fit_keeps_parameters_sets_only_underscore_attributes_and_returns_self(tiny_model, tmp_path):
    X, y = make_texts(60, seed=3)
    clf = LayerFusionClassifier(models=tiny_model, layers="best", head="logreg", cache_dir=tmp_path / "c", **FAST)
    before = clf.get_params()
    public_before = set(vars(clf))
    with pytest.raises(NotFittedError):
        clf.predict(X[:2])
    assert clf.fit(X, y) is clf
    assert clf.get_params() == before  # fit never writes to a parameter
    new = set(vars(clf)) - public_before
    assert new and all(a.endswith("_") for a in new), new
    assert set(clf.predict(X)) <= set(clf.classes_) and clf.predict_proba(X).shape == (len(X), 2)
    assert not hasattr(clone(clf), "pipeline_")


def test_caching_is_opt_in(tiny_model, cache_dir):
    """Without cache_dir, fit leaves no embeddings or profiles behind in the user's cache root."""
    X, y = make_texts(60, seed=4)
    # One dtype for both: a new cache_dir has no kept dtype measurement of its own, and on a loaded
    # machine `auto` measured afresh can differ from the user cache's.
    clf = LayerFusionClassifier(models=tiny_model, layers="best", head="logreg", dtype="float32", precision="float32",
                                **FAST).fit(X, y)
    left = sorted(p.name for p in cache_dir.iterdir()) if cache_dir.exists() else []
    assert not {"embeddings", "profiles"} & set(left), left
    proba = clf.predict_proba(X[:4])
    kept = LayerFusionClassifier(models=tiny_model, layers="best", head="logreg", cache_dir=cache_dir / "mine",
                                 dtype="float32", precision="float32", **FAST).fit(X, y)
    assert (cache_dir / "mine" / "embeddings").is_dir() and (cache_dir / "mine" / "profiles").is_dir()
    np.testing.assert_allclose(kept.predict_proba(X[:4]), proba, atol=1e-5)


def test_precision_reaches_the_head(tiny_model, tmp_path):
    """``precision`` is the head's training precision, as ``fusion.precision`` is in a run."""
    from layerfuse.errors import LayerfuseError

    X, y = make_texts(40, seed=5)
    kw = dict(models=tiny_model, layers="best", dtype="float32", cache_dir=tmp_path / "c", **FAST)
    bf16 = LayerFusionClassifier(precision="bfloat16", **kw).fit(X, y)
    assert bf16.pipeline_.trained.config["precision"] == "bfloat16"
    fp32 = LayerFusionClassifier(precision="float32", **kw).fit(X, y)
    assert "precision" not in fp32.pipeline_.trained.config
    with pytest.raises(LayerfuseError, match="precision"):
        LayerFusionClassifier(precision="float16", **kw).fit(X, y)
