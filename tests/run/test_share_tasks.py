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
