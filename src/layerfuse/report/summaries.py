"""What ``profile``, ``fuse`` and ``run`` write to their output folder (tables, plots, a JSON
summary) and the terminal text printed from those summaries.
"""

from __future__ import annotations

import json
from pathlib import Path

from layerfuse.report.plots import (
    _ANALYSIS,
    plot_complementarity,
    plot_fusion_chart,
    plot_layer_profile,
    plot_score_agreement,
    plot_windows,
)
from layerfuse.report.tables import file_slug, json_default, pct, text_table, write_table

__all__ = ["write_profile_outputs", "profile_text", "write_fusion_outputs", "fusion_text"]


def write_profile_outputs(preps, out, *, dataset: str) -> dict:
    """Profile tables (CSV + JSON per model and pooling), layer-curve, window and agreement plots,
    and ``selection.json`` (what the fusion stage uses). Returns a JSON-ready summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files, models = [], []
    poolings = sorted({p for prep in preps for p in prep.profiles})
    for prep in preps:
        slug = file_slug(prep.ref)
        for pooling, prof in prep.profiles.items():
            files += [prof.to_csv(out / f"profile_{slug}_{pooling}.csv").name,
                      prof.to_json(out / f"profile_{slug}_{pooling}.json").name]
        prof = prep.profiles[prep.pooling]
        head = prof.headline("probe_acc")
        best, last, best_w = head["best"], head["last"], head["best_window"]
        entry = {
            "model": prep.ref,
            "pooling": prep.pooling,
            "n_layers": prof.n_layers,
            "best_layer": best["start"],
            "best_depth": round(best["depth"], 3),
            "best_acc": best["probe_acc"],
            "best_acc_std": best.get("probe_acc_std"),
            "best_f1": best.get("probe_f1"),
            "last_layer": last["start"],
            "last_acc": last["probe_acc"],
            "best_window": None if best_w is None else [best_w["start"], best_w["end"]],
            "best_window_acc": None if best_w is None else best_w["probe_acc"],
            "agreement_with_probe": prof.agreement,
            "timings": prof.timings,
            "selection": prep.selection.to_dict(),
            "source": prep.spec.to_dict(),
            "source_label": prep.spec.label(),
            "pooling_best_acc": {p: pr.best("probe_acc")["probe_acc"] for p, pr in prep.profiles.items()},
            "seconds": prep.seconds,
        }
        test_col = {r["start"]: r.get(_ANALYSIS) for r in prof.rows if r["kind"] == "layer"}
        if any(v is not None for v in test_col.values()):
            # Reported next to the CV numbers for analysis; nothing above was chosen with it.
            entry["test_acc_analysis_only_best_layer"] = test_col.get(best["start"])
            entry["test_acc_analysis_only_last_layer"] = test_col.get(last["start"])
            entry["test_acc_analysis_only_top_layer"] = max(test_col, key=lambda k: test_col[k] or -1)
        models.append(entry)
        if best_w is not None:
            plot_windows(prof, out / f"windows_{slug}.png")
            files.append(f"windows_{slug}.png")
        plot_score_agreement(prof, out / f"agreement_{slug}.png")
        files.append(f"agreement_{slug}.png")
    for pooling in poolings:
        have = {prep.ref: prep.profiles[pooling] for prep in preps if pooling in prep.profiles}
        plot_layer_profile(have, out / f"layer_profile_{pooling}.png")
        files.append(f"layer_profile_{pooling}.png")
    summary = {"dataset": dataset, "split_scored": "train (cross-validated)", "models": models, "files": files}
    (out / "selection.json").write_text(json.dumps(summary, indent=2, default=json_default))
    return summary


def profile_text(summary: dict) -> str:
    lines = [f"layer profile on {summary['dataset']}: {summary['split_scored']}", ""]
    rows = []
    for m in summary["models"]:
        rows.append({
            "model": m["model"],
            "pooling": m["pooling"],
            "best layer": f"{m['best_layer']}/{m['n_layers']} (depth {m['best_depth']:.2f})",
            "best CV acc": f"{pct(m['best_acc'])} ± {pct(m['best_acc_std'])}",
            "last layer": pct(m["last_acc"]),
            "best window": "—" if m["best_window"] is None else
            f"{m['best_window'][0]}-{m['best_window'][1]}: {pct(m['best_window_acc'])}",
            "selected": m["source_label"],
        })
    lines.append(text_table(rows))
    lines.append("")
    for m in summary["models"]:
        agree = ", ".join(f"{k} {v:+.2f}" for k, v in m["agreement_with_probe"].items() if v is not None)
        lines.append(f"{m['model']}: Spearman of cheap scores with the CV probe across layers: {agree}")
        lines.append(f"  selection: {m['selection']['reason']}")
    return "\n".join(lines)


def write_fusion_outputs(grid, preps, out, *, dataset: str) -> dict:
    """Fusion table (CSV/JSON/Markdown), bar chart and complementarity figure."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = grid.rows
    write_table(rows, out / "fusion_results.csv")
    write_table(rows, out / "fusion_results.json")
    write_table(rows, out / "fusion_results.md")
    files = ["fusion_results.csv", "fusion_results.json", "fusion_results.md"]
    plot_fusion_chart(rows, out, dataset=dataset)
    files.append("fusion_results.png")
    if grid.complementarity:
        (out / "complementarity.json").write_text(json.dumps(grid.complementarity, indent=2))
        plot_complementarity(grid.complementarity, out / "complementarity.png")
        files += ["complementarity.json", "complementarity.png"]
    summary = {"dataset": dataset, "rows": rows, "best": grid.best, "complementarity": grid.complementarity,
               "files": files, "chosen_by": f"{grid.pipeline.info['chosen_by']}; test never chooses"}
    if grid.search:  # greedy paths, as model names
        names = [p.ref for p in preps]
        summary["search"] = {f: {**g, "path": ["+".join(names[i] for i in s) for s in g["path"]],
                                 "chosen": "+".join(names[i] for i in g["chosen"])} for f, g in grid.search.items()}
    (out / "fusion_summary.json").write_text(json.dumps(summary, indent=2, default=json_default))
    return summary


