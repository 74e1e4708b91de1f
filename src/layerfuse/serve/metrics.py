"""Prometheus metrics of one server, in a registry of its own (two apps in one process do not mix).

Exposed at ``GET /metrics`` in the Prometheus text format:

``layerfuse_requests_total{endpoint, status}``
    HTTP requests answered, by endpoint and status code.
``layerfuse_texts_total``
    Texts classified (successfully).
``layerfuse_batch_texts``
    Histogram of texts per batch run by the model.
``layerfuse_batch_seconds``
    Histogram of the time the model took per batch.
``layerfuse_request_seconds{endpoint}``
    Histogram of request latency, from the request arriving to the answer being ready.
``layerfuse_errors_total{kind}``
    Errors: ``invalid_request`` (a 4xx), ``busy`` (queue full, 503), ``prediction`` (a failed batch, 500).
``layerfuse_queue_texts``
    Texts waiting for a batch.
``layerfuse_model_ready``
    1 once the model is loaded and warmed up, else 0.
"""

from __future__ import annotations

__all__ = ["ServerMetrics"]

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServerMetrics:
    """The counters, gauges and histograms of one server."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("layerfuse_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.texts = Counter("layerfuse_texts", "texts classified", registry=r)
        self.batch_texts = Histogram("layerfuse_batch_texts", "texts per model batch", buckets=_BATCH_BUCKETS,
                                     registry=r)
        self.batch_seconds = Histogram("layerfuse_batch_seconds", "model time per batch",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.latency = Histogram("layerfuse_request_seconds", "request latency", ["endpoint"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.errors = Counter("layerfuse_errors", "errors by kind", ["kind"], registry=r)
        self.queue = Gauge("layerfuse_queue_texts", "texts waiting for a batch", registry=r)
        self.ready = Gauge("layerfuse_model_ready", "1 once the model is loaded", registry=r)

    def on_batch(self, stats) -> None:
        """Record one batch (a :class:`layerfuse.serve.batcher.BatchStats`)."""
        self.batch_texts.observe(stats.texts)
        self.batch_seconds.observe(stats.seconds)
        if not stats.failed:
            self.texts.inc(stats.texts)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
