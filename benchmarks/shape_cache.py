"""Does a batch of new sentences cost more than the same batch again? oneDNN's primitive cache.

    python benchmarks/shape_cache.py --classifier out/run-sst2/classifier --capacities 1024,4096,16384

On a CPU, torch runs bf16 products through oneDNN, which builds a kernel ("primitive") per shape and
keeps the last ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` of them (1,024 by default). A served batch of new
sentences has new shapes (batch size x padded length, per sub-batch); the same batch run twice has
not. For each capacity, in a fresh process (oneDNN reads the variable once): ``--warmup`` random
groups of 20-32 SST-2 test sentences (what a server has seen), then ``--groups`` new groups of 30,
each classified twice. Reported: ms per text for new groups and for the repeat, their ratio, and
the process's peak RSS. Results go to ``benchmarks/results/shape_cache*.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def measure(classifier: str, warmup: int, groups: int, seed: int) -> dict:
    from layerfuse.data.builtin import load_builtin
    from layerfuse.pipeline import load

    pipe = load(classifier)
    texts = list(load_builtin("sst2").splits["test"].texts)
    rng = np.random.default_rng(seed)
    pipe.predict_proba(texts[:32])
    t0 = time.perf_counter()
    for _ in range(warmup):
        pipe.predict_proba([texts[i] for i in rng.choice(len(texts), int(rng.integers(20, 33)), replace=False)])
    warm_s = time.perf_counter() - t0
    first, again = [], []
    for _ in range(groups):
        grp = [texts[i] for i in rng.choice(len(texts), 30, replace=False)]
        for out in (first, again):
            t = time.perf_counter()
            pipe.predict_proba(grp)
            out.append((time.perf_counter() - t) / len(grp))
    return {"warmup_s": round(warm_s, 1), "new_ms_per_text": round(1000 * float(np.median(first)), 2),
            "repeat_ms_per_text": round(1000 * float(np.median(again)), 2),
            "new_over_repeat": round(float(np.median(first) / np.median(again)), 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--classifier", default="out/run-sst2/classifier")
    ap.add_argument("--capacities", default="1024,16384", help="ONEDNN_PRIMITIVE_CACHE_CAPACITY values")
    ap.add_argument("--warmup", type=int, default=100, help="random groups classified first (default 100)")
    ap.add_argument("--groups", type=int, default=16, help="new groups timed, each twice (default 16)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/shape_cache"))
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.classifier, args.warmup, args.groups, args.seed)))
        return
    from bench_util import write_results

    rows = []
    for cap in args.capacities.split(","):
        env = {**os.environ, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": cap}
        p = subprocess.run([sys.executable, __file__, "--child", "--classifier", args.classifier,
                            "--warmup", str(args.warmup), "--groups", str(args.groups), "--seed", str(args.seed)],
                           env=env, capture_output=True, text=True, check=True)
        row = {"capacity": int(cap), **json.loads(p.stdout.strip().splitlines()[-1])}
        rows.append(row)
        print(row, flush=True)
    import torch

    res = {"command": "python benchmarks/shape_cache.py " + " ".join(sys.argv[1:]), "when": time.strftime("%Y-%m-%d %H:%M"),
           "machine": f"{os.cpu_count()} cores, {platform.machine()}, torch {torch.__version__}",
           "classifier": args.classifier, "warmup_groups": args.warmup, "groups": args.groups, "rows": rows}
    md = [f"Command: `{res['command']}` ({res['when']}, {res['machine']})", "",
          f"{args.warmup} random groups of 20-32 SST-2 test sentences first, then {args.groups} new groups of 30, "
          "each classified twice; one fresh process per capacity.", "",
          "| ONEDNN_PRIMITIVE_CACHE_CAPACITY | new groups ms/text | same group again | new / again | peak RSS MB |",
          "| ---: | ---: | ---: | ---: | ---: |"]
    md += [f"| {r['capacity']} | {r['new_ms_per_text']} | {r['repeat_ms_per_text']} | {r['new_over_repeat']} | "
           f"{r['peak_rss_mb']:.0f} |" for r in rows]
    write_results(args.out, res, md)


if __name__ == "__main__":
    main()
