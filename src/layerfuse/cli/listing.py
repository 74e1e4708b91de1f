"""The listing commands: ``datasets``, ``models``, ``report`` and ``cache`` (usage, ``--clear``,
``--verify``)."""

from __future__ import annotations

from pathlib import Path

from layerfuse.cache.layout import PARTS
from layerfuse.cli.output import emit_json, mb, shorten
from layerfuse.errors import LayerfuseError

__all__ = ["cmd_cache", "cmd_datasets", "cmd_models", "cmd_report"]

# ---------------------------------------------------------------------------------------------
# Commands




def _folder_usage(d: Path, folders_only: bool = False) -> tuple[int, int]:
    """(entries directly under ``d``, bytes of every file below it); (0, 0) when absent. Hidden
    names (temporaries being written or left by killed writers, lock files) are not counted;
    ``folders_only`` counts only the folders (files beside them belong to them)."""
    if not d.is_dir():
        return 0, 0
    entries = sum(1 for e in d.iterdir() if not e.name.startswith(".") and (e.is_dir() or not folders_only))
    size = sum(f.stat().st_size for f in d.rglob("*")
               if f.is_file() and not f.is_symlink() and not any(x.startswith(".") for x in f.relative_to(d).parts))
    return entries, size


def _verify_cache(root: Path) -> tuple[list[str], dict]:
    """Check every checksum under the cache root; remove what is damaged. Returns the lines
    describing each damaged part and the counts of what was checked."""
    import shutil

    from layerfuse.cache.entries import CacheEntry
    from layerfuse.cache.layout import entries_root, grid_checkpoint_dir, models_root
    from layerfuse.embed.backbones import check_model_copy
    from layerfuse.model.saving import SEEDS_FILE, load_seeds

    damaged: list[str] = []
    counts = {"model_copies": 0, "embedding_files": 0, "grid_rows": 0}
    models = models_root(root)
    for d in sorted(models.glob("[!.]*")) if models.is_dir() else []:
        counts["model_copies"] += 1
        problem = check_model_copy(d, full=True) if (d / "READY").exists() else "unfinished copy (no READY)"
        if problem:
            damaged.append(f"{d}: {problem}; removed, rebuilt from the GGUF when next needed")
            shutil.rmtree(d, ignore_errors=True)
    for d in sorted(entries_root(root).glob("[!.]*")) if entries_root(root).is_dir() else []:
        e = CacheEntry(d)
        if e.read_meta() is None or e.read_order() is None:
            damaged.append(f"{d}: meta.json or order.npy unreadable; entry removed, recomputed when next needed")
            shutil.rmtree(d, ignore_errors=True)
            continue
        n, bad = e.verify_all()
        counts["embedding_files"] += n
        damaged.extend(f"{npy}: does not match its checksum; removed, recomputed when next needed" for npy in bad)
    grid = grid_checkpoint_dir(root)
    for d in sorted(grid.glob("[!.]*")) if grid.is_dir() else []:
        if not (d / SEEDS_FILE).is_file():
            continue
        counts["grid_rows"] += 1
        try:
            load_seeds(d)
        except LayerfuseError as exc:
            damaged.append(f"{d}: {exc}; removed, retrained when next needed")
            shutil.rmtree(d, ignore_errors=True)
    return damaged, counts


def cmd_cache(args) -> int:
    """Show, clear (``--clear PART|tmp|all``) or verify (``--verify``) the cache."""
    import shutil

    from layerfuse.cache.atomic import path_size, remove_stale_temporaries, stale_temporaries
    from layerfuse.cache.layout import cache_root

    root = cache_root(args.cache_dir)
    parts = {}
    for name, what in PARTS.items():
        # A grid row is its folder; its CV score files (<key>-cvK.json) count with it, not as rows.
        n, size = _folder_usage(root / name, folders_only=name == "grid")
        parts[name] = {"path": str(root / name), "entries": n, "bytes": size, "what": what}
    stale = stale_temporaries(root)
    tmp = {"entries": len(stale), "bytes": sum(path_size(p) for p in stale),
           "what": "left by writers that were killed; remove with --clear tmp"}
    cleared, freed = [], 0
    if args.clear:
        cleared = [*PARTS, "tmp"] if args.clear == "all" else [args.clear]
        for name in cleared:
            if name == "tmp":
                freed += remove_stale_temporaries(root)[1]
            else:
                shutil.rmtree(root / name, ignore_errors=True)
                freed += parts[name]["bytes"]
    damaged, checked = _verify_cache(root) if getattr(args, "verify", False) else ([], None)
    summary = {"root": str(root), "parts": parts, "tmp": tmp, "total_bytes": sum(p["bytes"] for p in parts.values()),
               "cleared": cleared, "freed_bytes": freed}
    if checked is not None:
        summary["verify"] = {"checked": checked, "damaged": damaged}
    code = 1 if damaged else 0
    if args.json:
        emit_json(summary)
        return code
    print(f"cache root  {root}")
    for name, part in parts.items():
        print(f"  {name:<11} {part['entries']:>5} entries  {mb(part['bytes']):>12}   {part['what']}")
    if tmp["entries"] and "tmp" not in cleared:
        print(f"  {'tmp':<11} {tmp['entries']:>5} left    {mb(tmp['bytes']):>12}   {tmp['what']}")
    print(f"  {'total':<11} {'':>13} {mb(summary['total_bytes']):>12}")
    if cleared:
        print(f"cleared {', '.join(cleared)}: {mb(freed)} freed")
    if checked is not None:
        print(f"verified {checked['model_copies']} model copies (every byte), {checked['embedding_files']} embedding "
              f"files, {checked['grid_rows']} grid rows: " + (f"{len(damaged)} damaged, removed" if damaged else "all intact"))
        for line in damaged:
            print(f"  damaged  {line}")
    return code


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
