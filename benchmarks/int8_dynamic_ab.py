"""Would int8 matrix products extract faster, and what do they do to the embeddings? Side by side:

    python benchmarks/int8_dynamic_ab.py --model smollm2-135m --texts 600 --rounds 2

One backbone loaded three ways: bfloat16 (what ``--dtype auto`` picks on a CPU with bf16
instructions), float32, and float32 with every ``nn.Linear`` replaced by PyTorch's dynamic int8
quantisation (``torch.ao.quantization.quantize_dynamic``: weights int8 per output channel,
activations quantised per tensor on the fly, fbgemm/oneDNN int8 kernels, VNNI where the CPU has
it). Each extracts the same length-sorted SST-2 train texts (every layer, mean and last pooling),
the three in turn for ``--rounds`` rounds; int8 at two token budgets. Reported: tokens/s per round
and vs bf16, and how far each layer's pooled vectors are from float32's (``||a - b|| / ||a||`` per
layer: median and max over layers). With ``--probe-texts N``, the first N SST-2 train texts are
also extracted in bf16 and int8 and every layer's 5-fold CV probe accuracy (training labels only)
is compared: does the distortion cost accuracy? Writes benchmarks/results/int8_dynamic_ab.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bench_util import write_results  # noqa: E402


def layer_errors(ref: np.ndarray, other: np.ndarray) -> list[float]:
    ref, other = np.asarray(ref, np.float32), np.asarray(other, np.float32)
    return [float(np.linalg.norm(ref[i] - other[i]) / np.linalg.norm(ref[i])) for i in range(ref.shape[0])]


def probe_accuracy(split, n: int, configs: dict) -> dict:
    """Every layer's CV probe accuracy of the first ``n`` texts of ``split``, per configuration."""
    from layerfuse.embed.extract import tokenize
    from layerfuse.embed.forward import embed_sorted
    from layerfuse.scoring.layer_scores import score_layers

    texts, y = split.texts[:n], np.asarray(split.labels[:n])
    out = {"texts": len(texts), "configs": {}}
    for name, (bb, bt) in configs.items():
        enc, _ = tokenize(bb, texts, 128)
        order = np.argsort([-len(e) for e in enc], kind="stable")
        X = embed_sorted(bb, [enc[i] for i in order], ["last"], bb.n_layers, batch_tokens=bt)["last"]
        X = np.asarray(X, np.float32)[:, np.argsort(order)]  # back to the texts' order
        prof = score_layers(X, y, folds=5, scores=["probe"], windows=0, topk=0, progress=False)
        accs = [r["probe_acc"] for r in prof.layer_rows()]
        best = int(np.argmax(accs))
        out["configs"][name] = {"layer_acc": accs, "best_layer": best, "best_acc": accs[best],
                                "mean_acc": float(np.mean(accs))}
    return out


