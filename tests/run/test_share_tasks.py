"""share_tasks: tasks run in this process (a thread) and in spawned workers side by side."""

from __future__ import annotations

import operator
import os
from contextlib import contextmanager

import pytest

from layerfuse.run.workers import share_tasks


def test_every_task_runs_once_here_or_in_a_worker():
    results, entered = {}, []

    @contextmanager
    def here():
        entered.append("in")
        yield
        entered.append("out")

    share_tasks(pow, [(2, k) for k in range(6)], processes=2, here=here, on_result=results.__setitem__)
    assert results == {k: 2 ** k for k in range(6)} and entered == ["in", "out"]
    # the first task starts here at once, the second goes to the worker as it is started
    pids = {}
    share_tasks(os.getpid, [()] * 4, processes=2, on_result=pids.__setitem__)
    assert pids[0] == os.getpid() and pids[1] != os.getpid() and len(pids) == 4


def test_one_place_runs_everything_here_without_a_process():
    results = {}
    share_tasks(os.getpid, [()] * 3, processes=1, on_result=results.__setitem__)
    assert set(results.values()) == {os.getpid()}


def test_a_failing_task_raises_in_the_caller():
    with pytest.raises(ZeroDivisionError):
        share_tasks(operator.truediv, [(1, 1), (1, 0), (2, 1)], processes=2, on_result=lambda i, r: None)
    with pytest.raises(ZeroDivisionError):  # here, as the first task
        share_tasks(operator.truediv, [(1, 0), (2, 1)], processes=2, on_result=lambda i, r: None)


def _remember(value):
    os.environ["LAYERFUSE_TEST_SETUP"] = str(value)


def _where():
    return os.getpid(), os.environ.get("LAYERFUSE_TEST_SETUP")


def test_kept_workers_serve_several_calls_and_end_with_the_block():
    from layerfuse.run.workers import keep_workers

    calls = []
    with keep_workers(start=1):
        for value in ("a", "b"):
            seen = {}
            share_tasks(_where, [()] * 4, processes=2, initializer=_remember, initargs=(value,),
                        on_result=seen.__setitem__)
            calls.append(seen)
    remote = [{(pid, v) for pid, v in seen.values() if pid != os.getpid()} for seen in calls]
    # one worker, the same in both calls, prepared by each call's initializer before its tasks
    assert len(remote[0]) == len(remote[1]) == 1
    (pid_a, value_a), (pid_b, value_b) = remote[0].pop(), remote[1].pop()
    assert pid_a == pid_b and (value_a, value_b) == ("a", "b")
    with pytest.raises(ProcessLookupError):  # ended (and reaped) with the block
        os.kill(pid_a, 0)


def test_a_failure_in_a_kept_worker_ends_it_and_the_next_call_starts_another():
    from layerfuse.run.workers import keep_workers

    with keep_workers(start=1):
        before = {}
        share_tasks(os.getpid, [()] * 2, processes=2, on_result=before.__setitem__)
        with pytest.raises(ZeroDivisionError) as err:  # task 1 is the worker's
            share_tasks(operator.truediv, [(1, 1), (1, 0)], processes=2, on_result=lambda i, r: None)
        assert "in a layerfuse worker process" in "".join(getattr(err.value, "__notes__", []))
        after = {}
        share_tasks(os.getpid, [()] * 2, processes=2, on_result=after.__setitem__)
    assert before[1] != os.getpid() and after[1] != os.getpid() and after[1] != before[1]


def test_planned_workers_follow_the_profile_and_grid_rules(monkeypatch):
    from layerfuse.run.workers import planned_workers

    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    default = [(30, 576), (6, 384)]  # SmolLM2-135M and MiniLM-L6 on SST-2's 6,920 training texts
    assert planned_workers(6920, default, 2, "auto") == 3  # the grid takes every core
    assert planned_workers(6920, default, 2, 1) == 1  # profiles of two poolings side by side
    assert planned_workers(6920, default, 1, 1) == 0
    assert planned_workers(6920, default, 2, "auto", "ray") == 1  # Ray trains the grid elsewhere
    assert planned_workers(100, default, 2, "auto") == 0  # too small to repay a process
    assert planned_workers(6920, [], 2, 3) == 2
    # MiniLM's 18.6M values: under the threshold for starting a worker, over the one for a kept worker
    assert planned_workers(6920, [(6, 384)], 2, 1) == 1


def test_small_profiles_take_a_kept_worker(monkeypatch):
    import numpy as np

    from layerfuse.run import prepare, workers

    class Emb:
        def __init__(self, shape):
            self.shape = shape

        def array(self, split, pooling):
            return np.broadcast_to(np.float16(0), self.shape)

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    minilm, tiny = Emb((7, 6920, 384)), Emb((3, 48, 16))
    todo = {"mean": None, "last": None}
    assert prepare._profile_workers(None, minilm, todo) == 1  # a worker would have to start first
    monkeypatch.setattr(workers, "kept_workers", lambda: 1)
    assert prepare._profile_workers(None, minilm, todo) == 2
    assert prepare._profile_workers(None, tiny, todo) == 1
    assert prepare._profile_workers(None, minilm, {"mean": None}) == 1


def test_known_shape_reads_aliases_and_folders(tmp_path):
    import json

    from layerfuse.cli.stages import known_shape

    assert known_shape("smollm2-135m") == (30, 576)
    (tmp_path / "config.json").write_text(json.dumps({"num_hidden_layers": 4, "hidden_size": 64}))
    assert known_shape(str(tmp_path)) == (4, 64)
    assert known_shape(str(tmp_path / "missing")) is None
    assert known_shape("some-org/some-model") is None


@pytest.mark.parametrize("end", ["kill", "stop"])
def test_a_workers_pipe_is_closed_only_once_no_call_is_using_it(monkeypatch, end):
    # A call's thread that read the pipe's descriptor number just before the pipe was closed used
    # to write its task to whatever reused that number: once, the next worker's pipe (CI: a kept
    # worker answered another test's 2 / 1 with 2.0).
    import threading
    import time

    from layerfuse.errors import LayerfuseError
    from layerfuse.run import workers

    events, go_on = [], threading.Event()

    class Pipe:
        def send(self, message):
            events.append("send")
            go_on.wait(10)

        def recv(self):
            events.append("recv")
            raise EOFError

        def close(self):
            events.append("close")

    class Process:
        exitcode = -15

        def is_alive(self):
            return False

        def join(self, timeout=None):
            pass

    monkeypatch.setattr(workers._Worker, "_spawn", staticmethod(lambda: (Pipe(), Process())))
    w = workers._Worker()
    fut = w.call(None, int, ())
    while "send" not in events:
        time.sleep(0.01)
    ending = threading.Thread(target=getattr(w, end))
    ending.start()
    time.sleep(0.3)
    assert "close" not in events  # the call's thread is still inside send
    go_on.set()
    ending.join(10)
    assert events == ["send", "recv", "close"]
    with pytest.raises(LayerfuseError, match="ended unexpectedly"):
        fut.result(timeout=10)
