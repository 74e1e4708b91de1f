"""Does bfloat16 extraction cost accuracy? fp32 and bf16 embeddings of the same texts, side by side.

    python benchmarks/bf16_accuracy.py                      # SST-2, smollm2-135m (fp32 pass ≈ 4 min)
    python benchmarks/bf16_accuracy.py --dataset mr --model minilm-l6

For every layer and pooling: the CV probe accuracy on train (what layer selection reads) from
fp32 and from bf16 embeddings, and the test accuracy of a probe fit on all of train
(analysis only). Reports the largest per-layer differences and whether the layer chosen by CV
is the same. Results go to benchmarks/results/bf16_accuracy_DATASET_MODEL.json.
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

from layerfuse.data.builtin import load_builtin  # noqa: E402
from layerfuse.embed.extract import extract  # noqa: E402
from layerfuse.scoring.layer_scores import eval_test_column, score_layers  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="sst2")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--max-length", type=int, default=128)
    args = ap.parse_args()
    ds = load_builtin(args.dataset)
    ytr, yte = ds.splits["train"].labels, ds.splits["test"].labels
    res = {"command": f"python benchmarks/bf16_accuracy.py --dataset {args.dataset} --model {args.model}",
           "date": time.strftime("%Y-%m-%d"), "dataset": args.dataset, "model": args.model,
           "max_length": args.max_length, "poolings": {}}
    embs = {}
    for dt in ("float32", "bfloat16"):
        embs[dt] = extract(args.model, data=ds, poolings="mean,last", dtype=dt, max_length=args.max_length,
                           splits=["train", "test"])
        res[f"{dt}_extract_seconds"] = embs[dt].stats["extract_seconds"]
    for p in ("mean", "last"):
        cols = {}
        for dt, emb in embs.items():
            prof = score_layers(emb.array("train", p), ytr, scores="probe", windows=0, topk=0, name=f"{dt}/{p}")
            eval_test_column(prof, emb.array("train", p), ytr, emb.array("test", p), yte)
            rows = prof.layer_rows()
            cols[dt] = {"cv": np.array([r["probe_acc"] for r in rows]),
                        "test": np.array([r["test_acc_analysis_only"] for r in rows]),
                        "best": prof.best("probe_acc")["start"]}
        a, b = cols["float32"], cols["bfloat16"]
        res["poolings"][p] = {
            "cv_acc_fp32": a["cv"].round(4).tolist(), "cv_acc_bf16": b["cv"].round(4).tolist(),
            "test_acc_fp32": a["test"].round(4).tolist(), "test_acc_bf16": b["test"].round(4).tolist(),
            "max_abs_cv_diff": float(np.abs(a["cv"] - b["cv"]).max()),
            "mean_cv_diff_bf16_minus_fp32": float((b["cv"] - a["cv"]).mean()),
            "max_abs_test_diff": float(np.abs(a["test"] - b["test"]).max()),
            "best_layer_fp32": a["best"], "best_layer_bf16": b["best"],
            "test_at_chosen_fp32": float(a["test"][a["best"]]), "test_at_chosen_bf16": float(b["test"][b["best"]]),
        }
        r = res["poolings"][p]
        print(f"{p}: CV acc differs by at most {100 * r['max_abs_cv_diff']:.2f} points (mean bf16−fp32 "
              f"{100 * r['mean_cv_diff_bf16_minus_fp32']:+.2f}); chosen layer fp32 {a['best']} / bf16 {b['best']}; "
              f"test at the chosen layer {100 * r['test_at_chosen_fp32']:.2f} / {100 * r['test_at_chosen_bf16']:.2f}")
    out = ROOT / "benchmarks" / "results" / f"bf16_accuracy_{args.dataset}_{args.model}.json"
    out.write_text(json.dumps(res, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
