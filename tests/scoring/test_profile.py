"""Tests for layer profiles (layerfuse.profile) and their plots/tables (layerfuse.report)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from layerfuse.errors import LayerfuseError
from layerfuse.scoring.features import average_layers, standardise
from layerfuse.scoring.layer_profile import ANALYSIS_COLUMN, LayerProfile
from layerfuse.scoring.layer_scores import cv_probe, eval_test_column, score_layers
from layerfuse.scoring.selection import LayerSelection, select_layers
from layerfuse.scoring.solver import fit_logistic, logits, weight_grad

SIGNAL = 5  # the separable layer in the synthetic array
N_LAYERS = 8  # L+1
N, D, C = 300, 32, 3
SCORE_COLS = ("probe_acc", "probe_f1", "centroid_acc", "knn_acc", "fisher", "logme")


def _synthetic(seed: int = 0, n: int = N, signal: int = SIGNAL, strength: float = 1.6):
    """[L+1, N, d] float16 noise, except layer ``signal`` whose class means differ."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % C
    rng.shuffle(y)
    X = rng.standard_normal((N_LAYERS, n, D)).astype(np.float32)
    means = np.random.default_rng(1234).standard_normal((C, D)).astype(np.float32)  # shared
    means *= strength / np.linalg.norm(means, axis=1, keepdims=True) * np.sqrt(2.0)
    X[signal] += means[y]
    X[:, :, 0] += 5.0  # an offset feature, as LLM embeddings have
    return X.astype(np.float16), y


@pytest.fixture(scope="module")
def data():
    return _synthetic(0)


@pytest.fixture(scope="module")
def profile(data):
    X, y = data
    return score_layers(X, y, folds=5, seed=0, windows=3, progress=False, name="synthetic")


# -------------------------------------------------------------------------------- scores


def test_every_score_ranks_the_separable_layer_first(profile):
    layers = profile.layer_rows()
    assert [r["start"] for r in layers] == list(range(N_LAYERS))
    for col in SCORE_COLS:
        vals = [r[col] for r in layers]
        assert int(np.argmax(vals)) == SIGNAL, (col, vals)
        assert profile.best(col)["start"] == SIGNAL
    sig = layers[SIGNAL]
    noise = [r for r in layers if r["start"] != SIGNAL]
    assert sig["probe_acc"] > 0.8
    assert max(r["probe_acc"] for r in noise) < 0.5  # chance is 1/3
    assert 0 <= sig["probe_acc_std"] < 0.1 and 0 <= sig["probe_f1_std"] < 0.1


def test_profile_rows_windows_agreement_and_timings(profile):
    L = N_LAYERS - 1
    windows = profile.window_rows()
    # widths 2..3, every start: (L+1-1) + (L+1-2)
    assert len(windows) == (N_LAYERS - 1) + (N_LAYERS - 2)
    for r in windows:
        assert r["layers"] == list(range(r["start"], r["end"] + 1))
        assert r["depth"] == pytest.approx((r["start"] + r["end"]) / 2 / L)
        assert 2 <= len(r["layers"]) <= 3
    assert SIGNAL in profile.best("probe_acc", kind="window")["layers"]
    assert [r["depth"] for r in profile.layer_rows()] == pytest.approx(
        [i / L for i in range(N_LAYERS)])
    topk = [r for r in profile.rows if r["kind"] == "topk"]
    assert len(topk) == 1 and SIGNAL in topk[0]["layers"] and len(topk[0]["layers"]) == 3
    assert set(profile.agreement) == {"centroid", "knn", "fisher", "logme"}
    for name, rho in profile.agreement.items():
        assert rho > 0.0, (name, rho)
    for key in ("prep", "probe", "centroid", "knn", "fisher", "logme", "windows", "total"):
        assert profile.timings[key] >= 0.0


def test_average_layers_matches_hand_computation():
    X = np.arange(4 * 3 * 2, dtype=np.float16).reshape(4, 3, 2)
    got = average_layers(X, 1, 3)
    want = (X[1].astype(np.float32) + X[2] + X[3]) / 3
    assert got.dtype == np.float32 and got.shape == (3, 2)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_array_equal(average_layers(X, 2, 2), X[2].astype(np.float32))
    for bad in [(2, 1), (-1, 2), (0, 4)]:
        with pytest.raises(LayerfuseError, match="outside"):
            average_layers(X, *bad)


def test_window_rows_score_the_averaged_layers(data, profile):
    X, y = data
    w = next(r for r in profile.window_rows() if (r["start"], r["end"]) == (4, 6))
    direct = cv_probe(average_layers(X, 4, 6), y, folds=5, seed=0)
    assert w["probe_acc"] == pytest.approx(direct["probe_acc"], abs=1e-6)


