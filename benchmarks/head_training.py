"""Training the default run's heads with a former and the current version of one part, side by side.

    python benchmarks/head_training.py --compare adam      # Adam's for-loop update vs its fused kernel
    python benchmarks/head_training.py --compare dropout   # nn.Dropout (bernoulli_) vs layerfuse's Dropout
    python benchmarks/head_training.py --compare precision # float32 vs bfloat16 autocast training steps

The rows are those of ``layerfuse run`` on the built-in default: SmolLM2-135M layer 19 (last
token) and MiniLM-L6 layer 5 (mean) on SST-2, fused by ``concat`` and ``attention``, and each model
alone, MLP head, seeds 0-2 (``fit_seeds`` with the run's settings). Each row is trained with the
former and the current version in turn, for ``--rounds`` rounds:

* ``adam``: ``torch.optim.Adam(...)`` as layerfuse did before (on CPU a Python loop over the
  parameters) against ``fused=True`` (one kernel per step). Same algorithm, other rounding.
* ``dropout``: ``torch.nn.Dropout`` (masks from ``bernoulli_``) against
  ``layerfuse.model.heads.Dropout`` (masks from ``rand >= p``). Same distribution, another random
  stream.
* ``precision``: ``fit_head(precision="float32")`` against ``"bfloat16"`` (each training step's
  forward and backward under bf16 autocast; weights, Adam state, validation and prediction float32).

Each changes the numbers a little (early stopping lands on other epochs): the scores are printed
beside the times. Embeddings come from the cache (extracted first if missing).

Other rows: ``--dataset r52 --max-length 256 --sources minilm-l6:mean:6`` trains each source of
``--sources`` (``model:pooling:layer``, comma-separated) alone, and with two or more also their
``concat`` and ``attention`` fusion, on another built-in dataset.

Results: benchmarks/results/head_training_<compare>.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

import layerfuse.model.heads as heads
import layerfuse.model.training as training
from layerfuse.embed.extract import extract

HERE = Path(__file__).resolve().parent
ADAM = torch.optim.Adam


@contextlib.contextmanager
def adam(**kw):
    training.torch.optim.Adam = lambda *a, **k: ADAM(*a, **{**k, **kw})
    try:
        yield
    finally:
        training.torch.optim.Adam = ADAM


@contextlib.contextmanager
def dropout(cls):
    current = heads.Dropout
    heads.Dropout = cls
    try:
        yield
    finally:
        heads.Dropout = current


# Per comparison: variant name -> (a context that swaps the part in, fit_seeds keywords).
COMPARE = {
    "adam": {"for-loop (former)": (lambda: adam(fused=False), {}),
             "fused (current)": (lambda: adam(fused=True), {})},
    "dropout": {"nn.Dropout (former)": (lambda: dropout(torch.nn.Dropout), {}),
                "rand >= p (current)": (lambda: dropout(heads.Dropout), {})},
    "precision": {"float32": (contextlib.nullcontext, {"precision": "float32"}),
                  "bfloat16 autocast": (contextlib.nullcontext, {"precision": "bfloat16"})},
}


DEFAULT_SOURCES = "smollm2-135m:last:19,minilm-l6:mean:5"


def sources(model: str, pooling: str, layer: int, dataset: str = "sst2", max_length: int | None = None):
    kw = {"max_length": max_length} if max_length else {}
    emb = extract(model, dataset, poolings=pooling, splits=["train", "test"], progress=True, **kw)
    return (np.asarray(emb.get("train", layer, pooling), dtype=np.float32),
            np.asarray(emb.get("test", layer, pooling), dtype=np.float32), emb.labels)


def fit(variant, fusion: str, tr, te, y_tr, y_te, n_classes: int = 2):
    context, kw = variant
    with context():
        t = time.perf_counter()
        res = training.fit_seeds(tr, y_tr, te, y_te, n_classes=n_classes, fusion=fusion, **kw)
        return time.perf_counter() - t, res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", choices=sorted(COMPARE), required=True)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--dataset", default="sst2", help="built-in dataset (default sst2)")
    ap.add_argument("--max-length", type=int, default=None, help="extraction's max length (default: extract's)")
    ap.add_argument("--sources", default=DEFAULT_SOURCES,
                    help=f"model:pooling:layer, comma-separated (default {DEFAULT_SOURCES}: the built-in run's)")
    ap.add_argument("--out", default=None, help="results path without suffix (default "
                    "benchmarks/results/head_training_<compare>)")
    args = ap.parse_args()
    args.out = args.out or str(HERE / "results" / f"head_training_{args.compare}")
    MODES = COMPARE[args.compare]
    from layerfuse.data.builtin import load_builtin

    n_classes = len(load_builtin(args.dataset).classes)
    got = {}
    for item in args.sources.split(","):
        model, pooling, layer = item.split(":")
        got[model] = sources(model, pooling, int(layer), args.dataset, args.max_length)
    labels = next(iter(got.values()))[2]
    y_tr, y_te = labels["train"], labels["test"]
    rows = []
    if len(got) > 1:
        both = "+".join(got)
        rows += [(both, f, [g[0] for g in got.values()], [g[1] for g in got.values()]) for f in ("concat", "attention")]
    rows += [(model, "concat", [g[0]], [g[1]]) for model, g in got.items()]
    out = []
    for rnd in range(args.rounds):
        total = dict.fromkeys(MODES, 0.0)
        for name, fusion, tr, te in rows:
            for mode in (list(MODES) if rnd % 2 == 0 else list(MODES)[::-1]):
                sec, r = fit(MODES[mode], fusion, tr, te, y_tr, y_te, n_classes)
                total[mode] += sec
                epochs = [p["epochs_run"] for p in r.per_seed]
                out.append({"round": rnd + 1, "models": name, "fusion": fusion, "variant": mode, "seconds": sec,
                            "epochs": epochs, "test_acc_mean": r.acc_mean, "test_acc_std": r.acc_std,
                            "val_acc_mean": r.val_acc_mean})
                print(f"round {rnd + 1} {name:24s} {fusion:9s} {mode:18s} {sec:6.1f} s ({sum(epochs)} epochs, "
                      f"{sec / sum(epochs):.2f} s/epoch) test {100 * r.acc_mean:.2f} ± {100 * r.acc_std:.2f} "
                      f"val {100 * r.val_acc_mean:.2f}", flush=True)
        former, current = list(MODES)
        print(f"round {rnd + 1}: all rows {total[former]:.1f} s -> {total[current]:.1f} s "
              f"({total[former] / total[current]:.2f}x)", flush=True)
    per_epoch = {m: sum(r["seconds"] for r in out if r["variant"] == m) / sum(sum(r["epochs"]) for r in out if r["variant"] == m)
                 for m in MODES}
    totals = {m: sum(r["seconds"] for r in out if r["variant"] == m) / args.rounds for m in MODES}
    cmd = f"python benchmarks/head_training.py --compare {args.compare}" + (
        "" if args.rounds == 2 else f" --rounds {args.rounds}") + (
        "" if args.dataset == "sst2" else f" --dataset {args.dataset}") + (
        f" --max-length {args.max_length}" if args.max_length else "") + (
        "" if args.sources == DEFAULT_SOURCES else f" --sources {args.sources}")
    res = {"command": cmd, "compare": args.compare, "dataset": args.dataset, "sources": args.sources, "date": time.strftime("%Y-%m-%d %H:%M"), "cores": os.cpu_count(),
           "torch": torch.__version__, "rows": out, "seconds_per_epoch": per_epoch, "mean_total_seconds": totals}
    Path(args.out + ".json").write_text(json.dumps(res, indent=1))
    former, current = list(MODES)
    what = ("the built-in run's 4 rows x 3 seeds" if args.sources == DEFAULT_SOURCES and args.dataset == "sst2"
            else f"{args.dataset}, {len(rows)} row(s) x 3 seeds")
    lines = [f"Command: `{cmd}` ({res['date']}, {res['cores']} cores, torch {torch.__version__}; {what}, MLP head)", "",
             f"| round | models | fusion | {args.compare} | seconds | epochs (per seed) | s/epoch | test acc | val acc |",
             "| ---: | --- | --- | --- | ---: | --- | ---: | ---: | ---: |"]
    for r in out:
        lines.append(f"| {r['round']} | {r['models']} | {r['fusion']} | {r['variant']} | {r['seconds']:.1f} | "
                     f"{r['epochs']} | {r['seconds'] / sum(r['epochs']):.2f} | {100 * r['test_acc_mean']:.2f} ± "
                     f"{100 * r['test_acc_std']:.2f} | {100 * r['val_acc_mean']:.2f} |")
    lines += ["", f"All rows, mean of {args.rounds} round(s): {totals[former]:.1f} s → {totals[current]:.1f} s "
              f"(**{totals[former] / totals[current]:.2f}×**); per epoch {per_epoch[former]:.2f} → "
              f"{per_epoch[current]:.2f} s ({per_epoch[former] / per_epoch[current]:.2f}×)."]
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}.json and {args.out}.md")


if __name__ == "__main__":
    main()
