"""Extraction throughput, measured side by side in one run.

    python benchmarks/extract_throughput.py            # 500 SST-2 train sentences, smollm2-135m

Rows, all producing embeddings on the same texts with the same loaded weights:

* ``reference``: the recipe of the paper's public code: batch size 2, texts in dataset order,
  padding to the longest text of each batch, keeping the last layer only (fp32).
* ``layerfuse fp32`` / ``layerfuse bf16``: ``extract_texts`` at its defaults (length-sorted
  batches under a token budget, every layer, mean + last pooling, written to a fresh cache).
  The default ``--dtype auto`` is bf16 where a bf16 matmul measures >= 1.5x fp32 (AMX CPUs), else fp32.

Also measured in the same run: the machine's matmul ceiling (large fp32 and bf16 matmuls), so
each row reports the fraction of the ceiling it reaches, counting 2 × non-embedding parameters
FLOPs per token. Results go to ``benchmarks/results/extract_throughput.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from layerfuse.embed.backbones import load_backbone  # noqa: E402
from layerfuse.data.builtin import load_builtin  # noqa: E402
from layerfuse.config import DEFAULT_BATCH_TOKENS
from layerfuse.embed.device import bf16_instructions, resolve_dtype
from layerfuse.embed.extract import extract_texts  # noqa: E402


def matmul_ceiling(dtype: torch.dtype, n: int = 2048, seconds: float = 3.0) -> float:
    """Best GFLOP/s of an n×n matmul over repeated trials."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def non_embedding_params(model) -> int:
    emb = sum(p.numel() for n, p in model.named_parameters() if "embed" in n)
    return sum(p.numel() for p in model.parameters()) - emb


def run_reference(bb, texts: list[str]) -> dict:
    """The paper code's recipe: batch 2, unsorted, pad to longest, last layer only."""
    tok, model = bb.tokenizer, bb.model
    tok.padding_side = "right"
    t0 = time.perf_counter()
    n_tok = 0
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), 2):
            enc = tok(texts[i : i + 2], padding=True, return_tensors="pt")
            n_tok += int(enc["attention_mask"].sum())
            hs = model(**enc, output_hidden_states=True).hidden_states
            last = hs[-1]
            m = enc["attention_mask"][..., None].float()
            out.append(((last * m).sum(1) / m.sum(1)).numpy())
    sec = time.perf_counter() - t0
    return {"seconds": sec, "tokens": n_tok}


