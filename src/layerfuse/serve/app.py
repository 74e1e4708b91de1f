"""The HTTP service around one saved classifier (FastAPI).

Endpoints:

``POST /v1/predict``
    ``{"texts": ["...", ...]}`` → ``{"predictions": [{"label": ..., "probabilities": {class: p}}, ...]}``,
    one per text, in order. Texts from concurrent requests share model batches
    (:mod:`layerfuse.serve.batcher`).
``GET /v1/health``
    200 ``{"status": "ready"}`` once the model is loaded and warmed up; 503 ``loading`` (or
    ``failed``) before.
``GET /v1/metadata``
    Labels, backbones with fingerprints and layers, fusion, head, training metrics, versions.
``GET /metrics``
    Prometheus text format (:mod:`layerfuse.serve.metrics`).
``GET /docs``, ``GET /openapi.json``
    The OpenAPI page and schema.

Every error is JSON ``{"error": {"type": ..., "field": ..., "message": ...}}`` with one clear
message naming the field: 400 malformed JSON, 413 too many texts or a text over the byte limit,
415 wrong content type, 422 wrong shape or an empty text, 503 loading or busy, 500 a failed batch.
"""

from __future__ import annotations

import asyncio
import os
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from layerfuse.config import (
    DEFAULT_SERVE_MAX_BATCH,
    DEFAULT_SERVE_MAX_QUEUE,
    DEFAULT_SERVE_MAX_TEXT_BYTES,
    DEFAULT_SERVE_MAX_TEXTS,
    DEFAULT_SERVE_MAX_WAIT_MS,
)
from layerfuse.serve.batcher import Busy, MicroBatcher, in_short_lived_thread
from layerfuse.serve.metrics import ServerMetrics

__all__ = ["ServeSettings", "PredictRequest", "Prediction", "PredictResponse", "Health", "Metadata",
           "ApiError", "create_app"]


@dataclass
class ServeSettings:
    """Limits and batching of one server.

    Parameters
    ----------
    max_batch : int
        Most texts the model runs in one batch.
    max_wait_ms : float
        Longest the first request of a batch waits for others to join.
    max_texts : int
        Most texts in one request (413 beyond).
    max_text_bytes : int
        Most UTF-8 bytes in one text (413 beyond).
    max_queue : int
        Most texts waiting for a batch (503 beyond, with ``Retry-After``).
    device : str
        Where the backbones run: ``cpu`` or ``cuda``.
    cache_dir : str, optional
        Cache root (dequantised GGUF models, compiled code).
    compile : bool
        Compile the backbones' blocks at start (:meth:`FusionPipeline.compile`), before the server
        reports ready; the warm-up then also runs one-text and one-token batches, which
        ``torch.compile`` specialises, so no request pays for compiling.
    """

    max_batch: int = DEFAULT_SERVE_MAX_BATCH
    max_wait_ms: float = DEFAULT_SERVE_MAX_WAIT_MS
    max_texts: int = DEFAULT_SERVE_MAX_TEXTS
    max_text_bytes: int = DEFAULT_SERVE_MAX_TEXT_BYTES
    max_queue: int = DEFAULT_SERVE_MAX_QUEUE
    device: str = "cpu"
    cache_dir: str | None = None
    compile: bool = False


# ---------------------------------------------------------------------------------------------
# Request and response models


