"""The micro-batcher on its own, and a failing batch inside a real server (uvicorn in a thread)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from serve_helpers import build_classifier

from layerfuse import load  # noqa: E402
from layerfuse.serve.batcher import Busy, MicroBatcher


class Recorder:
    """predict() that returns each text's length and records the batches it saw."""

    def __init__(self, delay: float = 0.0):
        self.batches: list[list[str]] = []
        self.delay = delay

    def __call__(self, texts):
        self.batches.append(list(texts))
        time.sleep(self.delay)
        return np.array([[len(t)] for t in texts], dtype=float)


def run_requests(batcher: MicroBatcher, requests):
    async def go():
        return await asyncio.gather(*(batcher.submit(r) for r in requests), return_exceptions=True)

    batcher.start()
    assert batcher.ready.wait(5)
    try:
        return asyncio.run(go())
    finally:
        batcher.stop()


def test_requests_are_grouped_up_to_max_batch_in_order():
    rec = Recorder(delay=0.02)
    reqs = [[f"{'x' * (i % 7 + 1)}-{i}-{j}" for j in range(i % 3 + 1)] for i in range(60)]
    out = run_requests(MicroBatcher(rec, max_batch=8, max_wait_ms=50), reqs)
    for req, res in zip(reqs, out):
        assert res[:, 0].tolist() == [len(t) for t in req]
    assert max(len(b) for b in rec.batches) <= 8
    assert len(rec.batches) < len(reqs)  # grouped
    assert sorted(t for b in rec.batches for t in b) == sorted(t for r in reqs for t in r)  # each text once


def test_max_batch_1_runs_one_request_at_a_time_and_big_requests_run_alone():
    rec = Recorder()
    reqs = [["a"], ["bb", "cc", "dd"], ["e"]]
    out = run_requests(MicroBatcher(rec, max_batch=1, max_wait_ms=20), reqs)
    assert [r[:, 0].tolist() for r in out] == [[1], [2, 2, 2], [1]]
    assert sorted(map(len, rec.batches)) == [1, 1, 3]


def test_max_wait_bounds_how_long_a_lone_request_waits():
    rec = Recorder()
    t0 = time.perf_counter()
    run_requests(MicroBatcher(rec, max_batch=64, max_wait_ms=30), [["only"]])
    assert time.perf_counter() - t0 < 2.0
    assert rec.batches == [["only"]]


def test_a_lone_client_is_not_delayed_by_max_wait():
    """One request at a time (nothing else queued, previous batch alone) runs without the wait."""
    rec = Recorder()
    b = MicroBatcher(rec, max_batch=64, max_wait_ms=3000)

    async def one_after_another():
        took = []
        for text in ("a", "bb", "ccc"):
            t0 = time.perf_counter()
            await b.submit([text])
            took.append(time.perf_counter() - t0)
        return took

    b.start()
    assert b.ready.wait(5)
    try:
        took = asyncio.run(one_after_another())
    finally:
        b.stop()
    assert max(took) < 1.5, took  # a 3 s wait per request would show here
    assert rec.batches == [["a"], ["bb"], ["ccc"]]


def test_a_failing_batch_is_retried_per_request_so_only_the_bad_one_fails():
    def predict(texts):
        if "poison" in texts:
            raise ValueError("cannot classify poison")
        return np.ones((len(texts), 1))

    reqs = [["fine"], ["poison"], ["also fine", "ok"]]
    out = run_requests(MicroBatcher(predict, max_batch=16, max_wait_ms=100), reqs)
    assert out[0].shape == (1, 1) and out[2].shape == (2, 1)
    assert isinstance(out[1], ValueError)


def test_a_full_queue_raises_busy():
    gate = threading.Event()

    def predict(texts):
        gate.wait(5)
        return np.ones((len(texts), 1))

    b = MicroBatcher(predict, max_batch=1, max_wait_ms=0, max_queue=2)
    b.start()
    assert b.ready.wait(5)

    async def go():
        first = asyncio.create_task(b.submit(["a"]))
        await asyncio.sleep(0.1)  # the worker has taken "a" and blocks on the gate
        queued = [asyncio.create_task(b.submit([x])) for x in "bc"]
        await asyncio.sleep(0.05)
        with pytest.raises(Busy):
            await b.submit(["d"])
        gate.set()
        return await asyncio.gather(first, *queued)

    assert len(asyncio.run(go())) == 3
    b.stop()


def test_a_failed_start_fails_waiting_requests_and_is_kept():
    def startup():
        raise RuntimeError("weights missing")

    b = MicroBatcher(lambda t: np.ones((len(t), 1)), startup=startup)
    b.start()
    b._thread.join(5)
    assert not b.ready.is_set() and "weights missing" in str(b.startup_error)


# ---------------------------------------------------------------------------------------------
# A batch that fails inside a real server


class Poisoned:
    """The real loaded pipeline, except that a batch holding the text 'poison' raises."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.classes, self.specs, self.metrics = pipe.classes, pipe.specs, pipe.metrics
        self.extraction, self.trained = pipe.extraction, pipe.trained

    def predict_proba(self, texts, **kw):
        if "poison" in texts:
            raise RuntimeError("the backbone blew up")
        return self.pipe.predict_proba(texts, **kw)


@pytest.fixture(scope="module")
def poisoned_server(tiny_model, tmp_path_factory):
    import uvicorn

    from layerfuse.serve.app import ServeSettings, create_app

    pipe = load(build_classifier(tiny_model, tmp_path_factory.mktemp("poison") / "clf"))
    app = create_app(Poisoned(pipe), ServeSettings(max_batch=32, max_wait_ms=200))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    for _ in range(600):
        try:
            if httpx.get(url + "/v1/health").status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    yield url, pipe
    server.should_exit = True
    thread.join(30)


def test_a_failed_batch_answers_500_and_the_server_keeps_serving(poisoned_server):
    url, pipe = poisoned_server

    async def go():
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            return await asyncio.gather(*(c.post("/v1/predict", json={"texts": t})
                                          for t in (["a good film"], ["poison"], ["a bad film", "dull"])))

    ok1, bad, ok2 = asyncio.run(go())
    assert bad.status_code == 500
    err = bad.json()["error"]
    assert err["type"] == "prediction_failed" and "the backbone blew up" in err["message"]
    assert ok1.status_code == ok2.status_code == 200  # its neighbours in the batch were answered
    got = [p["label"] for p in ok2.json()["predictions"]]
    assert got == pipe.predict(["a bad film", "dull"])
    again = httpx.post(url + "/v1/predict", json={"texts": ["lovely"]})
    assert again.status_code == 200 and httpx.get(url + "/v1/health").json()["status"] == "ready"
    assert 'layerfuse_errors_total{kind="prediction"} 1.0' in httpx.get(url + "/metrics").text
