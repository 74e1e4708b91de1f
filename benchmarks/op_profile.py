"""Where a forward pass spends its time, op by op: a ``torch.profiler`` trace of one extraction.

    python benchmarks/op_profile.py                               # SmolLM2, bf16 where auto picks it
    python benchmarks/op_profile.py --model minilm-l6 --dtype float32
    python benchmarks/op_profile.py --compiled                    # blocks through torch.compile
    python benchmarks/op_profile.py --compiled --kernels          # ... each inductor kernel a row

The first ``--texts`` SST-2 train sentences, length-sorted, through ``embed_sorted`` (every layer,
mean + last pooling, the dtype's default token budget) once as a warm-up and once under the
profiler. Prints and writes the ops by self CPU time (``aten::mm`` is the products; the element-wise
ops between them are the rest of a pass; with ``--compiled`` the fused element-wise kernels show as
one ``CompiledFxGraph`` row, or with ``--kernels`` one row per generated kernel; a row says where time goes,
not what removing it would save). Results:
``benchmarks/results/op_profile_<model>_<dtype>.{json,md}`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bench_util import sst2_sorted, write_results  # noqa: E402
from layerfuse.cli.main import quiet_libraries  # noqa: E402
from layerfuse.embed.device import bf16_instructions  # noqa: E402
from layerfuse.embed.forward import embed_sorted  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--texts", type=int, default=600)
    ap.add_argument("--rows", type=int, default=15, help="ops listed (default 15)")
    ap.add_argument("--compiled", action="store_true", help="compile the blocks first (layerfuse.embed.compiled)")
    ap.add_argument("--kernels", action="store_true", help="with --compiled: one row per inductor kernel")
    ap.add_argument("--out", help="results path without suffix")
    args = ap.parse_args()
    quiet_libraries()
    import torch
    from torch.profiler import ProfilerActivity, profile

    dtype, batch_tokens, bb, enc, side = sst2_sorted(args.model, args.dtype, args.texts, 128)

    def run():
        return embed_sorted(bb, enc, ["mean", "last"], bb.n_layers, batch_tokens=batch_tokens, padding_side=side)

    if args.kernels and not args.compiled:
        ap.error("--kernels needs --compiled")
    if args.compiled:
        from layerfuse.embed.compiled import compile_blocks

        if args.kernels:
            import torch._inductor.config as inductor_config

            inductor_config.cpp.enable_kernel_profile = True

        if not compile_blocks(bb, announce=print):
            sys.exit("could not compile the blocks (see the line above)")
    run()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    rows = [{"op": e.key, "self_cpu_s": e.self_cpu_time_total / 1e6, "share": e.self_cpu_time_total / total,
             "calls": e.count} for e in events[: args.rows]]
    cpu = platform.processor() or platform.machine()
    cmd = " ".join(["python benchmarks/op_profile.py", *sys.argv[1:]])
    tokens = sum(len(e) for e in enc)
    data = {"command": cmd, "date": time.strftime("%Y-%m-%d %H:%M"), "model": args.model, "dtype": dtype,
            "texts": len(enc), "tokens": tokens, "batch_tokens": batch_tokens, "cpu": cpu,
            "bf16_instructions": bf16_instructions(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "compiled": args.compiled, "kernels": args.kernels, "self_cpu_total_s": total / 1e6, "rows": rows, "load_average_1min": os.getloadavg()[0]}
    md = [f"# Op profile: {args.model}, {dtype}{', compiled blocks' if args.compiled else ''}", "",
          f"`{cmd}` ({data['date']}, {cpu}, {os.cpu_count()} cores, bf16 instructions: {data['bf16_instructions']}, "
          f"torch {torch.__version__}): {len(enc)} SST-2 train texts, {tokens:,} tokens, every layer, mean + last "
          f"pooling, {batch_tokens}-token batches; self CPU time {total / 1e6:.2f} s in all.", "",
          "| op | self CPU s | share | calls |", "| --- | ---: | ---: | ---: |"]
    md += [f"| `{r['op']}` | {r['self_cpu_s']:.3f} | {r['share']:.1%} | {r['calls']} |" for r in rows]
    print("\n".join(md[2:]))
    write_results(args.out or ROOT / "benchmarks" / "results" / f"op_profile_{args.model}_{dtype}{'_compiled' if args.compiled else ''}",
                  data, md)


if __name__ == "__main__":
    main()
