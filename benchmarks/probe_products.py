"""The CV probe's two products, in the former and the current form, side by side in one run.

    python benchmarks/probe_products.py                               # SmolLM2 on SST-2 (extracted if missing)
    python benchmarks/probe_products.py --model minilm-l6 --dataset r8 --rounds 1

Each L-BFGS evaluation of the batched probe (``layerfuse.scoring.solver``) multiplies the
standardised layer ``xs [N, d]`` by the weights of every fold and class (``k = folds x classes``
columns) and ``xs'`` by the residuals. The former code wrote them ``xs @ W`` and ``xs' @ R``; the
current one ``(W' xs')'`` and ``(R' xs)'`` (the same sums, in another order), because MKL runs the
skinny products 2-5x faster that way on some CPUs. Part one times the bare products for a few
``k``; part two profiles every pooling of the model's training split as ``layerfuse run`` does
(every score, the 12-window shortlist, the top-3 row, the per-layer test column), once with each
form, in turn for ``--rounds`` rounds, and reports the times, their ratio, how far each score
moved and whether ``select_layers("auto")`` chose the same layers.

Results: benchmarks/results/probe_products.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from layerfuse.embed.extract import extract
from layerfuse.scoring import solver
from layerfuse.scoring.layer_scores import eval_test_column, score_layers
from layerfuse.scoring.selection import select_layers
from layerfuse.scoring.threads import torch_threads

HERE = Path(__file__).resolve().parent
CURRENT = (solver.logits, solver.weight_grad)


def former_logits(xs, W, b, large):
    return torch.addmm(b, xs, W)


def former_weight_grad(xs, R, W, l2):
    return torch.addmm(W, xs.T, R, alpha=1.0, beta=l2)


FORMS = {"former (xs @ W, xs' @ R)": (former_logits, former_weight_grad), "current ((W' xs')', (R' xs)')": CURRENT}


def use(form: str) -> None:
    solver.logits, solver.weight_grad = FORMS[form]


def timed(fn, n: int = 30) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e3


def bare_products(n: int, d: int, ks=(2, 10, 40, 260)) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(n, d, generator=g)
    rows = []
    with torch_threads(1):
        for k in ks:
            W, b, R = torch.randn(d, k, generator=g), torch.randn(k, generator=g), torch.randn(n, k, generator=g)
            row = {"n": n, "d": d, "k": k}
            for name, (lg, wg) in FORMS.items():
                row[name] = {"logits_ms": timed(lambda: lg(xs, W, b, False)),
                             "grad_ms": timed(lambda: wg(xs, R, W, 1e-3))}
            rows.append(row)
    return rows


def profile(X, y, X_test, y_test, name):
    t = time.perf_counter()
    prof = score_layers(X, y, window_shortlist=12, progress=False, name=name)
    eval_test_column(prof, X, y, X_test, y_test)
    return time.perf_counter() - t, prof


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dataset", default="sst2")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "probe_products"))
    args = ap.parse_args()
    emb = extract(args.model, args.dataset, poolings="mean,last", splits=["train", "test"], progress=True)
    y, y_test = emb.labels["train"], emb.labels["test"]
    n, d = emb.array("train", emb.poolings[0]).shape[1:]
    bare = bare_products(int(n), int(d))
    for r in bare:
        print(f"bare products, one thread, [{n}, {d}] x [{d}, {r['k']}]: " + "; ".join(
            f"{name}: logits {v['logits_ms']:.2f} ms, grad {v['grad_ms']:.2f} ms"
            for name, v in r.items() if isinstance(v, dict)), flush=True)
    seconds = {f: {p: [] for p in emb.poolings} for f in FORMS}
    profiles = {}
    for rnd in range(args.rounds):
        for form in (list(FORMS) if rnd % 2 == 0 else list(FORMS)[::-1]):
            use(form)
            try:
                for p in emb.poolings:
                    s, prof = profile(emb.array("train", p), y, emb.array("test", p), y_test, f"{args.model}/{p}")
                    seconds[form][p].append(s)
                    profiles[(form, p)] = prof
                    print(f"round {rnd + 1} {form} {p}: {s:.1f} s", flush=True)
            finally:
                solver.logits, solver.weight_grad = CURRENT
    former, current = list(FORMS)
    moved, same = {}, True
    for p in emb.poolings:
        a, b = profiles[(former, p)], profiles[(current, p)]
        cols = [c for c in a.rows[0] if isinstance(a.rows[0][c], float)]
        moved[p] = {c: max(abs(ra.get(c, 0.0) - rb.get(c, 0.0)) for ra, rb in zip(a.rows, b.rows)
                           if isinstance(ra.get(c), float) and isinstance(rb.get(c), float)) for c in cols}
        same &= select_layers(a, "auto").layers == select_layers(b, "auto").layers
    med = {f: sum(float(np.median(v)) for v in seconds[f].values()) for f in FORMS}
    ratio = med[former] / med[current]
    print(f"profile of every pooling, median of {args.rounds}: former {med[former]:.1f} s, current {med[current]:.1f} s: "
          f"{ratio:.2f}x; same layers chosen: {'yes' if same else 'no'}")
    for p, m in moved.items():
        print(f"  {p}: largest change per score " + ", ".join(f"{c} {v:.2g}" for c, v in m.items() if v > 0 or "acc" in c))
    cmd = "python benchmarks/probe_products.py" + ("" if args.model == "smollm2-135m" else f" --model {args.model}") + (
        "" if args.dataset == "sst2" else f" --dataset {args.dataset}") + ("" if args.rounds == 2 else f" --rounds {args.rounds}")
    res = {"command": cmd, "date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.processor() or platform.machine(),
           "cores": os.cpu_count(), "torch": torch.__version__, "model": args.model, "dataset": args.dataset,
           "shape": [int(x) for x in emb.array("train", emb.poolings[0]).shape], "bare_products": bare,
           "seconds": seconds, "median_total_seconds": med, "ratio": ratio, "same_layers": same, "largest_change": moved}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(res, indent=1))
    lines = [f"Command: `{cmd}` ({res['date']}, {args.model} on {args.dataset} train {res['shape']}, "
             f"{res['cores']} cores, torch {torch.__version__})", "",
             "| form | " + " | ".join(f"{p} s" for p in emb.poolings) + " | total s |", "| --- |" + " ---: |" * (len(emb.poolings) + 1)]
    for f in FORMS:
        lines.append(f"| {f} | " + " | ".join(f"{float(np.median(seconds[f][p])):.1f}" for p in emb.poolings)
                     + f" | {med[f]:.1f} |")
    lines += ["", f"Current / former: **{ratio:.2f}x** faster; same layers chosen: {'yes' if same else 'no'}.", "",
              "Largest change of a score between the forms (same rows): " + "; ".join(
                  f"{p}: " + ", ".join(f"{c} {v:.2g}" for c, v in m.items() if "acc" in c or "f1" in c)
                  for p, m in moved.items()), "",
              "Bare products on one thread (ms, logits / gradient):", "",
              "| k | " + " | ".join(FORMS) + " |", "| ---: |" + " ---: |" * len(FORMS)]
    for r in bare:
        lines.append(f"| {r['k']} | " + " | ".join(f"{r[f]['logits_ms']:.2f} / {r[f]['grad_ms']:.2f}" for f in FORMS) + " |")
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}.json and {args.out}.md")


if __name__ == "__main__":
    main()