def test_fast_probe_agrees_with_sklearn():
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(1)
    n, d, l2 = 600, 20, 1e-2
    y = rng.integers(0, 3, n)
    A = rng.standard_normal((d, d)) * 0.4 + np.eye(d)  # correlated features
    Xr = (rng.standard_normal((n, d)) + 0.9 * rng.standard_normal((3, d))[y]) @ A
    Xs, _, _ = standardise(Xr.astype(np.float32))
    Xs = Xs.numpy()
    # one fit on a train split, evaluated on held-out rows
    tr, te = np.arange(n) < 450, np.arange(n) >= 450
    mask = torch.from_numpy(tr.astype(np.float32))[:, None]
    W, b, _ = fit_logistic(torch.from_numpy(Xs), torch.from_numpy(y), 3, mask, l2=l2,
                            tol=1e-6)
    ours = (Xs @ W[:, 0, :].numpy() + b[0].numpy()).argmax(1)
    sk = LogisticRegression(C=1.0 / (l2 * tr.sum()), max_iter=5000, tol=1e-8).fit(Xs[tr], y[tr])
    assert abs((ours[te] == y[te]).mean() - sk.score(Xs[te], y[te])) <= 0.01
    assert (ours == sk.predict(Xs)).mean() >= 0.98
    # the batched CV probe against per-fold sklearn fits on the same folds
    cv = cv_probe(Xr, y, folds=5, seed=0, l2=l2)
    accs = []
    for tr_i, te_i in StratifiedKFold(5, shuffle=True, random_state=0).split(Xs, y):
        m = LogisticRegression(C=1.0 / (l2 * len(tr_i)), max_iter=5000, tol=1e-8)
        accs.append(m.fit(Xs[tr_i], y[tr_i]).score(Xs[te_i], y[te_i]))
    assert abs(cv["probe_acc"] - np.mean(accs)) <= 0.01


def test_probe_products_are_the_plain_products():
    """The solver writes xs @ W + b and xs' R + l2 W in transposed forms (faster with MKL): same values."""
    g = torch.Generator().manual_seed(0)
    xs, R = torch.randn(500, 48, generator=g), torch.randn(500, 10, generator=g)
    W, b = torch.randn(48, 10, generator=g), torch.randn(10, generator=g)
    for large in (False, True):
        z = logits(xs, W, b, large)
        assert z.shape == (500, 10)
        torch.testing.assert_close(z, xs @ W + b, rtol=1e-5, atol=1e-4)
    gw = weight_grad(xs, R, W, 0.3)
    assert gw.shape == (48, 10)
    torch.testing.assert_close(gw, xs.T @ R + 0.3 * W, rtol=1e-5, atol=1e-4)


def _probe_problem(seed: int = 2, n: int = 400, d: int = 24, c: int = 4):
    import torch

    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    A = rng.standard_normal((d, d)) * 0.4 + np.eye(d)
    Xr = (rng.standard_normal((n, d)) + 0.8 * rng.standard_normal((c, d))[y]) @ A
    xs, _, gram = standardise(Xr.astype(np.float32), gram=True)
    folds = torch.from_numpy(np.arange(n) % 5)
    mask = (folds[:, None] != torch.arange(5)[None, :]).to(torch.float32)
    return xs, torch.from_numpy(y), c, mask, gram


@pytest.mark.parametrize("large", [False, True])
def test_probe_whitenings_and_warm_start_reach_one_optimum(monkeypatch, large):
    """The eigen-whitened solver (for large problems with the features whitened once) and the
    Cholesky one fit the same model; a start at the optimum stays there in a few evaluations, a
    start at a neighbour's optimum reaches the same optimum as a cold start in fewer."""
    import torch

    from layerfuse.scoring import solver

    monkeypatch.setattr(solver, "LARGE_PROBE", 0 if large else 1e12)
    xs, y, c, mask, gram = _probe_problem()
    eig = torch.linalg.eigh(gram)
    kw = dict(l2=1e-2, tol=1e-6, max_iter=500)
    W_c, b_c, n_cold = fit_logistic(xs, y, c, mask, gram=gram, **kw)
    W_e, b_e, n_eig = fit_logistic(xs, y, c, mask, eig=eig, **kw)
    assert W_e.shape == W_c.shape == (xs.shape[1], 5, c) and b_e.shape == (5, c)
    torch.testing.assert_close(W_e, W_c, rtol=0, atol=2e-3)
    torch.testing.assert_close(b_e, b_c, rtol=0, atol=2e-3)
    _, _, n_again = fit_logistic(xs, y, c, mask, eig=eig, init=(W_e, b_e), **kw)
    assert n_again <= n_eig // 3, (n_again, n_eig)
    # a neighbouring "layer": the same features, slightly perturbed
    g = torch.Generator().manual_seed(0)
    xs2, _, gram2 = standardise(xs + 0.15 * torch.randn(xs.shape, generator=g), gram=True)
    eig2 = torch.linalg.eigh(gram2)
    W_cold, b_cold, n_cold2 = fit_logistic(xs2, y, c, mask, eig=eig2, **kw)
    W_warm, b_warm, n_warm2 = fit_logistic(xs2, y, c, mask, eig=eig2, init=(W_e, b_e), **kw)
    assert n_warm2 < n_cold2
    torch.testing.assert_close(W_warm, W_cold, rtol=0, atol=2e-3)
    torch.testing.assert_close(b_warm, b_cold, rtol=0, atol=2e-3)


