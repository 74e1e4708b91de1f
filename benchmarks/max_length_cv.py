"""Does a longer context pay? Max length 256 vs 512 decided by CV on train only (issue 16).

    python benchmarks/max_length_cv.py --datasets r8,r52 --models minilm-l6,mpnet-base --lengths 256,512

For each dataset, model and max length, extracts the **training split only** (the test split is
never read), profiles it as the reproduction does (``prepare_models``: every layer and averaged
window scored by the cross-validated linear probe, the pooling whose best layer scores highest, then
``select_layers("auto")``) and records the CV probe accuracy (mean ± std over the folds) of the
source it selects, and how many training texts the length truncates. Extraction settings are the
reproduction's (``reproduce.py``: mean and last pooling, ``--dtype auto``), so the 256-token
entries are the reproduction's own and only the longer lengths cost a forward pass.

The rule: a dataset moves to the longer length only when, averaged over the models, its CV accuracy
gain exceeds the models' mean fold std (a gain within the noise of the folds does not repay a
forward pass over up to twice the tokens). Results: ``benchmarks/results/max_length_cv.json``
(merged per dataset and model) and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from layerfuse.data.dataset import Dataset  # noqa: E402
from layerfuse.data.builtin import load_builtin  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "max_length_cv.json"


#: The profile rows ``select_layers("auto")`` reads each kind of selection from.
_KIND_OF_COMBINE = {"single": "layer", "average": "window", "separate": "topk"}


def _row_of(profile, sel) -> dict:
    """The profile row of the selected layers: auto picks the best layer, the best window or the
    top-k row, whichever scores highest."""
    return profile.best("probe_acc", kind=_KIND_OF_COMBINE[sel.combine])


def measure(dataset: str, model: str, length: int, dtype: str) -> dict:
    from layerfuse.run.prepare import prepare_models

    full = load_builtin(dataset)
    train_only = Dataset(full.name, full.classes, {"train": full.splits["train"]}, full.source)
    t0 = time.perf_counter()
    (prep,) = prepare_models(train_only, [model], poolings=["mean", "last"], layers="auto",
                             extraction={"max_length": length, "dtype": dtype}, window_shortlist=None,
                             progress=True, log=lambda *a: None)
    prof = prep.profiles[prep.pooling]
    row = _row_of(prof, prep.selection)
    split = prep.emb.stats["splits"]["train"]
    return {"dataset": dataset, "model": model, "max_length": length, "dtype": dtype,
            "pooling": prep.pooling, "layers": prep.spec.label(), "reason": prep.selection.reason,
            "cv_acc": float(row["probe_acc"]), "cv_acc_std": float(row.get("probe_acc_std") or 0.0),
            "best_layer_cv_acc": float(prof.best("probe_acc")["probe_acc"]),
            "truncated": int(split.get("truncated") or 0), "n_train": len(train_only.splits["train"]),
            "seconds": round(time.perf_counter() - t0, 1)}


def decide(rows: list[dict], lengths: list[int]) -> dict:
    """Per dataset: mean CV gain of each longer length over the shortest, against the mean fold std."""
    out = {}
    for ds in sorted({r["dataset"] for r in rows}):
        base = {r["model"]: r for r in rows if r["dataset"] == ds and r["max_length"] == lengths[0]}
        choice, why = lengths[0], []
        for L in lengths[1:]:
            pairs = [(base[r["model"]], r) for r in rows
                     if r["dataset"] == ds and r["max_length"] == L and r["model"] in base]
            if not pairs:
                continue
            gain = float(np.mean([r["cv_acc"] - b["cv_acc"] for b, r in pairs]))
            noise = float(np.mean([(b["cv_acc_std"] + r["cv_acc_std"]) / 2 for b, r in pairs]))
            wins = gain > noise
            why.append({"max_length": L, "models": [r["model"] for _, r in pairs], "mean_gain": gain,
                        "mean_fold_std": noise, "pays": wins})
            if wins:
                choice = L
        out[ds] = {"choice": choice, "comparisons": why}
    return out


def markdown(rows: list[dict], decisions: dict, command: str) -> str:
    lines = ["# Max length by CV on train", "", "```bash", command, "```", "",
             "| dataset | model | max length | truncated train texts | pooling | layers | CV acc (train) |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["dataset"], r["model"], r["max_length"])):
        lines.append(f"| {r['dataset']} | {r['model']} | {r['max_length']} | {r['truncated']} / {r['n_train']} | "
                     f"{r['pooling']} | {r['layers']} | {100 * r['cv_acc']:.2f} ± {100 * r['cv_acc_std']:.2f} |")
    lines += ["", "| dataset | longer length | mean CV gain | mean fold std | pays | chosen |", "|---|---|---|---|---|---|"]
    for ds, d in decisions.items():
        for c in d["comparisons"]:
            lines.append(f"| {ds} | {c['max_length']} | {100 * c['mean_gain']:+.2f} | {100 * c['mean_fold_std']:.2f} | "
                         f"{'yes' if c['pays'] else 'no'} | {d['choice']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="r8,r52")
    ap.add_argument("--models", default="minilm-l6,mpnet-base")
    ap.add_argument("--lengths", default="256,512")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    from layerfuse.cli.main import quiet_libraries
    from layerfuse.embed.device import resolve_dtype

    quiet_libraries()
    dtype = resolve_dtype(a.dtype, "cpu")
    lengths = sorted(int(v) for v in a.lengths.split(","))
    old = json.loads(a.out.read_text()) if a.out.exists() else {}
    keep = {(r["dataset"], r["model"], r["max_length"]): r for r in old.get("rows", [])}
    # The largest dataset first: R8's texts are read out of R52's entries.
    for ds in sorted(a.datasets.split(","), key=lambda d: d != "r52"):
        for m in a.models.split(","):
            for L in lengths:
                r = measure(ds, m, L, dtype)
                keep[(ds, m, L)] = r
                print(f"{ds} {m} {L}: {r['pooling']} {r['layers']} CV {100 * r['cv_acc']:.2f} ± "
                      f"{100 * r['cv_acc_std']:.2f} (truncated {r['truncated']}/{r['n_train']}, {r['seconds']} s)",
                      flush=True)
    rows = list(keep.values())
    decisions = decide(rows, lengths)
    command = "python benchmarks/max_length_cv.py " + " ".join(sys.argv[1:] if argv is None else argv)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"command": command, "rows": rows, "decisions": decisions}, indent=1))
    a.out.with_suffix(".md").write_text(markdown(rows, decisions, command))
    for ds, d in decisions.items():
        print(f"{ds}: max length {d['choice']}  " + "; ".join(
            f"{c['max_length']}: gain {100 * c['mean_gain']:+.2f} vs std {100 * c['mean_fold_std']:.2f}"
            for c in d["comparisons"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
