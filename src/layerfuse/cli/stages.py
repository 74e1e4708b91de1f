"""The commands that run the method: ``extract``, ``profile``, ``fuse`` and ``run``.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from layerfuse.cli.args import ENGINE_FLAGS, config_from_args, engine_fields
from layerfuse.cli.output import emit_json, mb
from layerfuse.errors import LayerfuseError

__all__ = ["cmd_extract", "cmd_profile", "cmd_fuse", "cmd_run"]


def cmd_extract(args) -> int:
    from layerfuse.data.loading import load_data
    from layerfuse.embed.extract import extract

    cfg = config_from_args(args, models=args.models)
    if len(cfg["models"]) > 1:
        raise LayerfuseError(f"extract runs one model, got {len(cfg['models'])} in --models: run it once per "
                             "model, or use profile/fuse, which take several")
    ds = load_data(cfg["data"])
    engine = {k: cfg["extraction"][k] for k in ENGINE_FLAGS.values()}
    try:
        layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    except ValueError:
        raise LayerfuseError(f"`layers` takes comma-separated layer numbers, got '{args.layers}'") from None
    emb = extract(
        cfg["models"][0], data=ds, poolings=args.pooling, max_length=args.max_length, batch_tokens=args.batch_tokens,
        dtype=args.dtype, device=args.device, layers=layers, storage=args.storage, cache_dir=args.cache_dir,
        progress=not args.no_progress and not args.json, workers=args.extract_workers, compile=args.compile,
        **engine,
    )
    st = emb.stats
    exported = None
    if args.export:
        from layerfuse.embed.export import export_parquet

        exported = export_parquet(emb, args.export, ds)
    summary = {
        "model": emb.model,
        "model_fingerprint": emb.fingerprint,
        "dataset": ds.name,
        "layers": f"0..{emb.depth} of {emb.n_layers} (0 = token embeddings)",
        "width": emb.width,
        "poolings": emb.poolings,
        "splits": {s: {"texts": int(len(emb.labels[s])), "cache_key": emb.keys[s],
                       "from_cache": bool(st["splits"][s]["cache_hit"]),
                       "subset_of": st["splits"][s].get("subset_of"),
                       "shape": list(emb.array(s).shape)} for s in emb.splits},
        "truncated_texts": st["truncated"],
        "max_length": st["max_length"],
        "seconds": round(st["total_seconds"], 2),
        "load_seconds": round(st["load_seconds"], 2),
        "texts_per_second": None if st["texts_per_second"] is None else round(st["texts_per_second"], 1),
        "tokens_per_second": None if st["tokens_per_second"] is None else round(st["tokens_per_second"], 1),
        "peak_memory_mb": round(st["peak_rss_mb"], 1),
        "cache_bytes": st["cache_bytes"],
        "cache_path": os.path.dirname(st["splits"][emb.splits[0]]["cache_path"]),
        "dtype": st["dtype"],
        "device": st["device"],
        "engine": st["engine"],
    }
    if exported is not None:
        summary["export"] = {"dir": str(args.export), "layout": exported["layout"], "splits": exported["splits"]}
    if args.json:
        emit_json(summary)
        return 0
    print(f"model      {emb.model}  (fingerprint {emb.fingerprint}, {emb.n_layers} layers × {emb.width})")
    print(f"dataset    {ds.name}  ({', '.join(f'{s} {len(emb.labels[s]):,}' for s in emb.splits)}; "
          f"{len(ds.classes)} classes)")
    for s in emb.splits:
        info = summary["splits"][s]
        where = ("  (rows of the larger cache entry holding these texts)" if info["subset_of"]
                 else "  (read from cache)" if info["from_cache"] else "")
        print(f"  {s:<10} shape {tuple(info['shape'])}  cache {info['cache_key']}{where}")
    print(f"poolings   {', '.join(emb.poolings)}   dtype {st['dtype']}   device {st['device']}")
    if st["truncated"] is None:
        print(f"truncated  not known: read out of a larger entry (max length {st['max_length']} tokens)")
    else:
        print(f"truncated  {st['truncated']} texts longer than {st['max_length']} tokens")
    if st["computed_texts"]:
        print(f"time       {st['total_seconds']:.1f} s (model load {st['load_seconds']:.1f} s, extraction "
              f"{st['extract_seconds']:.1f} s: {st['texts_per_second']:.1f} texts/s, "
              f"{st['tokens_per_second']:.0f} tokens/s)")
    else:
        print(f"time       {st['total_seconds']:.2f} s (everything came from the cache; the model was not loaded)")
    print(f"memory     peak {st['peak_rss_mb']:.0f} MB resident")
    print(f"cache      {mb(st['cache_bytes'])} under {summary['cache_path']}")
    if exported is not None:
        rows = ", ".join(f"{s} {v['rows']:,}" for s, v in exported["splits"].items())
        print(f"export     {args.export}: {', '.join(v['file'] for v in exported['splits'].values())} ({rows} rows; "
              f"{len(exported['columns']) - 3} vector columns) + manifest.json")
    return 0


def _out_dir(args, default: str):
    d = Path(args.out or default)
    d.mkdir(parents=True, exist_ok=True)
    return d


def _prepare(cfg, args, *, layers, k, folds, windows, eval_test=False, window_shortlist=None, progress=True,
             workers_scope=None):
    """Load the data and prepare every model. ``workers_scope`` (an ExitStack): keep worker
    processes for the stages that share tasks until it closes, the ones the run will use started now
    (:func:`layerfuse.run.workers.keep_workers`)."""
    from layerfuse.cache.layout import profile_checkpoint_dir
    from layerfuse.data.loading import load_data
    from layerfuse.run.prepare import prepare_models

    ds = load_data(cfg["data"])
    if workers_scope is not None:
        from layerfuse.run.workers import keep_workers, planned_workers

        shapes = [s for s in map(known_shape, cfg["models"]) if s is not None]
        start = planned_workers(len(ds.splits["train"].texts), shapes, len(cfg["extraction"]["pooling"]),
                                getattr(args, "workers", 1), cfg["fusion"]["engine"])
        workers_scope.enter_context(keep_workers(start))
    log = (lambda *a: print(*a, file=sys.stderr)) if progress else (lambda *a: None)
    ex = {k_: v for k_, v in cfg["extraction"].items() if k_ != "pooling"}
    cache_dir = getattr(args, "cache_dir", None)
    preps = prepare_models(ds, cfg["models"], poolings=cfg["extraction"]["pooling"], layers=layers, k=k,
                           folds=folds, windows=windows, extraction=ex, cache_dir=cache_dir,
                           eval_test=eval_test, profile_dir=profile_checkpoint_dir(cache_dir),
                           window_shortlist=window_shortlist, progress=progress, log=log)
    return ds, preps


def known_shape(ref: str) -> tuple[int, int] | None:
    """``(layers, width)`` of a model known without loading it: a packaged alias's, or a local
    folder's ``config.json``; None otherwise (a Hub id, a GGUF path)."""
    import json

    from layerfuse.embed.registry import ALIASES

    if ref in ALIASES:
        return ALIASES[ref].layers, ALIASES[ref].width
    cfg_path = Path(ref) / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError):
        return None
    cfg = cfg.get("text_config", cfg)
    layers, width = cfg.get("num_hidden_layers"), cfg.get("hidden_size")
    return (int(layers), int(width)) if isinstance(layers, int) and isinstance(width, int) else None


