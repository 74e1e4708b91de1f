"""Does training grid rows in parallel processes pay? Times ``run_grid`` three ways, side by side.

    python benchmarks/grid_workers.py                    # all of SST-2, smollm2-135m + minilm-l6
    python benchmarks/grid_workers.py --dataset r8 --limit 3000 --rounds 2

The same grid (each model alone + every fusion of the pair; 3 seeds; the paper's MLP head) on
the same cached embeddings, trained:

* ``sequential, 1 thread``: one row after another, torch on one thread;
* ``sequential, all threads``: one row after another, torch on every core (the default of a
  plain run);
* ``N workers``: ``run_grid(workers=N)``, N rows at a time in spawned processes, the threads
  divided among them.

Each mode runs ``--rounds`` times, interleaved (a, b, c, a, b, c, ...), and the median wall time
counts; the ratios are what to trust on a shared machine. The rows of the 1-thread sequential run
and of the workers (one thread each where cores = workers) must agree to the last digit: the
script checks it. Writes benchmarks/results/grid_workers.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from layerfuse.cli.main import quiet_libraries  # noqa: E402
from layerfuse.data.builtin import load_builtin  # noqa: E402
from layerfuse.run.prepare import prepare_models
from layerfuse.run.grid import run_grid
from layerfuse.run.workers import worker_threads  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "grid_workers"


def scores(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="sst2")
    ap.add_argument("--limit", type=int, default=7000, help="texts per split (stratified; default 7000: all of SST-2)")
    ap.add_argument("--models", default="smollm2-135m,minilm-l6")
    ap.add_argument("--fusions", default="concat,sum,attention")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args()
    quiet_libraries()

    cores = os.cpu_count() or 1
    all_threads = torch.get_num_threads()
    ds = load_builtin(args.dataset).subsample(args.limit)
    models = args.models.split(",")
    fusions = args.fusions.split(",")
    print(f"machine: {platform.processor() or platform.machine()}, {cores} cores; {ds.name}, "
          f"{len(ds.splits['train'])} train / {len(ds.splits['test'])} test; {', '.join(models)}", flush=True)
    preps = prepare_models(ds, models, poolings=["mean", "last"], layers="auto", progress=True,
                           log=lambda *a: print(*a, flush=True))

    def grid(threads: int, workers: int):
        torch.set_num_threads(threads)
        try:
            t0 = time.perf_counter()
            res = run_grid(ds, preps, fusions, workers=workers, progress=False, log=lambda *a: None)
            return time.perf_counter() - t0, res
        finally:
            torch.set_num_threads(all_threads)

    modes = {
        "sequential, 1 thread": (1, 1),
        f"sequential, {all_threads} threads": (all_threads, 1),
        f"{args.workers} workers, {worker_threads(args.workers)} thread(s) each": (all_threads, args.workers),
    }
    times = {m: [] for m in modes}
    rows = {}
    for r in range(args.rounds):
        for name, (threads, workers) in modes.items():
            seconds, res = grid(threads, workers)
            times[name].append(seconds)
            rows[name] = res.rows
            print(f"round {r + 1}: {name:<36} {seconds:7.1f} s", flush=True)
    median = {m: statistics.median(t) for m, t in times.items()}
    names = list(modes)
    base = median[names[0]]
    same = scores(rows[names[0]]) == scores(rows[names[2]])
    one_thread_each = worker_threads(args.workers) == 1
    if one_thread_each and not same:
        raise SystemExit("the workers' rows differ from the sequential 1-thread rows: a bug")
    n_rows = len(rows[names[0]])
    result = {
        "command": "python benchmarks/grid_workers.py" + "".join(
            f" --{k} {getattr(args, k)}" for k, d in [("dataset", "sst2"), ("limit", 7000),
                                                      ("models", "smollm2-135m,minilm-l6"),
                                                      ("fusions", "concat,sum,attention"),
                                                      ("workers", cores), ("rounds", 1)]
            if getattr(args, k) != d) + ("" if Path(args.out) == DEFAULT_OUT else f" --out {args.out}"),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "dataset": ds.name, "train": len(ds.splits["train"]), "test": len(ds.splits["test"]),
        "models": models, "fusions": fusions, "rows": n_rows, "seeds": 3,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": cores, "threads": all_threads,
                    "torch": torch.__version__},
        "seconds": times, "median_seconds": median,
        "speedup_vs_sequential_1_thread": {m: base / median[m] for m in names},
        "speedup_workers_vs_sequential_all_threads": median[names[1]] / median[names[2]],
        "workers_rows_equal_sequential_1_thread": same,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"Command: `{result['command']}` ({result['date']}, {ds.name}: {result['train']} train / "
             f"{result['test']} test texts, {' + '.join(models)}, {n_rows} grid rows × 3 seeds, {cores} cores, "
             f"torch {torch.__version__}; median of {args.rounds} round(s))", "",
             "| mode | grid seconds | vs sequential, 1 thread |", "| --- | ---: | ---: |"]
    for m in names:
        lines.append(f"| {m} | {median[m]:.1f} | {base / median[m]:.2f}× |")
    lines += ["", f"Workers vs sequential on all threads: {result['speedup_workers_vs_sequential_all_threads']:.2f}×. "
              f"Rows of the workers and of the 1-thread sequential run identical: {'yes' if same else 'no'}."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
