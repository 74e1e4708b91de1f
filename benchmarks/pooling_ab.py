"""Would the streaming mean pooling gain from skipping its float32 copy of each layer? An A/B in one run.

    python benchmarks/pooling_ab.py                       # SmolLM2, bf16 where auto picks it
    python benchmarks/pooling_ab.py --model minilm-l6 --rounds 6
    python benchmarks/pooling_ab.py --compiled              # compiled blocks: eager mean vs compiled mean

``layerfuse.embed.pooling.LayerPooler`` pools every layer of a batch inside the forward pass. Its
mean converts the whole ``[B, T, d]`` layer to float32, zeroes the padding and sums (``copy``, the
pooler as it is). The alternative zeroes the padding in the compute dtype and sums with float32
accumulation (``no copy``: ``sum(dtype=torch.float32)``), which gives the same bits without the
copy. Per round, the same length-sorted SST-2 train texts go through ``embed_sorted`` (every layer,
mean + last pooling) once with each, the order alternating from round to round after a warm-up
of both; each round's copy / no-copy time ratio is kept and the median and range reported (above
1: no copy is faster). The pooled arrays of the two are compared (max |difference| over max
|value|: 0 means bit-identical). Writes ``benchmarks/results/pooling_ab[_<model>].{json,md}``.

``--compiled``: both sides run compiled blocks (:func:`layerfuse.embed.compiled.compile_blocks`);
``compiled mean`` pools as layerfuse then does (the mean through a compiled
:func:`~layerfuse.embed.pooling.masked_mean`), ``eager mean`` with the eager formula. Each round
also clocks the pooler's calls: seconds of pooling per pass.
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

from bench_util import max_rel_diff, sst2_sorted, write_results  # noqa: E402
from layerfuse.cli.main import quiet_libraries  # noqa: E402
from layerfuse.embed import pooling  # noqa: E402
from layerfuse.embed.device import bf16_instructions  # noqa: E402
from layerfuse.embed.forward import embed_sorted  # noqa: E402

POOLINGS = ["mean", "last"]


class NoCopyPooler(pooling.LayerPooler):
    """The pooler with the mean summed in float32 straight from the compute dtype."""

    def __call__(self, hidden) -> dict:
        import torch

        wanted, self.poolings = self.poolings, [p for p in self.poolings if p != "mean"]
        try:
            out = super().__call__(hidden)  # every other pooling, as the pooler does it
        finally:
            self.poolings = wanted
        if "mean" in wanted:
            out["mean"] = hidden.masked_fill(self.pad, 0.0).sum(-2, dtype=torch.float32) / self.count
        return {p: out[p] for p in wanted}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--texts", type=int, default=1200)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--compiled", action="store_true",
                    help="compiled blocks on both sides: the eager mean against the compiled mean")
    ap.add_argument("--out", help="results path without suffix (default benchmarks/results/pooling_ab_<model>)")
    args = ap.parse_args()
    quiet_libraries()
    dtype, batch_tokens, bb, enc, side = sst2_sorted(args.model, args.dtype, args.texts, 128)
    tokens = sum(len(e) for e in enc)
    import layerfuse.embed.forward as forward

    current_cls = forward.LayerPooler
    pooling_s = [0.0]

    def clocked(cls):
        class Clocked(cls):
            def __call__(self, hidden):
                t0 = time.perf_counter()
                try:
                    return super().__call__(hidden)
                finally:
                    pooling_s[0] += time.perf_counter() - t0

        return Clocked

    compiled_mean = None
    if args.compiled:
        from layerfuse.embed.compiled import compile_blocks

        if not compile_blocks(bb, announce=print):
            sys.exit("could not compile the blocks")
        compiled_mean = bb.extra["pooled_mean"]

    def run(variant):
        cls, mean = variant
        forward.LayerPooler = clocked(cls)
        if args.compiled:
            bb.extra["pooled_mean"] = mean
        pooling_s[0] = 0.0
        try:
            t0 = time.perf_counter()
            out = embed_sorted(bb, enc, POOLINGS, bb.n_layers, batch_tokens=batch_tokens, padding_side=side)
            return time.perf_counter() - t0, out
        finally:
            forward.LayerPooler = current_cls
            if args.compiled:
                bb.extra["pooled_mean"] = compiled_mean

    if args.compiled:
        variants = {"eager mean": (current_cls, pooling.masked_mean), "compiled mean": (current_cls, compiled_mean)}
    else:
        variants = {"copy": (current_cls, None), "no copy": (NoCopyPooler, None)}
    names = list(variants)
    for v in variants.values():  # warm-up
        run(v)
    cpu = platform.processor() or platform.machine()
    print(f"{args.model}: {len(enc)} texts, {tokens:,} tokens, {dtype}, {batch_tokens}-token batches, "
          f"{args.rounds} rounds; {cpu}, {os.cpu_count()} cores", flush=True)
    seconds = {k: [] for k in variants}
    pooled = {k: [] for k in variants}
    outs = {}
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            s, outs[name] = run(variants[name])
            seconds[name].append(s)
            pooled[name].append(pooling_s[0])
        print(f"  round {r + 1}: " + ", ".join(f"{n} {seconds[n][-1]:.2f} s (pooling {pooled[n][-1]:.2f} s)"
                                              for n in names), flush=True)
    ratios = [a / b for a, b in zip(seconds[names[0]], seconds[names[1]])]
    diff = {p: max_rel_diff(outs[names[0]][p], outs[names[1]][p]) for p in POOLINGS}
    speed = statistics.median(ratios)
    print(f"{names[1]} / {names[0]} speed {speed:.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f}); "
          f"pooling per pass (median) " + ", ".join(f"{n} {statistics.median(pooled[n]):.2f} s" for n in names)
          + f"; max rel diff mean {diff['mean']:.1e}, last {diff['last']:.1e}")
    cmd = " ".join(["python benchmarks/pooling_ab.py", *sys.argv[1:]])
    data = {"command": cmd, "date": time.strftime("%Y-%m-%d %H:%M"), "model": args.model, "dtype": dtype,
            "batch_tokens": batch_tokens, "texts": len(enc), "tokens": tokens, "compiled": args.compiled,
            "seconds": seconds, "pooling_seconds": pooled,
            "ratios": ratios, "speedup_median": speed, "max_rel_diff": diff, "cpu": cpu,
            "bf16_instructions": bf16_instructions(), "cores": os.cpu_count(),
            "load_average_1min": os.getloadavg()[0]}
    tps = {k: tokens / statistics.median(v) for k, v in seconds.items()}
    title = "the eager and the compiled mean, compiled blocks" if args.compiled else "with and without a float32 copy"
    md = [f"# Mean pooling, {title}: {args.model}", "",
          f"`{cmd}` ({data['date']}, {cpu}, {os.cpu_count()} cores, bf16 instructions: {data['bf16_instructions']}): "
          f"{len(enc)} SST-2 train texts, {tokens:,} tokens, every layer, mean + last pooling, {dtype}, "
          f"{batch_tokens}-token batches, {args.rounds} alternating rounds after a warm-up; load average "
          f"{data['load_average_1min']:.1f}.", "",
          "| formula | seconds per round | of which pooling | tokens/s (median) |", "| --- | --- | --- | ---: |"]
    for k, v in seconds.items():
        md.append(f"| {k} | {', '.join(f'{s:.2f}' for s in v)} | {', '.join(f'{s:.2f}' for s in pooled[k])} "
                  f"| {tps[k]:,.0f} |")
    md += ["", f"{names[1]} / {names[0]} speed: **{speed:.2f}×** (median of rounds, {min(ratios):.2f}–"
           f"{max(ratios):.2f}); max rel. diff mean {diff['mean']:.1e}, last {diff['last']:.1e}."]
    write_results(args.out or ROOT / "benchmarks" / "results" / f"pooling_ab_{args.model}", data, md)


if __name__ == "__main__":
    main()
