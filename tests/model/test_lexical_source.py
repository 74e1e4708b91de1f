"""The ``tfidf`` lexical source: fitted on train only, out-of-fold on train, usable like a model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from layerfuse import load
from layerfuse.data.dataset import Dataset, Split
from layerfuse.errors import LayerfuseError
from layerfuse.model.lexical import TfidfSource, fit_tfidf_source, is_lexical, lexical_embeddings

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOPICS = {0: ["oil", "barrel", "crude", "opec"], 1: ["wheat", "grain", "corn", "harvest"],
          2: ["bank", "rate", "loan", "interest"]}
FILL = ["the", "a", "said", "market", "week", "prices", "company", "report", "new"]


def topic_texts(n, seed, n_classes=3):
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        lab = i % n_classes
        words = list(rng.choice(FILL, size=5)) + list(rng.choice(TOPICS[lab], size=2))
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(lab)
    return texts, np.array(labels, dtype=np.int64)


def toy_dataset(n_train=90, n_test=30):
    X, y = topic_texts(n_train, 0)
    Xt, yt = topic_texts(n_test, 1)
    return Dataset("topics", ["oil", "grain", "money"], {"train": Split(X, y), "test": Split(Xt, yt)}, source="test")


def test_train_scores_are_out_of_fold_and_test_scores_from_all_train():
    X, y = topic_texts(90, 0)
    src, oof = fit_tfidf_source(X, y, 3, folds=3)
    assert oof.shape == (90, 3) and src.width == 3
    full = src.transform(X)
    # In-sample scores of the all-train SVM are more confident than the out-of-fold ones.
    assert not np.allclose(full, oof)
    margin = lambda s: np.take_along_axis(s, y[:, None], 1).mean()
    assert margin(full) > margin(oof)
    assert (oof.argmax(1) == y).mean() > 0.9
    assert src.settings["C"] in src.settings["C_grid"] and 0 < src.settings["oof_macro_f1"] <= 1


def test_two_classes_give_one_score_column_and_round_trip(tmp_path):
    X, y = topic_texts(40, 2, n_classes=2)
    src, oof = fit_tfidf_source(X, y, 2, folds=2)
    assert oof.shape == (40, 1)
    src.save(tmp_path / "t")
    again = TfidfSource.load(tmp_path / "t")
    np.testing.assert_array_equal(again.transform(X), src.transform(X))
    assert again.fingerprint == src.fingerprint
    (tmp_path / "t" / "tfidf.npz").unlink()
    with pytest.raises(LayerfuseError, match="missing or damaged"):
        TfidfSource.load(tmp_path / "t")


def test_lexical_embeddings_look_like_a_one_layer_model():
    ds = toy_dataset()
    emb = lexical_embeddings("tfidf", ds, {"dtype": "auto", "max_length": 64})
    assert emb.array("train").shape == (1, 90, 3) and emb.array("test", "tfidf").shape == (1, 30, 3)
    assert emb.depth == 0 and emb.poolings == ["tfidf"] and emb.stats["dtype"] == "float32"
    assert is_lexical("tfidf") and not is_lexical("minilm-l6")
    with pytest.raises(LayerfuseError, match="not a lexical source"):
        lexical_embeddings("bm25", ds)


def test_tfidf_alone_and_fused_through_the_grid_saved_and_predicted(tiny_model, cache_dir, tmp_path):
    from layerfuse.run.grid import run_grid
    from layerfuse.run.prepare import prepare_models

    ds = toy_dataset()
    preps = prepare_models(ds, ["tfidf", tiny_model], layers="auto", folds=3, windows=2, progress=False,
                           log=lambda *_: None)
    assert preps[0].spec.model == "tfidf" and preps[0].spec.layers == [0] and preps[0].pooling == "tfidf"
    res = run_grid(ds, preps, ["concat", "sum"], heads=["logreg"], seeds=[0], proj_dim=16, max_epochs=30,
                   patience=5, lr=1e-2, progress=False, log=lambda *_: None)
    assert [r["models"] for r in res.rows] == ["tfidf", tiny_model, f"tfidf+{tiny_model}", f"tfidf+{tiny_model}"]
    alone = res.rows[0]
    assert alone["acc_mean"] > 0.9, alone  # the topic words are lexical: tfidf alone solves it
    Xt = ds.splits["test"].texts
    for i in (0, 2, 3):  # tfidf alone, and fused with a model by concat and by sum
        pipe = res.pipeline_for(i)
        pipe.save(tmp_path / f"clf{i}")
        man = json.loads((tmp_path / f"clf{i}" / "manifest.json").read_text())
        assert man["lexical"] == ["tfidf"] and "tfidf" not in man["backbones"]
        again = load(tmp_path / f"clf{i}")
        np.testing.assert_allclose(again.predict_proba(Xt), pipe.predict_proba(Xt), rtol=1e-5, atol=1e-6)
    # A model's extraction settings win over tfidf's placeholders when it comes first in the set.
    assert res.pipeline_for(2).extraction["max_length"] == preps[1].emb.stats["max_length"]
    # Predicting from raw text reproduces the grid's test scores (same arrays, same net).
    pipe = res.pipeline_for(0)
    acc = (pipe.predict_proba(Xt).argmax(1) == ds.splits["test"].labels).mean()
    assert abs(acc - pipe.metrics["test_acc"]) < 1e-9


def test_a_classifier_folder_without_its_tfidf_files_fails_clearly(tmp_path, cache_dir):
    from layerfuse.run.grid import run_grid
    from layerfuse.run.prepare import prepare_models

    ds = toy_dataset(60, 12)
    preps = prepare_models(ds, ["tfidf"], folds=3, windows=2, progress=False, log=lambda *_: None)
    res = run_grid(ds, preps, [], heads=["logreg"], seeds=[0], max_epochs=5, progress=False, log=lambda *_: None)
    res.pipeline.save(tmp_path / "c")
    man_path = tmp_path / "c" / "manifest.json"
    man = json.loads(man_path.read_text())
    man["lexical"] = []
    man_path.write_text(json.dumps(man))
    with pytest.raises(LayerfuseError, match="does not list it"):
        load(tmp_path / "c")


def test_estimator_accepts_tfidf_as_a_model(tmp_path, cache_dir):
    from layerfuse.estimator import LayerFusionClassifier

    X, y = topic_texts(90, 0)
    Xt, yt = topic_texts(30, 1)
    clf = LayerFusionClassifier(models="tfidf", head="logreg", lr=1e-2, folds=3, windows=2, max_epochs=30,
                                progress=False)
    clf.fit(X, y)
    assert clf.score(Xt, yt) > 0.9
    clf.save(tmp_path / "e")
    np.testing.assert_allclose(load(tmp_path / "e").predict_proba(Xt), clf.predict_proba(Xt), rtol=1e-5, atol=1e-6)


def test_refitting_gives_the_same_source_bit_for_bit():
    """liblinear shuffles with its own random state unless given one: without a seed, every refit
    had a new fingerprint (so grid rows with tfidf never resumed) and scores that moved a little."""
    X, y = topic_texts(120, 4)
    a, oof_a = fit_tfidf_source(X, y, 3, folds=3, c_grid=(3.0,))
    b, oof_b = fit_tfidf_source(X, y, 3, folds=3, c_grid=(3.0,))
    np.testing.assert_array_equal(oof_a, oof_b)
    assert a.fingerprint == b.fingerprint
