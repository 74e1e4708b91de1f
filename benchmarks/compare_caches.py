"""How far apart two caches' embeddings are: the same entries (keys), array by array.

    python benchmarks/compare_caches.py CACHE_A CACHE_B [--out FILE]

For every embedding entry present in both cache roots, and each pooling whose final array is
complete and verified in both (layerfuse.cache's own checks), prints the model, the
split size, the largest absolute difference, that difference relative to the array's largest
magnitude, and the share of stored values that differ at all. Used to show that a change of
extraction settings outside the cache key (the token budget per batch) moves values only by float
rounding (benchmarks/results/run_default/README.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from layerfuse.cache.entries import entry  # noqa: E402
from layerfuse.cache.layout import entries_root  # noqa: E402
from layerfuse.embed.pooling import POOLINGS  # noqa: E402


def compare(a: Path, b: Path) -> list[dict]:
    rows = []
    for folder in sorted(p for p in entries_root(a).iterdir() if p.is_dir() and not p.name.startswith(".")):
        ea, eb = entry(a, folder.name), entry(b, folder.name)
        meta = ea.read_meta()
        if meta is None or eb.read_meta() is None:
            continue
        for pooling in POOLINGS:
            if not (ea.has_final(pooling) and eb.has_final(pooling)):
                continue
            x = np.asarray(ea.open_final(pooling), np.float32)
            y = np.asarray(eb.open_final(pooling), np.float32)
            diff = np.abs(x - y)
            rows.append({"entry": folder.name, "model": meta.get("model_ref"), "n": meta["fields"]["n"],
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
