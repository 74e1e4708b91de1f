"""Would the streaming mean pooling gain from skipping its float32 copy of each layer? An A/B in one run.

    python benchmarks/pooling_ab.py                       # SmolLM2, bf16 where auto picks it
    python benchmarks/pooling_ab.py --model minilm-l6 --rounds 6

``layerfuse.embed.pooling.LayerPooler`` pools every layer of a batch inside the forward pass. Its
mean converts the whole ``[B, T, d]`` layer to float32, zeroes the padding and sums (``copy``, the
pooler as it is). The alternative zeroes the padding in the compute dtype and sums with float32
accumulation (``no copy``: ``sum(dtype=torch.float32)``), which gives the same bits without the
copy. Per round, the same length-sorted SST-2 train texts go through ``embed_sorted`` (every layer,
mean + last pooling) once with each, the order alternating from round to round after a warm-up
of both; each round's copy / no-copy time ratio is kept and the median and range reported (above
1: no copy is faster). The pooled arrays of the two are compared (max |difference| over max
|value|: 0 means bit-identical). Writes ``benchmarks/results/pooling_ab[_<model>].{json,md}``.
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
    ap.add_argument("--out", help="results path without suffix (default benchmarks/results/pooling_ab_<model>)")
    args = ap.parse_args()
    quiet_libraries()
    dtype, batch_tokens, bb, enc, side = sst2_sorted(args.model, args.dtype, args.texts, 128)
    tokens = sum(len(e) for e in enc)
    import layerfuse.embed.forward as forward

    current_cls = forward.LayerPooler

    def run(cls):
        forward.LayerPooler = cls
        try:
            t0 = time.perf_counter()
            out = embed_sorted(bb, enc, POOLINGS, bb.n_layers, batch_tokens=batch_tokens, padding_side=side)
            return time.perf_counter() - t0, out
        finally:
            forward.LayerPooler = current_cls

    variants = {"copy": current_cls, "no copy": NoCopyPooler}
    for cls in variants.values():  # warm-up
        run(cls)
    cpu = platform.processor() or platform.machine()
    print(f"{args.model}: {len(enc)} texts, {tokens:,} tokens, {dtype}, {batch_tokens}-token batches, "
          f"{args.rounds} rounds; {cpu}, {os.cpu_count()} cores", flush=True)
    seconds = {k: [] for k in variants}
    outs = {}
    for r in range(args.rounds):
        order = list(variants) if r % 2 == 0 else list(variants)[::-1]
        for name in order:
            s, outs[name] = run(variants[name])
            seconds[name].append(s)
        print(f"  round {r + 1}: copy {seconds['copy'][-1]:.2f} s, no copy {seconds['no copy'][-1]:.2f} s",
              flush=True)
    ratios = [a / b for a, b in zip(seconds["copy"], seconds["no copy"])]
    diff = {p: max_rel_diff(outs["copy"][p], outs["no copy"][p]) for p in POOLINGS}
    speed = statistics.median(ratios)
    print(f"no copy / copy speed {speed:.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f}); "
          f"max rel diff mean {diff['mean']:.1e}, last {diff['last']:.1e}")
    cmd = " ".join(["python benchmarks/pooling_ab.py", *sys.argv[1:]])
    data = {"command": cmd, "date": time.strftime("%Y-%m-%d %H:%M"), "model": args.model, "dtype": dtype,
            "batch_tokens": batch_tokens, "texts": len(enc), "tokens": tokens, "seconds": seconds,
            "ratios": ratios, "speedup_median": speed, "max_rel_diff": diff, "cpu": cpu,
            "bf16_instructions": bf16_instructions(), "cores": os.cpu_count(),
            "load_average_1min": os.getloadavg()[0]}
    tps = {k: tokens / statistics.median(v) for k, v in seconds.items()}
    md = [f"# Mean pooling with and without a float32 copy: {args.model}", "",
          f"`{cmd}` ({data['date']}, {cpu}, {os.cpu_count()} cores, bf16 instructions: {data['bf16_instructions']}): "
          f"{len(enc)} SST-2 train texts, {tokens:,} tokens, every layer, mean + last pooling, {dtype}, "
          f"{batch_tokens}-token batches, {args.rounds} alternating rounds after a warm-up; load average "
          f"{data['load_average_1min']:.1f}.", "",
          "| formula | seconds per round | tokens/s (median) |", "| --- | --- | ---: |"]
    for k, v in seconds.items():
        md.append(f"| {k} | {', '.join(f'{s:.2f}' for s in v)} | {tps[k]:,.0f} |")
    md += ["", f"no copy / copy speed: **{speed:.2f}×** (median of rounds, {min(ratios):.2f}–{max(ratios):.2f}); "
           f"max rel. diff mean {diff['mean']:.1e}, last {diff['last']:.1e}."]
    write_results(args.out or ROOT / "benchmarks" / "results" / f"pooling_ab_{args.model}", data, md)


if __name__ == "__main__":
    main()
