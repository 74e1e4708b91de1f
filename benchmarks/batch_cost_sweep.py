"""Which per-batch cost should prediction's batch planner charge? A sweep, in process, in one run.

    python benchmarks/batch_cost_sweep.py --classifier out/run-sst2/classifier
    python benchmarks/batch_cost_sweep.py --classifier clf --costs 0,64,128,256 --groups 20 --rounds 4

``layerfuse.embed.forward.plan_batches(..., batch_cost=c)`` cuts a group of texts into model
batches minimising padded tokens plus ``c`` tokens per batch (``embed.device.predict_batch_cost``; 0 is
the greedy cut). A small ``c`` splits a group of mixed lengths into many batches, a large one pads
more to run fewer. What a batch costs beyond its tokens depends on the CPU, so this measures it:
``--groups`` random groups of ``--size`` SST-2 test sentences (what a served batch holds at 32
concurrent clients), each ``predict_proba``'d once per cost per round, the costs in a rotated order
each round after a warm-up pass. Reports the model milliseconds per text per cost (median over
rounds) and the padded / real tokens of the cut. Writes
``benchmarks/results/batch_cost_sweep.{json,md}`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_util import write_results  # noqa: E402
from serve_load import batch_cost as planner_cost  # noqa: E402


def padding(pipe, groups: list[list[str]], cost: int) -> dict:
    """Padded / real tokens and batches per group of each backbone's cut (means over the groups)."""
    from layerfuse.config import DEFAULT_BATCH_TOKENS, DEFAULT_MAX_LENGTH
    from layerfuse.embed.forward import plan_batches, tokenize

    max_length = pipe.extraction.get("max_length", DEFAULT_MAX_LENGTH)
    budget = pipe.extraction.get("batch_tokens", DEFAULT_BATCH_TOKENS)
    out = {}
    for ref, bb in pipe._backbones.items():
        ratio, count = [], []
        for g in groups:
            enc, _ = tokenize(bb, g, max_length)
            lengths = np.sort([len(e) for e in enc])[::-1]
            batches = plan_batches(lengths, budget, batch_cost=cost)
            ratio.append(sum(len(b) * lengths[b].max() for b in batches) / lengths.sum())
            count.append(len(batches))
        out[ref] = {"padded_over_real": round(float(np.mean(ratio)), 3), "batches": round(float(np.mean(count)), 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classifier", default="out/run-sst2/classifier")
    ap.add_argument("--costs", default="0,32,64,128,256,512")
    ap.add_argument("--groups", type=int, default=12, help="random groups of texts (default 12)")
    ap.add_argument("--size", type=int, default=30, help="texts per group (default 30)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "batch_cost_sweep"))
    args = ap.parse_args()
    from layerfuse.cli.main import quiet_libraries

    quiet_libraries()
    import torch

    import layerfuse
    from layerfuse.embed.forward import prediction_batch_cost
    from layerfuse.data.builtin import load_builtin
    from layerfuse.embed.device import bf16_instructions
    from layerfuse.serve.batcher import in_short_lived_thread

    costs = [int(c) for c in args.costs.split(",")]
    texts = list(load_builtin("sst2").splits["test"].texts)
    pipe = in_short_lived_thread(layerfuse.load, args.classifier)
    rng = random.Random(0)
    groups = [rng.sample(texts, args.size) for _ in range(args.groups)]
    for c in costs:  # warm-up: loads the backbones, and the kernels meet every shape once
        with planner_cost(c):
            for g in groups:
                pipe.predict_proba(g)
    default_cost = prediction_batch_cost(next(iter(pipe._backbones.values())))  # loaded by the warm-up
    ms = {c: [] for c in costs}
    for r in range(args.rounds):
        order = costs[r % len(costs):] + costs[: r % len(costs)]
        for c in order:
            with planner_cost(c):
                t0 = time.perf_counter()
                for g in groups:
                    pipe.predict_proba(g)
                ms[c].append(1000 * (time.perf_counter() - t0) / (len(groups) * args.size))
        print(f"round {r + 1}: " + ", ".join(f"{c}: {ms[c][-1]:.2f}" for c in costs) + " ms/text", flush=True)
    med = {c: statistics.median(v) for c, v in ms.items()}
    best = min(med, key=med.get)
    pads = {c: padding(pipe, groups, c) for c in costs}
    cpu = platform.processor() or platform.machine()
    cmd = " ".join(["python benchmarks/batch_cost_sweep.py", *sys.argv[1:]])
    data = {"command": cmd, "date": time.strftime("%Y-%m-%d %H:%M"), "classifier": args.classifier,
            "backbones": list(pipe._backbones), "groups": args.groups, "size": args.size, "rounds": args.rounds,
            "ms_per_text": {str(c): v for c, v in ms.items()}, "median_ms_per_text": {str(c): v for c, v in med.items()},
            "padding": {str(c): v for c, v in pads.items()}, "fastest": best, "default": default_cost,
            "cpu": cpu, "bf16_instructions": bf16_instructions(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "load_average_1min": os.getloadavg()[0]}
    md = [f"# Prediction's per-batch cost: {', '.join(pipe._backbones)}", "",
          f"`{cmd}` ({data['date']}, {cpu}, {os.cpu_count()} cores, bf16 instructions: {data['bf16_instructions']}, "
          f"torch {torch.__version__}): {args.groups} random groups of {args.size} SST-2 test sentences, "
          f"{args.rounds} rounds in rotated order after a warm-up; load average {data['load_average_1min']:.1f}.", "",
          "| batch cost | ms per text (rounds) | median | vs the default | " +
          " | ".join(f"{ref} padded/real, batches" for ref in pipe._backbones) + " |",
          "| ---: | --- | ---: | ---: | " + " | ".join("---" for _ in pipe._backbones) + " |"]
    base = med.get(default_cost)
    for c in costs:
        vs = f"{base / med[c]:.2f}×" if base else ""
        md.append(f"| {c}{' (default)' if c == default_cost else ''} | {', '.join(f'{x:.2f}' for x in ms[c])} | "
                  f"{med[c]:.2f} | {vs} | " + " | ".join(f"{pads[c][ref]['padded_over_real']}, {pads[c][ref]['batches']}"
                                                       for ref in pipe._backbones) + " |")
    md += ["", f"Fastest: batch cost {best} ({med[best]:.2f} ms per text)."]
    print("\n".join(md[4:]))
    write_results(args.out, data, md)


if __name__ == "__main__":
    main()
