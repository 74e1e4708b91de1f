"""How load-dependent is the ``--dtype auto`` measurement?

    python benchmarks/dtype_auto.py                      # 12 repetitions of each measurement
    python benchmarks/dtype_auto.py --busy --out benchmarks/results/dtype_auto_amx

Repeats, in one process, (a) the in-process measurement ``--dtype auto`` first used (best of 5
fp32 and best of 5 bf16 [256,1024]x[1024,1024] products, timed one dtype after the other), (b) the
median of 30 back-to-back ratios of that same product (kept per CPU model until 2026-12-07
evening) and (c) the one kept now (:func:`layerfuse.embed.device.measure_bf16_speedup`: median of
15 back-to-back ratios of :data:`~layerfuse.embed.device.MEASURED_PRODUCT`), and prints the spread
of each and how often each would pick bf16 (threshold 1.5×). ``--busy`` repeats all three with a
second process keeping one core busy (a one-thread fp32 matmul loop), the load a shared machine
or a job next door brings. Since the measurement is taken once and read back, the decision of
every later run is the kept one; this script shows how much that single measurement can vary.
Results: ``benchmarks/results/dtype_auto.json`` (or ``--out``, ``.json`` and ``.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from layerfuse.embed.device import (  # noqa: E402
    BF16_MIN_SPEEDUP,
    MEASURED_PRODUCT,
    _cpu_model,
    bf16_instructions,
    measure_bf16_speedup,
)

BUSY = "import torch; torch.set_num_threads(1); a = torch.randn(2000, 2000)\nwhile True: a @ a"


def former_measurement() -> float:
    """The in-process timing ``--dtype auto`` used first (best of 5 each, dtypes one after the other)."""
    best = {}
    for dt in (torch.float32, torch.bfloat16):
        a, b = torch.randn(256, 1024).to(dt), torch.randn(1024, 1024).to(dt)
        a @ b
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
        best[dt] = min(times)
    return best[torch.float32] / best[torch.bfloat16]


MEASUREMENTS = {
    "first (best of 5 each, [256,1024]x[1024,1024])": former_measurement,
    "kept until now (median of 30, [256,1024]x[1024,1024])": lambda: measure_bf16_speedup(30, (256, 1024, 1024)),
    "kept now (median of 15, [{},{}]x[{},{}])".format(*MEASURED_PRODUCT[:2], *MEASURED_PRODUCT[1:]):
        lambda: measure_bf16_speedup(),
}


def repeat(reps: int) -> dict:
    vals: dict[str, list[float]] = {name: [] for name in MEASUREMENTS}
    for _ in range(reps):
        for name, fn in MEASUREMENTS.items():
            vals[name].append(fn())
    out = {}
    for name, v in vals.items():
        picks = sum(x >= BF16_MIN_SPEEDUP for x in v)
        out[name] = {"min": min(v), "max": max(v), "values": v, "picks_bf16": picks, "reps": len(v)}
        print(f"  {name:<56} bf16/fp32 {min(v):5.2f}-{max(v):5.2f}×, picks bf16 {picks}/{len(v)}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=12)
    ap.add_argument("--busy", action="store_true", help="also repeat with one core kept busy by a second process")
    ap.add_argument("--out", help="results path without suffix (default benchmarks/results/dtype_auto)")
    args = ap.parse_args()
    phases = {}
    print("idle:", flush=True)
    phases["idle"] = {"load_average_1min": os.getloadavg()[0], "rows": repeat(args.reps)}
    if args.busy:
        proc = subprocess.Popen([sys.executable, "-c", BUSY])
        try:
            time.sleep(2)
            print("one core busy:", flush=True)
            phases["one core busy"] = {"load_average_1min": os.getloadavg()[0], "rows": repeat(args.reps)}
        finally:
            proc.kill()
    command = ("python benchmarks/dtype_auto.py" + ("" if args.reps == 12 else f" --reps {args.reps}")
               + (" --busy" if args.busy else "") + (f" --out {args.out}" if args.out else ""))
    res = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M"), "cpu": _cpu_model(),
           "bf16_instructions": bf16_instructions(), "cores": os.cpu_count(), "torch": torch.__version__,
           "phases": phases}
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / "dtype_auto"
    out.with_suffix(".json").write_text(json.dumps(res, indent=2))
    md = [f"Command: `{command}` ({res['date']}, {res['cpu']}, {res['cores']} cores, bf16 instructions: "
          f"{res['bf16_instructions']}, torch {res['torch']})", "",
          "| phase | measurement | bf16 / fp32, least – most | picks bf16 |", "| --- | --- | --- | ---: |"]
    for phase, ph in phases.items():
        for name, r in ph["rows"].items():
            md.append(f"| {phase} (load {ph['load_average_1min']:.1f}) | {name} | {r['min']:.2f}× – {r['max']:.2f}× | "
                      f"{r['picks_bf16']} of {r['reps']} |")
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
