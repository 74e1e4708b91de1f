"""Each matrix product of a SmolLM2 block alone, against the square-matmul ceiling of the same run.

    python benchmarks/block_products.py --out benchmarks/results/block_products_amx

Are a block's products already at the hardware's limit? For each dtype, at the token budget a run
uses (``BATCH_TOKENS_BY_DTYPE``: fp32 1,024, bf16 2,048 rows), this times the products of one
SmolLM2-135M block with its real widths (q and o 576 → 576, k and v 576 → 192 with grouped-query
attention, the stacked gate/up 576 → 3,072 that compiled blocks run, down 1,536 → 576), plus q, k
and v stacked into one 576 → 960 product (not done in layerfuse), on random inputs, and reports
GFLOP/s, the share of an n × n ceiling measured in the same run, and the milliseconds of one
block's products at that batch size. Shapes come from the model's config, not its weights.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_util import matmul_ceiling, write_results  # noqa: E402


def rate(fn, flops: float, seconds: float = 1.0) -> tuple[float, float]:
    """(GFLOP/s, seconds per call) of ``fn``: the best of repeated timings over ~``seconds``."""
    for _ in range(3):
        fn()
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return flops / best / 1e9, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--out", help="results path without suffix")
    args = ap.parse_args()
    from layerfuse.cli.main import quiet_libraries
    from layerfuse.config import BATCH_TOKENS_BY_DTYPE
    from layerfuse.embed.backbones import load_backbone

    quiet_libraries()
    cfg = load_backbone(args.model, dtype="float32", progress=False).model.config
    d, inter = cfg.hidden_size, cfg.intermediate_size
    head = d // cfg.num_attention_heads
    kv = head * getattr(cfg, "num_key_value_heads", cfg.num_attention_heads)
    shapes = [("q", d, d), ("k", d, kv), ("v", d, kv), ("o", d, d), ("gate/up stacked", d, 2 * inter),
              ("down", inter, d), ("q/k/v stacked (not used)", d, d + 2 * kv)]
    results = []
    for name in args.dtypes.split(","):
        dt = getattr(torch, name)
        rows = BATCH_TOKENS_BY_DTYPE[name]
        ceiling = matmul_ceiling(dt)
        print(f"{name}: {rows} rows, square ceiling {ceiling:.0f} GFLOP/s", flush=True)
        for prod, k, n in shapes:
            x, w = torch.randn(rows, k, dtype=dt), torch.randn(n, k, dtype=dt) * 0.05
            g, s = rate(lambda x=x, w=w: F.linear(x, w), 2.0 * rows * k * n)
            results.append({"dtype": name, "rows": rows, "product": prod, "in": k, "out": n, "gflops": g,
                            "ms": s * 1e3, "of_ceiling": g / ceiling, "ceiling": ceiling})
            print(f"  {prod:<26} {k:>5} -> {n:<5} {g:7.0f} GFLOP/s ({100 * g / ceiling:.0f} % of the ceiling) "
                  f"{s * 1e3:.3f} ms", flush=True)
    cmd = " ".join(["python benchmarks/block_products.py", *sys.argv[1:]])
    data = {"command": cmd, "date": time.strftime("%Y-%m-%d %H:%M"), "model": args.model, "results": results,
            "load_average_1min": os.getloadavg()[0], "cores": os.cpu_count()}
    md = [f"# One {args.model} block's products alone", "",
          f"`{cmd}` ({data['date']}, {os.cpu_count()} cores, load average {data['load_average_1min']:.1f}): "
          "random inputs at each dtype's token budget, best of repeated timings; the ceiling is an "
          "n × n product measured in the same run.", "",
          "| dtype | rows | product | in → out | GFLOP/s | of the ceiling | ms |", "| --- | ---: | --- | --- | ---: | ---: | ---: |"]
    for r in results:
        md.append(f"| {r['dtype']} | {r['rows']:,} | {r['product']} | {r['in']} → {r['out']} | {r['gflops']:,.0f} | "
                  f"{100 * r['of_ceiling']:.0f} % | {r['ms']:.3f} |")
    for name in args.dtypes.split(","):
        used = [r for r in results if r["dtype"] == name and "not used" not in r["product"]]
        ms = sum(r["ms"] for r in used)
        md.append("")
        md.append(f"{name}: one block's products (q, k, v, o, gate/up, down) take {ms:.2f} ms for "
                  f"{used[0]['rows']:,} tokens, {1e3 * ms / used[0]['rows']:.2f} µs a token per block.")
    write_results(args.out or ROOT / "benchmarks" / "results" / "block_products", data, md)


if __name__ == "__main__":
    main()
