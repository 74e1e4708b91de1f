"""Window shortlisting vs the exhaustive profile: same choice, how much faster?

    python benchmarks/window_shortlist.py --entry <cache entry folder> --dataset sst2 [--n 2000]

For each pooling of a cached embedding entry (the training split of a built-in dataset), profiles
the layers as ``layerfuse profile`` would (all scores, windows 2..4, top-3), twice in one run: once
scoring every averaged window (today's default) and once with ``window_shortlist=--time-k`` (only
the K windows whose member layers have the highest mean probe accuracy are scored); the time of
each is reported. A shortlisted window's scores are the exhaustive pass's scores of that window
(same sums in the same order; tests/scoring/test_window_shortlist.py), so the choice a shortlist
of any length K would make is read off the exhaustive rows: the best window among the top K by
the proxy, and ``select_layers("auto")`` over the layers, those windows and the top-k row. The
timed run checks that reading against a real shortlisted profile.
``--n`` subsamples the training rows (a fixed seed) to keep a run short on a shared machine.
Results: ``benchmarks/results/window_shortlist.json`` (one key per entry and pooling, merged).

    python benchmarks/window_shortlist.py --from-profiles

reads the same choice off every exhaustive profile the reproduction committed
(``benchmarks/results/reproduce/DATASET/profile_MODEL_POOLING.json``, full training splits of the
four datasets), with no embeddings needed: per dataset and model, the pooling and layers
``prepare_models`` would choose (the pooling whose best layer has the best CV probe accuracy,
then ``select_layers("auto")``) with every window and with each shortlist length. Results:
``benchmarks/results/window_shortlist_agreement.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from layerfuse import cache as cache_mod  # noqa: E402
from layerfuse.data.builtin import load_builtin  # noqa: E402
from layerfuse.scoring.layer_scores import score_layers  # noqa: E402
from layerfuse.scoring.layer_profile import best_row  # noqa: E402
from layerfuse.scoring.selection import select_layers  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "window_shortlist.json"


def _choice(profile) -> dict:
    w = best_row(profile.rows, "probe_acc", "window")
    sel = select_layers(profile, "auto")
    return {"best_window": [w["start"], w["end"]], "best_window_probe_acc": w["probe_acc"],
            "auto": {"combine": sel.combine, "layers": [int(v) for v in sel.layers]}}


def _proxy_order(profile) -> list[tuple[int, int]]:
    """Windows in shortlist order (as ``layer_scores._shortlisted_windows`` ranks them)."""
    acc = {r["start"]: r["probe_acc"] for r in profile.rows if r["kind"] == "layer"}
    ws = [(r["start"], r["end"]) for r in profile.rows if r["kind"] == "window"]
    return sorted(ws, key=lambda se: (-float(np.mean([acc[i] for i in range(se[0], se[1] + 1)])),
                                      se[1] - se[0], se[0]))


def _proxy_rank(profile, window) -> int:
    return _proxy_order(profile).index(tuple(window)) + 1


def _shortlisted_view(profile, k: int):
    """The exhaustive profile with only the top-k windows by the proxy kept."""
    import copy

    keep = set(_proxy_order(profile)[:k])
    view = copy.copy(profile)
    view.rows = [r for r in profile.rows if r["kind"] != "window" or (r["start"], r["end"]) in keep]
    return view


AGREEMENT = ROOT / "benchmarks" / "results" / "window_shortlist_agreement.json"
REPRODUCE = ROOT / "benchmarks" / "results" / "reproduce"


def _prepared_choice(profiles: dict) -> dict:
    """What prepare_models picks from a model's profiles: the pooling, then auto layers."""
    pooling = max(profiles, key=lambda p: profiles[p].best("probe_acc")["probe_acc"])
    sel = select_layers(profiles[pooling], "auto")
    return {"pooling": pooling, "combine": sel.combine, "layers": [int(v) for v in sel.layers]}


