"""The default ``layerfuse run`` after extraction (profiles, grid, report), two versions of the code
side by side in one run:

    git worktree add /tmp/before <commit>
    python benchmarks/warm_stages.py --cache /tmp/c --code before=/tmp/before/src --code after=src

``--cache`` must hold the default run's embeddings (run ``layerfuse run`` once with
``LAYERFUSE_CACHE`` set to it). Before every run its saved profiles and grid rows (``profiles/``,
``grid/``) are deleted, so each run scores both models' profiles and trains the whole grid again,
in a fresh process (worker processes and imports included), from cached embeddings only.
The versions run interleaved (a, b, a, b, ...) for ``--rounds`` rounds; the median wall time of
each and the ratio of the medians are reported, and the fusion tables of all runs must agree
(``fusion_results.json`` without times). Writes benchmarks/results/warm_stages.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_util import write_results  # noqa: E402


def _table(out: Path) -> list[dict]:
    rows = json.loads((out / "fusion_results.json").read_text())
    rows = rows["rows"] if isinstance(rows, dict) and "rows" in rows else rows
    return [{k: v for k, v in r.items() if "seconds" not in k and k != "train_s"} for r in rows]


def _one_run(src: str, cache: Path) -> tuple[float, list[dict]]:
    for sub in ("profiles", "grid"):
        shutil.rmtree(cache / sub, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve()), "LAYERFUSE_CACHE": str(cache)}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "layerfuse", "run", "--out", tmp], env=env,
                              capture_output=True, text=True)
        seconds = time.perf_counter() - t
        if proc.returncode != 0:
            sys.exit(f"run with {src} failed:\n{proc.stderr[-3000:]}")
        if "sst2/train" in proc.stderr:
            sys.exit(f"{cache} lacks the default run's embeddings: the run extracted them")
        return seconds, _table(Path(tmp))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--code", action="append", required=True, metavar="LABEL=SRC",
                    help="a label and the src/ folder of one version (give two or more)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "warm_stages")
    args = ap.parse_args()
    codes = dict(c.split("=", 1) for c in args.code)
    seconds: dict[str, list[float]] = {k: [] for k in codes}
    tables = {}
    for r in range(args.rounds):
        for label, src in codes.items():
            s, table = _one_run(src, args.cache)
            seconds[label].append(round(s, 2))
            tables.setdefault(label, table)
            print(f"round {r + 1} {label:<10} {s:6.1f} s", flush=True)
            if table != tables[label] or table != next(iter(tables.values())):
                sys.exit(f"{label}: the fusion table differs from the other runs'")
    labels = list(codes)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    base = labels[0]
    data = {"command": "python benchmarks/warm_stages.py " + " ".join(sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "rounds": args.rounds,
            "seconds": seconds, "median_seconds": med,
            "speedup_vs_" + base: {k: round(med[base] / med[k], 3) for k in labels},
            "tables_agree": True, "load_average_1min": os.getloadavg()[0]}
    md = ["# Default run after extraction (profiles, grid, report), fresh processes, warm embedding cache",
          "", f"`{data['command']}` ({data['date']}, {data['cpus']} CPUs, {args.rounds} interleaved rounds)", "",
          "| code | runs (s) | median (s) | speed-up vs " + base + " |", "|---|---|---|---|"]
    md += [f"| {k} | {', '.join(f'{x:.1f}' for x in seconds[k])} | {med[k]:.1f} | {med[base] / med[k]:.2f}x |"
           for k in labels]
    md += ["", "The fusion tables of every run agree (times aside)."]
    print("\n".join(md[4:]))
    write_results(args.out, data, md)


if __name__ == "__main__":
    main()