def main() -> None:
    import torch

    from layerfuse.cli.main import quiet_libraries
    from layerfuse.data.builtin import load_builtin
    from layerfuse.embed.backbones import load_backbone
    from layerfuse.embed.device import bf16_instructions
    from layerfuse.embed.extract import tokenize
    from layerfuse.embed.forward import embed_sorted

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--texts", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--probe-texts", type=int, default=0, help="also compare CV probe accuracy on this many texts")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "int8_dynamic_ab"))
    args = ap.parse_args()
    quiet_libraries()
    warnings.filterwarnings("ignore", module="torch.ao")  # its deprecation notice
    from torch.ao.quantization import quantize_dynamic

    texts = load_builtin("sst2").splits["train"].texts[: args.texts]
    b16 = load_backbone(args.model, dtype="bfloat16", device="cpu", progress=False)
    f32 = load_backbone(args.model, dtype="float32", device="cpu", progress=False)
    q8 = load_backbone(args.model, dtype="float32", device="cpu", progress=False)
    q8.model = quantize_dynamic(q8.model, {torch.nn.Linear}, dtype=torch.qint8)
    enc, _ = tokenize(b16, texts, 128)
    enc = sorted(enc, key=len, reverse=True)
    tokens = sum(map(len, enc))
    configs = [("bfloat16", b16, 2048), ("int8 dynamic, 1024-token batches", q8, 1024),
               ("int8 dynamic, 2048-token batches", q8, 2048), ("float32", f32, 1024)]
    for _, bb, bt in configs:  # warm-up: first-call costs of each kernel
        embed_sorted(bb, enc[::20], ["mean"], bb.n_layers, batch_tokens=bt)
    load_before = os.getloadavg()[0]
    secs: dict = {name: [] for name, _, _ in configs}
    outs: dict = {}
    for r in range(args.rounds):
        for name, bb, bt in configs:
            t0 = time.perf_counter()
            outs[name] = embed_sorted(bb, enc, ["mean", "last"], bb.n_layers, batch_tokens=bt)
            secs[name].append(time.perf_counter() - t0)
            print(f"round {r + 1}  {name:<34} {secs[name][-1]:6.2f} s  {tokens / secs[name][-1]:6.0f} tokens/s",
                  flush=True)
    base = statistics.median(secs["bfloat16"])
    rows = []
    for name, _, bt in configs:
        errs = {p: layer_errors(outs["float32"][p], outs[name][p]) for p in ("mean", "last")}
        med = statistics.median(secs[name])
        rows.append({"config": name, "batch_tokens": bt, "seconds": secs[name], "tokens_per_s": tokens / med,
                     "vs_bf16": base / med,
                     "rel_error_vs_fp32": {p: {"median": float(np.median(e)), "max": float(max(e))}
                                           for p, e in errs.items()}})
    probe = probe_accuracy(load_builtin("sst2").splits["train"], args.probe_texts, {"bfloat16": (b16, 2048),
                           "int8 dynamic": (q8, 1024)}) if args.probe_texts else None
    command = "python benchmarks/int8_dynamic_ab.py " + " ".join(sys.argv[1:])
    data = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, bf16 instructions: "
                       f"{bf16_instructions()}, quantized engine {torch.backends.quantized.engine}, torch {torch.__version__}",
            "model": args.model, "texts": len(texts), "tokens": tokens,
            "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]}, "rows": rows, "probe": probe}
    md = [f"Command: `{command}` ({data['date']}; {data['machine']}; load average {load_before:.1f} before, "
          f"{data['load_average_1min']['after']:.1f} after)", "",
          f"{args.model}, {len(texts)} SST-2 train texts ({tokens:,} tokens), every layer, mean + last pooling; "
          f"{args.rounds} rounds, the configurations in turn; median time counts.", "",
          "| configuration | tokens/s | vs bf16 | rel. error vs fp32, mean pooling (median / max over layers) | last pooling |",
          "| --- | ---: | ---: | ---: | ---: |"]
    for row in rows:
        e = row["rel_error_vs_fp32"]
        md.append(f"| {row['config']} | {row['tokens_per_s']:,.0f} | {row['vs_bf16']:.2f}× | "
                  f"{e['mean']['median']:.4f} / {e['mean']['max']:.4f} | {e['last']['median']:.4f} / {e['last']['max']:.4f} |")
    if probe:
        md += ["", f"CV probe accuracy (5 folds, {probe['texts']} SST-2 train texts, training labels only):", "",
               "| configuration | best layer | its CV acc | mean over layers |", "| --- | ---: | ---: | ---: |"]
        for name, r in probe["configs"].items():
            md.append(f"| {name} | {r['best_layer']} | {100 * r['best_acc']:.2f} | {100 * r['mean_acc']:.2f} |")
    for line in md[-len(rows) - 2:] if not probe else md[-len(rows) - 8:]:
        print(line)
    write_results(args.out, data, md)


if __name__ == "__main__":
    main()
