"""Streaming pooling vs the former output_hidden_states path, interleaved A/B on one driver.

    python benchmarks/streaming_ab.py --model smollm2-135m --reps 3
    python benchmarks/streaming_ab.py --model minilm-l6 --reps 5

Same texts, same loaded weights, same sorted batches (``--batch-tokens``), one torch thread; each
repetition runs the former path then streaming, so a change of load hits both. Reports each time
and the median of the per-repetition ratios. Results: ``benchmarks/results/streaming_ab_<model>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from extract_throughput import run_hidden_states  # noqa: E402
from layerfuse.data.builtin import load_builtin  # noqa: E402
from layerfuse.embed.backbones import load_backbone  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=120)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch-tokens", type=int, default=1024)
    args = ap.parse_args()
    torch.set_num_threads(1)
    texts = load_builtin("sst2").splits["train"].texts[: args.n]
    out = {"command": f"python benchmarks/streaming_ab.py --model {args.model} --reps {args.reps}"
                      + ("" if args.n == 120 else f" --n {args.n}"),
           "date": time.strftime("%Y-%m-%d %H:%M"), "texts": len(texts), "threads": 1,
           "batch_tokens": args.batch_tokens, "rows": {}}
    for dt in ("float32", "bfloat16"):
        bb = load_backbone(args.model, dtype=dt, progress=False)
        run_hidden_states(bb, texts[:16], args.batch_tokens)
        run_hidden_states(bb, texts[:16], args.batch_tokens, streaming=True)
        t = {"output_hidden_states": [], "streaming": []}
        for _ in range(args.reps):
            t["output_hidden_states"].append(run_hidden_states(bb, texts, args.batch_tokens)["seconds"])
            t["streaming"].append(run_hidden_states(bb, texts, args.batch_tokens, streaming=True)["seconds"])
        ratio = statistics.median(a / b for a, b in zip(t["output_hidden_states"], t["streaming"]))
        out["rows"][dt] = {**t, "speedup_median": ratio}
        print(f"{dt}: output_hidden_states {[round(x, 2) for x in t['output_hidden_states']]} s, streaming "
              f"{[round(x, 2) for x in t['streaming']]} s, streaming speed-up (median) {ratio:.2f}×", flush=True)
    out["load_average_1min"] = os.getloadavg()[0]
    path = ROOT / "benchmarks" / "results" / f"streaming_ab_{args.model}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