def test_scorer_warm_starts_from_the_layers_probed_before():
    import torch

    from layerfuse.scoring.kernels import Scorer

    xs, y, c, _, gram = _probe_problem()
    settings = {"probe_l2": 1e-2, "probe_max_iter": 100, "probe_tol": 1e-4, "knn_sample": 0}
    sc = Scorer(y.numpy(), c, 5, 0, settings)
    assert sc.warm_start("layer", [0]) is None and sc.warm_start("window", [0, 1]) is None
    sc.probe(xs, gram, block=("layer", [0]))
    sc.probe(2 * xs, gram, block=("layer", [1]))
    (W0, b0), (W1, b1) = sc.solutions[0], sc.solutions[1]
    assert sc.warm_start("layer", [1])[0] is W0 and sc.warm_start("layer", [5]) is None
    Ww, bw = sc.warm_start("window", [0, 1])
    torch.testing.assert_close(Ww, (W0 + W1) / 2)
    torch.testing.assert_close(bw, (b0 + b1) / 2)
    Wk, bk = sc.warm_start("topk", [0, 1])
    assert Wk.shape == (2 * W0.shape[0], 5, c)
    torch.testing.assert_close(Wk[: W0.shape[0]], W0 / 2)
    sc.probe(xs, gram)  # no block: nothing kept
    assert sorted(sc.solutions) == [0, 1]


def test_memmap_input_and_label_values(tmp_path, data):
    X, y = data
    path = tmp_path / "X.npy"
    np.save(path, X)
    mm = np.load(path, mmap_mode="r")
    labels = np.array(["neg", "neu", "pos"])[y]
    prof = score_layers(mm, labels, scores=("probe", "centroid"), windows=0, topk=0,
                        progress=False)
    assert prof.classes == ["neg", "neu", "pos"]
    assert prof.best()["start"] == SIGNAL
    assert prof.window_rows() == [] and prof.agreement.keys() == {"centroid"}


def test_score_layers_rejects_bad_input(data):
    X, y = data
    with pytest.raises(LayerfuseError, match="shape"):
        score_layers(X[0], y, progress=False)
    with pytest.raises(LayerfuseError, match="one label per row"):
        score_layers(X, y[:-1], progress=False)
    with pytest.raises(LayerfuseError, match="single class"):
        score_layers(X, np.zeros(N, int), progress=False)
    with pytest.raises(LayerfuseError, match="choose from probe, centroid"):
        score_layers(X, y, scores=("probe", "svm"), progress=False)
    bad = X.astype(np.float32)
    bad[2, 7, 3] = np.nan
    with pytest.raises(LayerfuseError, match=r"X\[2\] has NaN/inf"):
        score_layers(bad, y, scores=("centroid",), windows=0, progress=False)
    with pytest.raises(LayerfuseError, match="probe_threads must be a whole number"):
        score_layers(X, y, probe_threads=0, progress=False)


# -------------------------------------------------------------------------------- test column


def _with_test_column(data, y_test):
    X, y = data
    X_test, _ = _synthetic(7, n=150)
    prof = score_layers(X, y, windows=3, progress=False)
    return eval_test_column(prof, X, y, X_test, y_test)


