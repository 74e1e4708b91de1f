"""The commands that show what is there: ``datasets``, ``models``, ``cache`` and ``report``.
"""

from __future__ import annotations

from pathlib import Path

from layerfuse.cache.layout import PARTS
from layerfuse.cli.output import emit_json, mb, shorten
from layerfuse.errors import LayerfuseError

__all__ = ["cmd_cache", "cmd_datasets", "cmd_models", "cmd_report"]

# ---------------------------------------------------------------------------------------------
# Commands




def _folder_usage(d: Path) -> tuple[int, int]:
    """(entries directly under ``d``, bytes of every file below it); (0, 0) when absent."""
    if not d.is_dir():
        return 0, 0
    entries = sum(1 for e in d.iterdir() if not e.name.startswith("."))
    size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file() and not f.is_symlink())
    return entries, size


def cmd_cache(args) -> int:
    import shutil

    from layerfuse.cache.layout import cache_root

    root = cache_root(args.cache_dir)
    parts = {}
    for name, what in PARTS.items():
        n, size = _folder_usage(root / name)
        parts[name] = {"path": str(root / name), "entries": n, "bytes": size, "what": what}
    cleared = []
    if args.clear:
        cleared = list(PARTS) if args.clear == "all" else [args.clear]
        for name in cleared:
            shutil.rmtree(root / name, ignore_errors=True)
    summary = {"root": str(root), "parts": parts, "total_bytes": sum(p["bytes"] for p in parts.values()),
               "cleared": cleared, "freed_bytes": sum(parts[n]["bytes"] for n in cleared)}
    if args.json:
        emit_json(summary)
        return 0
    print(f"cache root  {root}")
    for name, part in parts.items():
        print(f"  {name:<11} {part['entries']:>5} entries  {mb(part['bytes']):>12}   {part['what']}")
    print(f"  {'total':<11} {'':>13} {mb(summary['total_bytes']):>12}")
    if cleared:
        print(f"cleared {', '.join(cleared)}: {mb(summary['freed_bytes'])} freed")
    return 0


def cmd_datasets(args) -> int:
    from layerfuse.data.builtin import list_builtin
    from layerfuse.report.tables import text_table

    rows = list_builtin()
    if args.json:
        emit_json(rows)
        return 0
    table = []
    for r in rows:
        table.append({
            "name": r["name"],
            "splits": " / ".join(f"{k} {v:,}" for k, v in r["splits"].items()),
            "classes": r["n_classes"],
            "description": shorten(r.get("description", "")),
        })
    print(text_table(table, ["name", "splits", "classes", "description"]))
    print("\nYour own data: --train FILE [--test FILE] with --text-column/--label-column (CSV, TSV, JSONL, Parquet).")
    return 0


def cmd_models(args) -> int:
    from layerfuse.embed.registry import list_models
    from layerfuse.report.tables import text_table

    rows = list_models()
    if args.json:
        emit_json(rows)
        return 0
    table = [{**r, "layers×width": f"{r['layers']} × {r['width']}", "installed": "yes" if r["installed"] else "no",
              "to install": "" if r["installed"] else r["install"]} for r in rows]
    print(text_table(table, ["alias", "layers×width", "params", "installed", "description", "to install"]))
    print("\nAlso accepted: a local Hugging Face folder, a .gguf file, or a hub id (org/name; needs a network).")
    return 0


def cmd_report(args) -> int:
    from pathlib import Path

    from layerfuse import report

    d = Path(args.dir)
    if not d.is_dir():
        raise LayerfuseError(f"{d} is not a folder: pass the --out folder of profile, fuse or run")
    path = report.write_markdown_report(d)
    if args.json:
        emit_json({"report": str(path), "files": sorted(p.name for p in d.iterdir())})
    else:
        print(f"wrote {path}")
    return 0
