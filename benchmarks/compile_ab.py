"""``torch.compile`` of the transformer blocks against eager, interleaved A/B on one driver.

    python benchmarks/compile_ab.py --model smollm2-135m --dtype bfloat16 --reps 3

Same texts, same loaded weights, same sorted batches (``--batch-tokens``), streaming pooling as
extraction runs it. The compiled side replaces each block's ``forward`` by
``torch.compile(block.forward, dynamic=True)`` (the pooling hooks stay outside the compiled code,
so the pass still stops at the deepest layer asked for); every block of a model has the same code,
so one compiled graph serves them all. The first compiled pass is timed on its own (compile time,
what a fresh process pays), then each repetition runs eager and compiled in turn, so a change of
the shared machine's load hits both. Reports tokens/s, the median of the per-repetition ratios
and the largest difference of the pooled vectors. Results: ``benchmarks/results/compile_ab_<model>_<dtype>.json``.
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

from bench_util import max_rel_diff, sorted_tokens  # noqa: E402
from layerfuse.data.builtin import load_builtin  # noqa: E402
from layerfuse.embed.backbones import find_layer_list, load_backbone  # noqa: E402
from layerfuse.embed.forward import embed_sorted  # noqa: E402

POOLINGS = ("mean", "last")


def run(bb, enc, batch_tokens: int) -> tuple[float, dict]:
    side = getattr(bb.tokenizer, "padding_side", "right") or "right"
    t0 = time.perf_counter()
    out = embed_sorted(bb, enc, POOLINGS, bb.n_layers, batch_tokens=batch_tokens, padding_side=side)
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--n", type=int, default=400, help="SST-2 training sentences per repetition")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch-tokens", type=int, default=2048)
    ap.add_argument("--out", help="results file (default benchmarks/results/compile_ab_<model>_<dtype>.json)")
    args = ap.parse_args()
    texts = load_builtin("sst2").splits["train"].texts[: args.n]
    bb = load_backbone(args.model, dtype=args.dtype, progress=False)
    enc, _ = sorted_tokens(bb, texts, 512)
    tokens = int(sum(len(e) for e in enc))
    run(bb, enc[:16], args.batch_tokens)  # warm-up of the eager path

    blocks = find_layer_list(bb.model)
    eager = [b.forward for b in blocks]
    compiled = [torch.compile(f, dynamic=True) for f in eager]  # compiles on first call

    def use(forwards: list) -> None:
        for block, fwd in zip(blocks, forwards):
            block.forward = fwd

    use(compiled)
    first, _ = run(bb, enc, args.batch_tokens)  # compiles (dynamic shapes) on the way
    print(f"first compiled pass (compiling included): {first:.1f} s", flush=True)
    times = {"eager": [], "compiled": []}
    diff = 0.0
    for _ in range(args.reps):
        use(eager)
        t, out_e = run(bb, enc, args.batch_tokens)
        times["eager"].append(t)
        use(compiled)
        t, out_c = run(bb, enc, args.batch_tokens)
        times["compiled"].append(t)
        for p in POOLINGS:
            diff = max(diff, max_rel_diff(out_e[p], out_c[p]))
        print(f"eager {times['eager'][-1]:.2f} s, compiled {times['compiled'][-1]:.2f} s", flush=True)
    ratio = statistics.median(a / b for a, b in zip(times["eager"], times["compiled"]))
    res = {"command": f"python benchmarks/compile_ab.py --model {args.model} --dtype {args.dtype} --reps {args.reps}"
                      + ("" if args.n == 400 else f" --n {args.n}")
                      + ("" if args.batch_tokens == 2048 else f" --batch-tokens {args.batch_tokens}")
                      + (f" --out {args.out}" if args.out else ""),
           "date": time.strftime("%Y-%m-%d %H:%M"), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "texts": len(texts), "tokens": tokens, "batch_tokens": args.batch_tokens,
           "first_compiled_pass_s": first, "seconds": times,
           "tokens_per_s": {k: [tokens / t for t in v] for k, v in times.items()},
           "compiled_speedup_median": ratio, "max_relative_difference": diff,
           "load_average_1min": os.getloadavg()[0]}
    print(f"{args.model} {args.dtype}: eager {statistics.median(res['tokens_per_s']['eager']):.0f} tokens/s, "
          f"compiled {statistics.median(res['tokens_per_s']['compiled']):.0f} tokens/s, speed-up (median) "
          f"{ratio:.2f}x; first compiled pass {first:.1f} s; largest difference {diff:.2e} of the largest value")
    path = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"compile_ab_{args.model}_{args.dtype}.json"
    path.write_text(json.dumps(res, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