def test_selection_never_reads_test_labels(data):
    _, y_test = _synthetic(7, n=150)
    shuffled = np.random.default_rng(3).permutation(y_test)
    a = _with_test_column(data, y_test)
    b = _with_test_column(data, shuffled)
    acc_a = [r[ANALYSIS_COLUMN] for r in a.layer_rows()]
    acc_b = [r[ANALYSIS_COLUMN] for r in b.layer_rows()]
    assert acc_a[SIGNAL] > 0.8 and acc_b[SIGNAL] < 0.6  # the column did change
    for strategy in ("best", "top-k", "top-2", "window", "all", "auto"):
        sa, sb = select_layers(a, strategy), select_layers(b, strategy)
        assert sa.to_dict() == sb.to_dict(), strategy
    with pytest.raises(LayerfuseError, match="analysis only"):
        select_layers(a, "best", score=ANALYSIS_COLUMN)
    with pytest.raises(LayerfuseError, match="analysis only"):
        a.best(ANALYSIS_COLUMN)


@pytest.mark.parametrize("shortlist", [None, 2])
def test_test_column_scored_alongside_the_profile_equals_eval_test_column(data, shortlist):
    """TestColumn reuses score_layers' standardisation: the same profile and the same column."""
    from layerfuse.scoring.layer_scores import TestColumn

    X, y = data
    X_test, y_test = _synthetic(7, n=150)
    after = eval_test_column(score_layers(X, y, windows=3, window_shortlist=shortlist, progress=False),
                             X, y, X_test, y_test)
    column = TestColumn(X, y, X_test, y_test)
    along = column.write(score_layers(X, y, windows=3, window_shortlist=shortlist, progress=False,
                                      layer_hook=column))
    strip = lambda rows: json.dumps([{k: v for k, v in r.items() if not k.endswith("_s")}  # noqa: E731
                                     for r in rows], sort_keys=True)  # the top-k row's NaN depth compares as text
    assert strip(along.rows) == strip(after.rows)
    assert [r[ANALYSIS_COLUMN] for r in along.layer_rows()] == [r[ANALYSIS_COLUMN] for r in after.layer_rows()]
    with pytest.raises(LayerfuseError, match="lacks layers"):
        TestColumn(X, y, X_test, y_test).write(after)


def test_eval_test_column_checks_shapes(data, profile):
    X, y = data
    with pytest.raises(LayerfuseError, match="X_test"):
        eval_test_column(profile, X, y, X[:, :, :5], y)
    with pytest.raises(LayerfuseError, match="differs from the labels"):
        eval_test_column(profile, X, np.roll(y, 1), X, y)


# -------------------------------------------------------------------------------- selection


def test_strategies_return_sensible_layers(profile):
    best = select_layers(profile, "best")
    assert (best.layers, best.combine, best.strategy) == ([SIGNAL], "single", "best")
    assert best.score == pytest.approx(profile.layer_rows()[SIGNAL]["probe_acc"])
    top = select_layers(profile, "top-k", k=3)
    assert SIGNAL in top.layers and len(top.layers) == 3 and top.combine == "separate"
    assert top.layers == sorted(top.layers)
    assert select_layers(profile, "top-3").to_dict() == top.to_dict()
    assert select_layers(profile, "TOP_2").layers == select_layers(profile, "top-k", k=2).layers
    win = select_layers(profile, "window")
    assert SIGNAL in win.layers and win.combine == "average" and len(win.layers) >= 2
    every = select_layers(profile, "all")
    assert every.layers == list(range(N_LAYERS)) and every.combine == "mix"
    auto = select_layers(profile, "auto")
    # one informative layer among noise: averaging or adding noise layers cannot help
    assert auto.layers == [SIGNAL] and auto.combine == "single" and auto.strategy == "auto"
    assert "best" in auto.reason and "window" in auto.reason and "top-k" in auto.reason


def test_auto_prefers_a_window_when_averaging_helps():
    rng = np.random.default_rng(5)
    n = 400
    y = np.arange(n) % 2
    X = rng.standard_normal((N_LAYERS, n, D)).astype(np.float32)
    direction = rng.standard_normal(D).astype(np.float32)
    direction *= 0.9 / np.linalg.norm(direction)
    for layer in (3, 4, 5):  # the same signal, independent noise: averaging cancels noise
        X[layer] += np.outer(2 * y - 1, direction)
    prof = score_layers(X, y, windows=3, topk=0, progress=False)
    auto = select_layers(prof, "auto")
    assert auto.combine == "average" and set(auto.layers) >= {4} and len(auto.layers) >= 2
    assert auto.score > prof.best()["probe_acc"]
    # with the training array, auto can also score top-k without a stored row
    auto2 = select_layers(prof, "auto", k=3, X=X, y=y)
    assert "top-k" in auto2.reason and auto2.combine in ("average", "separate")
    assert "top-3 not scored" in select_layers(prof, "auto", k=3).reason
    with pytest.raises(LayerfuseError, match="training labels"):
        select_layers(prof, "auto", k=3, X=X, y=1 - y)


