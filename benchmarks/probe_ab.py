"""The layer profile's CV probe, former solver against today's, side by side on real embeddings.

    python benchmarks/probe_ab.py --model smollm2-135m --dataset r52 --max-length 256 --pooling last

For every layer of one model's cached train embeddings (extracted first if missing) the 5-fold
multinomial probe of ``layerfuse.scoring`` is fitted three ways, in rotated order per layer:

* ``former``: the solver as it was at 289885d: log-softmax through ``torch.logsumexp`` and
  products with the one-hot label matrix, the whitening ``W = U diag(r) V`` applied to the
  weights twice per evaluation, every fit started at zero, element-wise work on one thread;
* ``in place``: :func:`layerfuse.scoring.solver.fit_logistic` started at zero (softmax and residual
  in place on one block, features whitened once, element-wise work on the products' threads);
* ``in place + warm start``: the same, started from the previous layer's solution
  (:meth:`layerfuse.scoring.kernels.Scorer.warm_start`, what a profile does).

``--test-column`` times instead the analysis-only test column's fit (one probe on all of train per
layer, Cholesky-whitened, as ``layer_scores.TestColumn`` does it): started at zero (``cold``, as
before 2026-12-07) and from the previous layer's fit (``warm``, what it does now); the accuracy
column is then training accuracy.

Reported per variant: seconds, loss evaluations, CV accuracy per layer, the best layer, and the
largest accuracy difference to ``former``. Results go to ``benchmarks/results/probe_ab*.{json,md}``.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_util import write_results  # noqa: E402

from layerfuse.config import DEFAULT_FOLDS, DEFAULT_PROBE_L2, DEFAULT_PROBE_MAX_ITER, DEFAULT_PROBE_TOL  # noqa: E402
from layerfuse.scoring.features import layer_f32, standardise  # noqa: E402
from layerfuse.scoring.kernels import Scorer  # noqa: E402
from layerfuse.scoring.solver import fit_logistic, logits, weight_grad  # noqa: E402
from layerfuse.scoring.threads import torch_threads  # noqa: E402


def former_fit(xs, yi, C, train_mask, *, l2, max_iter, tol, eig, threads):
    """The eigen-whitened path of fit_logistic at 289885d (the profile's default scores use it)."""
    n, d = xs.shape
    F = train_mask.shape[1]
    M = train_mask.to(torch.float32)
    Y = torch.nn.functional.one_hot(yi, C).to(torch.float32)
    wts = (M / M.sum(0).clamp_min(1.0))[:, :, None]
    evals, evecs = eig
    r = (0.5 * evals.clamp_min(0.0) + l2).rsqrt()[:, None]
    sb = math.sqrt(2.0)
    V = torch.zeros(d + 1, F * C, dtype=torch.float32, requires_grad=True)
    n_eval = [0]
    large = n * d * F * C > 2e8
    big = threads if large else None

    def closure():
        n_eval[0] += 1
        v = V.detach()
        W, b = evecs @ (r * v[:d]), sb * v[d]
        with torch_threads(big):
            Z = logits(xs, W, b, large).reshape(n, F, C)
        lse = torch.logsumexp(Z, dim=2, keepdim=True)
        P = torch.exp(Z - lse)
        nll = lse[..., 0] - (Z * Y[:, None, :]).sum(2)
        loss = (nll * wts[..., 0]).sum() + 0.5 * l2 * (W * W).sum()
        R = ((P - Y[:, None, :]) * wts).view(n, F * C)
        with torch_threads(big):
            gW = weight_grad(xs, R, W, l2)
        g = torch.empty_like(v)
        g[:d] = r * (evecs.T @ gW)
        g[d] = sb * R.sum(0)
        V.grad = g
        return loss

    opt = torch.optim.LBFGS([V], lr=1.0, max_iter=max_iter, history_size=10, tolerance_grad=tol,
                            tolerance_change=1e-10, line_search_fn="strong_wolfe")
    opt.step(closure)
    v = V.detach()
    return (evecs @ (r * v[:d])).view(d, F, C), (sb * v[d]).view(F, C), n_eval[0]


def cv_acc(sc: Scorer, xs, W, b) -> float:
    d = xs.shape[1]
    Z = (xs @ W.view(d, -1) + b.view(-1)).view(sc.n, sc.F, sc.C)
    return float((Z[sc.arange, sc.fold].argmax(1).numpy() == sc.yi_np).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dataset", default="r52")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--pooling", default="last", choices=["mean", "last"])
    ap.add_argument("--layers", help="first,last layer (default: all)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="threads of the probe's large products (a profile that runs alone gets every core)")
    ap.add_argument("--test-column", action="store_true",
                    help="time the all-train fit of the analysis-only test column, cold vs warm start")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/probe_ab"))
    args = ap.parse_args()
    from layerfuse.embed.extract import extract

    emb = extract(args.model, args.dataset, poolings="mean,last", splits=["train"], max_length=args.max_length,
                  progress=False)
    X, y = emb.array("train", args.pooling), emb.labels["train"]
    classes, yi = np.unique(y, return_inverse=True)
    yi = yi.astype(np.int64)
    settings = {"probe_l2": DEFAULT_PROBE_L2, "probe_max_iter": DEFAULT_PROBE_MAX_ITER,
                "probe_tol": DEFAULT_PROBE_TOL, "knn_sample": 0, "probe_threads": args.threads}
    sc = Scorer(yi, len(classes), DEFAULT_FOLDS, 0, settings)
    lo, hi = (int(v) for v in args.layers.split(",")) if args.layers else (0, X.shape[0] - 1)
    names = ["cold", "warm"] if args.test_column else ["former", "in place", "in place + warm start"]
    k = len(names)
    ones = torch.ones(len(yi), 1)
    prev = None
    rows = []
    load_before = os.getloadavg()
    with torch_threads(1), torch.no_grad():  # score_layers' own setting for everything but the products
        for i, layer in enumerate(range(lo, hi + 1)):
            xs, _, gram = standardise(layer_f32(X, layer), gram=True)
            eig = None if args.test_column else torch.linalg.eigh(gram)
            row = {"layer": layer}
            for name in names[i % k:] + names[:i % k]:  # rotated order: drift hits every variant alike
                if args.test_column:
                    t0 = time.perf_counter()
                    W, b, ne = fit_logistic(xs, sc.yi, sc.C, ones, l2=DEFAULT_PROBE_L2, gram=gram,
                                            threads=args.threads, init=prev if name == "warm" else None)
                    row[name] = {"s": round(time.perf_counter() - t0, 3), "evals": ne,
                                 "acc": round(float(((xs @ W[:, 0] + b[0]).argmax(1).numpy() == yi).mean()), 5)}
                    if name == "warm":
                        warm_fit = (W, b)
                    continue
                kw = dict(l2=DEFAULT_PROBE_L2, max_iter=DEFAULT_PROBE_MAX_ITER, tol=DEFAULT_PROBE_TOL, eig=eig,
                          threads=args.threads)
                t0 = time.perf_counter()
                if name == "former":
                    W, b, ne = former_fit(xs, sc.yi, sc.C, sc.train_mask, **kw)
                elif name == "in place":
                    W, b, ne = fit_logistic(xs, sc.yi, sc.C, sc.train_mask, **kw)
                else:
                    W, b, ne = fit_logistic(xs, sc.yi, sc.C, sc.train_mask, init=sc.warm_start("layer", [layer]),
                                            **kw)
                    sc.solutions[layer] = (W, b)
                row[name] = {"s": round(time.perf_counter() - t0, 3), "evals": ne, "acc": round(cv_acc(sc, xs, W, b), 5)}
            if args.test_column:
                prev = warm_fit
            rows.append(row)
            print(f"layer {layer:>2}  " + "  ".join(f"{n}: {row[n]['s']:.2f} s {row[n]['evals']} evals "
                                                    f"acc {row[n]['acc']:.4f}" for n in names), flush=True)
    total = {n: round(sum(r[n]["s"] for r in rows), 2) for n in names}
    evals = {n: int(sum(r[n]["evals"] for r in rows)) for n in names}
    best = {n: max(rows, key=lambda r: (r[n]["acc"], -r["layer"]))["layer"] for n in names}
    base = names[0]
    diff = {n: round(max(abs(r[n]["acc"] - r[base]["acc"]) for r in rows), 5) for n in names[1:]}
    ratio = {n: round(total[base] / total[n], 2) for n in names[1:]}
    res = {"command": "python benchmarks/probe_ab.py " + " ".join(sys.argv[1:]), "when": time.strftime("%Y-%m-%d %H:%M"),
           "machine": f"{os.cpu_count()} cores, {platform.machine()}, torch {torch.__version__}",
           "load_average_1min": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
           "data": f"{args.model} {args.dataset} train, {args.pooling} pooling, {X.shape[1]} x {X.shape[2]}, "
                   f"{len(classes)} classes, {DEFAULT_FOLDS} folds",
           "threads": args.threads, "what": "test column (all-train fit)" if args.test_column else "CV probe",
           "total_s": total, "evals": evals, f"speedup_over_{base}": ratio,
           "best_layer": best, f"max_abs_acc_diff_vs_{base}": diff, "rows": rows}
    md = [f"Command: `{res['command']}` ({res['when']}, {res['machine']}; load average {res['load_average_1min']})", "",
          f"Data: {res['data']}; layers {lo}..{hi}; {res['what']}; probe products on {args.threads} threads.", "",
          f"| solver | seconds | vs {base} | loss evaluations | best layer | largest {'training' if args.test_column else 'CV'} "
          f"accuracy difference to {base} |",
          "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for n in names:
        md.append(f"| {n} | {total[n]} | {ratio.get(n, 1.0):.2f}× | {evals[n]} | {best[n]} | {diff.get(n, 0.0)} |")
    write_results(args.out, res, md)
    for n in names[1:]:
        print(f"{n}: {ratio[n]:.2f}x {base} ({total[base]} s -> {total[n]} s), "
              f"best layer {best[n]} ({base} {best[base]}), accuracy within {diff[n]}")


if __name__ == "__main__":
    main()
