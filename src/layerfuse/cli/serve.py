"""``layerfuse serve CLASSIFIER``: the saved classifier behind an HTTP API (see docs/serve.md)."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import signal
import socket
import sys
from pathlib import Path

from layerfuse import config as C
from layerfuse.errors import LayerfuseError

__all__ = ["add_serve_command", "cmd_serve"]

# uvicorn's choices, and the module each one needs (None: part of uvicorn's own dependencies).
_HTTP = {"auto": None, "h11": None, "httptools": "httptools"}
_LOOP = {"auto": None, "asyncio": None, "uvloop": "uvloop"}

_EXAMPLES = """
layerfuse serve out/run-sst2/classifier
layerfuse serve clf --host 0.0.0.0 --port 8080 --max-batch 64 --max-wait-ms 5
curl -s localhost:8000/v1/predict -H 'Content-Type: application/json' -d '{"texts": ["a gorgeous, witty film"]}'
"""


def add_serve_command(sub, examples) -> argparse.ArgumentParser:
    """Register ``serve`` on the sub-command parsers ``sub``; ``examples`` formats the epilog."""
    help_ = "serve a saved classifier over HTTP (POST /v1/predict, /v1/health, /v1/metadata, /metrics, /docs)"
    p = sub.add_parser("serve", help=help_, description=help_ + ". Needs the serve extra: "
                       "pip install 'layerfuse[serve]'.", epilog=examples(_EXAMPLES),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("classifier", help="folder written by --save (fuse) or by run")
    p.add_argument("--host", default=C.DEFAULT_SERVE_HOST,
                   help=f"address to listen on (default {C.DEFAULT_SERVE_HOST}; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=C.DEFAULT_SERVE_PORT,
                   help=f"port (default {C.DEFAULT_SERVE_PORT}; 0 picks a free one, printed at start)")
    p.add_argument("--max-batch", type=int, default=C.DEFAULT_SERVE_MAX_BATCH,
                   help="most texts the model runs at once; concurrent requests are grouped up to this "
                        f"(default {C.DEFAULT_SERVE_MAX_BATCH}; "
                        "1 turns batching off)")
    p.add_argument("--max-wait-ms", type=float, default=C.DEFAULT_SERVE_MAX_WAIT_MS,
                   help="longest a request waits for others to join its batch, only when others are queued or the "
                        f"last batch held several (default {C.DEFAULT_SERVE_MAX_WAIT_MS:g})")
    p.add_argument("--max-texts", type=int, default=C.DEFAULT_SERVE_MAX_TEXTS,
                   help=f"most texts per request (default {C.DEFAULT_SERVE_MAX_TEXTS})")
    p.add_argument("--max-text-bytes", type=int, default=C.DEFAULT_SERVE_MAX_TEXT_BYTES,
                   help=f"most UTF-8 bytes per text (default {C.DEFAULT_SERVE_MAX_TEXT_BYTES})")
    p.add_argument("--max-queue", type=int, default=C.DEFAULT_SERVE_MAX_QUEUE,
                   help=f"most texts waiting for the model; beyond it requests get 503 busy (default {C.DEFAULT_SERVE_MAX_QUEUE})")
    p.add_argument("--shutdown-timeout", type=float, default=C.DEFAULT_SERVE_SHUTDOWN_TIMEOUT,
                   help="seconds in-flight requests get to finish after SIGTERM/Ctrl-C "
                        f"(default {C.DEFAULT_SERVE_SHUTDOWN_TIMEOUT:g})")
    p.add_argument("--device", default=C.DEFAULT_DEVICE, help=f"auto, cpu or cuda (default {C.DEFAULT_DEVICE})")
    p.add_argument("--cache-dir", help="cache root (for dequantised GGUF models and compiled code)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the backbones' blocks at start, before ready (needs a C++ compiler; ~17 s "
                        "the first time on a machine, a few seconds once the code is kept in the cache; "
                        "docs/serve.md)")
    p.add_argument("--access-log", action="store_true", help="log every request (off by default)")
    p.add_argument("--http", default="auto", choices=sorted(_HTTP),
                   help="HTTP parser: auto (httptools when installed, else h11; the serve extra installs "
                        "neither httptools nor uvloop, docs/serve.md), h11 or httptools (default auto)")
    p.add_argument("--loop", default="auto", choices=sorted(_LOOP),
                   help="event loop: auto (uvloop when installed, else asyncio), asyncio or uvloop (default auto)")
    p.set_defaults(func=cmd_serve)
    return p


def _check(args) -> None:
    checks = [("--port", args.port, 0 <= args.port <= 65535, "a port number 0..65535"),
              ("--max-batch", args.max_batch, args.max_batch >= 1, "at least 1"),
              ("--max-wait-ms", args.max_wait_ms, args.max_wait_ms >= 0, "0 or more"),
              ("--max-texts", args.max_texts, args.max_texts >= 1, "at least 1"),
              ("--max-text-bytes", args.max_text_bytes, args.max_text_bytes >= 1, "at least 1"),
              ("--max-queue", args.max_queue, args.max_queue >= 1, "at least 1"),
              ("--shutdown-timeout", args.shutdown_timeout, args.shutdown_timeout >= 0, "0 or more")]
    for flag, value, ok, want in checks:
        if not ok:
            raise LayerfuseError(f"{flag} must be {want}, got {value}")
    for flag, value, needs in (("--http", args.http, _HTTP[args.http]), ("--loop", args.loop, _LOOP[args.loop])):
        if needs and importlib.util.find_spec(needs) is None:
            raise LayerfuseError(f"{flag} {value} needs the {needs} package, which is not installed: "
                                 f"pip install {needs}, or use {flag} auto")


def _resolved(choice: str, options: dict, fallback: str) -> str:
    """What uvicorn picks for ``choice``: ``auto`` means the fast module when importable."""
    if choice != "auto":
        return choice
    fast = next(name for name, module in options.items() if module)
    return fast if importlib.util.find_spec(fast) else fallback


def _listen(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise LayerfuseError(f"--host {host}: cannot resolve it ({e.strerror}); use an address such as 127.0.0.1") \
            from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # No Nagle delay on the connections accepted from it (Linux copies the option to them): without
    # it every response waited ~40 ms for the client's delayed ACK of its first segment (GET
    # /v1/health 44.8 ms -> 2.4 ms on loopback, a one-text predict 96 -> 50 ms; docs/serve.md).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise LayerfuseError(f"cannot listen on {host}:{port} ({e.strerror}): pick another --port "
                             "(0 picks a free one)") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _server_class(uvicorn):
    """uvicorn's Server, except that after a graceful shutdown on SIGTERM/SIGINT the process exits
    normally (code 0, after the "stopped" line) instead of uvicorn re-raising the signal."""

    class Server(uvicorn.Server):
        signals: list[int] = []

        @contextlib.contextmanager
        def capture_signals(self):
            with super().capture_signals():
                try:
                    yield
                finally:
                    captured = getattr(self, "_captured_signals", None)
                    if isinstance(captured, list):
                        self.signals = list(captured)
                        captured.clear()

    return Server


def cmd_serve(args) -> int:
    """Load the classifier, listen, and serve until SIGTERM/SIGINT (in-flight requests finish)."""
    try:
        import uvicorn

        from layerfuse.serve.app import ServeSettings, create_app
        from layerfuse.serve.batcher import in_short_lived_thread
    except ImportError as e:
        raise LayerfuseError(f"layerfuse serve needs the serve extra ({e.name} is missing): "
                             "pip install 'layerfuse[serve]'") from None
    from layerfuse.embed.device import resolve_device
    from layerfuse.pipeline import MANIFEST, load

    _check(args)
    pipe = in_short_lived_thread(load, args.classifier)  # see its docstring: torch's OpenMP teams
    manifest = json.loads((Path(args.classifier) / MANIFEST).read_text())
    settings = ServeSettings(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_texts=args.max_texts,
                             max_text_bytes=args.max_text_bytes, max_queue=args.max_queue,
                             device=resolve_device(args.device), cache_dir=args.cache_dir, compile=args.compile)
    sock = _listen(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    server: uvicorn.Server | None = None

    def log(msg: str) -> None:
        print(f"layerfuse serve: {msg}", file=sys.stderr, flush=True)

    def on_ready(seconds: float) -> None:
        log(f"ready in {seconds:.1f} s: {len(pipe.classes)} labels, max batch {args.max_batch}, "
            f"max wait {args.max_wait_ms:g} ms")

    def on_failed(error: BaseException) -> None:
        if server is not None:
            server.should_exit = True

    app = create_app(pipe, settings, manifest=manifest, on_ready=on_ready, on_failed=on_failed, log=log)
    config = uvicorn.Config(app, log_level="warning", access_log=args.access_log, lifespan="on",
                            http=args.http, loop=args.loop, timeout_graceful_shutdown=args.shutdown_timeout)
    server = _server_class(uvicorn)(config)
    log(f"listening on http://{shown}:{port} (loading the model; GET /v1/health says ready when done; "
        f"API docs at /docs; HTTP {_resolved(args.http, _HTTP, 'h11')}, loop {_resolved(args.loop, _LOOP, 'asyncio')})")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    error = app.state.batcher.startup_error
    if error is not None:
        if isinstance(error, LayerfuseError):
            raise error
        raise LayerfuseError(f"the model failed to load ({type(error).__name__}: {error})")
    why = ", ".join(signal.Signals(s).name for s in server.signals) or "shutdown"
    log(f"stopped ({why})")
    return 0