def cmd_profile(args) -> int:
    from layerfuse import report
    from layerfuse.validation import validate_choices

    cfg = config_from_args(args, models=args.models)
    validate_choices([], [], args.select)
    progress = not args.no_progress and not args.json
    ds, preps = _prepare(cfg, args, layers=args.select, k=args.k, folds=args.folds, windows=args.windows,
                         eval_test=args.eval_test, window_shortlist=args.window_shortlist, progress=progress)
    out = _out_dir(args, f"out/profile-{ds.name}")
    summary = report.write_profile_outputs(preps, out, dataset=ds.name)
    if args.json:
        emit_json(summary)
        return 0
    print(report.profile_text(summary))
    return 0


def cmd_fuse(args) -> int:
    from layerfuse import report
    from layerfuse.cache.layout import grid_checkpoint_dir
    from layerfuse.run.grid import resolve_precision, run_grid
    from layerfuse.scale.engine import engine_options
    from layerfuse.validation import parse_list, validate_choices

    cfg = config_from_args(args, models=args.models)
    validate_choices(parse_list(args.fusion, "`fusion`"), parse_list(args.heads, "`heads`"), args.select)
    progress = not args.no_progress and not args.json
    ds, preps = _prepare(cfg, args, layers=args.select, k=args.k, folds=args.folds, windows=args.windows,
                         window_shortlist=args.window_shortlist, progress=progress)
    if "test" not in ds.splits:
        raise LayerfuseError(f"dataset {ds.name} has no test split")
    log = (lambda *a: print(*a, file=sys.stderr)) if progress else (lambda *a: None)
    seeds = list(range(args.seeds)) if args.seeds > 0 else [0]
    grid = run_grid(ds, preps, parse_list(args.fusion, "`fusion`"), heads=parse_list(args.heads, "`heads`"),
                    seeds=seeds, combos=args.combos, proj_dim=args.proj_dim, max_epochs=args.max_epochs,
                    patience=args.patience, val_fraction=args.val_fraction, lr=args.lr,
                    checkpoint_dir=grid_checkpoint_dir(args.cache_dir), workers=args.workers,
                    engine=cfg["extraction"]["engine"], engine_options=engine_options(cfg["extraction"]),
                    rule=args.choose_by, metric=args.choose_metric, search=args.search,
                    precision=resolve_precision(args.precision, args.cache_dir, log), progress=progress, log=log)
    out = _out_dir(args, f"out/fuse-{ds.name}")
    summary = report.write_fusion_outputs(grid, preps, out, dataset=ds.name)
    if args.save:
        grid.pipeline.save(args.save)
        summary["saved"] = str(args.save)
    if args.json:
        emit_json(summary)
        return 0
    print(report.fusion_text(summary))
    if args.save:
        print(f"\nsaved the chosen configuration to {args.save}  "
              f"(try: layerfuse predict {args.save} --input texts.txt)")
    return 0