class PredictRequest(BaseModel):
    """Texts to classify."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"texts": ["a gorgeous, witty film"]}]})
    texts: list[StrictStr] = Field(description="the texts, each a non-empty string")


class Prediction(BaseModel):
    """The label and class probabilities of one text."""

    label: str
    probabilities: dict[str, float]


class PredictResponse(BaseModel):
    """One prediction per text, in the order of the request."""

    predictions: list[Prediction]


class Health(BaseModel):
    """Whether the model is loaded: ``ready``, ``loading`` or ``failed``."""

    status: str
    detail: str | None = None


class Metadata(BaseModel):
    """What the served classifier is."""

    labels: list[str]
    backbones: list[dict[str, Any]]
    fusion: str | None
    head: str | None
    metrics: dict[str, Any]
    extraction: dict[str, Any]
    created: str | None = None
    versions: dict[str, Any]
    limits: dict[str, Any]


class ErrorDetail(BaseModel):
    type: str
    field: str | None = None
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class ApiError(Exception):
    """An error answered as JSON with ``status``."""

    def __init__(self, status: int, type_: str, message: str, field: str | None = None, headers=None):
        super().__init__(message)
        self.status, self.type, self.message, self.field, self.headers = status, type_, message, field, headers


# ---------------------------------------------------------------------------------------------
# Validation errors → one message


def _field_name(loc) -> str | None:
    parts = [p for p in loc if p != "body"]
    if not parts:
        return None
    out = str(parts[0])
    for p in parts[1:]:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def _validation_message(errors: list[dict], content_type: str | None) -> ApiError:
    """The first validation error of FastAPI as one :class:`ApiError`."""
    media = (content_type or "").split(";")[0].strip().lower()
    if not (media == "application/json" or media.endswith("+json")):
        return ApiError(415, "unsupported_media_type",
                        f"Content-Type must be application/json, got {media or 'none'}: "
                        "send the body as JSON with the header 'Content-Type: application/json'")
    order = {"json_invalid": 0, "model_attributes_type": 1, "missing": 2}
    err = sorted(errors, key=lambda e: order.get(e.get("type"), 3))[0]
    kind, field = err.get("type"), _field_name(err.get("loc", ()))
    if kind == "json_invalid":
        why = (err.get("ctx") or {}).get("error", "JSON decode error")
        return ApiError(400, "malformed_json", f"the request body is not valid JSON ({why}): "
                        'send an object such as {"texts": ["first text", "second text"]}')
    if kind == "model_attributes_type" or field is None:
        return ApiError(422, "invalid_request", 'the request body must be a JSON object such as '
                        '{"texts": ["first text", "second text"]}')
    if kind == "missing":
        return ApiError(422, "invalid_request", f"field '{field}' is required: "
                        'send {"texts": ["first text", ...]}', field)
    if kind == "extra_forbidden":
        return ApiError(422, "invalid_request", f"unknown field '{field}': the body takes only 'texts'", field)
    if kind == "list_type":
        return ApiError(422, "invalid_request", f"'{field}' must be a list of strings, got "
                        f"{type(err.get('input')).__name__}: wrap a single text in a list", field)
    if kind == "string_type":
        got = err.get("input")
        return ApiError(422, "invalid_request", f"{field} is {_json_type(got)}, expected a string: "
                        "every text must be a JSON string", field)
    return ApiError(422, "invalid_request", f"{field}: {err.get('msg', 'invalid value')}", field)


def _json_type(value) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}.get(
        type(value), f"a {type(value).__name__}")


def check_limits(texts: list[str], settings: ServeSettings) -> None:
    """Raise :class:`ApiError` for an empty list, too many texts, an empty or too long text."""
    if not texts:
        raise ApiError(422, "invalid_request", "'texts' is empty: send at least one text", "texts")
    if len(texts) > settings.max_texts:
        raise ApiError(413, "too_many_texts", f"'texts' holds {len(texts)} texts, more than the limit of "
                       f"{settings.max_texts} per request: split them over several requests", "texts")
    for i, t in enumerate(texts):
        if not t.strip():
            raise ApiError(422, "invalid_request", f"texts[{i}] is empty: every text needs some characters",
                           f"texts[{i}]")
        n = len(t.encode("utf-8", errors="surrogatepass"))
        if n > settings.max_text_bytes:
            raise ApiError(413, "text_too_long", f"texts[{i}] is {n} bytes of UTF-8, more than the limit of "
                           f"{settings.max_text_bytes}: shorten it (the model reads only its first tokens anyway)",
                           f"texts[{i}]")


# ---------------------------------------------------------------------------------------------
# The app


def describe(pipeline, manifest: dict | None, settings: ServeSettings) -> dict:
    """The ``/v1/metadata`` document of a :class:`layerfuse.pipeline.FusionPipeline`."""
    import layerfuse

    man = manifest or {}
    backbones: dict[str, dict] = {}
    for s in pipeline.specs:
        b = backbones.setdefault(s.model, {"model": s.model, "fingerprint": s.fingerprint, "sources": []})
        b["sources"].append({"layers": list(s.layers), "pooling": s.pooling, "combine": s.combine})
    trained = getattr(pipeline, "trained", None)
    return {
        "labels": list(pipeline.classes),
        "backbones": list(backbones.values()),
        "fusion": getattr(trained, "fusion", man.get("fusion")),
        "head": getattr(trained, "head", man.get("head")),
        "metrics": dict(pipeline.metrics or {}),
        "extraction": dict(pipeline.extraction or {}),
        "created": man.get("created"),
        "versions": {"serving": {"layerfuse": layerfuse.__version__}, "trained_with": man.get("versions", {})},
        "limits": {k: v for k, v in asdict(settings).items() if k not in ("device", "cache_dir")},
    }


def _error_response(err: ApiError):
    from fastapi.responses import JSONResponse

    body = {"error": {"type": err.type, "field": err.field, "message": err.message}}
    return JSONResponse(body, status_code=err.status, headers=err.headers)


_ENDPOINTS = ("/v1/predict", "/v1/health", "/v1/metadata", "/metrics", "/docs", "/openapi.json")
_ERRORS = {s: {"model": ErrorBody} for s in (400, 413, 415, 422, 500, 503)}


class _CountRequests:
    """ASGI middleware: every request counted by endpoint and status, ``/v1/predict`` timed.

    A plain ASGI wrapper rather than Starlette's ``@app.middleware("http")``, which runs each
    request through an extra task and a response stream: per-request event-loop time that, on a
    small machine, is taken from the model and delays the clients' next requests."""

    def __init__(self, app, metrics: ServerMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]  # what a request that fails before answering counts as

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            path = scope.get("path", "")
            endpoint = path if path in _ENDPOINTS else "other"
            self.metrics.requests.labels(endpoint, str(status[0])).inc()
            if endpoint == "/v1/predict":
                self.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)
                if 400 <= status[0] < 500:
                    self.metrics.errors.labels("invalid_request").inc()


