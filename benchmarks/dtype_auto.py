"""How load-dependent is the ``--dtype auto`` measurement?

    python benchmarks/dtype_auto.py            # 12 repetitions of each measurement

Repeats, in one process, (a) the former in-process measurement (best of 5 fp32 and best of 5 bf16
[256,1024]x[1024,1024] products, timed one dtype after the other) and (b) the one that is now
kept per CPU model (:func:`layerfuse.embed.device.measure_bf16_speedup`: median of 30 back-to-back
ratios), and prints the spread of each and how often each would pick bf16 (threshold 1.5×). Since
the measurement is now taken once and read back, the decision of every later run is the kept one;
this script shows how much a single measurement can vary on the machine it runs on.
Results: ``benchmarks/results/dtype_auto.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from layerfuse.embed.device import BF16_MIN_SPEEDUP, _cpu_model, bf16_instructions, measure_bf16_speedup  # noqa: E402


def former_measurement() -> float:
    """The in-process timing ``--dtype auto`` used before (best of 5 each, dtypes one after the other)."""
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=12)
    args = ap.parse_args()
    rows = {"former (best of 5 each)": [], "kept (median of 30 ratios)": []}
    for _ in range(args.reps):
        rows["former (best of 5 each)"].append(former_measurement())
        rows["kept (median of 30 ratios)"].append(measure_bf16_speedup())
    summary = {}
    for name, vals in rows.items():
        picks = sum(v >= BF16_MIN_SPEEDUP for v in vals)
        summary[name] = {"min": min(vals), "max": max(vals), "values": vals, "picks_bf16": picks, "reps": len(vals)}
        print(f"{name:<28} bf16/fp32 {min(vals):5.2f}-{max(vals):5.2f}×, picks bf16 {picks}/{len(vals)}")
    load = os.getloadavg()
    out = ROOT / "benchmarks" / "results" / "dtype_auto.json"
    out.write_text(json.dumps({"command": "python benchmarks/dtype_auto.py" + ("" if args.reps == 12 else f" --reps {args.reps}"),
                               "date": time.strftime("%Y-%m-%d %H:%M"), "cpu": _cpu_model(),
                               "bf16_instructions": bf16_instructions(), "cores": os.cpu_count(),
                               "load_average_1min": load[0], "torch": torch.__version__, "rows": summary}, indent=2))
    print(f"load average {load[0]:.1f}; wrote {out}")


if __name__ == "__main__":
    main()
