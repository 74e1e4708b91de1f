"""Compiled blocks against one compiled graph for the whole model: is a whole-stack compile faster?

    python benchmarks/whole_compile_ab.py --out benchmarks/results/whole_compile_ab_amx

``layerfuse.embed.compiled.compile_blocks`` compiles each block's ``forward`` (one dynamic-shape
graph reused by every block, the pooling hooks and early stop outside it). A graph for the whole
model would also fuse across blocks (a residual add with the next RMSNorm) and save the per-block
calls into compiled code, but it cannot stop early or pool between blocks without graph breaks.
This script measures the most it could give: plain forward passes to the last hidden state (no
pooling, no hooks) over the same sorted batches of ``--texts`` SST-2 sentences, ``blocks`` (as
layerfuse compiles, gate/up stacked) against ``whole`` (gate/up stacked, then
``torch.compile(model, dynamic=True)``), each in its own process, alternating ``--rounds`` times.
Prints the first pass (compile included) and tokens/s of ``--reps`` later passes.

``--variants`` adds inductor settings to try on top: ``blocks_cpp_wrapper`` (the blocks' compiled
code called through a C++ wrapper instead of Python), ``whole_freezing`` (weights folded in as
constants, which only a whole-model graph can do: the blocks share one graph) and
``whole_freezing_autotune`` (freezing plus ``max_autotune`` with inductor's C++ GEMM template
against oneDNN's). Each ratio is against ``blocks``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


VARIANTS = ("blocks", "whole", "blocks_cpp_wrapper", "whole_freezing", "whole_freezing_autotune")


def one_process(variant: str, texts: int, reps: int) -> dict:
    import torch
    import torch._inductor.config as inductor_config

    from bench_util import sst2_sorted
    from layerfuse.cli.main import quiet_libraries
    from layerfuse.embed.compiled import compile_blocks, stack_gate_up
    from layerfuse.embed.forward import _model_kwargs, _pad, plan_batches

    quiet_libraries()
    dtype, bt, bb, enc, side = sst2_sorted("smollm2-135m", "bfloat16", texts, 128)
    pad_id = bb.tokenizer.pad_token_id if bb.tokenizer.pad_token_id is not None else 0
    if variant == "blocks_cpp_wrapper":
        inductor_config.cpp_wrapper = True
    if variant.startswith("whole_freezing"):
        inductor_config.freezing = True
    if variant == "whole_freezing_autotune":
        inductor_config.max_autotune = True
        inductor_config.max_autotune_gemm_backends = "CPP,ATEN"
    if variant.startswith("blocks"):
        if not compile_blocks(bb, warm_up=False):
            sys.exit("could not compile the blocks")
        forward = bb.model
    else:
        stack_gate_up(bb.model)
        forward = torch.compile(bb.model, dynamic=True)
    lengths = [len(e) for e in enc]
    batches = [_pad([enc[j] for j in b], pad_id, side) for b in plan_batches(lengths, bt)]

    def run():
        with torch.inference_mode():
            for ids, mask in batches:
                forward(**_model_kwargs(bb, ids, mask)).last_hidden_state.float().sum()

    t0 = time.perf_counter()
    run()
    first = time.perf_counter() - t0
    tokens = sum(lengths)
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        rates.append(tokens / (time.perf_counter() - t0))
    return {"variant": variant, "tokens": tokens, "first_pass_s": first, "tokens_per_s": rates}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=1200)
    ap.add_argument("--rounds", type=int, default=2, help="alternations of the two variants (default 2)")
    ap.add_argument("--reps", type=int, default=3, help="timed passes per process after the first (default 3)")
    ap.add_argument("--variants", default="blocks,whole",
                    help="comma-separated, first the reference: " + ", ".join(VARIANTS) + " (default blocks,whole)")
    ap.add_argument("--out", help="results path without suffix")
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants or any(v not in VARIANTS for v in variants):
        ap.error(f"--variants takes names from {', '.join(VARIANTS)}, got {args.variants!r}")
    if args.child:
        print("RESULT " + json.dumps(one_process(args.child, args.texts, args.reps)))
        return
    runs = []
    for r in range(args.rounds):
        for kind in variants:
            done = subprocess.run([sys.executable, __file__, "--child", kind, "--texts", str(args.texts),
                                   "--reps", str(args.reps)], capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"the {kind} child failed:\n{done.stderr[-3000:]}")
            runs.append(json.loads(next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))[7:]))
            print(f"round {r + 1} {kind}: first pass {runs[-1]['first_pass_s']:.1f} s, tokens/s "
                  + ", ".join(f"{v:,.0f}" for v in runs[-1]["tokens_per_s"]), flush=True)

    def median(kind):
        return statistics.median(v for p in runs if p["variant"] == kind for v in p["tokens_per_s"])

    ref = variants[0]
    ratios = {v: median(v) / median(ref) for v in variants[1:]}
    cmd = " ".join(["python benchmarks/whole_compile_ab.py", *sys.argv[1:]])
    for v, ratio in ratios.items():
        print(f"{v} / {ref}: {ratio:.3f}x (medians {median(v):,.0f} / {median(ref):,.0f} tokens/s)")
    data = {"command": cmd, "date": time.strftime("%Y-%m-%d %H:%M"), "texts": args.texts, "runs": runs,
            "reference": ref, "ratios": ratios, "load_average_1min": os.getloadavg()[0]}
    md = ["# One compiled graph for the whole model against compiled blocks", "",
          f"`{cmd}` ({data['date']}, {os.cpu_count()} cores): SmolLM2-135M bf16, gate/up stacked in both, "
          f"plain forward passes to the last hidden state over {args.texts} sorted SST-2 train sentences.", "",
          *[f"* {v} / {ref}: **{ratio:.3f}x** (median {median(v):,.0f} vs {median(ref):,.0f} tokens/s)"
            for v, ratio in ratios.items()], "",
          "| round | variant | first pass (compile included) | tokens/s |", "| --- | --- | ---: | --- |"]
    md += [f"| {i // len(variants) + 1} | {p['variant']} | {p['first_pass_s']:.1f} s | "
           + ", ".join(f"{v:,.0f}" for v in p["tokens_per_s"]) + " |" for i, p in enumerate(runs)]
    from bench_util import write_results

    write_results(args.out or ROOT / "benchmarks" / "results" / "whole_compile_ab", data, md)


if __name__ == "__main__":
    main()
