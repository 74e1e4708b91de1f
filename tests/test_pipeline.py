"""The whole pipeline on tiny random models: learn, save, load, predict, and fail clearly."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import build_tiny_model
from helpers import FAST, make_texts

from layerfuse import load
from layerfuse.data.dataset import Dataset, Split
from layerfuse.errors import LayerfuseError
from layerfuse.estimator import LayerFusionClassifier

pytestmark = pytest.mark.usefixtures("one_torch_thread")



def test_estimator_learns_saves_and_loads(tiny_model, cache_dir, tmp_path):
    X, y = make_texts(120, seed=0)
    Xt, yt = make_texts(40, seed=1)
    clf = LayerFusionClassifier(models=tiny_model, layers="best", head="logreg", lr=1e-2, **FAST)
    clf.fit(X, y)
    assert set(clf.classes_) == {"neg", "pos"}
    acc = clf.score(Xt, yt)
    assert acc >= 0.8, acc
    proba = clf.predict_proba(Xt)
    assert proba.shape == (40, 2) and np.allclose(proba.sum(1), 1, atol=1e-5)
    clf.save(tmp_path / "clf")
    again = load(tmp_path / "clf")
    np.testing.assert_array_equal(again.predict_proba(Xt), proba)
    assert again.predict(Xt[:3]) == list(clf.predict(Xt[:3]))
    man = json.loads((tmp_path / "clf" / "manifest.json").read_text())
    assert man["classes"] == ["neg", "pos"]
    assert man["backbones"][tiny_model] and man["versions"]["torch"]
    assert (tmp_path / "clf" / "net.safetensors").exists()


def test_estimator_clones_and_cross_validates(tiny_model, cache_dir, monkeypatch):
    from sklearn.base import clone
    from sklearn.model_selection import cross_val_score

    X, y = make_texts(80, seed=2)
    clf = LayerFusionClassifier(models=tiny_model, layers="best", head="logreg", lr=1e-2, cache_dir=cache_dir, **FAST)
    c2 = clone(clf)
    assert c2.get_params() == clf.get_params() and not hasattr(c2, "pipeline_")
    scores = cross_val_score(clf, X, y, cv=2)
    assert scores.shape == (2,) and scores.mean() > 0.6
    # Each fold's layer profiles were kept: another head on the same folds scores no layer again.
    assert len(list((cache_dir / "profiles").iterdir())) == 4  # 2 folds x 2 poolings
    import layerfuse.scoring.layer_scores as profile_mod

    def no_scoring(*a, **k):
        raise AssertionError("scored again")

    monkeypatch.setattr(profile_mod, "score_layers", no_scoring)
    again = cross_val_score(clone(clf).set_params(lr=5e-3), X, y, cv=2, error_score="raise")
    assert again.shape == (2,) and again.mean() > 0.6


def test_two_models_fused_through_the_grid(tiny_model, cache_dir, tmp_path):
    from layerfuse.run.grid import run_grid
    from layerfuse.run.prepare import prepare_models

    other = str(build_tiny_model(tmp_path / "other", layers=2, hidden=16, seed=7))
    X, y = make_texts(120, seed=3)
    Xt, yt = make_texts(40, seed=4)
    classes = ["neg", "pos"]
    ds = Dataset("toy", classes, {"train": Split(X, (y == "pos").astype(np.int64)),
                                  "test": Split(Xt, (yt == "pos").astype(np.int64))}, source="test")
    preps = prepare_models(ds, [tiny_model, other], layers="auto", folds=3, windows=2, progress=False,
                           log=lambda *_: None)
    assert all(p.pooling in ("mean", "last") for p in preps)
    res = run_grid(ds, preps, ["concat", "gated"], heads=["logreg"], seeds=[0, 1], proj_dim=16, max_epochs=30,
                   patience=5, lr=1e-2, progress=False, log=lambda *_: None)
    # two single-model rows + two fusions of the pair
    assert [(r["n_models"], r["fusion"]) for r in res.rows] == [(1, "-"), (1, "-"), (2, "concat"), (2, "gated")]
    assert sum(r["chosen_on_validation"] for r in res.rows) == 1
    best = max(res.rows, key=lambda r: (r["val_f1_mean"], r["val_acc_mean"]))
    assert res.best is best
    assert max(r["acc_mean"] for r in res.rows) > 0.75
    assert len(res.complementarity) == 1 and 0 <= res.complementarity[0]["cka"] <= 1 + 1e-9
    res.pipeline.save(tmp_path / "best")
    p = load(tmp_path / "best")
    np.testing.assert_array_equal(p.predict_proba(Xt), res.pipeline.predict_proba(Xt))
    # Every row can become a saved classifier; the pair rows use both backbones.
    gated = res.pipeline_for(3)
    assert len(gated.specs) == 2 and gated.info["row"] is res.rows[3]
    assert gated.predict_proba(Xt).shape == (len(Xt), 2)

    # Explicit configurations replace the full product: here the pair with one fusion only.
    res2 = run_grid(ds, preps, [], configs=[((0,), "concat", "logreg"), ((0, 1), "sum", "logreg")], seeds=[0],
                    proj_dim=16, max_epochs=5, lr=1e-2, progress=False, log=lambda *_: None)
    assert [(r["models"].count("+") + 1, r["fusion"]) for r in res2.rows] == [(1, "-"), (2, "sum")]
    with pytest.raises(LayerfuseError, match="fusion"):
        run_grid(ds, preps, [], configs=[((0, 1), "no-such-fusion", "logreg")], seeds=[0], progress=False,
                 log=lambda *_: None)


def _two_tiny_models(tiny_model, tmp_path):
    """A toy dataset and two tiny models prepared for a grid; returns (dataset, preps, test texts)."""
    from layerfuse.run.prepare import prepare_models

    other = str(build_tiny_model(tmp_path / "other", layers=2, hidden=16, seed=7))
    X, y = make_texts(80, seed=5)
    Xt, yt = make_texts(30, seed=6)
    ds = Dataset("toy", ["neg", "pos"], {"train": Split(X, (y == "pos").astype(np.int64)),
                                         "test": Split(Xt, (yt == "pos").astype(np.int64))}, source="test")
    preps = prepare_models(ds, [tiny_model, other], layers="auto", folds=3, windows=2, progress=False,
                           log=lambda *_: None)
    return ds, preps, Xt


def test_interrupted_grid_resumes_from_its_checkpoints(tiny_model, cache_dir, tmp_path, monkeypatch):
    import layerfuse.model.training as train_mod
    from layerfuse.run.grid import run_grid

    ds, preps, Xt = _two_tiny_models(tiny_model, tmp_path)
    ckpt = tmp_path / "grid"
    kw = dict(heads=["logreg"], seeds=[0, 1], proj_dim=16, max_epochs=8, lr=1e-2, progress=False,
              log=lambda *_: None, checkpoint_dir=ckpt)
    real_fit = train_mod.fit_seeds
    calls = []

    def counting_fit(*a, **k):
        calls.append(k["fusion"])
        if len(calls) == 3:  # the third row is "interrupted" before it finishes
            raise KeyboardInterrupt
        return real_fit(*a, **k)

    monkeypatch.setattr(train_mod, "fit_seeds", counting_fit)
    with pytest.raises(KeyboardInterrupt):
        run_grid(ds, preps, ["concat", "sum"], **kw)
    assert len(list(ckpt.iterdir())) == 2  # the two finished rows, nothing half-written
    calls.clear()
    monkeypatch.setattr(train_mod, "fit_seeds", lambda *a, **k: calls.append(k["fusion"]) or real_fit(*a, **k))
    resumed = run_grid(ds, preps, ["concat", "sum"], **kw)
    assert calls == ["concat", "sum"] and resumed.resumed == 2  # only the pair's rows were trained
    # Everything read back: same rows, same choice, same saved classifier, no training.
    calls.clear()
    again = run_grid(ds, preps, ["concat", "sum"], **kw)
    assert calls == [] and again.resumed == 4
    assert again.rows == resumed.rows and again.complementarity == resumed.complementarity
    np.testing.assert_array_equal(again.pipeline.predict_proba(Xt), resumed.pipeline.predict_proba(Xt))
    # A row trained without a checkpoint gives the same numbers as the one read back.
    fresh = run_grid(ds, preps, [], configs=[((0, 1), "sum", "logreg")], **{**kw, "checkpoint_dir": None})
    assert fresh.rows[0]["acc_mean"] == again.rows[3]["acc_mean"] and calls == ["sum"]
    # Other settings are other rows; an unreadable checkpoint is trained again, not trusted.
    calls.clear()
    run_grid(ds, preps, [], configs=[((0,), "concat", "logreg")], **{**kw, "seeds": [2]})
    assert calls == ["concat"]
    for folder in ckpt.iterdir():
        (folder / "seeds.json").write_text("{broken")
    calls.clear()
    notes = []
    run_grid(ds, preps, [], configs=[((1,), "concat", "logreg")], **{**kw, "log": notes.append})
    assert calls == ["concat"] and any("unreadable" in n for n in notes)


def test_grid_rows_trained_in_worker_processes_match_a_sequential_run(tiny_model, cache_dir, tmp_path):
    from layerfuse.run.grid import run_grid

    ds, preps, Xt = _two_tiny_models(tiny_model, tmp_path)
    kw = dict(heads=["mlp"], seeds=[0, 1], proj_dim=16, max_epochs=6, lr=1e-2, progress=False,
              log=lambda *_: None)

    def scores(rows):  # everything but the time it took
        return [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]

    seq = run_grid(ds, preps, ["concat", "sum"], **kw)
    par = run_grid(ds, preps, ["concat", "sum"], workers=2, **kw)  # one torch thread each (see conftest)
    assert scores(par.rows) == scores(seq.rows) and par.resumed == 0
    np.testing.assert_array_equal(par.pipeline.predict_proba(Xt), seq.pipeline.predict_proba(Xt))
    # With checkpoints the workers save the rows and a rerun reads every one back.
    ckpt = tmp_path / "grid"
    first = run_grid(ds, preps, ["concat", "sum"], workers=2, checkpoint_dir=ckpt, **kw)
    assert scores(first.rows) == scores(seq.rows) and first.resumed == 0 and len(list(ckpt.iterdir())) == 4
    again = run_grid(ds, preps, ["concat", "sum"], workers=2, checkpoint_dir=ckpt, **kw)
    assert again.rows == first.rows and again.resumed == 4


def test_saved_profiles_are_reused_only_when_they_fit(tiny_model, cache_dir, tmp_path, monkeypatch):
    import layerfuse.scoring.layer_scores as profile_mod
    from layerfuse.run.prepare import prepare_models
    from layerfuse.scoring.layer_profile import LayerProfile

    X, y = make_texts(60, seed=8)
    ds = Dataset("toy", ["neg", "pos"], {"train": Split(X, (y == "pos").astype(np.int64))}, source="test")
    kw = dict(layers="auto", folds=3, windows=2, progress=False, log=lambda *_: None)
    first = prepare_models(ds, [tiny_model], **kw)
    saved = {tiny_model: {p: LayerProfile.from_json(prof.to_json(tmp_path / f"{p}.json"))
                          for p, prof in first[0].profiles.items()}}

    def no_scoring(*a, **k):
        raise AssertionError("scored again")

    monkeypatch.setattr(profile_mod, "score_layers", no_scoring)
    again = prepare_models(ds, [tiny_model], saved_profiles=saved, **kw)
    assert again[0].spec == first[0].spec
    # Different labels: the saved profiles do not fit, so the layers are scored afresh.
    flipped = Dataset("toy", ["neg", "pos"], {"train": Split(X, (y != "pos").astype(np.int64))}, source="test")
    with pytest.raises(AssertionError, match="scored again"):
        prepare_models(flipped, [tiny_model], saved_profiles=saved, **kw)
    # Same texts and labels, other embeddings (here: another max length): scored afresh too.
    assert all(prof.settings["features"].endswith("/" + p) for p, prof in saved[tiny_model].items())
    with pytest.raises(AssertionError, match="scored again"):
        prepare_models(ds, [tiny_model], saved_profiles=saved, extraction={"max_length": 8}, **kw)


def test_profiles_are_kept_in_profile_dir_and_read_back(tiny_model, cache_dir, tmp_path, monkeypatch):
    import layerfuse.scoring.layer_scores as profile_mod
    from layerfuse.cache.layout import profile_checkpoint_dir
    from layerfuse.run.prepare import prepare_models

    X, y = make_texts(60, seed=8)
    Xt, yt = make_texts(24, seed=9)
    labels = lambda v: (v == "pos").astype(np.int64)  # noqa: E731
    ds = Dataset("toy", ["neg", "pos"], {"train": Split(X, labels(y)), "test": Split(Xt, labels(yt))}, source="test")
    kw = dict(layers="auto", folds=3, windows=2, progress=False, eval_test=True)
    pdir = profile_checkpoint_dir(cache_dir)
    assert pdir == cache_dir / "profiles"
    first = prepare_models(ds, [tiny_model], profile_dir=pdir, log=lambda *_: None, **kw)
    files = sorted(pdir.iterdir())
    assert len(files) == 2 and all(f.suffix == ".json" for f in files)  # one per pooling, nothing temporary
    assert all(f.stat().st_mode & 0o644 == 0o644 for f in files)  # written atomically, yet readable as usual
    calls = []
    real = profile_mod.score_layers

    def counting(*a, **k):
        calls.append(k.get("name"))
        return real(*a, **k)

    monkeypatch.setattr(profile_mod, "score_layers", counting)
    logged = []
    again = prepare_models(ds, [tiny_model], profile_dir=pdir, log=logged.append, **kw)
    assert calls == [] and again[0].spec == first[0].spec
    assert {p: prof.to_dict() for p, prof in again[0].profiles.items()} == \
        {p: prof.to_dict() for p, prof in first[0].profiles.items()}
    assert sum("read back" in line for line in logged) == 2
    # A damaged file is reported and that profile alone is scored again (and saved again).
    files[0].write_text("{not json")
    logged.clear()
    prepare_models(ds, [tiny_model], profile_dir=pdir, log=logged.append, **kw)
    assert len(calls) == 1 and any("unreadable" in line for line in logged)
    assert len(list(pdir.iterdir())) == 2
    # Other scoring settings (here: 4 folds) are another key: scored afresh, both kept.
    prepare_models(ds, [tiny_model], profile_dir=pdir, log=lambda *_: None, **{**kw, "folds": 4})
    assert len(calls) == 3 and len(list(pdir.iterdir())) == 4


@pytest.fixture()
def saved(tmp_path, cache_dir):
    model_dir = build_tiny_model(tmp_path / "m", seed=11)
    X, y = make_texts(60, seed=5)
    clf = LayerFusionClassifier(models=str(model_dir), layers="best", head="logreg", **FAST).fit(X, y)
    clf.save(tmp_path / "clf")
    return tmp_path, model_dir


def test_mismatched_backbone_is_a_clear_error(saved):
    tmp_path, model_dir = saved
    shutil.rmtree(model_dir)
    build_tiny_model(model_dir, seed=12)  # same path, different weights
    with pytest.raises(LayerfuseError, match="fingerprint"):
        load(tmp_path / "clf").predict(["the movie was good"])


def test_missing_backbone_is_a_clear_error(saved):
    tmp_path, model_dir = saved
    shutil.rmtree(model_dir)
    with pytest.raises(LayerfuseError, match="cannot be found"):
        load(tmp_path / "clf").predict(["the movie was good"])


def test_malformed_folders_are_clear_errors(saved):
    tmp_path, _ = saved
    d = tmp_path / "clf"
    with pytest.raises(LayerfuseError, match="does not exist"):
        load(tmp_path / "nope")
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(LayerfuseError, match="manifest.json is not valid JSON"):
        load(d)
    (d / "manifest.json").unlink()
    with pytest.raises(LayerfuseError, match="manifest.json is missing"):
        load(d)


def test_missing_weights_file_is_a_clear_error(saved):
    tmp_path, _ = saved
    (tmp_path / "clf" / "net.safetensors").unlink()
    with pytest.raises(LayerfuseError, match="net.safetensors"):
        load(tmp_path / "clf")


def test_estimator_rejects_bad_input(tiny_model):
    clf = LayerFusionClassifier(models=tiny_model)
    with pytest.raises(LayerfuseError, match="single class"):
        clf.fit(["a movie", "the film"], ["x", "x"])
    with pytest.raises(LayerfuseError, match="not a single string"):
        clf.fit("a movie", ["x"])
    with pytest.raises(LayerfuseError, match=r"X\[1\] is empty"):
        clf.fit(["a movie", "  "], ["x", "y"])
