"""`layerfuse serve` under load: micro-batching on and off, side by side in one run, on loopback.

    python benchmarks/serve_load.py --classifier out/run-sst2/classifier

Two servers of the same classifier are started on free 127.0.0.1 ports: ``batched`` (the default
``--max-batch 32 --max-wait-ms 10``) and ``one at a time`` (``--max-batch 1``). For each number
of concurrent clients (1, 8, 32 by default) each server gets, in turn, the same closed-loop load:
every client sends single-sentence requests (SST-2 test sentences) back to back, for
``--requests`` requests in all or ``--seconds`` seconds, whichever comes first, after a few
warm-up requests. The two servers take turns in ``--rounds`` short rounds per level, so drift of
the shared machine hits both alike; the machine's load average is recorded with the results.
Reported per row: texts/s, p50/p95/p99 latency seen by the client, the mean batch size the
server ran and its model time per text (both from the server's ``/metrics``). The client runs on
the same cores as the server, in one process: by default a minimal asyncio HTTP/1.1 client (one
keep-alive connection per client, ``TCP_NODELAY``; ``--client raw``), because httpx's
``AsyncClient`` (``--client httpx``, the former client) spends ~3 ms of CPU per request there (benchmarks/serve_cpu.py),
CPU the server's model then lacks, and a returning client is slow to send its next request.

Before the servers start, the same classifier is timed in process, without HTTP: 32 texts one
``predict_proba`` call each against one call for all 32. That ratio is the most batching can give
on this machine (the model's own cost per text at batch 1 and at batch 32). The call for all 32 is
also timed with the former greedy batches (``batch_cost=0``), to show what the padding-aware
planner of ``layerfuse.embed.forward.plan_batches`` gives.

``--env NAME=VALUE`` and ``--flags '...'`` add a second pair of the same two servers, with that
environment setting or those extra ``layerfuse serve`` flags (e.g. ``--http h11 --loop asyncio``),
to the same rotation.

Results go to ``benchmarks/results/serve_load.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import platform
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from layerfuse.data.builtin import load_builtin  # noqa: E402
from layerfuse.embed.device import bf16_instructions  # noqa: E402


def start_server(classifier: str, *flags: str, env: dict | None = None) -> tuple[subprocess.Popen, str, list[str]]:
    env = {**os.environ, **(env or {}),
           "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "layerfuse.cli", "serve", classifier, "--port", "0", *flags],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    log: list[str] = []
    found = threading.Event()
    url: list[str] = []

    def drain():
        for line in proc.stderr:
            log.append(line)
            m = re.search(r"listening on (http://\S+)", line)
            if m:
                url.append(m.group(1))
                found.set()
        found.set()

    threading.Thread(target=drain, daemon=True).start()
    found.wait(300)
    if not url:
        raise SystemExit("server did not start:\n" + "".join(log))
    end = time.monotonic() + 600
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit("server exited:\n" + "".join(log))
        try:
            if httpx.get(url[0] + "/v1/health", timeout=5).status_code == 200:
                return proc, url[0], log
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("server never became ready:\n" + "".join(log))


def batch_counts(url: str) -> np.ndarray:
    """Texts batched, batches run, and model seconds so far, from the server's /metrics."""
    text = httpx.get(url + "/metrics", timeout=10).text

    def val(name):
        m = re.search(rf"^{name} (\S+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    return np.array([val("layerfuse_batch_texts_sum"), val("layerfuse_batch_texts_count"),
                     val("layerfuse_batch_seconds_sum")])


@contextlib.contextmanager
def batch_cost(cost: int):
    """Prediction's batch planner with another per-batch cost (0: the former greedy batches)."""
    from layerfuse.embed import forward

    original = forward.embed_texts
    forward.embed_texts = functools.partial(original, batch_cost=cost)
    try:
        yield
    finally:
        forward.embed_texts = original


def padding_ratios(pipe, chunks: list[list[str]], cost: int) -> dict:
    """Padded tokens / real tokens of each backbone's model batches for each group of texts, with
    the greedy cut and with the padding-aware one (mean over the groups)."""
    from layerfuse.config import DEFAULT_BATCH_TOKENS, DEFAULT_MAX_LENGTH
    from layerfuse.embed.forward import plan_batches, tokenize

    max_length = pipe.extraction.get("max_length", DEFAULT_MAX_LENGTH)
    budget = pipe.extraction.get("batch_tokens", DEFAULT_BATCH_TOKENS)
    out = {}
    for ref, bb in pipe._backbones.items():
        ratios = {"greedy": [], "planned": []}
        for chunk in chunks:
            enc, _ = tokenize(bb, chunk, max_length)
            lengths = np.sort([len(e) for e in enc])[::-1]
            for name, c in (("greedy", 0), ("planned", cost)):
                batches = plan_batches(lengths, budget, batch_cost=c)
                ratios[name].append(sum(len(b) * lengths[b].max() for b in batches) / lengths.sum())
        out[ref] = {k: round(float(np.mean(v)), 2) for k, v in ratios.items()}
    return out


