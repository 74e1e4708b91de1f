"""Packed against padded batches, side by side in one process: speed and how far the vectors move.

    python benchmarks/packed_ab.py --out benchmarks/results/packed_ab_amx

For each ``--models`` × ``--dtypes`` × ``--modes`` (eager, compiled blocks), the first ``--texts``
SST-2 train sentences, length-sorted, go through ``embed_sorted`` (every layer, mean + last
pooling, the dtype's token budget) with the batches packed (:mod:`layerfuse.embed.packed`, the
default) and padded (``backbone.extra["packed"] = False``), alternating for ``--rounds`` rounds
after one untimed pass of each. Reports the median tokens/s of each, their ratio, the range of the
per-round ratios, and the largest difference between the two sides' pooled vectors over the
largest value of the padded side, per pooling.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_util import max_rel_diff, sst2_sorted, write_results  # noqa: E402

POOLINGS = ("mean", "last")


def compare(model: str, dtype: str, mode: str, texts: int, rounds: int) -> dict:
    from layerfuse.embed.forward import embed_sorted

    dtype, budget, bb, enc, side = sst2_sorted(model, dtype, texts, 128)
    if mode == "compiled":
        from layerfuse.embed.compiled import compile_blocks

        if not compile_blocks(bb, announce=print):
            raise SystemExit("could not compile the blocks")
    tokens = sum(len(e) for e in enc)

    def run(packed: bool):
        bb.extra["packed"] = packed
        try:
            return embed_sorted(bb, enc, POOLINGS, bb.n_layers, batch_tokens=budget, padding_side=side)
        finally:
            del bb.extra["packed"]

    packed, padded = run(True), run(False)  # untimed: compiles each variant's graph
    diff = {p: max_rel_diff(padded[p], packed[p]) for p in POOLINGS}
    rate = {True: [], False: []}
    for _ in range(rounds):
        for side_packed in (True, False):
            t0 = time.perf_counter()
            run(side_packed)
            rate[side_packed].append(tokens / (time.perf_counter() - t0))
    ratios = [a / b for a, b in zip(rate[True], rate[False])]
    row = {"model": model, "dtype": dtype, "mode": mode, "texts": texts, "tokens": tokens, "batch_tokens": budget,
           "packed_tokens_per_s": statistics.median(rate[True]), "padded_tokens_per_s": statistics.median(rate[False]),
           "rounds_packed": rate[True], "rounds_padded": rate[False], "round_ratios": ratios,
           "max_rel_diff": diff}
    row["ratio"] = row["packed_tokens_per_s"] / row["padded_tokens_per_s"]
    print(f"{model} {dtype} {mode}: packed {row['packed_tokens_per_s']:.0f}, padded {row['padded_tokens_per_s']:.0f} "
          f"tokens/s, {row['ratio']:.3f}× (rounds {min(ratios):.3f}–{max(ratios):.3f}); vectors "
          + ", ".join(f"{p} {d:.1e}" for p, d in diff.items()), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2-135m,minilm-l6")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--modes", default="eager,compiled")
    ap.add_argument("--texts", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", help="results path without suffix")
    args = ap.parse_args()
    from layerfuse.cli.main import quiet_libraries
    from layerfuse.embed.compiled import compiler

    quiet_libraries()
    modes = [m for m in args.modes.split(",") if m != "compiled" or compiler() is not None]
    rows = [compare(m, dt, mode, args.texts, args.rounds)
            for m in args.models.split(",") for dt in args.dtypes.split(",") for mode in modes]
    command = "python benchmarks/packed_ab.py" + "".join(
        f" --{k} {v}" for k, v in vars(args).items() if v is not None and v != ap.get_default(k))
    md = [f"`{command}` ({time.strftime('%Y-%m-%d %H:%M')}; {args.texts} SST-2 train sentences, every layer, "
          f"mean + last, {args.rounds} alternating rounds)", "",
          "| model | dtype | blocks | padded tokens/s | packed tokens/s | packed / padded (rounds) | vectors apart (mean, last) |",
          "| --- | --- | --- | ---: | ---: | ---: | --- |"]
    md += [f"| {r['model']} | {r['dtype']} | {r['mode']} | {r['padded_tokens_per_s']:,.0f} | "
           f"{r['packed_tokens_per_s']:,.0f} | **{r['ratio']:.2f}×** ({min(r['round_ratios']):.2f}–"
           f"{max(r['round_ratios']):.2f}) | {r['max_rel_diff']['mean']:.1e}, {r['max_rel_diff']['last']:.1e} |"
           for r in rows]
    md += ["", "Vectors apart: the largest |packed − padded| over the largest |padded| of that pooling, every "
           "layer and text."]
    out = args.out or str(ROOT / "benchmarks" / "results" / "packed_ab")
    write_results(out, {"command": command, "rows": rows}, md)


if __name__ == "__main__":
    main()