def test_bad_selection_arguments_are_clear(profile):
    with pytest.raises(LayerfuseError, match=r"choose from best, top-k, window, all, auto"):
        select_layers(profile, "middle")
    with pytest.raises(LayerfuseError, match=r"k must be an integer from 1 to 8"):
        select_layers(profile, "top-k", k=0)
    with pytest.raises(LayerfuseError, match=r"k must be an integer from 1 to 8"):
        select_layers(profile, "top-k", k=N_LAYERS + 1)
    with pytest.raises(LayerfuseError, match=r"from 1 to 8"):
        select_layers(profile, "top-9")
    with pytest.raises(LayerfuseError, match="k must be an integer"):
        select_layers(profile, "best", k="3")
    with pytest.raises(LayerfuseError, match="no layer rows"):
        select_layers(LayerProfile(rows=[]), "best")
    with pytest.raises(LayerfuseError, match="LayerProfile"):
        select_layers({"rows": []}, "best")
    no_win = LayerProfile(rows=profile.layer_rows(), n_layers=profile.n_layers)
    with pytest.raises(LayerfuseError, match="windows >= 2"):
        select_layers(no_win, "window")
    with pytest.raises(LayerfuseError, match="no 'accuracy' column"):
        select_layers(profile, "best", score="accuracy")
    assert len(select_layers(profile, "top-3", k=2).layers) == 3  # the name wins
    # the default k adapts to small models; an explicit k is always checked
    two = LayerProfile(rows=profile.layer_rows()[:2], n_layers=1)
    assert select_layers(two, "best").layers in ([0], [1])
    assert len(select_layers(two, "top-k").layers) == 2


def test_layer_selection_json_round_trip(profile):
    for strategy in ("best", "top-3", "window", "all", "auto"):
        sel = select_layers(profile, strategy)
        back = LayerSelection.from_dict(json.loads(json.dumps(sel.to_dict())))
        assert back == sel
    with pytest.raises(LayerfuseError, match="combine"):
        LayerSelection.from_dict({"strategy": "best", "layers": [1], "combine": "sum"})
    with pytest.raises(LayerfuseError, match="missing layers"):
        LayerSelection.from_dict({"strategy": "best", "combine": "single"})


def test_profile_serialisation(tmp_path, profile):
    back = LayerProfile.from_json(profile.to_json(tmp_path / "p.json"))
    assert back.to_dict() == profile.to_dict()
    assert select_layers(back, "auto") == select_layers(profile, "auto")
    text = profile.to_csv(tmp_path / "p.csv").read_text().splitlines()
    assert text[0].startswith("kind,start,end,layers,depth,probe_acc")
    assert len(text) == 1 + len(profile.rows)
    rows = profile.to_rows()
    rows[0]["layers"].append(99)
    assert profile.rows[0]["layers"] == [0]  # to_rows returns copies
    with pytest.raises(LayerfuseError, match="no such profile"):
        LayerProfile.from_json(tmp_path / "missing.json")


# -------------------------------------------------------------------------------- report


def test_plots_and_tables(tmp_path, data, profile):
    from layerfuse import report

    X, y = data
    X_test, y_test = _synthetic(7, n=150)
    with_test = eval_test_column(
        LayerProfile.from_dict(profile.to_dict()), X, y, X_test, y_test)
    other = LayerProfile.from_dict({**profile.to_dict(), "name": "other"})
    paths = [
        report.plot_layer_profile({"synthetic": with_test, "other": other}, tmp_path / "a.png"),
        report.plot_layer_profile(profile, tmp_path / "b.png", score="logme"),
        report.plot_windows(profile, tmp_path / "c.png"),
        report.plot_score_agreement(profile, tmp_path / "d.png"),
    ]
    for p in paths:
        data_bytes = p.read_bytes()
        assert data_bytes[:8] == b"\x89PNG\r\n\x1a\n" and len(data_bytes) > 10_000
    with pytest.raises(LayerfuseError, match="PNG"):
        report.plot_windows(profile, tmp_path / "c.jpg")
    rows = profile.to_rows()
    for ext in ("csv", "json", "md"):
        out = report.write_table(rows, tmp_path / f"t.{ext}")
        assert out.stat().st_size > 100
    md = (tmp_path / "t.md").read_text().splitlines()
    assert md[0].startswith("| kind | start | end | layers |") and len(md) == 2 + len(rows)
    assert json.loads((tmp_path / "t.json").read_text())[0]["layers"] == [0]
    with pytest.raises(LayerfuseError, match="use .csv, .json or .md"):
        report.write_table(rows, tmp_path / "t.xlsx")
