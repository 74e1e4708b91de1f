"""The ``stack`` fusion: out-of-fold per-source probabilities, a meta-classifier, save and load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from layerfuse.errors import LayerfuseError
from layerfuse.model.fusion import FUSIONS, build_fusion
from layerfuse.model.saving import load_net, save_net
from layerfuse.model.stacking import StackFusion, out_of_fold_probabilities
from layerfuse.model.training import evaluate, fit_head

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def informative_and_noise(n, seed, n_classes=3, d_noise=400):
    """Source 0: class means plus noise (useful); source 1: pure noise, wide enough to fit train."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    centers = np.random.default_rng(99).normal(size=(n_classes, 16)) * 1.2
    good = centers[y] + rng.normal(size=(n, 16))
    noise = rng.normal(size=(n, d_noise))
    return [good.astype(np.float32), noise.astype(np.float32)], y


def test_stack_is_registered_and_builds_untrained():
    assert FUSIONS["stack"] is StackFusion and StackFusion.custom_fit is not None
    f = build_fusion("stack", [8, (3, 5)], n_classes=4)
    out = f([torch.randn(6, 8), torch.randn(6, 3, 5)])
    assert out.shape == (6, 8) == (6, f.out_dim)
    assert not any(p.requires_grad for p in f.parameters())
    with pytest.raises(LayerfuseError, match="n_classes"):
        build_fusion("stack", [8], n_classes=1)


def test_training_rows_get_out_of_fold_probabilities():
    (good, noise), y = informative_and_noise(150, 0)
    tr, va = np.arange(135), np.arange(135, 150)
    P, W, b = out_of_fold_probabilities(noise, y, 3, tr, va, folds=5)
    assert P.shape == (150, 3) and np.allclose(P.sum(1), 1, atol=1e-5)
    assert W.shape == (400, 3) and b.shape == (3,)
    # In-sample, the all-rows head fits pure noise almost perfectly; out of fold it is at chance.
    in_sample = (np.argmax(noise @ W + b, 1) == y).mean()
    oof = (P[tr].argmax(1) == y[tr]).mean()
    assert in_sample > 0.95 and oof < 0.5, (in_sample, oof)


def test_meta_classifier_learns_to_ignore_a_source_that_only_fits_train(tmp_path):
    train, y = informative_and_noise(300, 1)
    test, yt = informative_and_noise(300, 2)
    kw = dict(n_classes=3, head="logreg", lr=1e-2, max_epochs=60, patience=10, seed=0)
    alone = evaluate(fit_head([train[0]], y, **kw), [test[0]], yt)["acc"]
    stacked = fit_head(train, y, fusion="stack", **kw)
    acc = evaluate(stacked, test, yt)["acc"]
    # Were the train probabilities in-sample, the meta-classifier would trust the noise source.
    assert acc >= alone - 0.03, (acc, alone)
    assert stacked.fusion == "stack" and stacked.val_f1 is not None and stacked.config["stack"]["folds"] == 5
    save_net(stacked, tmp_path / "net")
    again = load_net(tmp_path / "net")
    assert again.fusion == "stack"
    np.testing.assert_array_equal(again.predict_proba(test), stacked.predict_proba(test))


def test_stack_takes_layer_mix_sources_and_rejects_unknown_options():
    rng = np.random.default_rng(3)
    y = np.arange(90) % 2
    x3 = (rng.normal(size=(90, 3, 6)) + y[:, None, None]).astype(np.float32)
    m = fit_head([x3], y, n_classes=2, fusion="stack", head="mlp", max_epochs=5, seed=1,
                 fusion_kwargs={"folds": 3})
    assert m.predict_proba([x3]).shape == (90, 2) and m.config["stack"]["folds"] == 3
    with pytest.raises(LayerfuseError, match="unknown option"):
        fit_head([x3], y, n_classes=2, fusion="stack", fusion_kwargs={"hidden": 3})


def test_stack_in_the_grid_saves_and_predicts_from_text(tiny_model, cache_dir, tmp_path):
    from test_lexical_source import toy_dataset

    from layerfuse import load
    from layerfuse.run.grid import run_grid
    from layerfuse.run.prepare import prepare_models

    ds = toy_dataset()
    preps = prepare_models(ds, ["tfidf", tiny_model], folds=3, windows=2, progress=False, log=lambda *_: None)
    res = run_grid(ds, preps, ["stack"], heads=["logreg"], seeds=[0], max_epochs=30, lr=1e-2, progress=False,
                   log=lambda *_: None)
    assert res.rows[2]["fusion"] == "stack" and res.rows[2]["acc_mean"] > 0.85
    pipe = res.pipeline_for(2)
    pipe.save(tmp_path / "s")
    Xt = ds.splits["test"].texts
    np.testing.assert_allclose(load(tmp_path / "s").predict_proba(Xt), pipe.predict_proba(Xt), rtol=1e-5, atol=1e-6)
