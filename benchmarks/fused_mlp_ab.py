"""One product for a gated MLP's gate and up projections: does it make extraction faster?

    python benchmarks/fused_mlp_ab.py --dtype bfloat16 --rounds 4

SmolLM2's blocks (Llama's MLP) compute ``down(silu(gate(x)) * up(x))``: two [T, d] x [d, h]
products on the same input. Stacking the two weights gives one [T, d] x [d, 2h] product, fewer
and larger kernel calls. The benchmark patches the loaded model's MLPs (benchmark only; the
library does not) and times all-layer extraction over the same length-sorted SST-2 sentences
with and without the patch, alternating ``--rounds`` times, then reports tokens/s, the median
ratio and how far the pooled vectors move. ``--compiled`` compares the same inside compiled blocks
(``layerfuse.embed.compiled.compile_blocks(gate_up=False)`` against ``gate_up=True``, the
library's own stacking), each side compiled before its timed passes.
Results: ``benchmarks/results/fused_mlp_ab*.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_util import max_rel_diff, sst2_sorted, write_results  # noqa: E402

from layerfuse.embed.compiled import compile_blocks, eager_blocks  # noqa: E402
from layerfuse.embed.forward import embed_sorted  # noqa: E402


def fuse(model) -> tuple[dict, int]:
    """Give every module with gate_proj/up_proj/down_proj a one-product forward; returns the
    former forwards (to restore) and how many were patched."""
    former = {}
    for mod in model.modules():
        if all(hasattr(mod, a) for a in ("gate_proj", "up_proj", "down_proj", "act_fn")):
            w = torch.cat([mod.gate_proj.weight, mod.up_proj.weight], 0).contiguous()
            h = mod.gate_proj.weight.shape[0]

            def forward(self, x, w=w, h=h):
                gu = F.linear(x, w)
                return self.down_proj(self.act_fn(gu[..., :h]) * gu[..., h:])

            former[mod] = mod.forward
            mod.forward = types.MethodType(forward, mod)
    return former, len(former)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--n", type=int, default=600, help="SST-2 train sentences (default 600)")
    ap.add_argument("--batch-tokens", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--compiled", action="store_true", help="both sides with compiled blocks")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/fused_mlp_ab"))
    args = ap.parse_args()
    _, _, bb, enc, side = sst2_sorted(args.model, args.dtype, args.n, 512)
    tokens = sum(map(len, enc))

    def run():
        t0 = time.perf_counter()
        out = embed_sorted(bb, enc, ["mean", "last"], bb.n_layers, batch_tokens=args.batch_tokens, padding_side=side)
        return time.perf_counter() - t0, out

    def flat(out: dict) -> np.ndarray:  # embed_sorted's {pooling: array}
        return np.concatenate([np.asarray(v, dtype=np.float32).ravel() for _, v in sorted(out.items())])

    def patch(fused: bool) -> int:
        """Put the side in place (and, compiled, compile it on a small batch); returns MLPs patched."""
        if args.compiled:
            compile_blocks(bb, gate_up=fused)
            return len(bb.extra["stacked_mlps"])
        if fused:
            state["former"], n = fuse(bb.model)
            return n
        return 0

    def unpatch() -> None:
        if args.compiled:
            eager_blocks(bb)
        for mod, fwd in state.pop("former", {}).items():
            mod.forward = fwd

    state: dict = {}
    with torch.inference_mode():
        patch(False)
        run()  # warm-up
        _, ref = run()
        unpatch()
        n_patched = patch(True)
        run()
        _, fused_out = run()
        unpatch()
        secs: dict[str, list[float]] = {"separate": [], "fused": []}
        for r in range(args.rounds):
            for name in (("separate", "fused") if r % 2 == 0 else ("fused", "separate")):
                patch(name == "fused")
                run()  # a new compiled wrapper looks its graph up on the first pass
                secs[name].append(run()[0])
                unpatch()
    tps = {k: [tokens / s for s in v] for k, v in secs.items()}
    ratios = [f / s for f, s in zip(tps["fused"], tps["separate"])]
    diff = max_rel_diff(flat(ref), flat(fused_out))
    res = {"command": "python benchmarks/fused_mlp_ab.py " + " ".join(sys.argv[1:]), "when": time.strftime("%Y-%m-%d %H:%M"),
           "compiled": args.compiled,
           "machine": f"{os.cpu_count()} cores, {platform.machine()}, torch {torch.__version__}",
           "model": args.model, "dtype": args.dtype, "tokens": tokens, "patched_mlps": n_patched,
           "tokens_per_s": {k: [round(x) for x in v] for k, v in tps.items()},
           "ratio_per_round": [round(x, 3) for x in ratios], "median_ratio": round(float(np.median(ratios)), 3),
           "max_rel_diff_pooled": diff}
    md = [f"Command: `{res['command']}` ({res['when']}, {res['machine']})", "",
          f"{args.model} {args.dtype}, {len(enc)} SST-2 sentences ({tokens:,} tokens), every layer, "
          f"{args.batch_tokens}-token batches; {n_patched} MLPs patched; {args.rounds} alternating rounds"
          + ("; both sides with compiled blocks" if args.compiled else "") + ".", "",
          "| round | separate tokens/s | fused tokens/s | fused / separate |", "| ---: | ---: | ---: | ---: |"]
    md += [f"| {i + 1} | {tps['separate'][i]:.0f} | {tps['fused'][i]:.0f} | {ratios[i]:.3f}× |" for i in range(args.rounds)]
    md += ["", f"Median {res['median_ratio']:.3f}×; pooled vectors move by at most {diff:.1e} of the largest value."]
    write_results(args.out, res, md)
    print(f"fused / separate: median {res['median_ratio']:.3f}x, rounds {res['ratio_per_round']}, max rel diff {diff:.1e}")


if __name__ == "__main__":
    main()
