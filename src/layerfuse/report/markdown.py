"""``report.md``: the tables and plots of an output folder gathered into one Markdown page.
"""

from __future__ import annotations

import json
from pathlib import Path

from layerfuse.report.tables import pct

__all__ = ["write_markdown_report"]


def write_markdown_report(out) -> Path:
    """report.md in an output folder: whatever profile / fusion results it holds, with plots."""
    out = Path(out)
    parts = ["# layerfuse report", ""]
    sel = out / "selection.json"
    if sel.exists():
        s = json.loads(sel.read_text())
        parts += [f"## Layer profile — {s['dataset']}", "",
                  "Scores are cross-validated on the training split only; test accuracy, where shown, is an "
                  "analysis column that no selection reads.", ""]
        parts += ["| model | pooling | best layer (depth) | best CV acc | last layer CV acc | best window | selected |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for m in s["models"]:
            win = "—" if m["best_window"] is None else f"{m['best_window'][0]}–{m['best_window'][1]}: {pct(m['best_window_acc'])}"
            parts.append(f"| {m['model']} | {m['pooling']} | {m['best_layer']} ({m['best_depth']:.2f}) | "
                         f"{pct(m['best_acc'])} ± {pct(m['best_acc_std'])} | {pct(m['last_acc'])} | {win} | "
                         f"{m['source_label']} |")
        parts.append("")
        # The plots this profile wrote (selection.json lists them), not whatever an earlier run
        # with other models left in the folder.
        listed = [out / f for f in s.get("files", [])]
        kinds = ("layer_profile_", "windows_", "agreement_")
        for kind in kinds:
            for f in sorted(q for q in listed if q.name.startswith(kind) and q.exists()):
                parts += [f"![{f.stem}]({f.name})", ""]
    fus = out / "fusion_summary.json"
    if fus.exists():
        s = json.loads(fus.read_text())
        parts += [f"## Fusion — {s['dataset']}", "", f"Chosen by {s['chosen_by']}.", ""]
        parts += ["| models | fusion | head | test acc | test macro-F1 | val acc | val F1 | params | train s |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in sorted(s["rows"], key=lambda r: -r["acc_mean"]):
            star = " **(chosen)**" if r.get("chosen_on_validation") else ""
            parts.append(f"| {r['models']}{star} | {r['fusion']} | {r['head']} | {pct(r['acc_mean'])} ± "
                         f"{pct(r['acc_std'])} | {pct(r['f1_mean'])} ± {pct(r['f1_std'])} | "
                         f"{pct(r['val_acc_mean'])} | {pct(r['val_f1_mean'])} | {r['params']:,} | "
                         f"{r['train_seconds']:.1f} |")
        parts += ["", "![fusion results](fusion_results.png)", ""]
        if (out / "complementarity.png").exists():
            parts += ["![complementarity](complementarity.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(parts) + "\n")
    return path