def run_layerfuse(bb, texts: list[str], batch_tokens: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        _, st = extract_texts(bb, texts, text_fingerprint="bench", poolings=["mean", "last"], cache_dir=d,
                              batch_tokens=batch_tokens, progress=False)
    return {"seconds": st["seconds"], "tokens": st["tokens"]}


def sweep(budgets: list[int], args) -> None:
    texts = load_builtin("sst2").splits["train"].texts[: args.n]
    bbs = {dt: load_backbone(args.model, dtype=dt, progress=True) for dt in ("float32", "bfloat16")}
    for bb in bbs.values():
        run_layerfuse(bb, texts[:16], budgets[0])
    rows = []
    for b in budgets:
        row = {"batch_tokens": b}
        for dt, bb in bbs.items():
            r = run_layerfuse(bb, texts, b)
            row[f"{dt}_tokens_per_s"] = r["tokens"] / r["seconds"]
        rows.append(row)
        print(f"batch tokens {b:>6}: fp32 {row['float32_tokens_per_s']:6.0f} tok/s   "
              f"bf16 {row['bfloat16_tokens_per_s']:6.0f} tok/s", flush=True)
    out = ROOT / "benchmarks" / "results" / "extract_batch_sweep.json"
    out.write_text(json.dumps({"command": f"python benchmarks/extract_throughput.py --sweep {args.sweep}",
                               "date": time.strftime("%Y-%m-%d %H:%M"), "model": args.model, "texts": len(texts),
                               "rows": rows}, indent=2))
    print(f"wrote {out}")


DEFAULT_OUT = ROOT / "benchmarks" / "results" / "extract_throughput"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=500, help="number of SST-2 train sentences (default 500)")
    ap.add_argument("--batch-tokens", type=int, default=DEFAULT_BATCH_TOKENS)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--sweep", help="instead: compare batch-token budgets, e.g. 512,1024,2048,4096,8192, for fp32 and "
                    "bf16 side by side; writes benchmarks/results/extract_batch_sweep.json")
    args = ap.parse_args()
    if args.sweep:
        return sweep([int(x) for x in args.sweep.split(",")], args)

    texts = load_builtin("sst2").splits["train"].texts[: args.n]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    ceiling = {"float32": matmul_ceiling(torch.float32), "bfloat16": matmul_ceiling(torch.bfloat16)}
    print(f"matmul ceiling: fp32 {ceiling['float32']:.0f} GFLOP/s, bf16 {ceiling['bfloat16']:.0f} GFLOP/s", flush=True)

    bb32 = load_backbone(args.model, dtype="float32", progress=True)
    bb16 = load_backbone(args.model, dtype="bfloat16", progress=True)
    flops_per_token = 2 * non_embedding_params(bb32.model)
    # Warm up each path on a few texts so one-time costs are not counted.
    run_reference(bb32, texts[:4])
    run_layerfuse(bb32, texts[:16], args.batch_tokens)
    run_layerfuse(bb16, texts[:16], args.batch_tokens)

    rows = {}
    for name, fn, dt in [
        ("reference (batch 2, unsorted, last layer, fp32)", lambda: run_reference(bb32, texts), "float32"),
        ("layerfuse fp32 (all layers, mean+last)", lambda: run_layerfuse(bb32, texts, args.batch_tokens), "float32"),
        ("layerfuse bf16 (all layers, mean+last)", lambda: run_layerfuse(bb16, texts, args.batch_tokens), "bfloat16"),
    ]:
        r = fn()
        r["texts_per_s"] = len(texts) / r["seconds"]
        r["tokens_per_s"] = r["tokens"] / r["seconds"]
        r["gflops"] = r["tokens_per_s"] * flops_per_token / 1e9
        r["ceiling_fraction"] = r["gflops"] / ceiling[dt]
        r["dtype"] = dt
        rows[name] = r
        print(f"{name:<50} {r['texts_per_s']:8.1f} texts/s {r['tokens_per_s']:9.0f} tokens/s "
              f"{r['gflops']:7.1f} GFLOP/s ({100 * r['ceiling_fraction']:.0f}% of {dt} ceiling)", flush=True)

    ref, f32, b16 = (rows[k] for k in rows)
    default_dtype = resolve_dtype("auto", "cpu")
    default = b16 if default_dtype == "bfloat16" else f32
    ratios = {
        "default_vs_reference": default["texts_per_s"] / ref["texts_per_s"],
        "fp32_vs_reference": f32["texts_per_s"] / ref["texts_per_s"],
        "bf16_vs_reference": b16["texts_per_s"] / ref["texts_per_s"],
        "bf16_vs_fp32": b16["texts_per_s"] / f32["texts_per_s"],
    }
    print("ratios: " + ", ".join(f"{k} {v:.2f}×" for k, v in ratios.items()))
    result = {
        "command": "python benchmarks/extract_throughput.py" + ("" if args.n == 500 else f" --n {args.n}")
                   + ("" if Path(args.out) == DEFAULT_OUT else f" --out {args.out}"),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "model": args.model,
        "texts": len(texts),
        "batch_tokens": args.batch_tokens,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "bf16_instructions": bf16_instructions()},
        "matmul_ceiling_gflops": ceiling,
        "flops_per_token": flops_per_token,
        "default_dtype": default_dtype,
        "rows": rows,
        "ratios": ratios,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    lines = [
        f"Command: `{result['command']}` ({result['date']}, {result['texts']} SST-2 train sentences, "
        f"{args.model}, {result['machine']['cores']} cores, bf16 instructions: "
        f"{result['machine']['bf16_instructions']}, torch {torch.__version__})",
        "",
        f"Matmul ceiling measured in the same run: fp32 {ceiling['float32']:.0f} GFLOP/s, "
        f"bf16 {ceiling['bfloat16']:.0f} GFLOP/s; {flops_per_token / 1e6:.0f} MFLOP per token.",
        "",
        "| configuration | texts/s | tokens/s | GFLOP/s | share of ceiling | vs reference |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['texts_per_s']:.1f} | {r['tokens_per_s']:.0f} | {r['gflops']:.1f} | "
                     f"{100 * r['ceiling_fraction']:.0f}% ({r['dtype']}) | {r['texts_per_s'] / ref['texts_per_s']:.2f}× |")
    lines += ["", f"bf16 / fp32 = {ratios['bf16_vs_fp32']:.2f}×. Default settings here: `--dtype auto` → "
              f"{default_dtype}, `--batch-tokens {args.batch_tokens}`: {ratios['default_vs_reference']:.2f}× the "
              "reference recipe's texts/s."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
