"""The profile stage as `layerfuse run` / `fuse` / `profile` run it, before and after issue 15's two
profile changes, side by side in one run:

    python benchmarks/profile_workers.py --model smollm2-135m --dataset sst2 --max-length 128

Times ``prepare_models`` on one model's cached embeddings (both poolings, every score, windows of
2..4, the top-3 row; no saved profiles read) in three settings, one after another:

* ``every window, 1 process``: the former default (every averaged window; poolings one after the other);
* ``shortlist 12, 1 process``: the window shortlist alone;
* ``shortlist 12, 2 processes``: today's default (``DEFAULT_WINDOW_SHORTLIST``, each pooling in
  its own worker process when the profile is large enough, ``run.prepare.PARALLEL_PROFILE_VALUES``).

It checks that the two 12-window settings chose the same pooling and layers (the workers give the
same numbers, tests/run/test_prepare_workers.py) and reports the choice of each. Embeddings are
extracted first if they are not in the cache (not timed). Results:
``benchmarks/results/profile_workers.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

OUT = ROOT / "benchmarks" / "results" / "profile_workers.json"
SETTINGS = [("every window, 1 process", 0, 1), ("shortlist 12, 1 process", 12, 1), ("shortlist 12, 2 processes", 12, 2)]


def main() -> None:
    from layerfuse.cli.main import quiet_libraries
    from layerfuse.data.builtin import load_builtin
    from layerfuse.embed.extract import extract
    from layerfuse.run.prepare import prepare_models

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dataset", default="sst2")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--out", default=str(OUT), help=f"results file (default {OUT.relative_to(ROOT)})")
    args = ap.parse_args()
    quiet_libraries()
    ds = load_builtin(args.dataset)
    extraction = {"max_length": args.max_length, "dtype": args.dtype}
    extract(args.model, data=ds, poolings=("mean", "last"), progress=False, **extraction)  # cached, not timed
    rows = []
    load_before = os.getloadavg()[0]
    for name, shortlist, workers in SETTINGS:
        t0 = time.perf_counter()
        prep = prepare_models(ds, [args.model], poolings=("mean", "last"), extraction=extraction,
                              window_shortlist=shortlist, profile_workers=workers, progress=False,
                              log=lambda *_: None)[0]
        seconds = time.perf_counter() - t0
        rows.append({"setting": name, "window_shortlist": shortlist, "profile_workers": workers, "seconds": seconds,
                     "pooling": prep.pooling, "layers": prep.spec.label()})
        print(f"{name:<28} {seconds:7.1f} s  ({rows[0]['seconds'] / seconds:.2f}x)  -> {prep.spec.label()}",
              flush=True)
    res = {"command": "python benchmarks/profile_workers.py " + " ".join(sys.argv[1:]),
           "date": time.strftime("%Y-%m-%d %H:%M"), "model": args.model, "dataset": args.dataset,
           "train_texts": len(ds.splits["train"].texts), "cores": os.cpu_count(),
           "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]}, "rows": rows,
           "same_choice_with_workers": rows[1]["layers"] == rows[2]["layers"]}
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
