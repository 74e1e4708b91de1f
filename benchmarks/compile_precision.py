"""Are compiled bf16 vectors worse than eager bf16 ones? Both against fp32, per layer.

    python benchmarks/compile_precision.py --out benchmarks/results/compile_precision_amx

Extracts every layer (mean and last pooling) of ``--n`` SST-2 train sentences with SmolLM2 in
fp32 (the reference), in eager bf16 and in bf16 with compiled blocks (``layerfuse.embed.compiled``),
same sorted 2,048-token batches, and reports for a few layers the relative error of each bf16
variant against fp32 (Frobenius norm of the difference over that of the fp32 layer), plus the
largest element-wise difference over the whole arrays (as ``compile_ab.py`` reports it).
Results: ``--out`` ``.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_util import max_rel_diff, sorted_tokens, write_results  # noqa: E402
from layerfuse.data.builtin import load_builtin  # noqa: E402
from layerfuse.embed.backbones import load_backbone  # noqa: E402
from layerfuse.embed.compiled import compile_blocks  # noqa: E402
from layerfuse.embed.forward import embed_sorted  # noqa: E402

POOLINGS = ["mean", "last"]


def embed(bb, enc, side):
    with torch.inference_mode():
        return embed_sorted(bb, enc, POOLINGS, bb.n_layers, batch_tokens=2048, padding_side=side)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--layers", default="1,10,20,25,30")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/compile_precision"))
    args = ap.parse_args()
    texts = load_builtin("sst2").splits["train"].texts[: args.n]
    b32 = load_backbone(args.model, dtype="float32", progress=False)
    enc, side = sorted_tokens(b32, texts, 512)
    ref = embed(b32, enc, side)
    del b32
    b16 = load_backbone(args.model, dtype="bfloat16", progress=False)
    eager = embed(b16, enc, side)
    if not compile_blocks(b16, announce=print):
        raise SystemExit("compiling failed: nothing to compare")
    comp = embed(b16, enc, side)
    layers = [int(x) for x in args.layers.split(",")]
    rows = []
    for p in POOLINGS:
        for k in layers:
            norm = float(np.linalg.norm(ref[p][k]))
            rows.append({"pooling": p, "layer": k,
                         "eager_bf16": float(np.linalg.norm(eager[p][k] - ref[p][k])) / norm,
                         "compiled_bf16": float(np.linalg.norm(comp[p][k] - ref[p][k])) / norm})
    largest = {p: {"eager_vs_fp32": max_rel_diff(ref[p], eager[p]), "compiled_vs_fp32": max_rel_diff(ref[p], comp[p]),
                   "eager_vs_compiled": max_rel_diff(eager[p], comp[p])} for p in POOLINGS}
    cmd = "python benchmarks/compile_precision.py " + " ".join(sys.argv[1:])
    res = {"command": cmd, "when": time.strftime("%Y-%m-%d %H:%M"), "model": args.model, "texts": len(texts),
           "tokens": int(sum(map(len, enc))), "rows": rows, "largest_difference": largest}
    md = [f"Command: `{cmd}` ({res['when']}, torch {torch.__version__}): {args.model}, {len(texts)} SST-2 "
          "sentences, every layer, 2,048-token batches.", "",
          "Relative error against fp32 (‖bf16 − fp32‖ / ‖fp32‖ of the layer's pooled vectors):", "",
          "| pooling | layer | eager bf16 | compiled bf16 |", "| --- | ---: | ---: | ---: |"]
    md += [f"| {r['pooling']} | {r['layer']} | {100 * r['eager_bf16']:.2f} % | {100 * r['compiled_bf16']:.2f} % |"
           for r in rows]
    md += ["", "Largest element-wise difference over all layers, as a share of the array's largest value: "
           + "; ".join(f"{p}: eager–fp32 {v['eager_vs_fp32']:.3f}, compiled–fp32 {v['compiled_vs_fp32']:.3f}, "
                       f"eager–compiled {v['eager_vs_compiled']:.3f}" for p, v in largest.items()) + "."]
    write_results(args.out, res, md)
    print("\n".join(md))


if __name__ == "__main__":
    main()