def create_app(pipeline, settings: ServeSettings | None = None, *, manifest: dict | None = None,
               warmup: bool = True, on_ready=None, on_failed=None, log=None):
    """A FastAPI app serving ``pipeline``.

    One long function on purpose: the endpoints are closures over this app's own batcher, metrics
    and settings, so two apps in one process (tests, several classifiers) never share state.

    Parameters
    ----------
    pipeline : FusionPipeline or path
        A saved classifier's folder, loaded here in a short-lived thread
        (:func:`~layerfuse.serve.batcher.in_short_lived_thread`), or a classifier already loaded
        (``layerfuse.load(DIR)``; best loaded the same way, not in a thread that stays alive:
        torch work there keeps an OpenMP team that slows the worker's forward passes,
        docs/serve.md). Its backbones load in the worker thread when the app starts, and
        ``/v1/health`` says ``ready`` only after that.
    settings : ServeSettings, optional
        Limits and batching (defaults: :class:`ServeSettings`).
    manifest : dict, optional
        The classifier's ``manifest.json``, for the creation time and versions in ``/v1/metadata``.
    warmup : bool
        Classify one text at start, which loads every backbone before the server reports ready.
    on_ready : callable, optional
        Called with the seconds the start took, once the model is ready (in the worker thread).
    on_failed : callable, optional
        Called with the exception if loading the model fails (in the worker thread); the server
        then answers 503 ``failed``, and a command line server should exit.
    log : callable, optional
        Called with a line of text for what the start does (compiling).

    Returns
    -------
    fastapi.FastAPI
    """
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import Response

    import layerfuse

    if isinstance(pipeline, (str, os.PathLike)):
        pipeline = in_short_lived_thread(layerfuse.load, pipeline)
    settings = settings or ServeSettings()
    metrics = ServerMetrics()
    kw = {"device": settings.device, "cache_dir": settings.cache_dir}

    def predict(texts):
        return np.asarray(pipeline.predict_proba(texts, **kw))

    def startup():
        t0 = time.perf_counter()
        try:
            if settings.compile:
                done = pipeline.compile(**kw, announce=log)
                if log is not None:
                    log(f"compiled {', '.join(done) or 'no backbone'} in {time.perf_counter() - t0:.1f} s")
            if warmup or settings.compile:
                pipeline.predict_proba(["warm up"], **kw)
            if settings.compile:  # sizes 1 are specialised by torch.compile: a batch of one text, a one-token text
                pipeline.predict_proba(["ok"], **kw)
                pipeline.predict_proba(["ok", "warm up the batch"], **kw)
        except BaseException as e:
            if on_failed is not None:
                on_failed(e)
            raise
        metrics.ready.set(1)
        if on_ready is not None:
            on_ready(time.perf_counter() - t0)

    batcher = MicroBatcher(predict, max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms,
                           max_queue=settings.max_queue, on_batch=metrics.on_batch, startup=startup)
    metrics.queue.set_function(lambda: batcher.queued_texts)

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        # uvicorn has finished the in-flight requests by now; drain what is still queued.
        await asyncio.get_running_loop().run_in_executor(None, batcher.stop)

    app = FastAPI(title="layerfuse classifier", version=layerfuse.__version__, lifespan=lifespan,
                  description="A saved layerfuse classifier: labels and class probabilities for texts.")
    app.state.batcher, app.state.metrics, app.state.settings = batcher, metrics, settings
    meta = describe(pipeline, manifest, settings)
    classes = list(pipeline.classes)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return _error_response(_validation_message(list(exc.errors()), request.headers.get("content-type")))

    app.add_middleware(_CountRequests, metrics=metrics)

    @app.post("/v1/predict", response_model=PredictResponse, responses=_ERRORS,
              summary="labels and class probabilities, one per text, in order")
    async def predict_endpoint(body: PredictRequest) -> PredictResponse:
        check_limits(body.texts, settings)
        if batcher.startup_error is not None:
            raise ApiError(503, "model_failed", f"the model failed to load: {batcher.startup_error}")
        if not batcher.ready.is_set():
            raise ApiError(503, "loading", "the model is still loading: retry when GET /v1/health says ready",
                           headers={"Retry-After": "1"})
        try:
            proba = await batcher.submit(body.texts)
        except Busy as e:
            metrics.errors.labels("busy").inc()
            raise ApiError(503, "busy", f"the server is busy ({e}): retry shortly",
                           headers={"Retry-After": "1"}) from None
        except Exception as e:  # noqa: BLE001 - a failed batch: this request fails, the server goes on
            metrics.errors.labels("prediction").inc()
            raise ApiError(500, "prediction_failed", f"classifying these texts failed: {type(e).__name__}: {e}") \
                from None
        out = [Prediction(label=classes[int(row.argmax())],
                          probabilities={c: float(p) for c, p in zip(classes, row)}) for row in proba]
        return PredictResponse(predictions=out)

    @app.get("/v1/health", response_model=Health, responses={503: {"model": Health}})
    async def health():
        from fastapi.responses import JSONResponse

        if batcher.startup_error is not None:
            return JSONResponse({"status": "failed", "detail": str(batcher.startup_error)}, status_code=503)
        if not batcher.ready.is_set():
            return JSONResponse({"status": "loading", "detail": None}, status_code=503)
        return Health(status="ready")

    @app.get("/v1/metadata", response_model=Metadata)
    async def metadata():
        return meta

    @app.get("/metrics", include_in_schema=False)
    async def prometheus():
        data, ctype = metrics.render()
        return Response(content=data, media_type=ctype)

    return app
