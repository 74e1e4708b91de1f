"""A local extraction shared between this process and spawned workers (``workers``).

The entry must be the one a one-process run writes (key, order, shapes, values to float
rounding), whatever process computed which unit; the units must cover every position once and
put each chunk back in order; bad counts get a clear error, from the API and the CLI.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import WORDS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 25)))) for _ in range(n)]


def run_texts(model, xs, cache, runner=None, **kw):
    from layerfuse.embed.extract import extract_texts

    return extract_texts(model, xs, text_fingerprint="toy", poolings=("mean", "last"), dtype="float32",
                         cache_dir=cache, chunk_texts=16, batch_tokens=48, progress=False,
                         loader=None if runner is None else runner.backbone, runner=runner, **kw)


def test_two_processes_write_the_one_process_entry(tiny_model, tmp_path):
    from layerfuse.cache import entries
    from layerfuse.scale.local_extract import ProcessExtraction

    xs = texts(90, 1)  # six chunks of 16 texts, cut into many units of a few batches
    one, st_one = run_texts(tiny_model, xs, tmp_path / "one")
    runner = ProcessExtraction(tiny_model, workers=2, dtype="float32", device="cpu", cache_dir=tmp_path / "two",
                               progress=False, log=lambda s: None)
    try:
        # So small a job is done before a worker is up unless it waits for one: start it first.
        runner.backbone()
        runner._start(1, 1)
        assert runner.ready.result(timeout=300) != os.getpid()
        two, st_two = run_texts(tiny_model, xs, tmp_path / "two", runner=runner)
        assert runner.stats["processes"] == 2 and len(runner.stats["worker_pids"]) == 1
        assert runner.stats["worker_pids"][0] != os.getpid()
        # A second split reuses the running worker: no new process.
        pid = runner.stats["worker_pids"][0]
        run_texts(tiny_model, texts(40, 2), tmp_path / "two", runner=runner)
        assert runner.stats["worker_pids"] == [pid]
    finally:
        runner.close()
    assert st_one["key"] == st_two["key"] and st_two["tokens"] == st_one["tokens"]
    for p in one:
        assert one[p].shape == two[p].shape and one[p].dtype == two[p].dtype
        # Batches are cut within units here, so rows are summed in another order: float rounding only.
        np.testing.assert_allclose(np.asarray(two[p], np.float32), np.asarray(one[p], np.float32), rtol=0, atol=2e-3)
    order_one = entries.CacheEntry(Path(st_one["cache_path"])).read_order()
    order_two = entries.CacheEntry(Path(st_two["cache_path"])).read_order()
    assert np.array_equal(order_one, order_two)


def test_units_cover_each_position_once_and_rebuild_chunks_in_order():
    from layerfuse.scale.local_extract import _Units

    rng = np.random.default_rng(0)
    lengths = list(rng.integers(1, 40, 100))
    order = np.argsort(-np.asarray(lengths), kind="stable")
    jobs = [(ci, order[ci * 30:(ci + 1) * 30]) for ci in (0, 2, 3)]  # chunk 1 already in the cache
    units = _Units(jobs, lengths, unit_tokens=100, processes=2)
    taken, rebuilt = [], {}
    while units:
        taken.append(units.take())
    assert sum(b - a for _, a, b in taken) == sum(len(p) for _, p in jobs)
    # Units shrink towards the end (no more than the tokens left over 2 x processes).
    sizes = [sum(lengths[j] for j in units.positions(ci)[a:b]) for ci, a, b in taken]
    assert max(sizes[-3:]) < max(sizes)
    # Put back out of order: each chunk comes back whole once its last unit is in, rows in order.
    for ci, a, b in reversed(taken):
        rows = units.positions(ci)[a:b]
        arrays = {"mean": np.asarray(rows, np.float32)[None, :, None].repeat(2, axis=2)}
        if ci == 3 and a == 0:
            arrays["mean"] = arrays["mean"].astype(np.float16)
        full = units.add((ci, a, b), arrays)
        if full is not None:
            rebuilt[ci] = full
    assert sorted(rebuilt) == [0, 2, 3]
    for ci, pos in jobs:
        np.testing.assert_array_equal(rebuilt[ci]["mean"][0, :, 0], pos)
        assert rebuilt[ci]["mean"].dtype == np.float32  # a float16 unit joins its float32 chunk exactly
    # The cuts depend on the lengths only.
    again = _Units(jobs, lengths, unit_tokens=100, processes=2)
    assert [again.take() for _ in taken] == taken and not again


def test_a_gpu_runs_one_process():
    from layerfuse.scale.local_extract import extraction_processes

    assert extraction_processes(3, device="cpu") == (3, "workers=3")
    assert extraction_processes(3, device="cuda")[0] == 1


def test_extract_workers_are_checked():
    from layerfuse.embed.extract import check_extract_workers
    from layerfuse.errors import LayerfuseError

    assert check_extract_workers(2) == 2
    for bad in (0, -1, 1.5, True, "two", "auto"):
        with pytest.raises(LayerfuseError, match="extraction workers must be"):
            check_extract_workers(bad)


def test_bad_extract_workers_from_the_cli_and_a_config(capsys):
    from layerfuse.cli.main import main
    from layerfuse.errors import LayerfuseError
    from layerfuse.run.config_file import merge_config

    with pytest.raises(SystemExit) as exc:
        main(["extract", "--models", "smollm2-135m", "--dataset", "sst2", "--extract-workers", "0"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--extract-workers" in err and "whole number >= 1" in err and "Traceback" not in err
    with pytest.raises(LayerfuseError, match="extraction.workers"):
        merge_config({"extraction": {"workers": 0}}, "my.yaml")
    with pytest.raises(LayerfuseError, match="extraction.workers"):
        merge_config({"extraction": {"workers": "auto"}}, "my.yaml")
    assert merge_config({"extraction": {"workers": 2}}, "my.yaml")["extraction"]["workers"] == 2
