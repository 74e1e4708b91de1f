"""Choosing a configuration on train: validation carve, k-fold CV, one-standard-error rule;
nested CV comparing the rules; greedy model-set search. No test split is read anywhere here."""

from __future__ import annotations

import numpy as np
import pytest

from layerfuse.errors import LayerfuseError
from layerfuse.run.search import greedy_configs, greedy_model_sets, greedy_paths, oof_complementarity
from layerfuse.run.selection_rules import choose, compare_rules, complete_cv, cv_metric, cv_scores, stratified_folds

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = dict(head="logreg", lr=1e-2, max_epochs=40, patience=8)


def sources(n, seed):
    """Source 0 carries the label strongly, source 1 weakly, source 2 not at all."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    s0 = (y[:, None] * 1.5 + rng.normal(size=(n, 4))).astype(np.float32)
    s1 = (y[:, None] * 0.4 + rng.normal(size=(n, 4))).astype(np.float32)
    s2 = rng.normal(size=(n, 4)).astype(np.float32)
    return [[s0], [s1], [s2]], y


def test_cv_scores_every_row_once_out_of_fold():
    srcs, y = sources(120, 0)
    cv = cv_scores(srcs[0], y, n_classes=2, folds=4, **FAST)
    assert len(cv["fold_f1"]) == 4 and (cv["oof_pred"] >= 0).all()
    assert cv["f1_mean"] > 0.75 and cv["f1_se"] == pytest.approx(cv["f1_std"] / 2)
    noise = cv_scores(srcs[2], y, n_classes=2, folds=4, **FAST)
    assert noise["f1_mean"] < cv["f1_mean"] - 0.2
    held = np.concatenate([h for _, h in stratified_folds(y, 4)])
    assert sorted(held) == list(range(120))
    with pytest.raises(LayerfuseError, match="folds"):
        stratified_folds(y, 1)


def test_rules_pick_as_documented():
    rows = [{"n_models": 1, "val_f1_mean": 0.80, "val_acc_mean": 0.8, "cv_f1_mean": 0.850, "cv_f1_se": 0.01},
            {"n_models": 2, "val_f1_mean": 0.90, "val_acc_mean": 0.9, "cv_f1_mean": 0.855, "cv_f1_se": 0.01},
            {"n_models": 3, "val_f1_mean": 0.70, "val_acc_mean": 0.7, "cv_f1_mean": 0.840, "cv_f1_se": 0.02}]
    assert choose(rows, "validation", "macro-f1") == 1
    assert choose(rows, "cv", "macro-f1") == 1
    assert choose(rows, "cv-1se", "macro-f1") == 0  # within one SE of the best, with fewer sources
    rows[1]["cv_f1_mean"] = 0.90  # a gain beyond the noise: the fusion wins
    assert choose(rows, "cv-1se", "macro-f1") == 1
    with pytest.raises(LayerfuseError, match="unknown selection rule"):
        choose(rows, "test")


def test_rules_rank_by_the_metric_asked_for():
    """On imbalanced data macro-F1 and accuracy can disagree: each rule follows its metric."""
    rows = [{"n_models": 1, "val_f1_mean": 0.77, "val_acc_mean": 0.950, "cv_f1_mean": 0.77, "cv_f1_se": 0.01,
             "cv_acc_mean": 0.950, "cv_acc_se": 0.002},
            {"n_models": 2, "val_f1_mean": 0.73, "val_acc_mean": 0.962, "cv_f1_mean": 0.73, "cv_f1_se": 0.02,
             "cv_acc_mean": 0.962, "cv_acc_se": 0.002}]
    for rule in ("validation", "cv", "cv-1se"):
        assert choose(rows, rule, "macro-f1") == 0
        assert choose(rows, rule, "accuracy") == 1
    rows[1]["cv_acc_mean"] = 0.951  # within one SE of the single source: cv-1se keeps the single one
    assert choose(rows, "cv", "accuracy") == 1 and choose(rows, "cv-1se", "accuracy") == 0
    with pytest.raises(LayerfuseError, match="unknown selection metric"):
        choose(rows, "cv", "auc")


def test_cv_scores_give_accuracy_with_its_error_and_old_checkpoints_are_completed():
    srcs, y = sources(120, 3)
    cv = cv_scores(srcs[1], y, n_classes=2, folds=4, **FAST)
    accs = [float((cv["oof_pred"][h] == y[h]).mean()) for _, h in stratified_folds(y, 4)]
    assert cv["fold_acc"] == pytest.approx(accs) and cv["acc_mean"] == pytest.approx(np.mean(accs))
    assert cv_metric(cv, "accuracy") == (pytest.approx(cv["acc_mean"]), pytest.approx(np.std(accs, ddof=1) / 2))
    assert cv_metric(cv, "macro-f1") == (cv["f1_mean"], cv["f1_se"])
    old = {k: v for k, v in cv.items() if k not in ("acc_se", "acc_std", "fold_acc")}
    assert complete_cv(old, y)["acc_se"] == pytest.approx(cv["acc_se"])
    assert complete_cv(cv, y) is cv


def test_greedy_search_follows_the_metric():
    f1 = {(0,): 0.77, (1,): 0.70, (0, 1): 0.73}
    acc = {(0,): 0.950, (1,): 0.951, (0, 1): 0.962}

    def score(s):
        return {"f1_mean": f1[s], "f1_se": 0.006, "acc_mean": acc[s], "acc_se": 0.002}

    assert greedy_model_sets(2, score, metric="macro-f1", log=lambda *_: None)["chosen"] == (0,)
    assert greedy_model_sets(2, score, log=lambda *_: None)["path"] == [(1,), (0, 1)]  # accuracy: the default


def test_compare_rules_counts_picks_beaten_by_the_best_single_source():
    srcs, y = sources(150, 1)
    configs = [((0,), "concat", "logreg"), ((1,), "concat", "logreg"), ((0, 1, 2), "concat", "logreg")]
    out = compare_rules(configs, srcs, y, n_classes=2, metrics=("macro-f1", "accuracy"), outer_folds=3,
                        inner_folds=3, log=lambda *_: None, lr=1e-2, max_epochs=30, patience=6)
    assert set(out["rules"]) == {f"{r} by {m}" for r in ("validation", "cv", "cv-1se") for m in ("macro-f1", "accuracy")}
    for r in out["rules"].values():
        for m in ("macro-f1", "accuracy"):
            assert r["of"] == 3 and 0 <= r["beaten_by_best_single"][m] <= 3 and r["regret_mean"][m] >= 0
        assert len(r["picks"]) == 3 and all(0 <= p < 3 for p in r["picks"])
    for fold in out["outer"]:
        assert len(fold["held_f1"]) == len(fold["held_acc"]) == 3
        assert all("cv_f1_mean" in row and "cv_acc_se" in row for row in fold["rows"])
        # Each pick's held-out scores are the ones of the configuration it picked.
        for r in out["rules"].values():
            i = r["picks"][fold["fold"]]
            assert i == choose(fold["rows"], r["rule"], r["metric"])
    for r in out["rules"].values():
        assert r["held_acc_mean"] == pytest.approx(np.mean([f["held_acc"][p] for f, p in zip(out["outer"], r["picks"])]))
    # The strong source alone beats the weak one on every held-out part.
    assert all(f["held_f1"][0] > f["held_f1"][1] for f in out["outer"])
    assert out["rules"]["cv-1se by macro-f1"]["held_f1_mean"] > 0.7
    with pytest.raises(LayerfuseError, match="unknown selection metric"):
        compare_rules(configs, srcs, y, n_classes=2, metrics=("auc",), log=lambda *_: None)


def test_greedy_search_adds_while_the_gain_beats_the_noise():
    table = {(0,): 0.70, (1,): 0.80, (2,): 0.60, (0, 1): 0.86, (1, 2): 0.82, (0, 1, 2): 0.865}
    seen = []

    def score(s):
        seen.append(s)
        return {"f1_mean": table[s], "f1_se": 0.01}

    out = greedy_model_sets(3, score, metric="macro-f1", log=lambda *_: None)
    assert out["path"] == [(1,), (0, 1)] and out["chosen"] == (0, 1)
    assert "within the noise" in out["stopped"]  # (0, 1, 2) gains 0.5 points < 1 SE
    assert len(seen) == len(set(seen)) == 6  # each subset scored once
    assert greedy_model_sets(3, score, max_size=1, metric="macro-f1", log=lambda *_: None)["chosen"] == (1,)
    configs = greedy_configs(3, out["path"], ["concat", "stack"], ["mlp"])
    assert configs == [((0,), "concat", "mlp"), ((1,), "concat", "mlp"), ((2,), "concat", "mlp"),
                       ((0, 1), "concat", "mlp"), ((0, 1), "stack", "mlp")]


def test_greedy_search_orders_candidates_by_complementarity():
    y = np.zeros(10, dtype=int)
    preds = {(0,): np.array([0] * 5 + [1] * 5), (1,): np.array([1] * 5 + [0] * 5), (2,): np.array([0] * 6 + [1] * 4)}
    table = {(0,): 0.5, (1,): 0.5, (2,): 0.6, (0, 2): 0.6, (1, 2): 0.9, (0, 1, 2): 0.9}
    tried = []

    def score(s):
        tried.append(s)
        return {"f1_mean": table[s], "f1_se": 0.0, "oof_pred": preds.get(s, y)}

    out = greedy_model_sets(3, score, beam=1, y=y, metric="macro-f1", log=lambda *_: None)
    # Source 2 errs on rows 6-9; source 1 gets all of them right, source 0 none: only 1 is tried.
    assert out["path"][:2] == [(2,), (1, 2)] and (0, 2) not in tried
    assert oof_complementarity(preds[(2,)] != y, preds[(1,)] != y) == 1.0


def test_greedy_paths_map_candidates_back_to_source_indices():
    table = {(1,): 0.7, (3,): 0.8, (1, 3): 0.9}
    calls = []

    def score(s, f):
        calls.append((s, f))
        return {"f1_mean": table[s] + (0.01 if f == "stack" else 0), "f1_se": 0.0}

    out = greedy_paths(["a", "b", "c", "d"], None, ["concat", "stack"], score, candidates=[1, 3], metric="macro-f1",
                       log=lambda *_: None)
    assert out["concat"]["path"] == [(3,), (1, 3)] and out["stack"]["chosen"] == (1, 3)
    assert out["concat"]["exhaustive"] == 3 and {s for s, _ in calls} == {(1,), (3,), (1, 3)}
    configs = greedy_configs(4, [], ["concat", "stack"], ["mlp"], paths=out)
    assert configs == [((i,), "concat", "mlp") for i in range(4)] + [((1, 3), "concat", "mlp"), ((1, 3), "stack", "mlp")]
    with pytest.raises(LayerfuseError, match="at least one source"):
        greedy_paths(["a"], None, ["concat"], score, candidates=[], log=lambda *_: None)


def _toy():
    from layerfuse.data.dataset import Dataset, Split

    def texts(n, seed):
        rng = np.random.default_rng(seed)
        words = [["oil", "crude", "barrel"], ["wheat", "grain", "corn"]]
        return ([" ".join(rng.choice(["the", "said", "market", "week"], 4)) + " " + rng.choice(words[i % 2])
                 for i in range(n)], np.arange(n) % 2)

    return Dataset("toy", ["oil", "grain"], {"train": Split(*texts(60, 0)), "test": Split(*texts(12, 1))}, "test")


def test_greedy_grid_trains_the_path_and_reads_cv_back(tiny_model, cache_dir, tmp_path, monkeypatch):
    from layerfuse.run import selection_rules
    from layerfuse.run.grid import run_grid
    from layerfuse.run.prepare import prepare_models

    ds = _toy()
    preps = prepare_models(ds, ["tfidf", tiny_model, tiny_model], folds=3, windows=2, progress=False,
                           log=lambda *_: None)
    kw = dict(heads=["logreg"], seeds=[0], max_epochs=20, lr=1e-2, rule="cv", cv_folds=3, search="greedy",
              checkpoint_dir=tmp_path / "grid", progress=False, log=lambda *_: None)
    res = run_grid(ds, preps, ["concat", "stack"], **kw)
    sets = {(tuple(r.subset), r.fusion) for r in res.results}
    assert {((i,), "concat") for i in range(3)} <= sets  # every model alone: the bar
    for f, g in res.search.items():
        assert g["path"][0] in {(0,), (1,), (2,)} and all((s, f) in sets for s in g["path"] if len(s) > 1)
        assert g["scored"] <= 2 ** 3 - 1
    assert all(r["cv_f1_mean"] is not None for r in res.rows)
    assert res.best is res.rows[choose(res.rows, "cv")]
    assert list((tmp_path / "grid").glob("*-cv3.json"))
    # A rerun reads every CV score (and row) back: nothing is fitted again.
    monkeypatch.setattr(selection_rules, "cv_scores", lambda *a, **k: pytest.fail("CV scored again"))
    again = run_grid(ds, preps, ["concat", "stack"], **kw)
    assert again.search == res.search and again.resumed == len(again.rows)
    assert [r["cv_f1_mean"] for r in again.rows] == [r["cv_f1_mean"] for r in res.rows]
    with pytest.raises(LayerfuseError, match="unknown search"):
        run_grid(ds, preps, ["concat"], heads=["logreg"], search="random", progress=False)


def test_grid_chooses_by_cv_on_train(tiny_model, cache_dir):
    from layerfuse.run.grid import run_grid
    from layerfuse.run.prepare import prepare_models

    ds = _toy()
    preps = prepare_models(ds, ["tfidf", tiny_model], folds=3, windows=2, progress=False, log=lambda *_: None)
    res = run_grid(ds, preps, ["concat"], heads=["logreg"], seeds=[0], max_epochs=20, lr=1e-2, rule="cv-1se",
                   cv_folds=3, progress=False, log=lambda *_: None)
    assert all(r["cv_f1_mean"] is not None and r["cv_f1_se"] >= 0 for r in res.rows)
    assert res.best is res.rows[choose(res.rows, "cv-1se")] and res.pipeline.info["chosen_by"].startswith("cv-1se")
    by_acc = run_grid(ds, preps, ["concat"], heads=["logreg"], seeds=[0], max_epochs=20, lr=1e-2, rule="cv",
                      cv_folds=3, metric="accuracy", progress=False, log=lambda *_: None)
    assert all(r["cv_acc_se"] is not None for r in by_acc.rows)
    assert by_acc.best is by_acc.rows[choose(by_acc.rows, "cv", "accuracy")]
    assert by_acc.pipeline.info["chosen_by"] == "cv: 3-fold CV accuracy on train"
    with pytest.raises(LayerfuseError, match="unknown selection metric"):
        run_grid(ds, preps, ["concat"], heads=["logreg"], seeds=[0], metric="auc", progress=False)
    with pytest.raises(LayerfuseError, match="unknown selection rule"):
        run_grid(ds, preps, ["concat"], heads=["logreg"], seeds=[0], rule="best-on-test", progress=False)
