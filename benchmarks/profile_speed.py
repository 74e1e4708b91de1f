"""How long does a layer profile take? Times ``layerfuse.scoring.score_layers``.

By default it builds random-but-structured float16 arrays shaped like SmolLM2-135M on SST-2
train (31 layers x 6,920 texts x 576 features, 2 classes; one array per pooling, 2 poolings)
and profiles each exactly as ``layerfuse profile`` would (all scores, windows of width 2..4, the
top-3 concatenation). Each score's time is measured inside that same run, next to the probe.
It then re-runs each score alone on the first array ("standalone"), so the cost of the shared
per-layer preparation (standardisation, X'X, its eigendecomposition) is visible too.

    python benchmarks/profile_speed.py
    python benchmarks/profile_speed.py --model smollm2-135m --out benchmarks/results/profile_speed_smollm2_sst2.json
    python benchmarks/profile_speed.py --cache-array mean.npy --cache-array last.npy --labels y.npy
    python benchmarks/profile_speed.py --model smollm2-135m --max-length 128 --window-shortlists 0,12 --no-standalone
    python benchmarks/profile_speed.py --model smollm2-135m --dataset r52 --max-length 256 --pooling last --window-shortlists 12 --no-standalone

``--window-shortlists 0,12`` profiles every array once per value, side by side in one run (0: every
window, the former default; 12: the default shortlist), and prints the ratio of the totals.

Writes benchmarks/results/profile_speed.json and prints a short table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from layerfuse.errors import LayerfuseError
from layerfuse.scoring.layer_profile import CHEAP_SCORES, SCORES
from layerfuse.scoring.layer_scores import score_layers

HERE = Path(__file__).resolve().parent


def structured_array(layers: int, n: int, d: int, y: np.ndarray, seed: int) -> np.ndarray:
    """float16 [layers, n, d] shaped like real hidden states (checked against SmolLM2-135M on
    SST-2): a power-law spectrum (eigenvalue i of the correlation matrix ~ 1/i) under a random
    rotation, one dominant shared direction, text-level structure that drifts slowly from layer
    to layer, unequal feature scales, two large-offset 'massive activation' features, and a class
    signal that is weak at the embeddings, peaks at ~60% depth and fades a little after."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    rot = q.astype(np.float32)
    spectrum = np.sqrt(1.0 / np.arange(1, d + 1) ** 1.0).astype(np.float32)
    direction = rng.standard_normal(d).astype(np.float32)
    common = rng.standard_normal(d).astype(np.float32)
    common /= np.linalg.norm(common)
    scales = np.exp(rng.normal(0.0, 0.4, d)).astype(np.float32)
    sign = (2.0 * (y == y.max()) - 1.0).astype(np.float32)  # +-1 for the last class vs rest
    hard = rng.random(n).astype(np.float32)  # per-text difficulty: some texts stay ambiguous
    z = rng.standard_normal((n, d)).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    out = np.empty((layers, n, d), dtype=np.float16)
    for layer in range(layers):
        depth = layer / max(layers - 1, 1)
        z = 0.85 * z + 0.53 * rng.standard_normal((n, d)).astype(np.float32)  # slow drift
        direction += rng.standard_normal(d).astype(np.float32) * 0.15
        u = direction / np.linalg.norm(direction)
        x = (z * spectrum) @ rot
        x += np.outer(g * (2.0 + 4.0 * depth), common)
        strength = 0.03 + 0.09 * np.exp(-((depth - 0.6) / 0.25) ** 2)
        x += np.outer(sign * strength * (1.3 - hard), u)
        x *= scales
        x[:, :2] += np.float32(40.0 * (1 + depth))
        out[layer] = x.astype(np.float16)
    return out


