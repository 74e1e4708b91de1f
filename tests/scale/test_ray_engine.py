"""engine="ray" on a Ray instance started on this machine (2 CPUs, once for the module).

Local and Ray runs must give the same cache entry (key, order, arrays) and the same grid rows
and checkpoints; a worker killed mid-job must not stop the job; a driver interrupted mid-job must
leave chunks that the next run resumes from.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from conftest import WORDS, build_tiny_model

ray = pytest.importorskip("ray", reason='the Ray engine needs pip install "layerfuse[ray]" (make test installs it)')

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture(scope="module")
def ray_local():
    """One small Ray instance for the module; its workers must import this checkout's layerfuse."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([SRC, *filter(None, [old])])  # inherited by the workers
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old

    @ray.remote(num_cpus=0)
    def where():
        import layerfuse

        return layerfuse.__file__

    import layerfuse

    assert ray.get(where.remote()) == layerfuse.__file__
    yield ray
    ray.shutdown()


def texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 25)))) for _ in range(n)]


def dataset(n_train: int, n_test: int):
    from layerfuse.data.dataset import Dataset, Split

    rng = np.random.default_rng(7)
    tr, te = texts(n_train, 1), texts(n_test, 2)
    return Dataset("toy", ["neg", "pos"], {"train": Split(tr, rng.integers(0, 2, n_train)),
                                           "test": Split(te, rng.integers(0, 2, n_test))}, "random words")


def runner(model, workers=1, **kw):
    from layerfuse.scale.engine import RayOptions
    from layerfuse.scale.ray_extract import RayExtraction

    return RayExtraction(model, dtype="float32", device="cpu", options=RayOptions(num_workers=workers), **kw)


def run_texts(model, xs, cache, run=None, **kw):
    from layerfuse.embed.extract import extract_texts

    return extract_texts(model, xs, text_fingerprint="toy", poolings=("mean", "last"), dtype="float32",
                         cache_dir=cache, chunk_texts=8, batch_tokens=24, progress=False,
                         loader=None if run is None else run.backbone, runner=run, **kw)


