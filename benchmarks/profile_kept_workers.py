"""Does a small profile pay for a second process once `layerfuse run` keeps its workers? Side by side:

    python benchmarks/profile_kept_workers.py --model minilm-l6 --dataset sst2 --rounds 3

``prepare_models`` on one model's cached embeddings (both poolings, every score, the default
window shortlist, the per-layer test column; no saved profiles read), inside
``run.workers.keep_workers(1)`` with the kept worker already warm (as in `layerfuse run`, where it
starts before the first model loads), two ways, interleaved over ``--rounds`` (a, b, a, b, ...):

* ``1 process``: the poolings one after the other here (what a profile below
  ``run.prepare.PARALLEL_PROFILE_VALUES`` got before the kept workers);
* ``2 processes, kept worker``: one pooling here, the other in the kept worker.

The median of each counts; the two must choose the same pooling and layers, and their rows must
agree exactly (the script checks both). Embeddings are extracted first if they are not in the
cache (not timed). Writes benchmarks/results/profile_kept_workers_<model>.{json,md}.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

MODES = [("1 process", 1), ("2 processes, kept worker", 2)]


def main() -> None:
    from bench_util import write_results
    from layerfuse.cli.main import quiet_libraries
    from layerfuse.data.builtin import load_builtin
    from layerfuse.embed.extract import extract
    from layerfuse.run.prepare import prepare_models
    from layerfuse.run.workers import keep_workers, share_tasks

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--dataset", default="sst2")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    quiet_libraries()
    ds = load_builtin(args.dataset)
    extraction = {"max_length": args.max_length, "dtype": args.dtype}
    emb = extract(args.model, data=ds, poolings=("mean", "last"), progress=False, **extraction)  # not timed
    n, width = emb.array("train", "mean").shape[1:]
    values = int(n) * int(width) * (emb.depth + 1)
    load_before = os.getloadavg()[0]
    times: dict = {name: [] for name, _ in MODES}
    results: dict = {}
    with keep_workers(1):
        share_tasks(len, [((),), ((),)], processes=2, on_result=lambda i, r: None)  # the worker is warm
        for r in range(args.rounds):
            for name, workers in MODES:
                t0 = time.perf_counter()
                prep = prepare_models(ds, [args.model], poolings=("mean", "last"), extraction=extraction,
                                      profile_workers=workers, progress=False, log=lambda *_: None)[0]
                seconds = time.perf_counter() - t0
                times[name].append(seconds)
                results[name] = prep
                print(f"round {r + 1}  {name:<26} {seconds:6.2f} s  -> {prep.spec.label()}", flush=True)
    base = statistics.median(times[MODES[0][0]])
    a, b = (results[name] for name, _ in MODES)
    # As JSON, so that NaN (the top-k row's depth) equals NaN.
    same_rows = all(json.dumps(a.profiles[p].rows, sort_keys=True) == json.dumps(b.profiles[p].rows, sort_keys=True)
                    for p in a.profiles)
    rows = [{"mode": name, "profile_workers": w, "seconds": times[name], "median_s": statistics.median(times[name]),
             "speedup": base / statistics.median(times[name]), "layers": results[name].spec.label()}
            for name, w in MODES]
    command = "python benchmarks/profile_kept_workers.py " + " ".join(sys.argv[1:])
    data = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.processor()
            or platform.machine(), "cores": os.cpu_count(), "model": args.model, "dataset": args.dataset,
            "train_texts": int(n), "profile_values": values,
            "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
            "rows": rows, "same_choice": a.spec.label() == b.spec.label(), "same_rows": same_rows}
    md = [f"Command: `{command}` ({data['date']}, {data['cores']} cores, load average {load_before:.1f} before, "
          f"{data['load_average_1min']['after']:.1f} after)", "",
          f"{args.model} on {args.dataset} train ({n:,} texts × {width} × {emb.depth + 1} layers = {values:,} values), "
          f"both poolings, every score, the per-layer test column; {args.rounds} rounds, interleaved.", "",
          "| mode | median | each round | vs 1 process | layers chosen |", "| --- | ---: | --- | ---: | --- |"]
    for row in rows:
        each = ", ".join(f"{s:.2f}" for s in row["seconds"])
        md.append(f"| {row['mode']} | {row['median_s']:.2f} s | {each} | {row['speedup']:.2f}× | {row['layers']} |")
    md += ["", f"Same choice: {data['same_choice']}; identical profile rows: {same_rows}."]
    for line in md[-len(rows) - 3:]:
        print(line)
    write_results(args.out or ROOT / "benchmarks" / "results" / f"profile_kept_workers_{args.model}", data, md)


if __name__ == "__main__":
    main()
