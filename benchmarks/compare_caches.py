"""How far apart two caches' embeddings are: the same entries (keys), array by array.

    python benchmarks/compare_caches.py CACHE_A CACHE_B [--out FILE]

For every embedding entry present in both cache roots, and each pooling, prints the model, the
split size, the largest absolute difference, that difference relative to the array's largest
magnitude, and the share of stored values that differ at all. Used to show that a change of
extraction settings outside the cache key (the token budget per batch) moves values only by float
rounding (benchmarks/results/run_default/README.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def compare(a: Path, b: Path) -> list[dict]:
    rows = []
    for entry in sorted(p for p in (a / "embeddings").iterdir() if p.is_dir() and not p.name.startswith(".")):
        other = b / "embeddings" / entry.name
        if not (other / "meta.json").exists() or not (entry / "meta.json").exists():
            continue
        meta = json.loads((entry / "meta.json").read_text())
        for pooling in ("mean", "last", "first", "max"):
            fa, fb = entry / pooling / "final.npy", other / pooling / "final.npy"
            if not (fa.exists() and fb.exists()):
                continue
            x = np.asarray(np.load(fa, mmap_mode="r"), np.float32)
            y = np.asarray(np.load(fb, mmap_mode="r"), np.float32)
            diff = np.abs(x - y)
            rows.append({"entry": entry.name, "model": meta.get("model_ref"), "n": meta["fields"]["n"],
                         "pooling": pooling, "max_abs": float(diff.max()),
                         "max_relative_to_largest": float(diff.max() / np.abs(x).max()),
                         "share_differing": float((diff > 0).mean())})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--out", help="also write the rows as JSON here")
    args = ap.parse_args()
    rows = compare(Path(args.a), Path(args.b))
    for r in rows:
        print(f"{r['model']:<14} n={r['n']:<6} {r['pooling']:<5} max |diff| {r['max_abs']:.3g}  "
              f"relative {r['max_relative_to_largest']:.2g}  differing {100 * r['share_differing']:.2f} %")
    if args.out:
        Path(args.out).write_text(json.dumps({"command": "python benchmarks/compare_caches.py A B", "rows": rows},
                                             indent=2))


if __name__ == "__main__":
    main()
