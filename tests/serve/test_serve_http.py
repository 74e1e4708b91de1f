"""`layerfuse serve` in a subprocess on a loopback port, called over real HTTP with httpx."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from serve_helpers import Server, build_classifier, make_texts

from layerfuse import load  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MAX_TEXTS, MAX_BYTES = 8, 200


@pytest.fixture(scope="module")
def classifier(tiny_model, tmp_path_factory):
    return build_classifier(tiny_model, tmp_path_factory.mktemp("serve") / "clf")


@pytest.fixture(scope="module")
def reference(classifier):
    return load(classifier)


@pytest.fixture(scope="module")
def server(classifier):
    with Server(classifier, "--max-batch", "16", "--max-wait-ms", "20", "--max-texts", str(MAX_TEXTS),
                "--max-text-bytes", str(MAX_BYTES)) as s:
        yield s


def metric(text: str, name: str) -> float:
    """Sum of every sample of ``name`` in a Prometheus exposition."""
    return sum(float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def test_predictions_equal_the_loaded_pipeline(server, reference):
    texts = make_texts(8, seed=5)[0]
    r = httpx.post(server.url + "/v1/predict", json={"texts": texts})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    want = reference.predict_proba(texts)
    assert [p["label"] for p in preds] == reference.predict(texts)
    got = np.array([[p["probabilities"][c] for c in reference.classes] for p in preds])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_health_metadata_and_openapi(server, classifier, reference):
    assert httpx.get(server.url + "/v1/health").json() == {"status": "ready", "detail": None}
    meta = httpx.get(server.url + "/v1/metadata").json()
    man = json.loads((__import__("pathlib").Path(classifier) / "manifest.json").read_text())
    assert meta["labels"] == reference.classes == man["classes"]
    assert {b["model"]: b["fingerprint"] for b in meta["backbones"]} == man["backbones"]
    assert meta["backbones"][0]["sources"][0]["layers"] == man["sources"][0]["layers"]
    assert meta["fusion"] == man["fusion"] and meta["head"] == man["head"]
    assert meta["metrics"] == man["metrics"] and meta["versions"]["trained_with"] == man["versions"]
    assert meta["limits"]["max_texts"] == MAX_TEXTS
    spec = httpx.get(server.url + "/openapi.json").json()
    assert "texts" in json.dumps(spec["paths"]["/v1/predict"]["post"]["requestBody"]) or \
        "PredictRequest" in json.dumps(spec["paths"]["/v1/predict"])
    assert "swagger" in httpx.get(server.url + "/docs").text.lower()


JSON = {"content-type": "application/json"}
BAD = [
    ("malformed JSON", b'{"texts": ["a", ', JSON, 400, None, "not valid JSON"),
    ("text/plain", b'{"texts": ["a"]}', {"content-type": "text/plain"}, 415, None, "application/json"),
    ("form post", b'texts=a', {"content-type": "application/x-www-form-urlencoded"}, 415, None, "Content-Type"),
    ("no list", b'{"texts": []}', JSON, 422, "texts", "empty"),
    ("empty text", b'{"texts": ["fine", "   "]}', JSON, 422, "texts[1]", "empty"),
    ("number", b'{"texts": ["fine", 3]}', JSON, 422, "texts[1]", "expected a string"),
    ("null", b'{"texts": [null]}', JSON, 422, "texts[0]", "null"),
    ("bare string", b'{"texts": "a film"}', JSON, 422, "texts", "list of strings"),
    ("missing field", b'{"text": ["a film"]}', JSON, 422, "texts", "required"),
    ("extra field", b'{"texts": ["a"], "top_k": 2}', JSON, 422, "top_k", "unknown field"),
    ("array body", b'["a film"]', JSON, 422, None, "JSON object"),
    ("too many", json.dumps({"texts": ["a film"] * (MAX_TEXTS + 1)}).encode(), JSON, 413, "texts", "limit of 8"),
    ("too long", json.dumps({"texts": ["ok", "x" * (MAX_BYTES + 1)]}).encode(), JSON, 413, "texts[1]", "bytes"),
    # 150 characters, 300 bytes: the limit counts UTF-8 bytes
    ("multibyte", json.dumps({"texts": ["é" * 150]}).encode(), JSON, 413, "texts[0]", "300 bytes"),
]


@pytest.mark.parametrize("body,headers,status,field,phrase", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_requests_get_one_clear_json_error(server, body, headers, status, field, phrase):
    r = httpx.post(server.url + "/v1/predict", content=body, headers=headers)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["field"] == field
    assert phrase in err["message"], err["message"]
    assert "\n" not in err["message"] and "Traceback" not in r.text


def test_limits_are_not_off_by_one(server):
    ok = {"texts": ["a film"] * MAX_TEXTS + []}
    assert httpx.post(server.url + "/v1/predict", json=ok).status_code == 200
    assert httpx.post(server.url + "/v1/predict", json={"texts": ["a" * MAX_BYTES]}).status_code == 200


def test_200_concurrent_requests_nothing_lost_or_reordered(server, reference):
    pool, _ = make_texts(300, seed=11)
    rng = np.random.default_rng(0)
    requests = [[pool[j] for j in rng.choice(len(pool), size=int(rng.integers(1, 4)), replace=False)]
                for _ in range(200)]
    before = httpx.get(server.url + "/metrics").text

    async def go():
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as c:
            return await asyncio.gather(*(c.post("/v1/predict", json={"texts": t}) for t in requests))

    responses = asyncio.run(go())
    after = httpx.get(server.url + "/metrics").text
    assert [r.status_code for r in responses] == [200] * 200
    flat = [t for req in requests for t in req]
    want = reference.predict_proba(flat)
    got = np.array([[p["probabilities"][c] for c in reference.classes]
                    for r in responses for p in r.json()["predictions"]])
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4)
    # grouped into batches: fewer model batches than requests, every text counted once
    batches = metric(after, "layerfuse_batch_texts_count") - metric(before, "layerfuse_batch_texts_count")
    assert 1 <= batches < 200
    assert metric(after, "layerfuse_texts_total") - metric(before, "layerfuse_texts_total") == len(flat)
    assert metric(after, "layerfuse_batch_texts_sum") - metric(before, "layerfuse_batch_texts_sum") == len(flat)


def test_metrics_count_requests_errors_and_latency(server):
    before = httpx.get(server.url + "/metrics").text
    httpx.post(server.url + "/v1/predict", json={"texts": ["a good film"]})
    httpx.post(server.url + "/v1/predict", json={"texts": []})
    after = httpx.get(server.url + "/metrics").text
    assert after.startswith("# HELP") and "layerfuse_request_seconds_bucket" in after

    def delta(name):
        return metric(after, name) - metric(before, name)

    assert delta('layerfuse_requests_total{endpoint="/v1/predict",status="200"}'.split("{")[0]) >= 2
    assert delta("layerfuse_request_seconds_count") == 2
    assert delta("layerfuse_errors_total") == 1
    assert metric(after, "layerfuse_model_ready") == 1


def test_sigterm_under_load_answers_every_request_in_flight(classifier, reference):
    texts = make_texts(30, seed=21)[0]
    # a long wait keeps all 30 requests queued in the batcher when SIGTERM arrives
    with Server(classifier, "--max-batch", "64", "--max-wait-ms", "3000") as s:
        async def go():
            async with httpx.AsyncClient(base_url=s.url, timeout=60) as c:
                tasks = [asyncio.create_task(c.post("/v1/predict", json={"texts": [t]})) for t in texts]
                async with httpx.AsyncClient(base_url=s.url) as probe:
                    for _ in range(200):
                        m = (await probe.get("/metrics")).text
                        if metric(m, "layerfuse_queue_texts") == len(texts):
                            break
                        await asyncio.sleep(0.02)
                    else:
                        raise AssertionError("the requests never all reached the queue")
                s.proc.send_signal(signal.SIGTERM)
                return await asyncio.gather(*tasks)

        t0 = time.monotonic()
        responses = asyncio.run(go())
        rc = s.proc.wait(30)  # no second signal: the first one must be enough
    assert [r.status_code for r in responses] == [200] * len(texts)
    got = np.array([[r.json()["predictions"][0]["probabilities"][c] for c in reference.classes] for r in responses])
    np.testing.assert_allclose(got, reference.predict_proba(texts), atol=1e-4)
    assert rc == 0, "".join(s.log)
    assert "stopped (SIGTERM)" in "".join(s.log)
    assert time.monotonic() - t0 < 30


def test_sigterm_while_the_model_loads_exits_cleanly(classifier):
    s = Server(classifier, wait_ready=False)
    r = httpx.get(s.url + "/v1/health")
    rc = s.stop(timeout=30)
    log = "".join(s.log)
    assert rc == 0, log
    if r.status_code == 503:  # caught while loading: health must say so
        assert r.json()["status"] == "loading"
    assert "stopped (SIGTERM)" in log and "Traceback" not in log


@pytest.mark.parametrize("extra,phrase", [((), "does not exist"),
                                          (("--max-batch", "0"), "--max-batch must be at least 1, got 0"),
                                          (("--port", "70000"), "--port must be a port number")])
def test_bad_folder_or_flags_are_one_line_and_exit_2(tmp_path, classifier, extra, phrase):
    import subprocess
    import sys

    folder = str(tmp_path / "nope") if not extra else classifier
    p = subprocess.run([sys.executable, "-m", "layerfuse.cli", "serve", folder, *extra],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().count("\n") == 0 and phrase in p.stderr and "Traceback" not in p.stderr


def test_a_port_in_use_is_one_line_and_exit_2(server, classifier):
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "layerfuse.cli", "serve", classifier, "--port", str(server.port)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert f"cannot listen on 127.0.0.1:{server.port}" in p.stderr and p.stderr.strip().count("\n") == 0


def test_a_backbone_that_cannot_load_ends_the_server_with_one_line_and_exit_2(tmp_path):
    import shutil
    import subprocess
    import sys

    from conftest import build_tiny_model

    model = build_tiny_model(tmp_path / "model")
    clf = build_classifier(str(model), tmp_path / "clf")
    shutil.rmtree(model)  # the folder still loads (manifest and head); the backbone does not
    p = subprocess.run([sys.executable, "-m", "layerfuse.cli", "serve", clf, "--port", "0"],
                       capture_output=True, text=True, timeout=180)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert lines[-1].startswith("layerfuse serve: error: ") and "cannot be found" in lines[-1]


def test_accepted_connections_send_without_nagle_delay():
    """Without TCP_NODELAY a response waited ~40 ms for the client's delayed ACK (GET /v1/health
    took 44.8 ms on loopback, 2.4 ms with it): the listening socket sets it, and accepted
    connections carry it."""
    import socket

    from layerfuse.cli.serve import _listen

    listener = _listen("127.0.0.1", 0)
    client = socket.create_connection(listener.getsockname()[:2])
    conn, _ = listener.accept()
    try:
        assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        for s in (conn, client, listener):
            s.close()


def test_the_classifier_is_loaded_in_a_thread_that_ends():
    import threading

    from layerfuse.serve.batcher import in_short_lived_thread
    from layerfuse.errors import LayerfuseError

    seen = []
    assert in_short_lived_thread(lambda x: seen.append(threading.current_thread()) or x * 2, 21) == 42
    assert seen[0] is not threading.current_thread() and not seen[0].is_alive()

    def bad():
        raise LayerfuseError("no manifest.json in /nowhere")

    with pytest.raises(LayerfuseError, match="no manifest.json"):
        in_short_lived_thread(bad)


def test_create_app_takes_a_classifier_folder(classifier, reference):
    from fastapi.testclient import TestClient

    from layerfuse.serve import create_app

    texts = make_texts(3, seed=6)[0]
    with TestClient(create_app(classifier)) as client:
        end = time.monotonic() + 120
        while client.get("/v1/health").status_code != 200 and time.monotonic() < end:
            time.sleep(0.1)  # the backbones load in the worker thread
        out = client.post("/v1/predict", json={"texts": texts}).json()["predictions"]
    got = np.array([[p["probabilities"][c] for c in reference.classes] for p in out])
    np.testing.assert_allclose(got, reference.predict_proba(texts), atol=1e-5)


@pytest.mark.parametrize("flag,value,module", [("--http", "httptools", "httptools"), ("--loop", "uvloop", "uvloop")])
def test_a_parser_or_loop_that_is_not_installed_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, flag, value,
                                                                      module):
    import importlib.util

    from layerfuse.cli import serve as serve_cli
    from layerfuse.cli.main import main

    real = importlib.util.find_spec
    monkeypatch.setattr(serve_cli.importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))
    assert main(["serve", str(tmp_path), flag, value]) == 2
    err = capsys.readouterr().err
    assert f"{flag} {value} needs the {module} package" in err and f"{flag} auto" in err
    assert serve_cli._resolved("auto", serve_cli._HTTP, "h11") in ("h11", "httptools")
    assert serve_cli._resolved("auto", {"auto": None, "x": module}, "fallback") == "fallback"


def test_compile_at_start_gives_the_same_predictions(classifier, reference):
    from fastapi.testclient import TestClient

    from layerfuse.embed.compiled import compiler
    from layerfuse.serve import create_app
    from layerfuse.serve.app import ServeSettings

    if compiler() is None:
        pytest.skip("torch.compile on a CPU needs a C++ compiler")
    said = []
    texts = make_texts(5, seed=7)[0]
    with TestClient(create_app(classifier, ServeSettings(compile=True), log=said.append)) as client:
        end = time.monotonic() + 180
        while client.get("/v1/health").status_code != 200 and time.monotonic() < end:
            time.sleep(0.1)
        out = client.post("/v1/predict", json={"texts": texts}).json()["predictions"]
        one = client.post("/v1/predict", json={"texts": texts[:1]}).json()["predictions"]
    assert any(line.startswith("compiled ") and "no backbone" not in line for line in said), said
    got = np.array([[p["probabilities"][c] for c in reference.classes] for p in out + one])
    np.testing.assert_allclose(got, reference.predict_proba(texts + texts[:1]), atol=1e-5)
