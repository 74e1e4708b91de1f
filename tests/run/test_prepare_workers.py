"""A model's poolings profiled in worker processes give the same profiles, and the same choice, as
one after another in this process (issue 15: profiles use both cores)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import make_texts

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _ds():
    from layerfuse.data.dataset import Dataset, Split

    X, y = make_texts(48, seed=3)
    Xt, yt = make_texts(16, seed=4)
    classes = sorted(set(y))
    ids = lambda labels: np.array([classes.index(v) for v in labels])  # noqa: E731
    return Dataset("toy", classes, {"train": Split(X, ids(y)), "test": Split(Xt, ids(yt))}, "test")


def test_poolings_profiled_in_workers_match_in_process(tiny_model, cache_dir, tmp_path):
    from layerfuse.run.prepare import prepare_models

    ds = _ds()
    kw = dict(poolings=("mean", "last"), folds=3, windows=3, eval_test=True, progress=False, log=lambda *_: None)
    here = prepare_models(ds, [tiny_model], profile_workers=1, **kw)[0]
    logs = []
    there = prepare_models(ds, [tiny_model], profile_workers=2, profile_dir=tmp_path / "profiles",
                           **{**kw, "log": logs.append})[0]
    assert sum("profile scored" in m for m in logs) == 2
    for p in ("mean", "last"):
        a, b = here.profiles[p], there.profiles[p]
        strip = lambda rows: json.dumps([{k: v for k, v in r.items() if not k.endswith("_s")}  # noqa: E731
                                         for r in rows], sort_keys=True)  # NaN depth compares equal as text
        assert strip(a.rows) == strip(b.rows) and a.settings == b.settings
    assert (here.pooling, here.spec) == (there.pooling, there.spec)
    # each profile was saved as it arrived, and a rerun reads them back instead of scoring
    assert len(list((tmp_path / "profiles").glob("*.json"))) == 2
    logs.clear()
    prepare_models(ds, [tiny_model], profile_workers=2, profile_dir=tmp_path / "profiles", **{**kw, "log": logs.append})
    assert sum("read back" in m for m in logs) == 2 and not any("profile scored" in m for m in logs)


def test_cached_arrays_travel_to_workers_as_their_file(tmp_path):
    import pickle

    from layerfuse.run.workers import MappedArray, portable

    a = np.arange(24, dtype=np.float16).reshape(2, 3, 4)
    np.save(tmp_path / "final.npy", a)
    mapped = np.load(tmp_path / "final.npy", mmap_mode="r")
    sent = portable(mapped)
    assert isinstance(sent, MappedArray) and len(pickle.dumps(sent)) < 300
    assert np.array_equal(pickle.loads(pickle.dumps(sent)).open(), a)
    part = mapped[:, 1:]  # a slice is another array: pickled as it is
    assert portable(part) is part and portable(a) is a


def test_run_extracts_only_the_splits_it_reads(tiny_model, cache_dir):
    from layerfuse.data.dataset import Dataset, Split
    from layerfuse.run.prepare import prepare_models

    ds = _ds()
    Xv, yv = make_texts(8, seed=5)
    ds = Dataset("toy", ds.classes, {"train": ds.splits["train"], "validation": Split(Xv, np.zeros(8, dtype=int)),
                                     "test": ds.splits["test"]}, "test")
    (prep,) = prepare_models(ds, [tiny_model], poolings=("mean",), folds=3, windows=2, progress=False,
                             log=lambda *_: None)
    assert prep.emb.splits == ["train", "test"]


def test_a_profile_that_runs_alone_gives_the_probe_every_thread(tiny_model, cache_dir, monkeypatch):
    # One pooling (or profiles one after another): the many-class probe's products may use every
    # torch thread; side by side in workers each profile gets its share (here: 2 threads, 1 pooling).
    import layerfuse.run.workers as workers
    from layerfuse.run.prepare import prepare_models
    from layerfuse.scoring.threads import torch_threads

    seen = []
    real = workers.profile_job
    monkeypatch.setattr(workers, "profile_job", lambda **kw: seen.append(kw["score_kw"]) or real(**kw))
    with torch_threads(2):
        prepare_models(_ds(), [tiny_model], poolings=("mean",), folds=3, windows=2, progress=False,
                       log=lambda *_: None)
    assert [kw["probe_threads"] for kw in seen] == [2]
