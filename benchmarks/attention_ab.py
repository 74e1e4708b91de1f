"""Which attention kernel extracts faster on a CPU: PyTorch's scaled-dot-product attention or eager?

    python benchmarks/attention_ab.py                          # SmolLM2 and MiniLM, bf16 where auto picks it
    python benchmarks/attention_ab.py --dtype float32 --texts 600 --rounds 4
    python benchmarks/attention_ab.py --models smollm2-135m --compiled --rounds 4

transformers loads both packaged models with ``attn_implementation="sdpa"``, which on a CPU runs
``_scaled_dot_product_flash_attention_for_cpu``. For the short, padded, length-sorted batches of an
extraction, the eager path (two batched matmuls and a softmax) may cost less. Per model: one
backbone, a warm-up pass in each implementation, then ``--rounds`` rounds over the same
length-sorted SST-2 train texts, every layer, mean + last pooling, the order of the two
implementations alternating from round to round. Each round's sdpa/eager time ratio is kept; the
median and range of the ratios count (this machine is shared and noisy). The pooled arrays of the
two are compared (max |difference| over the array's max |value|). ``--compiled`` runs the blocks
compiled (:func:`layerfuse.embed.compiled.compile_blocks`; the warm-up compiles each
implementation's graph), where inductor fuses eager attention's mask, softmax and casts but leaves
sdpa one opaque kernel. Writes benchmarks/results/attention_ab.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bench_util import max_rel_diff, sorted_tokens, write_results  # noqa: E402
from layerfuse.cli.main import quiet_libraries  # noqa: E402
from layerfuse.config import BATCH_TOKENS_BY_DTYPE  # noqa: E402
from layerfuse.data.builtin import load_builtin  # noqa: E402
from layerfuse.embed.backbones import load_backbone  # noqa: E402
from layerfuse.embed.device import resolve_dtype  # noqa: E402
from layerfuse.embed.forward import embed_sorted  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "attention_ab"
IMPLS = ("sdpa", "eager")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2-135m,minilm-l6")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--texts", type=int, default=1200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--compiled", action="store_true", help="compile the blocks (layerfuse's compile: on)")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args()
    quiet_libraries()
    dtype = resolve_dtype(args.dtype, "cpu")
    batch_tokens = BATCH_TOKENS_BY_DTYPE[dtype]
    texts = load_builtin("sst2").splits["train"].texts[: args.texts]
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} cores; {len(texts)} SST-2 train texts; {dtype}, "
          f"{batch_tokens}-token batches; {args.rounds} rounds", flush=True)
    results = []
    for model in args.models.split(","):
        bb = load_backbone(model, dtype=dtype, device="cpu", progress=False)
        if args.compiled:
            from layerfuse.embed.compiled import compile_blocks

            if not compile_blocks(bb, warm_up=False):
                sys.exit(f"could not compile {model}'s blocks")
        enc, _ = sorted_tokens(bb, texts, 512)  # the side stays embed_sorted's default, as measured
        tokens = sum(map(len, enc))

        def run(impl, ids=enc):
            bb.model.set_attn_implementation(impl)
            t0 = time.perf_counter()
            out = embed_sorted(bb, ids, ["mean", "last"], bb.n_layers, batch_tokens=batch_tokens)
            return time.perf_counter() - t0, out

        loaded = bb.model.config._attn_implementation
        for impl in IMPLS:
            run(impl, enc[:: max(1, len(enc) // 100)])  # warm-up: first-call costs of each kernel
        secs: dict = {impl: [] for impl in IMPLS}
        arrays: dict = {}
        for r in range(args.rounds):
            for impl in IMPLS if r % 2 == 0 else IMPLS[::-1]:
                dt, out = run(impl)
                secs[impl].append(dt)
                arrays.setdefault(impl, out)
            print(f"  {model} round {r + 1}: sdpa {secs['sdpa'][-1]:.2f} s, eager {secs['eager'][-1]:.2f} s", flush=True)
        bb.model.set_attn_implementation(loaded)
        ratios = [s / e for s, e in zip(secs["sdpa"], secs["eager"])]
        diff = {p: max_rel_diff(arrays["sdpa"][p], arrays["eager"][p]) for p in ("mean", "last")}
        row = {"model": model, "loaded_as": loaded, "tokens": tokens, "seconds": secs,
               "tokens_per_s": {i: tokens / statistics.median(v) for i, v in secs.items()},
               "eager_speedup_median": statistics.median(ratios), "eager_speedup_range": [min(ratios), max(ratios)],
               "max_rel_diff": diff}
        results.append(row)
        print(f"{model}: eager / sdpa speed {row['eager_speedup_median']:.2f}x (rounds {min(ratios):.2f}-"
              f"{max(ratios):.2f}); tokens/s sdpa {row['tokens_per_s']['sdpa']:,.0f}, eager "
              f"{row['tokens_per_s']['eager']:,.0f}; max rel diff mean {diff['mean']:.1e}, last {diff['last']:.1e}",
              flush=True)
    meta = {"machine": cpu, "cores": os.cpu_count(), "dtype": dtype, "batch_tokens": batch_tokens,
            "compiled": args.compiled,
            "texts": len(texts), "rounds": args.rounds, "date": time.strftime("%Y-%m-%d %H:%M"),
            "load_average_1min": os.getloadavg()[0],
            "command": "python benchmarks/attention_ab.py " + " ".join(sys.argv[1:])}
    lines = [f"# Attention kernel on a CPU: sdpa vs eager ({cpu}, {os.cpu_count()} cores)", "",
             f"`{meta['command'].strip()}` ({meta['date']}): {len(texts)} SST-2 train texts, every layer, mean + "
             f"last pooling, {dtype}{', compiled blocks' if args.compiled else ''}, {batch_tokens}-token batches, "
             f"{args.rounds} alternating rounds after a "
             f"warm-up; load average {meta['load_average_1min']:.1f}.", "",
             "| model | tokens | sdpa tok/s | eager tok/s | eager speed-up (median, range) | max rel. diff (mean / last) |",
             "|---|---:|---:|---:|---|---|"]
    for r in results:
        lo, hi = r["eager_speedup_range"]
        lines.append(f"| {r['model']} | {r['tokens']:,} | {r['tokens_per_s']['sdpa']:,.0f} | "
                     f"{r['tokens_per_s']['eager']:,.0f} | {r['eager_speedup_median']:.2f}x ({lo:.2f}-{hi:.2f}) | "
                     f"{r['max_rel_diff']['mean']:.1e} / {r['max_rel_diff']['last']:.1e} |")
    write_results(args.out, {**meta, "results": results}, lines)


if __name__ == "__main__":
    main()