def in_process_ceiling(classifier: str, texts: list[str], n: int = 32, reps: int = 3) -> dict:
    """What batching can give at best here, without HTTP: ``n`` texts one call each against one
    call for all ``n`` (the same pipeline, interleaved, best of ``reps``), the call for all timed
    with prediction's padding-aware batches and with the former greedy batches."""
    import layerfuse
    from layerfuse.embed.forward import prediction_batch_cost

    pipe = layerfuse.load(classifier)
    pipe.predict_proba(texts[:n])
    cost = prediction_batch_cost(next(iter(pipe._backbones.values())))
    single, batch, greedy = [], [], []
    chunks = [texts[n * (r + 1): n * (r + 2)] for r in range(reps)]
    for chunk in chunks:
        t0 = time.perf_counter()
        for t in chunk:
            pipe.predict_proba([t])
        single.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        pipe.predict_proba(chunk)
        batch.append(time.perf_counter() - t0)
        with batch_cost(0):
            t0 = time.perf_counter()
            pipe.predict_proba(chunk)
            greedy.append(time.perf_counter() - t0)
    return {"texts": n, "one_call_each_s": round(min(single), 3), "one_call_for_all_s": round(min(batch), 3),
            "padded_over_real_tokens": padding_ratios(pipe, chunks, cost),
            "ratio": round(min(single) / min(batch), 2), "batch_cost": cost,
            "one_call_for_all_greedy_s": round(min(greedy), 3), "greedy_ratio": round(min(single) / min(greedy), 2),
            "planner_speedup": round(min(greedy) / min(batch), 2)}


