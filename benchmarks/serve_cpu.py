"""Where the CPU goes while `layerfuse serve` is under load: the server's threads and the client's.

    python benchmarks/serve_cpu.py --classifier out/run-sst2/classifier --compare client
    python benchmarks/serve_cpu.py --classifier out/run-sst2/classifier --compare wait --rounds 3

One batched server (``--max-batch 32``) on a free loopback port, 32 closed-loop clients sending
single SST-2 test sentences (``serve_load.load``), ``--requests`` requests per run after a short
warm-up. For each run: texts/s, the mean batch and model time per text (from ``/metrics``), p99,
the CPU seconds of each server thread over the run (from ``/proc/PID/task``: the batcher thread
and its OpenMP helper run the model, the main thread's event loop the HTTP side) and of the client
process, per request.

``--compare client``: the lean asyncio client against httpx's ``AsyncClient``, ``--max-wait-ms
10``. ``--compare wait``: ``--max-wait-ms`` 10 against 30, lean client. The two variants take turns
for ``--rounds`` rounds, each run with a fresh server. Writes
benchmarks/results/serve_cpu_<compare>.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import serve_load as sl  # noqa: E402
from bench_util import write_results  # noqa: E402

COMPARE = {"client": [("raw client", "raw", "10"), ("httpx client", "httpx", "10")],
           "wait": [("--max-wait-ms 10", "raw", "10"), ("--max-wait-ms 30", "raw", "30")]}


def thread_cpu(pid: int) -> dict:
    """CPU seconds so far of each thread of ``pid``, keyed by name and id."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        out[f"{name}:{tid}"] = (int(fields[11]) + int(fields[12])) / tick
    return out


def one_run(classifier: str, texts: list[str], client: str, wait: str, requests: int) -> dict:
    proc, url, _ = sl.start_server(classifier, "--max-batch", "32", "--max-wait-ms", wait)
    try:
        asyncio.run(sl.load(url, texts, 32, 64, 10, 4, 0, client_kind=client))  # warm-up load
        before, c0 = thread_cpu(proc.pid), resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        part = asyncio.run(sl.load(url, texts, 32, requests, 120, 0, 100, client_kind=client))
        wall = time.perf_counter() - t0
        after, c1 = thread_cpu(proc.pid), resource.getrusage(resource.RUSAGE_SELF)
        counts = sl.batch_counts(url) - part["counts_before"]
    finally:
        proc.terminate()
        proc.wait(60)
    n = len(part["latencies"])
    threads = sorted(((k, after[k] - before.get(k, 0.0)) for k in after), key=lambda kv: -kv[1])
    lat = sorted(part["latencies"])
    return {"requests": n, "errors": part["errors"], "seconds": wall, "texts_per_s": n / wall,
            "mean_batch": counts[0] / counts[1] if counts[1] else 0.0,
            "model_ms_per_text": 1000 * counts[2] / counts[0] if counts[0] else 0.0,
            "p99_s": lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            "client_cpu_s": (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime),
            # uvicorn's event loop runs in the server's main thread (thread id = process id)
            "event_loop_cpu_s": next((v for k, v in threads if k.endswith(f":{proc.pid}")), 0.0),
            "server_threads_cpu_s": [[k, round(v, 2)] for k, v in threads if v > 0.05]}


def main() -> None:
    from layerfuse.data.builtin import load_builtin

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classifier", default="out/run-sst2/classifier")
    ap.add_argument("--compare", choices=sorted(COMPARE), default="client")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    texts = load_builtin("sst2").splits["test"].texts
    runs = collections.defaultdict(list)
    load_before = os.getloadavg()[0]
    for r in range(args.rounds):
        for name, client, wait in COMPARE[args.compare]:
            res = one_run(args.classifier, texts, client, wait, args.requests)
            runs[name].append(res)
            top = ", ".join(f"{k} {v:.2f} s" for k, v in res["server_threads_cpu_s"][:3])
            print(f"round {r + 1}  {name:<18} {res['texts_per_s']:5.1f} texts/s  batch {res['mean_batch']:.1f}  "
                  f"model {res['model_ms_per_text']:.1f} ms/text  p99 {res['p99_s']:.2f} s  client CPU "
                  f"{res['client_cpu_s']:.2f} s  server threads: {top}", flush=True)
    command = "python benchmarks/serve_cpu.py " + " ".join(sys.argv[1:])
    data = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M"), "cores": os.cpu_count(),
            "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]}, "runs": dict(runs)}
    md = [f"Command: `{command}` ({data['date']}, {data['cores']} cores, load average {load_before:.1f} before, "
          f"{data['load_average_1min']['after']:.1f} after)", "",
          f"One batched server (--max-batch 32), 32 closed-loop clients, {args.requests} single-sentence requests "
          "per run after a warm-up; CPU per request from /proc (server threads) and getrusage (client).", "",
          "| variant | round | texts/s | mean batch | model ms/text | p99 s | client CPU ms/request | "
          "busiest server thread ms/request | event loop ms/request |",
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, rs in runs.items():
        for i, res in enumerate(rs):
            n = res["requests"]
            threads = res["server_threads_cpu_s"]
            busiest = threads[0][1] if threads else 0.0
            loop = res["event_loop_cpu_s"]
            md.append(f"| {name} | {i + 1} | {res['texts_per_s']:.1f} | {res['mean_batch']:.1f} | "
                      f"{res['model_ms_per_text']:.1f} | {res['p99_s']:.2f} | {1000 * res['client_cpu_s'] / n:.2f} | "
                      f"{1000 * busiest / n:.1f} | {1000 * loop / n:.2f} |")
    write_results(args.out or ROOT / "benchmarks" / "results" / f"serve_cpu_{args.compare}", data, md)


if __name__ == "__main__":
    main()
