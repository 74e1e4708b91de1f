"""Do process-wide settings (environment variables read at start) make extraction faster? Side by side:

    python benchmarks/env_ab.py --env THP_MEM_ALLOC_ENABLE=1 --env "OMP_PROC_BIND=true OMP_PLACES=cores"

Each setting, and the unchanged environment, runs the same extraction in a fresh child process:
one backbone in its ``--dtype``, the first ``--texts`` SST-2 train texts length-sorted, every layer,
mean + last pooling, a warm-up pass over a twentieth of them, then two timed passes. The settings
take turns for ``--rounds`` rounds (baseline, setting 1, setting 2, ... each round), so drift of a
shared machine hits all alike. Reported: tokens/s of each child, the median per setting and its
ratio to the baseline's, and the minor page faults of the timed passes. Writes
benchmarks/results/env_ab.{json,md}.

Settings worth knowing: ``THP_MEM_ALLOC_ENABLE=1`` makes torch's CPU allocator ask for transparent
huge pages for large tensors (useful where THP is ``madvise``); ``OMP_PROC_BIND``/``OMP_PLACES``
pin the OpenMP threads to cores; ``GOMP_SPINCOUNT`` / ``OMP_WAIT_POLICY`` say how long libgomp's
threads spin before they sleep between parallel regions. ``--compiled``: the blocks run compiled
(:mod:`layerfuse.embed.compiled`), whose fused kernels are many short parallel regions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {src!r})
from layerfuse.cli.main import quiet_libraries
from layerfuse.config import BATCH_TOKENS_BY_DTYPE
from layerfuse.data.builtin import load_builtin
from layerfuse.embed.backbones import load_backbone
from layerfuse.embed.extract import tokenize
from layerfuse.embed.forward import embed_sorted
quiet_libraries()
bb = load_backbone({model!r}, dtype={dtype!r}, device="cpu", progress=False)
texts = load_builtin("sst2").splits["train"].texts[:{texts}]
enc, _ = tokenize(bb, texts, 128)
enc = sorted(enc, key=len, reverse=True)
bt = BATCH_TOKENS_BY_DTYPE[{dtype!r}]
if {compiled!r}:
    from layerfuse.embed.compiled import compile_blocks
    assert compile_blocks(bb, announce=print), "could not compile the blocks"
embed_sorted(bb, enc[::20], ["mean", "last"], bb.n_layers, batch_tokens=bt)
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
t0 = time.perf_counter()
for _ in range(2):
    embed_sorted(bb, enc, ["mean", "last"], bb.n_layers, batch_tokens=bt)
dt = time.perf_counter() - t0
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
print(json.dumps({{"seconds": dt, "tokens_per_s": 2 * sum(map(len, enc)) / dt, "minor_faults": faults}}))
"""


def main() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_util import write_results

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", action="append", default=[], help='one setting: "NAME=VALUE [NAME=VALUE ...]"')
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--texts", type=int, default=1200)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--compiled", action="store_true", help="compile the blocks first (layerfuse.embed.compiled)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "env_ab"))
    args = ap.parse_args()
    settings = {"unchanged": {}}
    for spec in args.env:
        settings[spec] = dict(item.split("=", 1) for item in shlex.split(spec))
    code = CHILD.format(src=str(ROOT / "src"), model=args.model, dtype=args.dtype, texts=args.texts,
                       compiled=args.compiled)
    load_before = os.getloadavg()[0]
    runs: dict = {name: [] for name in settings}
    for r in range(args.rounds):
        for name, extra in settings.items():
            env = {**os.environ, **extra}
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            runs[name].append(res)
            print(f"round {r + 1}  {name:<44} {res['tokens_per_s']:7.0f} tokens/s  {res['minor_faults']:>9,} faults",
                  flush=True)
    base = statistics.median(x["tokens_per_s"] for x in runs["unchanged"])
    rows = [{"setting": name, "env": settings[name], "runs": runs[name],
             "median_tokens_per_s": statistics.median(x["tokens_per_s"] for x in runs[name]),
             "vs_unchanged": statistics.median(x["tokens_per_s"] for x in runs[name]) / base} for name in settings]
    command = "python benchmarks/env_ab.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    data = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "model": args.model, "dtype": args.dtype, "texts": args.texts, "rounds": args.rounds,
            "compiled": args.compiled,
            "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]}, "rows": rows}
    md = [f"Command: `{command}` ({data['date']}, {data['machine']}; load average {load_before:.1f} before, "
          f"{data['load_average_1min']['after']:.1f} after)", "",
          f"{args.model} in {args.dtype}{', compiled blocks' if args.compiled else ''}, {args.texts} SST-2 train texts, every layer, mean + last, two timed passes "
          f"per child process; {args.rounds} rounds, the settings in turn.", "",
          "| setting | tokens/s per round | median | vs unchanged | minor faults per round |",
          "| --- | --- | ---: | ---: | --- |"]
    for row in rows:
        speeds = ", ".join(f"{x['tokens_per_s']:.0f}" for x in row["runs"])
        faults = ", ".join(f"{x['minor_faults']:,}" for x in row["runs"])
        md.append(f"| {row['setting']} | {speeds} | {row['median_tokens_per_s']:.0f} | {row['vs_unchanged']:.2f}× | "
                  f"{faults} |")
    for line in md[-len(rows) - 2:]:
        print(line)
    write_results(args.out, data, md)


if __name__ == "__main__":
    main()
