"""Every 32-client run of the default server in a set of ``serve_load.py`` result files, one row each.

    python benchmarks/serve_load_summary.py --glob 'serve_load_amx*.md' --skip serve_load_amx_omp_passive.md --out benchmarks/results/serve_load_amx_summary

A server pair measured with an ``--env``/``--flags`` setting is a second pair in its file; the
first pair (the default server, batched and one at a time) is the one read here. Rows in time
order: batched and one-at-a-time texts/s, their ratio, model milliseconds per text of each, and
the batched p99. ``--skip`` leaves out files whose first pair was not the default server.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def first_pair(text: str) -> dict | None:
    """The 32-client default rows of one result file: ``{"batched": cells, "one at a time": cells}``."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 8 and cells[0] == "32" and cells[1] in ("batched", "one at a time") and cells[1] not in rows:
            rows[cells[1]] = cells
    return rows if len(rows) == 2 else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--glob", default="serve_load_amx*.md", help="result files under benchmarks/results")
    ap.add_argument("--skip", action="append", default=[], help="a file name to leave out (repeatable)")
    ap.add_argument("--out", help="results path without suffix")
    args = ap.parse_args()
    rows = []
    for path in sorted(RESULTS.glob(args.glob)):
        if path.name in args.skip or path.name.endswith("_summary.md"):
            continue
        text = path.read_text()
        when = re.search(r"\((20\d\d-\d\d-\d\d \d\d:\d\d)", text)
        pair = first_pair(text)
        if when is None or pair is None:
            print(f"{path.name}: no dated 32-client pair, left out", file=sys.stderr)
            continue
        b, o = pair["batched"], pair["one at a time"]
        rows.append({"date": when.group(1), "file": path.name, "batched": float(b[2]), "one": float(o[2]),
                     "model_batched": b[7], "model_one": o[7], "p99": float(b[5])})
    rows.sort(key=lambda r: r["date"])
    cmd = " ".join(["python benchmarks/serve_load_summary.py", *sys.argv[1:]])
    met = sum(r["batched"] / r["one"] >= 3 for r in rows)
    lines = [f"# 32 clients, default server: every run in `{args.glob}`", "",
             f"`{cmd}`: {len(rows)} runs, batched ≥ 3× one at a time in {met}.", "",
             "| run | file | batched texts/s | one at a time | ratio | model ms/text, batched / one at a time "
             "| batched p99 |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        ratio = r["batched"] / r["one"]
        mark = "**" if ratio >= 3 else ""
        lines.append(f"| {r['date']} | `{r['file']}` | {r['batched']} | {r['one']} | {mark}{ratio:.2f}×{mark} | "
                     f"{r['model_batched']} / {r['model_one']} | {r['p99']:,.0f} ms |")
    print("\n".join(lines))
    if args.out:
        import json

        out = Path(args.out)
        out.with_suffix(".md").write_text("\n".join(lines) + "\n")
        out.with_suffix(".json").write_text(json.dumps({"command": cmd, "rows": rows}, indent=1) + "\n")
        print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
