"""Extraction on Ray with 1 and 2 workers on this machine, side by side in one run.

    python benchmarks/ray_scaling.py                    # minilm-l6, 2048 SST-2 sentences
    python benchmarks/ray_scaling.py --model smollm2-135m --n 512

Rows, every one extracting every layer (mean + last pooling, float32 compute, float16 cache) of
the same texts into a fresh cache, in chunks of ``--chunk-texts``:

* ``local 1 thread`` / ``local 2 threads``: ``extract_texts`` in this process;
* ``ray 1 worker`` / ``ray 2 workers``: the same call with a :class:`RayExtraction` runner on a
  local Ray instance (``num_cpus=2``), one CPU and one torch thread per actor. The actors are
  started and have loaded the model before the clock starts (that start-up is reported apart), so
  the rows compare chunk throughput; the driver's chunk writes are inside the clock.

Rows run ``--repeats`` times, interleaved, and the best of each is kept (the machine is shared:
the load average is recorded). Also measured, for the projection in docs/scale.md: what the
driver spends per byte writing chunks (``write_chunk``: save + fsync + sha256) and assembling the
final arrays (``finalise``). Results go to ``benchmarks/results/ray_scaling.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_util import write_results  # noqa: E402
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--n", type=int, default=2048, help="SST-2 training sentences (default 2048)")
    p.add_argument("--chunk-texts", type=int, default=128, help="texts per cache chunk (default 128)")
    p.add_argument("--batch-tokens", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ray_scaling"))
    p.add_argument("--project", action="store_true",
                   help="no extraction: measure the driver at full-size chunks and write the 1M-document "
                        "projection (ray_projection.{json,md}) from the measured ray_scaling.json")
    return p.parse_args(argv)


def one_row(args, xs, name, tmp, run=None, threads=1) -> dict:
    import torch

    from layerfuse.embed.extract import extract_texts

    torch.set_num_threads(threads)
    load0 = os.getloadavg()[0]
    startup = run.warm_up() if run is not None else None
    t0, c0 = time.perf_counter(), time.process_time()
    _, st = extract_texts(args.model, xs, text_fingerprint=f"bench-{len(xs)}", poolings=("mean", "last"),
                          dtype="float32", storage="float16", batch_tokens=args.batch_tokens,
                          chunk_texts=args.chunk_texts, cache_dir=tmp, progress=False,
                          loader=None if run is None else run.backbone, runner=run)
    wall, driver_cpu = time.perf_counter() - t0, time.process_time() - c0
    # CPU seconds of the forward passes: the actors' own (as they report them), or this process's.
    compute_cpu = run.stats["worker_cpu_seconds"] if run is not None else driver_cpu
    return {"row": name, "tokens": st["tokens"], "texts": st["computed_texts"], "chunk_seconds": st["seconds"],
            "driver_cpu_seconds": driver_cpu, "compute_cpu_seconds": compute_cpu,
            "tokens_per_cpu_second": st["tokens"] / compute_cpu if compute_cpu else None,
            "workers_used": None if run is None else len(run.stats["worker_pids"]),
            "wall_seconds": wall, "tokens_per_s": st["tokens"] / st["seconds"], "startup_seconds": startup,
            "load_average_1min": [load0, os.getloadavg()[0]], "entry_bytes": st["cache_bytes"],
            "n_layers": st["n_layers"], "width": st["width"]}


def driver_costs(shape, tmp: Path) -> dict:
    """Seconds per MB the driver spends writing one chunk (save + fsync + sha256) and assembling."""
    from layerfuse.cache.entries import CacheEntry

    e = CacheEntry(tmp / "write-bench")
    arr = np.random.default_rng(0).standard_normal(shape).astype(np.float16)
    n = max(2, min(12, int(256 * 2**20 // arr.nbytes)))  # about 256 MB in all
    t0 = time.perf_counter()
    for i in range(n):
        e.write_chunk("mean", i, arr, {"n": shape[1], "tokens": 0})
    write_s = (time.perf_counter() - t0) / n
    order = np.random.default_rng(1).permutation(n * shape[1])
    t0 = time.perf_counter()
    e.finalise("mean", n, order, (shape[0], n * shape[1], shape[2]), np.float16)
    fin_s = time.perf_counter() - t0
    mb = arr.nbytes / 2**20
    return {"chunk_shape": list(shape), "chunk_mb": round(mb, 2), "write_chunk_mb_per_s": round(mb / write_s, 1),
            "finalise_mb_per_s": round(n * mb / fin_s, 1)}


#: Models of the projection: (name, layers, width, parameters). smollm2-135m is packaged; the 7B is a
#: Qwen2.5-7B-shaped decoder like the paper's largest.
PROJECTED_MODELS = [("smollm2-135m", 30, 576, 135e6), ("7B decoder (Qwen2.5-7B shape)", 28, 3584, 7.6e9)]


def project(args) -> int:
    """The 1M-document wall-time projection from the measured scaling run plus stated assumptions."""
    from layerfuse.config import DEFAULT_CHUNK_TEXTS

    meas = json.loads(Path(args.out).with_suffix(".json").read_text())
    # Measured: work per token kept when going from 1 worker to 2 (above 1 is noise: capped).
    eff = min(1.0, meas["cpu_efficiency_2_workers"])
    a = {"documents": 1_000_000, "tokens_per_document": 256, "gpu_model_flops_utilisation": 0.35,
         "gpu_bf16_peak_tflops": 989.0, "network_gb_per_s": 1.25, "worker_start_seconds": 120.0,
         "poolings": 2, "storage_bytes": 2}
    rows, driver = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, layers, width, params in PROJECTED_MODELS:
            driver[name] = driver_costs((layers + 1, DEFAULT_CHUNK_TEXTS, width), Path(tmp) / name.split()[0])
    from layerfuse.data.loading import load_dataset
    from layerfuse.scale.ray_extract import driver_tokenizer

    tok = driver_tokenizer("smollm2-135m")
    sample = load_dataset("sst2").splits["train"].texts[:8192]
    t0 = time.perf_counter()
    n_tok = sum(len(ids) for ids in tok(sample, add_special_tokens=True, truncation=False, verbose=False)["input_ids"])
    tok_rate = n_tok / (time.perf_counter() - t0)
    for name, layers, width, params in PROJECTED_MODELS:
        tokens = a["documents"] * a["tokens_per_document"]
        tokenize_s = tokens / tok_rate
        per_gpu = a["gpu_bf16_peak_tflops"] * 1e12 * a["gpu_model_flops_utilisation"] / (2 * params)
        out_bytes = a["documents"] * (layers + 1) * width * a["storage_bytes"] * a["poolings"]
        d = driver[name]
        write_s = out_bytes / 2**20 / d["write_chunk_mb_per_s"]
        net_s = out_bytes / (a["network_gb_per_s"] * 1e9)
        fin_s = out_bytes / 2**20 / d["finalise_mb_per_s"]
        for n in (1, 4, 16, 64):
            compute_s = tokens / (per_gpu * n * (eff if n > 1 else 1.0))
            bound = max(compute_s, write_s, net_s)
            wall = tokenize_s + a["worker_start_seconds"] + bound + fin_s  # tokenising precedes the chunks
            rows.append({"model": name, "gpu_workers": n, "tokenize_s": tokenize_s, "compute_s": compute_s,
                         "driver_write_s": write_s,
                         "network_s": net_s, "finalise_s": fin_s, "wall_s": wall, "cache_gb": out_bytes / 1e9,
                         "bound_by": ["compute", "driver writes", "network"][[compute_s, write_s, net_s].index(bound)]})
    result = {"measured": {"ratio_2_workers_vs_1": meas["ratio_2_workers_vs_1"], "cpu_efficiency_2_workers": eff,
                           "driver": driver, "driver_tokenize_tokens_per_s": tok_rate}, "assumed": a, "rows": rows}
    out = Path(args.out).with_name("ray_projection")
    lines = [f"# Projection: {a['documents']:,} documents x {a['tokens_per_document']} tokens on N GPU workers", "",
             f"Measured here: CPU-time efficiency of 2 workers {meas['cpu_efficiency_2_workers']:.2f} (used as "
             f"{eff:.2f}, applied to every N > 1; the wall-time "
             f"ratio on this shared 2-core machine was {meas['ratio_2_workers_vs_1']:.2f}x); driver write_chunk and finalise MB/s at full-size chunks "
             f"({DEFAULT_CHUNK_TEXTS} texts); driver tokenisation {tok_rate:,.0f} tokens/s (SmolLM2's tokenizer, "
             f"one process). Assumed: {a['gpu_bf16_peak_tflops']:.0f} TFLOP/s bf16 peak per GPU "
             f"at {a['gpu_model_flops_utilisation']:.0%} model FLOPs utilisation (2 x parameters FLOPs per token), "
             f"{a['network_gb_per_s']} GB/s into the driver, {a['worker_start_seconds']:.0f} s worker start-up.", "",
             "| model | GPU workers | tokenise (h) | compute (h) | driver writes (h) | network (h) | finalise (h) "
             "| wall (h) | bound by | cache (GB) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['gpu_workers']} | {r['tokenize_s'] / 3600:.2f} | {r['compute_s'] / 3600:.2f} | {r['driver_write_s'] / 3600:.2f} | "
                     f"{r['network_s'] / 3600:.2f} | {r['finalise_s'] / 3600:.2f} | {r['wall_s'] / 3600:.2f} | "
                     f"{r['bound_by']} | {r['cache_gb']:.0f} |")
    write_results(out, result, lines)
    print("\n".join(lines))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.project:
        return project(args)
    import ray
    import torch

    from layerfuse.cli.main import quiet_libraries
    from layerfuse.data.loading import load_dataset
    from layerfuse.scale.engine import RayOptions
    from layerfuse.scale.ray_extract import RayExtraction

    quiet_libraries()
    xs = load_dataset("sst2").splits["train"].texts[: args.n]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows: dict[str, list] = {}
    plan = [("local 1 thread", None, 1), ("local 2 threads", None, 2), ("ray 1 worker", 1, 1), ("ray 2 workers", 2, 1)]
    try:
        for rep in range(args.repeats):
            for name, workers, threads in plan:
                with tempfile.TemporaryDirectory() as tmp:
                    run = (None if workers is None else
                           RayExtraction(args.model, dtype="float32", device="cpu",
                                         options=RayOptions(num_workers=workers)))
                    try:
                        r = one_row(args, xs, name, tmp, run, threads)
                    finally:
                        if run is not None:
                            run.close()
                rows.setdefault(name, []).append(r)
                print(f"[{rep + 1}/{args.repeats}] {name:<16} {r['tokens_per_s']:8.0f} tokens/s  "
                      f"({r['chunk_seconds']:.1f} s; load avg {r['load_average_1min'][0]:.1f})", flush=True)
        first = rows["ray 1 worker"][0]
        n_layers, width = first["n_layers"], first["width"]
        with tempfile.TemporaryDirectory() as tmp:
            costs = driver_costs((n_layers + 1, args.chunk_texts, width), Path(tmp))
    finally:
        ray.shutdown()
    best = {k: max(v, key=lambda r: r["tokens_per_s"]) for k, v in rows.items()}
    ratio = best["ray 2 workers"]["tokens_per_s"] / best["ray 1 worker"]["tokens_per_s"]
    # Load-independent efficiency: CPU seconds one worker needed for the job over what two needed
    # together (1.0: the second worker adds no work; Ray's and the driver's overheads are the rest).
    cpu = {k: min(r["compute_cpu_seconds"] for r in v) for k, v in rows.items()}
    cpu_eff = cpu["ray 1 worker"] / cpu["ray 2 workers"]
    driver_share = min(r["driver_cpu_seconds"] / r["chunk_seconds"] for r in rows["ray 2 workers"])
    result = {"model": args.model, "texts": len(xs), "chunk_texts": args.chunk_texts, "batch_tokens": args.batch_tokens,
              "cpus": os.cpu_count(), "machine": platform.platform(), "torch": torch.__version__,
              "ray": ray.__version__, "repeats": args.repeats, "best": best, "all": rows,
              "ratio_2_workers_vs_1": round(ratio, 3), "cpu_efficiency_2_workers": round(cpu_eff, 3),
              "driver_cpu_share_2_workers": round(driver_share, 3),
              "ratio_ray_2_workers_vs_local_2_threads": round(
                  best["ray 2 workers"]["tokens_per_s"] / best["local 2 threads"]["tokens_per_s"], 3),
              "driver": costs, "n_layers": n_layers, "width": width}
    out = Path(args.out)
    lines = [f"# Ray scaling: {args.model}, {len(xs)} SST-2 sentences, every layer ({n_layers + 1}), "
             f"chunks of {args.chunk_texts}", "",
             f"{os.cpu_count()} CPUs, {platform.platform()}, torch {torch.__version__}, ray {ray.__version__}; "
             f"best of {args.repeats} interleaved runs (shared machine: load average in the JSON).", "",
             "| row | tokens/s | vs ray 1 worker | chunk time (s) | actors' forward CPU s | tokens per CPU s | actor start-up (s) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    base = best["ray 1 worker"]["tokens_per_s"]
    for name, _, _ in plan:
        r = best[name]
        su = "-" if r["startup_seconds"] is None else f"{r['startup_seconds']:.1f}"
        cpu_cols = ("- | -" if r["workers_used"] is None else  # in-process CPU time also counts tokenising
                    f"{r['compute_cpu_seconds']:.1f} | {r['tokens_per_cpu_second']:.0f}")
        lines.append(f"| {name} | {r['tokens_per_s']:.0f} | {r['tokens_per_s'] / base:.2f}x | {r['chunk_seconds']:.1f} | "
                     f"{cpu_cols} | {su} |")
    lines += ["", f"2 workers / 1 worker: {ratio:.2f}x in wall time; CPU-time efficiency {cpu_eff:.2f} (forward-pass "
              f"CPU seconds of 1 worker over those of 2, the figure the projection uses); the driver used "
              f"{driver_share:.0%} of a core during the 2-worker rows. Load average during the rows: "
              f"{min(x['load_average_1min'][0] for v in rows.values() for x in v):.1f}-"
              f"{max(x['load_average_1min'][1] for v in rows.values() for x in v):.1f}."]
    lines += ["", f"Driver, per {costs['chunk_mb']} MB chunk ({' x '.join(map(str, costs['chunk_shape']))} float16): "
              f"write_chunk {costs['write_chunk_mb_per_s']} MB/s, finalise {costs['finalise_mb_per_s']} MB/s."]
    write_results(out, result, lines)
    print("\n".join(lines))
    print(f"\nratio 2 workers / 1 worker: {ratio:.2f}x  -> {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