def agreement_from_profiles(ks: list[int]) -> dict:
    """Per dataset and model, the prepared choice with every window and with each shortlist of the
    committed reproduction profiles; counts of agreement per K."""
    from layerfuse.scoring.layer_profile import LayerProfile

    per = {}
    for d in sorted(p for p in REPRODUCE.iterdir() if p.is_dir()):
        models = sorted({f.stem[len("profile_"):].rsplit("_", 1)[0] for f in d.glob("profile_*_*.json")})
        for m in models:
            profiles = {pool: LayerProfile.from_json(d / f"profile_{m}_{pool}.json") for pool in ("mean", "last")
                        if (d / f"profile_{m}_{pool}.json").exists()}
            if not any(prof.window_rows() for prof in profiles.values()):
                continue  # a one-layer source (tfidf) has no windows
            ref = _prepared_choice(profiles)
            rec = {"exhaustive": ref, "windows": {p: len(prof.window_rows()) for p, prof in profiles.items()},
                   "shortlist": {}}
            for k in ks:
                c = _prepared_choice({p: _shortlisted_view(prof, k) for p, prof in profiles.items()})
                rec["shortlist"][str(k)] = {**c, "same": c == ref}
            per[f"{d.name} {m}"] = rec
    summary = {str(k): {"same": sum(r["shortlist"][str(k)]["same"] for r in per.values()), "of": len(per)}
               for k in ks}
    return {"command": "python benchmarks/window_shortlist.py --from-profiles", "date": time.strftime("%Y-%m-%d"),
            "summary": summary, "per_model": per}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from-profiles", action="store_true",
                    help="read the agreement off the reproduction's committed profiles (no embeddings needed)")
    ap.add_argument("--entry", help="a cache entry folder (<cache>/embeddings/<key>)")
    ap.add_argument("--dataset", help="the built-in dataset whose train split the entry holds")
    ap.add_argument("--n", type=int, default=None, help="subsample this many training rows (seed 0)")
    ap.add_argument("--k", default="1,2,4,8,12", help="shortlist lengths to read off (default 1,2,4,8,12)")
    ap.add_argument("--time-k", type=int, default=8, help="shortlist length of the timed run (default 8)")
    ap.add_argument("--poolings", default="mean,last")
    args = ap.parse_args()
    if args.from_profiles:
        out = agreement_from_profiles([int(v) for v in args.k.split(",")])
        for k, v in out["summary"].items():
            print(f"shortlist {k:>2}: same pooling and layers as every window in {v['same']} of {v['of']}")
        for key, r in out["per_model"].items():
            diff = [k for k, c in r["shortlist"].items() if not c["same"]]
            print(f"  {key:<32} {r['exhaustive']}" + (f"  differs at K = {', '.join(diff)}" if diff else ""))
        AGREEMENT.write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {AGREEMENT}")
        return
    if not (args.entry and args.dataset):
        ap.error("--entry and --dataset are needed (or --from-profiles)")
    e = cache_mod.CacheEntry(Path(args.entry))
    meta = e.read_meta()
    split = load_builtin(args.dataset).splits["train"]
    if not np.array_equal(e.read_text_hashes(), cache_mod.text_hashes(split.texts)):
        raise SystemExit(f"{args.entry} does not hold the {args.dataset} train texts")
    rows = np.arange(len(split.texts))
    if args.n and args.n < len(rows):
        rows = np.sort(np.random.default_rng(0).choice(len(rows), args.n, replace=False))
    y = np.asarray(split.labels)[rows]
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    for pooling in args.poolings.split(","):
        X = np.ascontiguousarray(e.open_final(pooling)[:, rows])
        key = f"{meta['model_ref']} {args.dataset} {pooling}"
        t0 = time.perf_counter()
        full = score_layers(X, y, name=f"{key} exhaustive")
        t_full = time.perf_counter() - t0
        ref = _choice(full)
        rec = {"command": "python benchmarks/window_shortlist.py --entry <cache>/embeddings/" + Path(args.entry).name
               + f" --dataset {args.dataset}" + (f" --n {args.n}" if args.n else "") + f" --time-k {args.time_k}",
               "date": time.strftime("%Y-%m-%d %H:%M"), "dtype": meta["fields"]["dtype"], "texts": len(rows), "layers": int(X.shape[0]), "width": int(X.shape[2]),
               "exhaustive": {"seconds": t_full, "windows_seconds": full.timings.get("windows"), **ref}, "shortlist": {}}
        print(f"{key}: exhaustive {t_full:.1f} s, best window {ref['best_window']}, auto {ref['auto']}", flush=True)
        for k in (int(v) for v in args.k.split(",")):
            c = _choice(_shortlisted_view(full, k))
            rec["shortlist"][str(k)] = {**c, "same_best_window": c["best_window"] == ref["best_window"],
                                        "same_auto_choice": c["auto"] == ref["auto"],
                                        "best_window_rank_in_proxy": _proxy_rank(full, ref["best_window"])}
            print(f"  shortlist {k:>2}: best window {c['best_window']} (same: {c['best_window'] == ref['best_window']}), "
                  f"auto same: {c['auto'] == ref['auto']}", flush=True)
        t0 = time.perf_counter()
        short = score_layers(X, y, name=f"{key} shortlist {args.time_k}", window_shortlist=args.time_k)
        t = time.perf_counter() - t0
        c = _choice(short)
        rec["timed_shortlist"] = {"k": args.time_k, "seconds": t, "windows_seconds": short.timings.get("windows"),
                                  "speedup": t_full / t, **c,
                                  "matches_reading": c == _choice(_shortlisted_view(full, args.time_k))}
        print(f"  timed shortlist {args.time_k}: {t:.1f} s vs {t_full:.1f} s exhaustive ({t_full / t:.2f}×); "
              f"choice as read off the exhaustive rows: {rec['timed_shortlist']['matches_reading']}", flush=True)
        rec["load_average_1min"] = os.getloadavg()[0]
        results[key] = rec
    OUT.write_text(json.dumps({k: v for k, v in results.items()}, indent=2))
    print(f"load average {os.getloadavg()[0]:.1f}; wrote {OUT}")


if __name__ == "__main__":
    main()