def assert_same(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for p in a:
        assert a[p].shape == b[p].shape and a[p].dtype == b[p].dtype
        # float16 storage: the same computation in another process may move the last float32 bit.
        np.testing.assert_allclose(np.asarray(a[p], np.float32), np.asarray(b[p], np.float32), rtol=0, atol=2e-3)


def test_extract_on_ray_makes_the_local_cache_entry(ray_local, tiny_model, tmp_path, capsys):
    """`layerfuse extract --engine ray` writes the entry `extract()` writes locally."""
    from layerfuse.cli.main import main
    from layerfuse.embed.extract import extract

    ds = dataset(600, 40)  # train: two chunks of the default 512 texts
    files = []
    for split in ("train", "test"):
        f = tmp_path / f"{split}.csv"
        sp = ds.splits[split]
        f.write_text("text,label\n" + "\n".join(f"{t},{ds.classes[y]}" for t, y in zip(sp.texts, sp.labels)) + "\n")
        files += [f"--{split}", str(f)]
    code = main(["extract", "--models", tiny_model, *files, "--dtype", "float32", "--device", "cpu",
                 "--cache-dir", str(tmp_path / "b"), "--engine", "ray", "--num-workers", "2", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    # Two actors started; the first one ready may do every chunk of so small a job.
    st = summary["engine"]
    assert st["engine"] == "ray" and st["workers"] == 2 and st["workers_lost"] == 0 and st["worker_pids"]
    assert not any(s["from_cache"] for s in summary["splits"].values())
    from layerfuse.data.loading import load_dataset

    same = load_dataset(train=files[1], test=files[3])  # the texts as the CLI read them
    local = extract(tiny_model, data=same, dtype="float32", device="cpu", cache_dir=tmp_path / "a", progress=False)
    assert {s: v["cache_key"] for s, v in summary["splits"].items()} == local.keys
    on_ray = extract(tiny_model, data=same, dtype="float32", device="cpu", cache_dir=tmp_path / "b", progress=False)
    # The local engine reads the entry the Ray run wrote as its own, without loading the model.
    assert on_ray.stats["cache_hits"] == 2 and on_ray.stats["load_seconds"] == 0.0
    for split in ("train", "test"):
        assert_same({p: local.array(split, p) for p in local.poolings}, {p: on_ray.array(split, p) for p in on_ray.poolings})
        ea, eb = (tmp_path / c / "embeddings" / local.keys[split] for c in ("a", "b"))
        assert json.loads((ea / "meta.json").read_text()) == json.loads((eb / "meta.json").read_text())
        assert np.array_equal(np.load(ea / "order.npy"), np.load(eb / "order.npy"))


def test_a_killed_worker_loses_no_chunk(ray_local, tiny_model, tmp_path):
    xs = texts(160, 3)  # 20 chunks of 8
    ref, _ = run_texts(tiny_model, xs, tmp_path / "local")
    killed = []

    def kill_once(index, info):
        if not killed:  # the only worker has its next chunk queued: kill its process
            os.kill(info["pid"], signal.SIGKILL)
            killed.append(info["pid"])

    run = runner(tiny_model, on_chunk=kill_once)
    try:
        got, st = run_texts(tiny_model, xs, tmp_path / "ray", run)
    finally:
        run.close()
    assert killed and run.stats["workers_lost"] >= 1 and run.stats["retried_chunks"] >= 1
    assert killed[0] in run.stats["worker_pids"] and run.stats["workers_started"] == 2  # one replacement
    assert len(run.stats["worker_pids"]) == 2  # ...which did the rest
    assert st["key"] == _["key"]
    assert_same(ref, got)


def test_interrupted_driver_resumes_from_its_chunks(ray_local, tiny_model, tmp_path):
    from layerfuse.cache.entries import entry

    xs = texts(160, 4)
    ref, ref_st = run_texts(tiny_model, xs, tmp_path / "local")

    def interrupt_after_three(index, info, seen=[]):
        seen.append(index)
        if len(seen) == 3:
            raise KeyboardInterrupt

    run = runner(tiny_model, on_chunk=interrupt_after_three)
    with pytest.raises(KeyboardInterrupt):
        try:
            run_texts(tiny_model, xs, tmp_path / "ray", run)
        finally:
            run.close()
    e = entry(tmp_path / "ray", ref_st["key"])
    written = [i for i in range(20) if e.chunk_info("mean", i) and e.chunk_info("last", i)]
    assert len(written) >= 3 and not e.has_final("mean")
    # Half on Ray: the next Ray run computes only the missing chunks...
    run = runner(tiny_model)
    try:
        got, st = run_texts(tiny_model, xs, tmp_path / "ray", run)
    finally:
        run.close()
    assert st["resumed_chunks"] == len(written) and st["computed_texts"] == len(xs) - 8 * len(written)
    assert_same(ref, got)


def test_grid_rows_on_ray_match_local_workers(ray_local, tiny_model, tmp_path, monkeypatch):
    from layerfuse.model import saving
    from layerfuse.run.grid import run_grid
    from layerfuse.run.prepare import prepare_models

    other = build_tiny_model(tmp_path / "other", layers=2, hidden=16, seed=3)
    ds = dataset(80, 30)
    preps = prepare_models(ds, [tiny_model, str(other)], folds=2, windows=1, cache_dir=tmp_path / "c",
                           extraction={"dtype": "float32", "device": "cpu"}, progress=False, log=lambda *a: None)
    kw = dict(heads=["mlp"], seeds=[0, 1], proj_dim=8, max_epochs=3, patience=2, progress=False, log=lambda *a: None)
    local = run_grid(ds, preps, ["concat", "sum"], checkpoint_dir=tmp_path / "grid-local", workers=2, **kw)
    # The driver is interrupted right after it saved the first row that came back...
    real_save = saving.save_seeds

    def save_then_interrupt(*a, **k):
        real_save(*a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(saving, "save_seeds", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_grid(ds, preps, ["concat", "sum"], checkpoint_dir=tmp_path / "grid-ray", engine="ray",
                 engine_options={"cpus_per_worker": 1}, **kw)
    monkeypatch.setattr(saving, "save_seeds", real_save)
    assert len(list((tmp_path / "grid-ray").iterdir())) == 1
    # ...and the next Ray run trains only the other three.
    on_ray = run_grid(ds, preps, ["concat", "sum"], checkpoint_dir=tmp_path / "grid-ray", engine="ray",
                      engine_options={"cpus_per_worker": 1}, **kw)
    assert len(local.rows) == 4 and on_ray.resumed == 1
    strip = [{k: v for k, v in r.items() if k != "train_seconds"} for r in local.rows]
    assert strip == [{k: v for k, v in r.items() if k != "train_seconds"} for r in on_ray.rows]
    assert sorted(p.name for p in (tmp_path / "grid-local").iterdir()) == \
        sorted(p.name for p in (tmp_path / "grid-ray").iterdir())
    # A Ray run over the local run's checkpoints trains nothing.
    again = run_grid(ds, preps, ["concat", "sum"], checkpoint_dir=tmp_path / "grid-local", engine="ray", **kw)
    assert again.resumed == 4


def _running_row_pids() -> list[int]:
    """Processes whose title Ray set to the row task while it runs ("ray::_fit_row")."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if cmd.startswith(b"ray::_fit_row"):
                pids.append(int(d.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds Ray's workers through /proc")
def test_a_grid_row_whose_worker_is_killed_is_retried(ray_local, tiny_model, tmp_path):
    import threading
    import time

    from layerfuse.run.grid import run_grid
    from layerfuse.run.prepare import prepare_models

    ds = dataset(80, 30)
    preps = prepare_models(ds, [tiny_model], folds=2, windows=1, cache_dir=tmp_path / "c",
                           extraction={"dtype": "float32", "device": "cpu"}, progress=False, log=lambda *a: None)
    kw = dict(heads=["mlp"], seeds=[0, 1], proj_dim=8, max_epochs=40, patience=40, progress=False,
              log=lambda *a: None)
    local = run_grid(ds, preps, ["concat"], checkpoint_dir=tmp_path / "grid-local", **kw)
    killed, box = [], {}

    def grid():
        box["result"] = run_grid(ds, preps, ["concat"], checkpoint_dir=tmp_path / "grid-ray", engine="ray",
                                 engine_options={"cpus_per_worker": 1}, **kw)

    t = threading.Thread(target=grid)
    t.start()
    deadline = time.monotonic() + 120
    while t.is_alive() and not killed and time.monotonic() < deadline:
        for pid in _running_row_pids():  # the row is running in that worker: kill the process
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            break
        time.sleep(0.02)
    t.join(300)
    assert killed, "no running row was seen to kill"
    assert not t.is_alive() and "result" in box  # Ray ran the row again in a fresh worker
    strip = [{k: v for k, v in r.items() if k != "train_seconds"} for r in local.rows]
    assert strip == [{k: v for k, v in r.items() if k != "train_seconds"} for r in box["result"].rows]


@pytest.mark.parametrize("kw, words", [
    ({"device": "cuda"}, "the Ray cluster has no GPUs"),
    ({"device": "cpu", "gpus_per_worker": 1}, "asks for GPUs, but device is 'cpu'"),
    ({"device": "cuda:1"}, "Ray assigns each worker its GPU"),
])
def test_device_requests_the_cluster_cannot_meet_are_one_clear_error(ray_local, tiny_model, tmp_path, kw, words):
    from layerfuse.embed.extract import extract
    from layerfuse.errors import LayerfuseError

    with pytest.raises(LayerfuseError, match=words):
        extract(tiny_model, data=dataset(10, 4), dtype="float32", cache_dir=tmp_path, progress=False, engine="ray", **kw)