def load_arrays(args) -> tuple[list[tuple[str, np.ndarray]], np.ndarray, str]:
    if args.model:
        # The real thing: the model's cached SST-2 train embeddings (extracted first if missing).
        from layerfuse.embed.extract import extract

        emb = extract(args.model, args.dataset, poolings="mean,last", splits=["train"], max_length=args.max_length)
        keep = emb.poolings if not args.pooling else [args.pooling]
        arrays = [(f"{args.model}/{p}", emb.array("train", p)) for p in keep]
        return arrays, emb.labels["train"], f"cache: {args.model} on {args.dataset} train, {' + '.join(keep)} pooling"
    if args.cache_array:
        if not args.labels:
            raise LayerfuseError("--cache-array needs --labels PATH.npy (one label per row)")
        arrays = []
        for p in args.cache_array:
            a = np.load(p, mmap_mode="r")
            arrays.append((Path(p).stem, a))
        y = np.load(args.labels)
        return arrays, y, "cache arrays: " + ", ".join(args.cache_array)
    rng = np.random.default_rng(args.seed)
    y = rng.integers(0, args.classes, args.n)
    arrays = []
    for i in range(args.poolings):
        t = time.perf_counter()
        arrays.append((f"synthetic-{i}", structured_array(args.layers, args.n, args.d, y,
                                                          args.seed + 1 + i)))
        print(f"built synthetic array {i}: {arrays[-1][1].shape} float16 in "
              f"{time.perf_counter() - t:.1f}s", file=sys.stderr)
    desc = (f"synthetic structured float16 {args.layers} x {args.n} x {args.d}, "
            f"{args.classes} classes, {args.poolings} poolings")
    return arrays, y, desc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="profile this model's cached embeddings of --dataset train (e.g. smollm2-135m)")
    ap.add_argument("--dataset", default="sst2", help="built-in dataset for --model (default sst2)")
    ap.add_argument("--max-length", type=int, default=512, help="extraction max length for --model (default 512)")
    ap.add_argument("--pooling", choices=["mean", "last"],
                    help="profile only this pooling of --model (default: both)")
    ap.add_argument("--cache-array", action="append", metavar="PATH.npy",
                    help="a real [L+1, N, d] array to time (repeat for several poolings)")
    ap.add_argument("--labels", metavar="PATH.npy", help="labels for --cache-array")
    ap.add_argument("--layers", type=int, default=31)
    ap.add_argument("--n", type=int, default=6920)
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--poolings", type=int, default=2)
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for everything (default: score_layers' own policy)")
    ap.add_argument("--probe-threads", type=int, default=None,
                    help="threads of the many-class probe's large products (score_layers' probe_threads; "
                         "default: as the other large products; prepare_models gives a profile that runs "
                         "alone every core)")
    ap.add_argument("--no-standalone", action="store_true",
                    help="skip the per-score standalone runs")
    ap.add_argument("--no-warmup", action="store_true",
                    help="skip the small warm-up profile (its time is reported separately)")
    ap.add_argument("--window-shortlists", default="0",
                    help="comma-separated window_shortlist values to time side by side (0 = every window; default 0)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--out", default=str(HERE / "results" / "profile_speed.json"))
    args = ap.parse_args(argv)

    load_before = os.getloadavg()
    arrays, y, desc = load_arrays(args)
    t = time.perf_counter()
    if not args.no_warmup:  # one-time costs (kernel set-up, first bf16 matmul) out of the ratios
        score_layers(arrays[0][1][:2, :500], y[:500], windows=2, progress=False)
    warmup_s = time.perf_counter() - t
    runs = []
    t_all = time.perf_counter()
    shortlists = [int(v) for v in args.window_shortlists.split(",")]
    totals = {k: 0.0 for k in shortlists}
    for (name, X), k in ((a, k) for a in arrays for k in shortlists):  # each array with every shortlist in turn
        prof = score_layers(X, y, folds=args.folds, windows=args.windows, name=f"{name} shortlist {k or 'off'}",
                            progress=not args.no_progress, threads=args.threads, window_shortlist=k or None,
                            probe_threads=args.probe_threads)
        totals[k] += prof.timings["total"]
        n_layers = prof.n_layers + 1
        n_windows = len(prof.window_rows())
        t = prof.timings
        per = {s: t.get(s, 0.0) / n_layers for s in SCORES}
        runs.append({
            "array": name,
            "window_shortlist": k,
            "shape": list(X.shape),
            "dtype": str(X.dtype),
            "total_s": t["total"],
            "layers_s": round(t["total"] - t.get("windows", 0) - t.get("topk", 0), 3),
            "windows_s": t.get("windows", 0.0),
            "n_windows": n_windows,
            "topk_s": t.get("topk", 0.0),
            "per_layer_s": {
                "all": round((t["total"] - t.get("windows", 0) - t.get("topk", 0)) / n_layers, 4),
                "prep_shared": round(t.get("prep", 0) / n_layers, 4),
                "prep_eigh": round(t.get("prep_eigh", 0) / n_layers, 4),
                **{s: round(v, 4) for s, v in per.items()},
            },
            "ratio_probe_over_score": {
                s: round(per["probe"] / per[s], 1) if per[s] > 0 else None for s in CHEAP_SCORES
            },
            "best_layer": prof.best()["start"],
            "best_probe_acc": round(prof.best()["probe_acc"], 4),
            "agreement": {k: (round(v, 3) if v == v else None) for k, v in prof.agreement.items()},
        })
    total = time.perf_counter() - t_all

    standalone = {}
    if not args.no_standalone:
        name, X = arrays[0]
        for s in SCORES:
            p = score_layers(X, y, folds=args.folds, scores=(s,), windows=0, topk=0,
                             progress=False, threads=args.threads)
            standalone[s] = round(p.timings["total"] / (p.n_layers + 1), 4)
        standalone_ratio = {s: round(standalone["probe"] / standalone[s], 1) for s in CHEAP_SCORES}
    load_after = os.getloadavg()

    result = {
        "data": desc,
        "config": {"folds": args.folds, "windows": args.windows, "threads": args.threads,
                   "probe_threads": args.probe_threads,
                   "scores": list(SCORES)},
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in load_after],
        },
        "total_s": round(total, 2),
        "total_s_by_window_shortlist": {str(k): round(v, 2) for k, v in totals.items()},
        "warmup_s": round(warmup_s, 2),
        "target_s": 15,  # issue 15: SmolLM2 on SST-2, 31 layers x 2 poolings, every score and window
        "runs": runs,
        "standalone_per_layer_s": standalone,
    }
    if standalone:
        result["standalone_ratio_probe_over_score"] = standalone_ratio
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    # ---- short table
    print(f"\n{desc}")
    print(f"machine: {os.cpu_count()} cpus, torch {torch.__version__}, load avg "
          f"{load_before[0]:.2f} -> {load_after[0]:.2f}")
    for r in runs:
        print(f"\n[{r['array']}, window shortlist {r['window_shortlist'] or 'off'}] total {r['total_s']:.1f}s = layers {r['layers_s']:.1f}s + "
              f"{r['n_windows']} windows {r['windows_s']:.1f}s + top-k {r['topk_s']:.1f}s; "
              f"best layer {r['best_layer']} ({r['best_probe_acc']:.4f})")
        print(f"  {'per layer':<16}{'seconds':>9}{'probe / score':>15}{'spearman vs probe':>19}")
        names = {"prep_shared": "prep (shared)", "prep_eigh": "  of which eigh"}
        for k, v in r["per_layer_s"].items():
            ratio = r["ratio_probe_over_score"].get(k)
            rho = r["agreement"].get(k)
            print(f"  {names.get(k, k):<16}{v:>9.4f}{(f'{ratio:.1f}x' if ratio else ''):>15}"
                  f"{(f'{rho:+.3f}' if rho is not None else ''):>19}")
    if standalone:
        print("\nstandalone (one score alone, incl. its own preparation), s per layer:")
        for s in SCORES:
            extra = (f"  ({standalone_ratio[s]:.1f}x faster than the probe)"
                     if s in standalone_ratio else "")
            print(f"  {s:<10}{standalone[s]:>8.4f}{extra}")
    if len(shortlists) > 1:
        base = totals[shortlists[0]]
        print("\nevery array, per window shortlist: " + ", ".join(
            f"{k or 'off'} {v:.1f}s ({base / v:.2f}x)" for k, v in totals.items()))
    print(f"\nall {len(runs)} profiles: {total:.1f}s (warm-up {warmup_s:.1f}s before); wrote {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except LayerfuseError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
