"""Serve a saved classifier over HTTP: ``layerfuse serve DIR`` or :func:`create_app`.

Needs the ``serve`` extra (``pip install 'layerfuse[serve]'``: FastAPI, uvicorn, prometheus-client).
See ``docs/serve.md`` for the endpoints, limits, batching and measured throughput.
"""

from layerfuse.serve.batcher import BatchStats, Busy, MicroBatcher, in_short_lived_thread

__all__ = ["BatchStats", "Busy", "MicroBatcher", "ServeSettings", "create_app", "in_short_lived_thread"]


def __getattr__(name):
    if name in ("ServeSettings", "create_app"):
        from layerfuse.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'layerfuse.serve' has no attribute '{name}'")
