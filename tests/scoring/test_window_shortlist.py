"""Window shortlisting: probe only the windows over the best-probing layers."""

from __future__ import annotations

import numpy as np
import pytest

from layerfuse.errors import LayerfuseError
from layerfuse.scoring.layer_scores import score_layers


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n, d, layers = 80, 6, 7
    y = np.arange(n) % 2
    signal = np.array([0.1, 0.3, 0.8, 1.2, 0.9, 0.4, 0.2])
    X = rng.standard_normal((layers, n, d)).astype(np.float32)
    X[:, :, 0] += signal[:, None] * (2 * y - 1)
    return X, y


def _windows(profile):
    return {(r["start"], r["end"]): r for r in profile.rows if r["kind"] == "window"}


def test_shortlist_scores_match_the_exhaustive_pass(data):
    X, y = data
    kw = dict(folds=3, windows=4, progress=False, scores="probe,centroid", knn_sample=0)
    full = score_layers(X, y, **kw)
    short = score_layers(X, y, window_shortlist=5, **kw)
    fw, sw = _windows(full), _windows(short)
    assert len(fw) == 6 + 5 + 4 and len(sw) == 5
    acc = {r["start"]: r["probe_acc"] for r in full.rows if r["kind"] == "layer"}
    mean_acc = {k: np.mean([acc[i] for i in range(k[0], k[1] + 1)]) for k in fw}
    # the kept windows are the top 5 by mean member probe accuracy
    assert min(mean_acc[k] for k in sw) >= max(mean_acc[k] for k in fw if k not in sw)
    for k, r in sw.items():
        for col in ("probe_acc", "probe_f1", "centroid_acc"):
            assert r[col] == pytest.approx(fw[k][col], abs=1e-9), (k, col)
    layers = lambda p: [r for r in p.rows if r["kind"] != "window"]  # noqa: E731
    assert [r["probe_acc"] for r in layers(short)] == [r["probe_acc"] for r in layers(full)]
    assert short.settings["window_shortlist"] == 5 and "window_shortlist" not in full.settings


def test_a_shortlist_as_long_as_all_windows_is_the_exhaustive_profile(data):
    X, y = data
    kw = dict(folds=3, windows=3, progress=False, scores="probe", topk=0)
    full, short = score_layers(X, y, **kw), score_layers(X, y, window_shortlist=100, **kw)
    assert sorted(_windows(full)) == sorted(_windows(short))
    for k, r in _windows(short).items():
        assert r["probe_acc"] == pytest.approx(_windows(full)[k]["probe_acc"], abs=1e-9)
    # It is recorded as the exhaustive profile (so both read the same checkpoint back), and one
    # window fewer than all is a real shortlist.
    assert short.rows == full.rows and "window_shortlist" not in short.settings
    from layerfuse.scoring.layer_scores import effective_shortlist

    assert effective_shortlist(100, 7, 3) is None and effective_shortlist(11, 7, 3) is None  # 6 + 5 windows
    assert effective_shortlist(10, 7, 3) == 10 and effective_shortlist(None, 7, 3) is None
    assert effective_shortlist(12, 7, 4) == 12 and effective_shortlist(12, 7, 1) is None  # no windows at all


def test_shortlist_needs_the_probe(data):
    X, y = data
    with pytest.raises(LayerfuseError, match="window_shortlist"):
        score_layers(X, y, folds=3, progress=False, scores="centroid", window_shortlist=3)
