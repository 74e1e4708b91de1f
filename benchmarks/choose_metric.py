"""Which metric should the automatic choice rank configurations by: macro-F1 or accuracy?

    python benchmarks/choose_metric.py --datasets r52,r8

Nested CV on **train only** (:func:`layerfuse.run.selection_rules.compare_rules`), with the sources
the reproduction prepared (same models, layers, pooling, dtype and max length: read from
``benchmarks/results/reproduce/<dataset>/summary.json`` and its saved profiles, so run the
reproduction of a dataset first). Candidates: every source alone, every pair stacked, and all
sources stacked, with the reproduction's head and training settings. In each outer fold every rule
(validation carve, k-fold CV, one-SE) ranks the candidates once by macro-F1 and once by accuracy on
the outer training part; each pick is scored on the outer held-out part. No test text is read.

Writes ``benchmarks/results/choose_metric/<dataset>.json`` and ``benchmarks/results/choose_metric.md``
(every dataset's table), which docs/selection.md quotes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
OUT = ROOT / "benchmarks" / "results" / "choose_metric"
REPRO = ROOT / "benchmarks" / "results" / "reproduce"


def candidates(n_sources: int, head: str) -> list[tuple[tuple[int, ...], str, str]]:
    """Every source alone, every pair stacked, all sources stacked (no configuration twice)."""
    configs = [((i,), "concat", head) for i in range(n_sources)]
    configs += [(pair, "stack", head) for pair in itertools.combinations(range(n_sources), 2)]
    if n_sources > 2:
        configs.append((tuple(range(n_sources)), "stack", head))
    return configs


def run(name: str, outer: int, inner: int, head: str) -> dict:
    import reproduce as R

    from layerfuse.cache.layout import profile_checkpoint_dir
    from layerfuse.data.builtin import load_builtin
    from layerfuse.run.prepare import prepare_models
    from layerfuse.run.selection_rules import METRICS, compare_rules

    folder = REPRO / name
    s = json.loads((folder / "summary.json").read_text())
    ds = load_builtin(name)
    t0 = time.perf_counter()
    preps = prepare_models(ds, s["models"], poolings=["mean", "last"], layers="auto", eval_test=False,
                           extraction={"max_length": s["max_length"], "dtype": s["dtype"]}, progress=False,
                           saved_profiles=R.saved_profiles(folder, s["models"], s["max_length"], s["dtype"], s),
                           profile_dir=profile_checkpoint_dir(), window_shortlist=s.get("window_shortlist"),
                           log=lambda *a: None)
    prepare_s = time.perf_counter() - t0
    names = [p.ref for p in preps]
    configs = candidates(len(preps), head)
    settings = R.grid_settings(s["seeds"])
    fit_kw = {k: v for k, v in settings.items() if k != "seeds"}
    print(f"[{name}] {len(configs)} candidates over {', '.join(names)}; {outer} outer × {inner} inner folds",
          flush=True)
    t0 = time.perf_counter()
    nested = compare_rules(configs, [p.sources("train") for p in preps], ds.splits["train"].labels,
                           n_classes=len(ds.classes), metrics=tuple(METRICS), outer_folds=outer, inner_folds=inner,
                           seed=s["seeds"][0], log=lambda *a: print(*a, flush=True), **fit_kw)
    result = {
        "command": f"python benchmarks/choose_metric.py --datasets {name}"
                   + (f" --outer-folds {outer}" if outer != 3 else "") + (f" --inner-folds {inner}" if inner != 3 else "")
                   + (f" --head {head}" if head != "mlp" else ""),
        "date": time.strftime("%Y-%m-%d"), "dataset": name, "train_size": len(ds.splits["train"].labels),
        "classes": len(ds.classes), "sources": {p.ref: p.spec.label() for p in preps},
        "reproduction": {k: s.get(k) for k in ("dtype", "max_length", "window_shortlist")},
        "settings": settings, "configs": [["+".join(names[i] for i in sub), f, h] for sub, f, h in configs],
        "nested": nested, "timing": {"prepare_s": prepare_s, "nested_s": time.perf_counter() - t0},
        "machine": R.machine_info(),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    return result


def render(level: int = 1) -> str:
    """Every dataset's table; ``level`` is the heading level of the title (datasets one below).
    Empty when nothing has been measured."""
    if not sorted(OUT.glob("*.json")):
        return ""
    h = "#" * level
    lines = [f"{h} Ranking metric for the automatic choice: nested CV on train", "",
             "Written by `python benchmarks/choose_metric.py` (`benchmarks/results/choose_metric/<dataset>.json`). "
             "Each rule ranks the candidates (every source alone, every pair stacked, all sources stacked) "
             "by macro-F1 or by accuracy on the outer training part of a nested CV on train; its pick is "
             "scored on the outer held-out part. No test text is read.", ""]
    for path in sorted(OUT.glob("*.json")):
        r = json.loads(path.read_text())
        n = r["nested"]
        lines += [f"{h}# {r['dataset']} ({r['train_size']:,} training texts, {r['classes']} classes)", "",
                  f"`{r['command']}` ({r['date']}, {n['outer_folds']} outer × {n['inner_folds']} inner folds, "
                  f"{len(r['configs'])} candidates, {r['timing']['nested_s'] / 60:.0f} min on {r['machine']['cpu']}, "
                  f"{r['machine']['cores']} cores). Sources: "
                  + "; ".join(f"{k}: {v}" for k, v in r["sources"].items()) + ".", "",
                  "| rule | ranked by | held-out accuracy | held-out macro-F1 | beaten by best single (acc) "
                  "| regret vs best candidate (acc) | picks per outer fold |",
                  "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
        for key, d in n["rules"].items():
            picks = ", ".join(" + ".join(r["configs"][i][0].split("+")) + f" [{r['configs'][i][1]}]"
                              if "+" in r["configs"][i][0] else r["configs"][i][0] for i in d["picks"])
            lines.append(f"| {d['rule']} | {d['metric']} | {100 * d['held_acc_mean']:.2f} | "
                         f"{100 * d['held_f1_mean']:.2f} | {d['beaten_by_best_single']['accuracy']} of {d['of']} | "
                         f"{100 * d['regret_mean']['accuracy']:.2f} | {picks} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="r52,r8")
    ap.add_argument("--outer-folds", type=int, default=3)
    ap.add_argument("--inner-folds", type=int, default=3)
    ap.add_argument("--head", default="mlp")
    ap.add_argument("--render", action="store_true", help="only rewrite choose_metric.md from the JSON files")
    args = ap.parse_args(argv)
    if not args.render:
        for name in args.datasets.split(","):
            run(name, args.outer_folds, args.inner_folds, args.head)
            (OUT.parent / "choose_metric.md").write_text(render() + "\n")
    (OUT.parent / "choose_metric.md").write_text(render() + "\n")
    print(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