def cmd_run(args) -> int:
    from layerfuse import report
    from layerfuse.cache.layout import grid_checkpoint_dir
    from layerfuse.run.config_file import load_config_file, merge_config
    from layerfuse.run.grid import resolve_precision, run_grid
    from layerfuse.scale.engine import engine_options

    cfg = load_config_file(args.config) if args.config else merge_config({}, "built-in default")
    if args.out:
        cfg["output"]["dir"] = args.out
        cfg["output"]["save"] = str(Path(args.out) / "classifier")
    flags = engine_fields(args)  # engine flags override the file's extraction.* (and --engine fusion.engine too)
    if args.extract_workers is not None:
        flags["workers"] = args.extract_workers
    if args.compile is not None:
        flags["compile"] = args.compile
    if flags:
        cfg = merge_config({**cfg, "extraction": {**cfg["extraction"], **flags},
                            "fusion": {**cfg["fusion"], "engine": flags.get("engine", cfg["fusion"]["engine"])}},
                           "command line")
    progress = not args.no_progress and not args.json
    log = (lambda *a: print(*a, file=sys.stderr)) if progress else (lambda *a: None)
    if not args.config:
        log("layerfuse run: no config given, running the built-in default "
            f"({cfg['data']['dataset']} with {', '.join(cfg['models'])}; see `layerfuse run --help`)")
    t0 = time.perf_counter()
    # worker processes for the profiles and the grid: started now, kept until the grid is done
    with ExitStack() as workers_scope:
        ds, preps = _prepare(cfg, args, layers=cfg["selection"]["layers"], k=cfg["selection"]["k"],
                             folds=cfg["profile"]["folds"], windows=cfg["profile"]["windows"],
                             eval_test=cfg["profile"]["eval_test"], window_shortlist=cfg["profile"]["window_shortlist"],
                             progress=progress, workers_scope=workers_scope)
        if "test" not in ds.splits:
            raise LayerfuseError(f"dataset {ds.name} has no test split")
        out = Path(cfg["output"]["dir"])
        out.mkdir(parents=True, exist_ok=True)
        prof = report.write_profile_outputs(preps, out, dataset=ds.name)
        f = cfg["fusion"]
        grid = run_grid(ds, preps, f["strategies"], heads=f["heads"], seeds=f["seeds"], combos=f["combos"],
                        proj_dim=f["proj_dim"], max_epochs=f["max_epochs"], patience=f["patience"],
                        val_fraction=f["val_fraction"], lr=f["lr"], batch_size=f["batch_size"],
                        checkpoint_dir=grid_checkpoint_dir(args.cache_dir), workers=args.workers,
                        engine=f["engine"], engine_options=engine_options(cfg["extraction"]), rule=f["choose_by"],
                        metric=f["choose_metric"], search=f["search"],
                        precision=resolve_precision(f["precision"], args.cache_dir, log), progress=progress,
                        log=log)
    fused = report.write_fusion_outputs(grid, preps, out, dataset=ds.name)
    if cfg["output"].get("save"):
        grid.pipeline.save(cfg["output"]["save"])
    import yaml

    (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    summary = {"dataset": ds.name, "seconds": round(time.perf_counter() - t0, 1), "profile": prof, "fusion": fused,
               "saved": cfg["output"].get("save"), "report": str(report.write_markdown_report(out))}
    if args.json:
        emit_json(summary)
        return 0
    print(report.profile_text(prof))
    print()
    print(report.fusion_text(fused))
    print(f"\nreport   {summary['report']}  (plots and tables in {out})")
    if summary["saved"]:
        print(f"saved    {summary['saved']}  (try: layerfuse predict {summary['saved']} --input -)")
    print(f"time     {summary['seconds']:.0f} s")
    return 0
