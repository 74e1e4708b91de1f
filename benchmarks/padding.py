"""How much of a padded batch is padding? Greedy length-sorted batches, as extraction cuts them.

    python benchmarks/padding.py --out benchmarks/results/padding_sst2_smollm2-135m

For the first ``--n`` SST-2 train sentences (each of 300, 1,200 and 6,000 by default), tokenised
by the model's tokenizer and sorted longest first, :func:`layerfuse.embed.forward.plan_batches`
cuts batches under each token budget (batch size × longest text); the table gives the padded
tokens a padded pass computes over the real tokens. A packed pass (:mod:`layerfuse.embed.packed`)
computes only the real ones in its products, norms and MLPs. No forward pass runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_util import sorted_tokens, write_results  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", default="300,1200,6000", help="numbers of SST-2 train sentences")
    ap.add_argument("--budgets", default="1024,2048,4096", help="token budgets per batch")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--out", help="results path without suffix")
    args = ap.parse_args()
    from layerfuse.cli.main import quiet_libraries
    from layerfuse.data.builtin import load_builtin
    from layerfuse.embed.backbones import load_backbone
    from layerfuse.embed.forward import plan_batches

    quiet_libraries()
    bb = load_backbone(args.model, dtype="float32", progress=False)
    texts = list(load_builtin("sst2").splits["train"].texts)
    budgets = [int(b) for b in args.budgets.split(",")]
    rows = []
    for n in (int(x) for x in args.n.split(",")):
        enc, _ = sorted_tokens(bb, texts[:n], args.max_length)
        lengths = np.array([len(e) for e in enc])
        for budget in budgets:
            batches = plan_batches(lengths, budget)
            padded = int(sum(len(b) * lengths[b].max() for b in batches))
            rows.append({"texts": n, "tokens": int(lengths.sum()), "budget": budget, "batches": len(batches),
                         "padded_tokens": padded, "padding_share": 1 - lengths.sum() / padded})
            print(f"{n:>6} texts, budget {budget:>5}: {len(batches):>4} batches, padded / real tokens "
                  f"{padded / lengths.sum():.3f} ({100 * rows[-1]['padding_share']:.1f} % padding)", flush=True)
    command = "python benchmarks/padding.py" + "".join(
        f" --{k.replace('_', '-')} {v}" for k, v in vars(args).items()
        if v is not None and v != ap.get_default(k))
    md = [f"`{command}` ({time.strftime('%Y-%m-%d %H:%M')}, {args.model}'s tokenizer, SST-2 train, at most "
          f"{args.max_length} tokens, greedy length-sorted batches)", "",
          "| texts | real tokens | token budget | batches | padded tokens | padding |",
          "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    md += [f"| {r['texts']:,} | {r['tokens']:,} | {r['budget']:,} | {r['batches']} | {r['padded_tokens']:,} | "
           f"{100 * r['padding_share']:.1f} % |" for r in rows]
    out = args.out or str(ROOT / "benchmarks" / "results" / f"padding_sst2_{args.model}")
    write_results(out, {"command": command, "model": args.model, "rows": rows}, md)


if __name__ == "__main__":
    main()