def fusion_text(summary: dict) -> str:
    rows = []
    for r in sorted(summary["rows"], key=lambda r: -r["acc_mean"]):
        rows.append({
            "models": r["models"],
            "fusion": r["fusion"],
            "head": r["head"],
            "test acc": f"{pct(r['acc_mean'])} ± {pct(r['acc_std'])}",
            "test macro-F1": f"{pct(r['f1_mean'])} ± {pct(r['f1_std'])}",
            "val acc": pct(r["val_acc_mean"]),
            "val F1": pct(r["val_f1_mean"]),
            **({"CV acc": pct(r["cv_acc_mean"]), "CV F1": pct(r["cv_f1_mean"])}
               if r.get("cv_f1_mean") is not None else {}),
            "params": f"{r['params']:,}",
            "train s": f"{r['train_seconds']:.1f}",
            "": "◀ chosen" if r.get("chosen_on_validation") else "",
        })
    lines = [f"fusion results on {summary['dataset']} test ({summary['rows'][0]['seeds']} seeds, mean ± std)", "",
             text_table(rows), "", f"◀ chosen by {summary['chosen_by']}"]
    for f, g in (summary.get("search") or {}).items():
        lines.append(f"greedy search ({f}): {' → '.join(g['path'])} ({g['stopped']}; {g['scored']} of "
                     f"{g['exhaustive']} model sets scored)")
    for c in summary.get("complementarity", []):
        extra = ""
        if "both_wrong" in c:
            extra = (f", both wrong {100 * c['both_wrong']:.1f}% vs {100 * c['both_wrong_if_independent']:.1f}% "
                     "if independent")
        lines.append(f"complementarity {c['a']} × {c['b']}: CKA {c['cka']:.2f}{extra}")
    return "\n".join(lines)