class RawConnection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads the status and body (the
    server always answers with a Content-Length): little CPU per request, unlike a full client."""

    def __init__(self, url: str):
        host, port = re.match(r"http://([^:/]+):(\d+)", url).groups()
        self.host, self.port = host, int(port)
        self.reader = self.writer = None

    async def post(self, path: str, payload) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = json.dumps(payload).encode()
        self.writer.write(b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (path.encode(), self.host.encode(), len(body), body))
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()


async def load(url: str, texts: list[str], clients: int, requests: int, seconds: float, warmup: int,
               offset: int, client_kind: str = "raw") -> dict:
    """Closed-loop load: ``clients`` clients, single-text requests back to back; raw latencies, and
    the server's batch counters taken after the warm-up (so its lone requests are not counted).
    ``client_kind``: ``raw`` (:class:`RawConnection`, one per client) or ``httpx``."""
    if client_kind == "raw":
        conns = [RawConnection(url) for _ in range(clients)]
        try:
            return await _load([c.post for c in conns], url, texts, requests, seconds, warmup, offset)
        finally:
            for conn in conns:
                await conn.close()
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as c:
        async def post(path, payload):
            return (await c.post(path, json=payload)).status_code

        return await _load([post] * clients, url, texts, requests, seconds, warmup, offset)


async def _load(posts: list, url: str, texts: list[str], requests: int, seconds: float, warmup: int,
                offset: int) -> dict:
    """The load itself; ``posts``: one ``post(path, payload) -> status`` per client."""
    for i in range(warmup):
        status = await posts[0]("/v1/predict", {"texts": [texts[(offset + i) % len(texts)]]})
        if status != 200:
            raise RuntimeError(f"a warm-up request was answered {status}")
    counts_before = batch_counts(url)  # nothing else runs yet: a blocking call is fine here
    latencies: list[float] = []
    errors = 0
    counter = iter(range(offset, offset + requests))
    deadline = time.perf_counter() + seconds

    async def client(post):
        nonlocal errors
        for i in counter:
            if time.perf_counter() > deadline:
                return
            t0 = time.perf_counter()
            if await post("/v1/predict", {"texts": [texts[i % len(texts)]]}) != 200:
                errors += 1
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(client(post) for post in posts))
    wall = time.perf_counter() - t0
    return {"latencies": latencies, "errors": errors, "seconds": wall, "counts_before": counts_before}


def summarise(parts: list[dict]) -> dict:
    lat = np.array([x for p in parts for x in p["latencies"]]) * 1000
    wall = sum(p["seconds"] for p in parts)
    return {"requests": int(lat.size), "errors": sum(p["errors"] for p in parts), "seconds": round(wall, 2),
            "texts_per_s": round(lat.size / wall, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 1), "p95_ms": round(float(np.percentile(lat, 95)), 1),
            "p99_ms": round(float(np.percentile(lat, 99)), 1)}


def markdown(res: dict) -> str:
    lines = [f"Command: `{res['command']}` ({res['when']}, {res['machine']})", "",
             f"Classifier: {res['classifier']} (backbones: {', '.join(res['backbones'])}); single-sentence "
             f"requests (SST-2 test sentences, mean {res['mean_words']:.1f} words); at most {res['requests']} "
             f"requests or {res['seconds']:g} s per row, in {res['rounds']} rounds taken in turn by the {len(res['settings'])} "
             f"servers; client: {res.get('client', 'httpx')}. Load average of the machine (1 min): {res['load_average_1min']['before']} before, "
             f"{res['load_average_1min']['after']} after.", "",
             "| clients | server | texts/s | p50 ms | p95 ms | p99 ms | mean batch | model ms/text | requests "
             "| errors |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in res["rows"]:
        lines.append(f"| {row['clients']} | {row['server']} | {row['texts_per_s']} | {row['p50_ms']} | "
                     f"{row['p95_ms']} | {row['p99_ms']} | {row['mean_batch']:.1f} | {row['model_ms_per_text']} | "
                     f"{row['requests']} | {row['errors']} |")
    lines += [""] + [f"At {c} clients: batched / one at a time = {r:.2f}× texts/s." if isinstance(c, int)
                     else f"{c}: {r:.2f}× texts/s." for c, r in res["ratios"].items()]
    c = res.get("in_process_ceiling")
    if c:
        lines += ["", f"In process, without HTTP (the most batching can give here): {c['texts']} texts one "
                  f"`predict_proba` call each took {c['one_call_each_s']} s, one call for all "
                  f"{c['one_call_for_all_s']} s: {c['ratio']}× (with the former greedy batches "
                  f"{c['one_call_for_all_greedy_s']} s, {c['greedy_ratio']}×; padding-aware batches, cost "
                  f"{c['batch_cost']} tokens per batch, {c['planner_speedup']}× faster than greedy)."]
        lines += ["", "Padded tokens / real tokens of a group of " + str(c["texts"]) + " texts (greedy → padding-aware): "
                  + "; ".join(f"{ref} {r['greedy']} → {r['planned']}" for ref, r in c["padded_over_real_tokens"].items())
                  + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--classifier", default="out/run-sst2/classifier",
                    help="saved classifier folder (default: the one `layerfuse run` writes)")
    ap.add_argument("--clients", default="1,8,32", help="concurrency levels (default 1,8,32)")
    ap.add_argument("--requests", type=int, default=400, help="most requests per row (default 400)")
    ap.add_argument("--seconds", type=float, default=45.0, help="most seconds per row (default 45)")
    ap.add_argument("--warmup", type=int, default=4, help="warm-up requests per round (default 4)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="the servers take turns this many times per level; each round gets 1/ROUNDS of the "
                         "requests and seconds (default 3)")
    ap.add_argument("--max-batch", type=int, default=32, help="--max-batch of the batched server (default 32)")
    ap.add_argument("--max-wait-ms", type=float, default=10.0, help="--max-wait-ms of the batched server")
    ap.add_argument("--client", default="raw", choices=["raw", "httpx"],
                    help="load generator: raw (a minimal asyncio HTTP/1.1 client, the default) or httpx")
    ap.add_argument("--no-ceiling", dest="ceiling", action="store_false",
                    help="skip the in-process measurement of what batching can give at best")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="also run both servers with this environment setting (repeatable), in the same "
                         "rotation, e.g. GOMP_SPINCOUNT=10000 (libgomp's spinning, docs/serve.md)")
    ap.add_argument("--flags", default="", metavar="'SERVE FLAGS'",
                    help="also run both servers with these extra `layerfuse serve` flags, in the same rotation "
                         "(with --env: one second pair with both), e.g. '--http h11 --loop asyncio'")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/serve_load"),
                    help="results prefix (.json and .md are written)")
    args = ap.parse_args()
    from layerfuse.cli.main import quiet_libraries

    quiet_libraries()
    levels = [int(x) for x in args.clients.split(",")]
    texts = load_builtin("sst2").splits["test"].texts
    man = json.loads((Path(args.classifier) / "manifest.json").read_text())
    servers = {"batched": ("--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)),
               "one at a time": ("--max-batch", "1")}
    extra_env = dict(kv.split("=", 1) for kv in args.env)
    extra_flags = tuple(shlex.split(args.flags))
    tag = ", ".join([f"{k}={v}" for k, v in extra_env.items()] + ([" ".join(extra_flags)] if extra_flags else []))
    envs = {name: None for name in servers}
    variant = bool(extra_env or extra_flags)
    if variant:  # the same two servers again with these settings, in the same rotation
        for name, flags in list(servers.items()):
            servers[f"{name} [{tag}]"] = flags + extra_flags
            envs[f"{name} [{tag}]"] = extra_env
    load_before = os.getloadavg()
    ceiling = in_process_ceiling(args.classifier, texts) if args.ceiling else None
    if ceiling:
        print(f"in process, no HTTP: {ceiling['texts']} texts one call each {ceiling['one_call_each_s']} s, "
              f"one call for all {ceiling['one_call_for_all_s']} s: {ceiling['ratio']}x "
              f"(greedy batches {ceiling['one_call_for_all_greedy_s']} s: {ceiling['greedy_ratio']}x)", flush=True)
    running = {name: start_server(args.classifier, *flags, env=envs[name]) for name, flags in servers.items()}
    rows = []
    try:
        for clients in levels:
            parts: dict[str, list] = {name: [] for name in running}
            sums: dict[str, np.ndarray] = {name: np.zeros(3) for name in running}
            for r in range(args.rounds):  # the servers take turns, round by round
                for name, (proc, url, _) in running.items():
                    part = asyncio.run(load(url, texts, clients, args.requests // args.rounds,
                                            args.seconds / args.rounds, args.warmup, offset=r * args.requests,
                                            client_kind=args.client))
                    parts[name].append(part)
                    sums[name] += batch_counts(url) - part["counts_before"]
            for name in running:
                row = summarise(parts[name])
                texts_done, batches, model_s = sums[name]
                row.update(clients=clients, server=name, mean_batch=texts_done / batches if batches else 0.0,
                           model_ms_per_text=round(1000 * model_s / texts_done, 1) if texts_done else 0.0)
                rows.append(row)
                print(f"{clients:>3} clients  {name:<14} {row['texts_per_s']:>7} texts/s  p50 {row['p50_ms']:>7} ms  "
                      f"p95 {row['p95_ms']:>7} ms  p99 {row['p99_ms']:>7} ms  mean batch {row['mean_batch']:.1f}  "
                      f"model {row['model_ms_per_text']} ms/text",
                      flush=True)
    finally:
        for proc, _, _ in running.values():
            proc.terminate()
            proc.wait(60)
    load_after = os.getloadavg()
    by = {(r["clients"], r["server"]): r for r in rows}
    ratios = {c: by[(c, "batched")]["texts_per_s"] / by[(c, "one at a time")]["texts_per_s"] for c in levels}
    if variant:
        for c in levels:
            b, o = by[(c, f"batched [{tag}]")]["texts_per_s"], by[(c, f"one at a time [{tag}]")]["texts_per_s"]
            ratios[f"At {c} clients [{tag}], batched / one at a time"] = b / o
            ratios[f"At {c} clients, batched / one at a time [{tag}]"] = by[(c, "batched")]["texts_per_s"] / o
    import torch

    res = {
        "command": "python benchmarks/serve_load.py " + shlex.join(sys.argv[1:]),
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, bf16 instructions: {bf16_instructions()}, "
                   f"torch {torch.__version__}; classifier dtype {man.get('extraction', {}).get('dtype', '?')}",
        "classifier": args.classifier, "backbones": list(man.get("backbones", {})),
        "mean_words": float(np.mean([len(t.split()) for t in texts])),
        "requests": args.requests, "seconds": args.seconds, "rounds": args.rounds, "client": args.client,
        "load_average_1min": {"before": round(load_before[0], 2), "after": round(load_after[0], 2)},
        "settings": {k: list(v) for k, v in servers.items()}, "env": {k: v for k, v in envs.items() if v},
        "in_process_ceiling": ceiling, "rows": rows,
        "ratios": {str(c): round(r, 2) for c, r in ratios.items()},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown({**res, "ratios": ratios}))
    for c, r in ratios.items():
        print(f"at {c} clients: batched / one at a time = {r:.2f}x texts/s" if isinstance(c, int) else f"{c}: {r:.2f}x")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
