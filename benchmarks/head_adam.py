"""Training the default run's heads with Adam's for-loop update vs its fused kernel, side by side.

    python benchmarks/head_adam.py                  # the built-in run's 4 rows x 3 seeds, 2 rounds

The rows are those of ``layerfuse run`` on the built-in default: SmolLM2-135M layer 19 (last
token) and MiniLM-L6 layer 5 (mean) on SST-2, fused by ``concat`` and ``attention``, and each model
alone, MLP head, seeds 0-2 (``fit_seeds`` with the run's settings). Each row is trained with
``torch.optim.Adam(...)`` as layerfuse did before (no option: a Python loop over the parameters
on CPU) and with ``fused=True`` (one kernel per step), in turn, for ``--rounds`` rounds. The
update is the same algorithm; the fused kernel rounds differently, so epochs and scores move a
little: both are printed. Embeddings come from the cache (extracted first if missing).

Results: benchmarks/results/head_adam.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

import layerfuse.model.training as training
from layerfuse.embed.extract import extract

HERE = Path(__file__).resolve().parent
ADAM = torch.optim.Adam
MODES = {"for-loop (former)": {"fused": False}, "fused (current)": {"fused": True}}


def sources(model: str, pooling: str, layer: int):
    emb = extract(model, "sst2", poolings=pooling, splits=["train", "test"], progress=True)
    return (np.asarray(emb.get("train", layer, pooling), dtype=np.float32),
            np.asarray(emb.get("test", layer, pooling), dtype=np.float32), emb.labels)


def fit(mode: str, fusion: str, tr, te, y_tr, y_te):
    kw = MODES[mode]
    training.torch.optim.Adam = lambda *a, **k: ADAM(*a, **{**k, **kw})
    try:
        t = time.perf_counter()
        res = training.fit_seeds(tr, y_tr, te, y_te, n_classes=2, fusion=fusion)
        return time.perf_counter() - t, res
    finally:
        training.torch.optim.Adam = ADAM


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "head_adam"))
    args = ap.parse_args()
    s_tr, s_te, labels = sources("smollm2-135m", "last", 19)
    m_tr, m_te, _ = sources("minilm-l6", "mean", 5)
    y_tr, y_te = labels["train"], labels["test"]
    rows = [("smollm2-135m+minilm-l6", "concat", [s_tr, m_tr], [s_te, m_te]),
            ("smollm2-135m+minilm-l6", "attention", [s_tr, m_tr], [s_te, m_te]),
            ("smollm2-135m", "concat", [s_tr], [s_te]), ("minilm-l6", "concat", [m_tr], [m_te])]
    out = []
    for rnd in range(args.rounds):
        total = dict.fromkeys(MODES, 0.0)
        for name, fusion, tr, te in rows:
            for mode in (list(MODES) if rnd % 2 == 0 else list(MODES)[::-1]):
                sec, r = fit(mode, fusion, tr, te, y_tr, y_te)
                total[mode] += sec
                epochs = [p["epochs_run"] for p in r.per_seed]
                out.append({"round": rnd + 1, "models": name, "fusion": fusion, "adam": mode, "seconds": sec,
                            "epochs": epochs, "test_acc_mean": r.acc_mean, "test_acc_std": r.acc_std,
                            "val_acc_mean": r.val_acc_mean})
                print(f"round {rnd + 1} {name:24s} {fusion:9s} {mode:18s} {sec:6.1f} s ({sum(epochs)} epochs, "
                      f"{sec / sum(epochs):.2f} s/epoch) test {100 * r.acc_mean:.2f} ± {100 * r.acc_std:.2f} "
                      f"val {100 * r.val_acc_mean:.2f}", flush=True)
        former, current = list(MODES)
        print(f"round {rnd + 1}: all rows {total[former]:.1f} s -> {total[current]:.1f} s "
              f"({total[former] / total[current]:.2f}x)", flush=True)
    per_epoch = {m: sum(r["seconds"] for r in out if r["adam"] == m) / sum(sum(r["epochs"]) for r in out if r["adam"] == m)
                 for m in MODES}
    totals = {m: sum(r["seconds"] for r in out if r["adam"] == m) / args.rounds for m in MODES}
    cmd = "python benchmarks/head_adam.py" + ("" if args.rounds == 2 else f" --rounds {args.rounds}")
    res = {"command": cmd, "date": time.strftime("%Y-%m-%d %H:%M"), "cores": os.cpu_count(),
           "torch": torch.__version__, "rows": out, "seconds_per_epoch": per_epoch, "mean_total_seconds": totals}
    Path(args.out + ".json").write_text(json.dumps(res, indent=1))
    former, current = list(MODES)
    lines = [f"Command: `{cmd}` ({res['date']}, {res['cores']} cores, torch {torch.__version__}; the built-in run's "
             "4 rows x 3 seeds, MLP head)", "",
             "| round | models | fusion | Adam | seconds | epochs (per seed) | s/epoch | test acc | val acc |",
             "| ---: | --- | --- | --- | ---: | --- | ---: | ---: | ---: |"]
    for r in out:
        lines.append(f"| {r['round']} | {r['models']} | {r['fusion']} | {r['adam']} | {r['seconds']:.1f} | "
                     f"{r['epochs']} | {r['seconds'] / sum(r['epochs']):.2f} | {100 * r['test_acc_mean']:.2f} ± "
                     f"{100 * r['test_acc_std']:.2f} | {100 * r['val_acc_mean']:.2f} |")
    lines += ["", f"All rows, mean of {args.rounds} round(s): {totals[former]:.1f} s → {totals[current]:.1f} s "
              f"(**{totals[former] / totals[current]:.2f}×**); per epoch {per_epoch[former]:.2f} → "
              f"{per_epoch[current]:.2f} s ({per_epoch[former] / per_epoch[current]:.2f}×)."]
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}.json and {args.out}.md")


if __name__ == "__main__":
    main()
