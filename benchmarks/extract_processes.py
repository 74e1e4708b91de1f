"""Does a local extraction in two processes pay? ``extract(workers=1)`` against ``workers=2``, side by side.

    python benchmarks/extract_processes.py                         # SmolLM2 + MiniLM on SST-2's train split
    python benchmarks/extract_processes.py --models smollm2-135m --rounds 3

Each model extracts the same texts (every layer, mean and last pooling, the automatic dtype and
token budget, as `layerfuse run` does) once per mode and round, interleaved (1, 2, 1, 2, ...), each
time from an empty embedding cache (the dequantised model copy is kept, so no row pays for it).
Wall time counts from the call to its return: a worker's start and model load are inside it.

* ``workers=1``: this process alone, torch on every core, the automatic batch budget;
* ``workers=2``: this process and one spawned worker, one thread each, half the budget each
  (``layerfuse.scale.local_extract``), with the worker started for the call.

The arrays of the two modes are compared (max |difference| over the array's max |value|): they
agree to the compute dtype's rounding, not bit for bit (batches are cut within units). Writes
benchmarks/results/extract_processes.{json,md}; the median of the rounds and the ratio count.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bench_util import max_rel_diff, write_results  # noqa: E402
from layerfuse.cli.main import quiet_libraries  # noqa: E402
from layerfuse.data.builtin import load_builtin  # noqa: E402
from layerfuse.embed.extract import extract  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "extract_processes"


def one(model: str, ds, workers: int, root: Path) -> tuple[float, dict, dict]:
    shutil.rmtree(root / "embeddings", ignore_errors=True)
    t0 = time.perf_counter()
    emb = extract(model, data=ds, splits=["train"], poolings="mean,last", batch_tokens="auto", cache_dir=root,
                  workers=workers, progress=False)
    wall = time.perf_counter() - t0
    arrays = {p: np.asarray(emb.array("train", p), dtype=np.float32) for p in ("mean", "last")}
    st = emb.stats
    return wall, arrays, {"tokens": st["tokens_computed"], "dtype": st["dtype"], "engine": st["engine"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="sst2")
    ap.add_argument("--limit", type=int, default=None, help="train texts (stratified; default: all)")
    ap.add_argument("--models", default="smollm2-135m,minilm-l6")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args()
    quiet_libraries()
    ds = load_builtin(args.dataset)
    if args.limit:
        ds = ds.subsample(args.limit)
    root = Path(tempfile.mkdtemp(prefix="lf-procs-"))
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} cores; {ds.name} train, {len(ds.splits['train'])} texts; "
          f"rounds {args.rounds}", flush=True)
    results = []
    try:
        for model in args.models.split(","):
            extract(model, data=ds.subsample(20), splits=["train"], cache_dir=root, progress=False)  # dequantise
            walls: dict = {1: [], 2: []}
            arrays: dict = {}
            stats: dict = {}
            for r in range(args.rounds):
                for w in (1, 2):
                    wall, arr, st = one(model, ds, w, root)
                    walls[w].append(wall)
                    arrays[w], stats[w] = arr, st
                    print(f"  {model} round {r + 1} workers={w}: {wall:.1f} s, {st['tokens'] / wall:,.0f} tok/s",
                          flush=True)
            diff = {p: max_rel_diff(arrays[1][p], arrays[2][p]) for p in arrays[1]}
            med = {w: statistics.median(v) for w, v in walls.items()}
            row = {"model": model, "tokens": stats[1]["tokens"], "texts": len(ds.splits["train"]),
                   "dtype": stats[1].get("dtype"), "walls": {str(w): v for w, v in walls.items()},
                   "median_s": {str(w): m for w, m in med.items()},
                   "tokens_per_s": {str(w): stats[1]["tokens"] / m for w, m in med.items()},
                   "speedup": med[1] / med[2], "max_rel_diff": diff}
            results.append(row)
            print(f"{model}: workers=1 {med[1]:.1f} s, workers=2 {med[2]:.1f} s -> {row['speedup']:.2f}x; "
                  f"max |diff| / max |value|: " + ", ".join(f"{p} {d:.1e}" for p, d in diff.items()), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    meta = {"machine": cpu, "cores": os.cpu_count(), "dataset": ds.name, "rounds": args.rounds,
            "command": "python benchmarks/extract_processes.py " + " ".join(sys.argv[1:])}
    lines = [f"# Extraction in one process vs two ({cpu}, {os.cpu_count()} cores)", "",
             f"`{meta['command'].strip()}`: {ds.name} train, every layer, mean + last pooling, median of "
             f"{args.rounds} interleaved rounds, each from an empty embedding cache.", "",
             "| model | dtype | tokens | workers=1 s | workers=2 s | speed-up | max rel. diff (mean / last) |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['model']} | {r['dtype']} | {r['tokens']:,} | {r['median_s']['1']:.1f} | "
                     f"{r['median_s']['2']:.1f} | {r['speedup']:.2f}x | {r['max_rel_diff']['mean']:.1e} / "
                     f"{r['max_rel_diff']['last']:.1e} |")
    write_results(args.out, {**meta, "results": results}, lines)


if __name__ == "__main__":
    main()
