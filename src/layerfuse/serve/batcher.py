"""Micro-batching: texts from many concurrent requests, classified together by one worker thread.

Requests arrive on the event loop; each gets an :class:`asyncio.Future` and goes into a thread-safe
queue. One worker thread owns the model (so the backbones never run from two threads at once): it
takes the oldest request, keeps taking requests until the batch holds ``max_batch`` texts or
``max_wait_ms`` have passed since that first request (no wait when nothing else is queued and
the previous batch held one request: a lone client is not delayed), runs the whole batch through
one call of the predict function (which sorts the texts by length and runs each backbone once, up to its
deepest layer), and hands every request its own slice of the result, in order.

A request is never split: one with more texts than room is left for the next batch (a request
larger than ``max_batch`` is a batch of its own). When a batch of several requests fails, each of
its requests is retried alone, so one bad request does not fail its neighbours; a request that
still fails gets the exception.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from layerfuse.config import (
    DEFAULT_SERVE_MAX_BATCH,
    DEFAULT_SERVE_MAX_QUEUE,
    DEFAULT_SERVE_MAX_WAIT_MS,
    DEFAULT_SERVE_SHUTDOWN_TIMEOUT,
)

__all__ = ["Busy", "BatchStats", "MicroBatcher", "in_short_lived_thread"]

_STOP = object()


def in_short_lived_thread(fn, *args):
    """``fn(*args)`` run in a short-lived thread; its result returned, its exception raised here.

    Why: torch's CPU kernels run on an OpenMP thread team per calling thread, and a team stays
    alive as long as its thread. Loading the classifier (torch work) in the main thread would leave
    a team there beside the one the batcher's worker thread creates; with more OpenMP threads than
    cores, libgomp stops spinning between parallel regions, and every forward pass slows down
    (measured: 32 texts in one request 0.80 -> 0.47-0.58 s, 32 one-text requests in turn 2.8-3.4
    -> 1.8-1.9 s; docs/serve.md). A thread that ends takes its team with it.
    :func:`~layerfuse.serve.app.create_app` loads a classifier given as a folder this way."""
    box: dict = {}

    def run():
        try:
            box["result"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - raised again in the calling thread
            box["error"] = e

    t = threading.Thread(target=run, name="layerfuse-load")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


class Busy(Exception):
    """The queue already holds as many texts as allowed: the caller should retry later."""


@dataclass
class _Request:
    texts: list[str]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    """What one batch did, passed to the ``on_batch`` callback (for metrics)."""

    requests: int
    texts: int
    seconds: float
    failed: bool


def _resolve(req: _Request, result=None, error: BaseException | None = None) -> None:
    def settle():
        if req.future.done():  # the client went away and the request was cancelled
            return
        if error is not None:
            req.future.set_exception(error)
        else:
            req.future.set_result(result)

    try:
        req.loop.call_soon_threadsafe(settle)
    except RuntimeError:  # pragma: no cover - the event loop is already closed at shutdown
        pass


class MicroBatcher:
    """Group concurrent requests into batches for one worker thread.

    Parameters
    ----------
    predict : callable
        ``predict(texts) -> array`` with one row per text, in order. Runs only in the worker thread.
    max_batch : int
        Most texts in one batch (a single larger request still runs, alone).
    max_wait_ms : float
        Longest a request waits for others to join its batch once the worker is free; only when
        other requests are queued or the previous batch held several (a lone client never waits).
    max_queue : int
        Most texts waiting at once; :meth:`submit` raises :class:`Busy` beyond it.
    on_batch : callable, optional
        Called in the worker thread with a :class:`BatchStats` after each batch.
    startup : callable, optional
        Run first in the worker thread (loading the model); :attr:`ready` is set after it returns.
        If it raises, the exception is kept in :attr:`startup_error` and the worker stops.
    """

    def __init__(self, predict: Callable[[Sequence[str]], np.ndarray], *, max_batch: int = DEFAULT_SERVE_MAX_BATCH,
                 max_wait_ms: float = DEFAULT_SERVE_MAX_WAIT_MS, max_queue: int = DEFAULT_SERVE_MAX_QUEUE,
                 on_batch: Callable[[BatchStats], None] | None = None,
                 startup: Callable[[], None] | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be 0 or more, got {max_wait_ms}")
        self.predict = predict
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait_ms) / 1000.0
        self.max_queue = int(max_queue)
        self.on_batch = on_batch
        self.startup = startup
        self.ready = threading.Event()
        self.startup_error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue()
        self._pending = 0  # texts queued and not yet taken into a batch
        self._lock = threading.Lock()
        self._carry: _Request | None = None
        self._last_requests = 0  # requests in the previous batch
        self._thread = threading.Thread(target=self._run, name="layerfuse-batcher", daemon=True)
        self._stopping = False

    # -- event-loop side ------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker thread (it runs ``startup`` first)."""
        self._thread.start()

    @property
    def queued_texts(self) -> int:
        """Texts waiting for a batch."""
        return self._pending

    async def submit(self, texts: list[str]) -> np.ndarray:
        """Classify ``texts`` in whatever batch they land in; returns their rows, in order.

        Raises
        ------
        Busy
            The queue is full.
        RuntimeError
            The batcher is stopping.
        """
        if self._stopping:
            raise RuntimeError("the server is shutting down")
        with self._lock:
            if self._pending and self._pending + len(texts) > self.max_queue:
                raise Busy(f"{self._pending} texts are already waiting (limit {self.max_queue})")
            self._pending += len(texts)
        loop = asyncio.get_running_loop()
        req = _Request(list(texts), loop.create_future(), loop)
        self._queue.put(req)
        return await req.future

    def stop(self, timeout: float | None = DEFAULT_SERVE_SHUTDOWN_TIMEOUT) -> None:
        """Finish every queued request, then end the worker thread."""
        self._stopping = True
        self._queue.put(_STOP)
        if self._thread.is_alive() and self.ready.is_set():
            self._thread.join(timeout)

    # -- worker side ------------------------------------------------------------------------------
    def _take(self, block_until: float | None) -> _Request | object | None:
        """The next request (a carried-over one first); None once ``block_until`` passes."""
        if self._carry is not None:
            req, self._carry = self._carry, None
            return req
        try:
            if block_until is None:
                return self._queue.get()
            wait = block_until - time.perf_counter()
            return self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None

    def _collect(self) -> tuple[list[_Request], bool]:
        """One batch of requests, and whether a stop was seen (the batch is then the last)."""
        first = self._take(None)
        if first is _STOP:
            return [], True
        batch, n = [first], len(first.texts)
        # Waiting pays only under concurrent load: when more requests are queued already, or the
        # previous batch had company. A lone client's request runs at once (no max_wait added).
        concurrent = self._carry is not None or not self._queue.empty() or self._last_requests > 1
        deadline = time.perf_counter() + (self.max_wait if concurrent else 0.0)
        while n < self.max_batch:
            nxt = self._take(deadline if not self._stopping else time.perf_counter())
            if nxt is None:
                break
            if nxt is _STOP:
                self._queue.put(_STOP)  # seen again after this batch, once the queue is drained
                self._stopping = True
                break
            if n + len(nxt.texts) > self.max_batch:
                self._carry = nxt
                break
            batch.append(nxt)
            n += len(nxt.texts)
        with self._lock:
            self._pending -= n
        self._last_requests = len(batch)
        return batch, False

    def _run_batch(self, batch: list[_Request]) -> None:
        texts = [t for r in batch for t in r.texts]
        t0 = time.perf_counter()
        try:
            out = self.predict(texts)
        except Exception as e:  # noqa: BLE001 - reported to the callers, the worker keeps going
            self._report(len(batch), len(texts), t0, failed=True)
            if len(batch) == 1:
                _resolve(batch[0], error=e)
            else:
                for r in batch:
                    self._run_batch([r])
            return
        self._report(len(batch), len(texts), t0, failed=False)
        start = 0
        for r in batch:
            _resolve(r, result=out[start:start + len(r.texts)])
            start += len(r.texts)

    def _report(self, requests: int, texts: int, t0: float, *, failed: bool) -> None:
        if self.on_batch is not None:
            try:
                self.on_batch(BatchStats(requests, texts, time.perf_counter() - t0, failed))
            except Exception:  # noqa: BLE001 - metrics must never break serving
                pass

    def _run(self) -> None:
        if self.startup is not None:
            try:
                self.startup()
            except BaseException as e:  # noqa: BLE001 - kept for the server to report
                self.startup_error = e
                self._fail_all(e)
                return
        self.ready.set()
        while True:
            batch, stop = self._collect()
            if batch:
                self._run_batch(batch)
            if stop:
                self._fail_all(RuntimeError("the server is shutting down"))
                return

    def _fail_all(self, error: BaseException) -> None:
        while True:
            try:
                req = self._queue.get_nowait()
            except queue.Empty:
                return
            if req is not _STOP:
                _resolve(req, error=error)
