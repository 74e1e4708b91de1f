"""The `layerfuse` command line: one sub-command per stage.

Progress bars go to stderr; tables (or, with --json, one JSON document) go to stdout. Input the
user can fix ends with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from pathlib import Path

from .errors import LayerfuseError


def _quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except Exception:  # pragma: no cover - transformers missing is reported where it is needed
        pass


# ---------------------------------------------------------------------------------------------
# Formatting helpers


def _short(text: str, width: int = 72) -> str:
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def _mb(n_bytes: float) -> str:
    return f"{n_bytes / 1e6:.1f} MB"


def _emit_json(obj) -> None:
    from .report import json_default

    json.dump(obj, sys.stdout, indent=2, default=json_default)
    sys.stdout.write("\n")


# ---------------------------------------------------------------------------------------------
# Shared argument groups


def _add_data_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("data (a built-in dataset or your own files)")
    g.add_argument("--dataset", help="built-in dataset: sst2, mr, r8, r52 (see `layerfuse datasets`)")
    g.add_argument("--train", help="your training file (.csv, .tsv, .jsonl, .parquet)")
    g.add_argument("--test", help="your test file; without it a stratified --test-fraction of --train is held out")
    g.add_argument("--text-column", default="text", help="column holding the text (default: text)")
    g.add_argument("--label-column", default="label", help="column holding the label (default: label)")
    g.add_argument("--test-fraction", type=float, default=0.2, help="held-out share when no --test (default 0.2)")
    g.add_argument("--seed", type=int, default=0, help="seed for the held-out split (default 0)")
    g.add_argument("--encoding", default="utf-8", help="text encoding of your files (default utf-8)")
    g.add_argument("--limit", type=int, help="use at most N texts per split (stratified sample), for a quick look")


def _add_extract_args(p: argparse.ArgumentParser) -> None:
    from .extraction import DEFAULT_BATCH_TOKENS, DEFAULT_MAX_LENGTH

    g = p.add_argument_group("extraction")
    g.add_argument("--pooling", default="mean,last", help="comma-separated: mean, last, first, max (default mean,last)")
    g.add_argument("--max-length", type=int, default=DEFAULT_MAX_LENGTH,
                   help=f"truncate texts to N tokens; the count of truncated texts is reported (default {DEFAULT_MAX_LENGTH})")
    g.add_argument("--batch-tokens", type=int, default=DEFAULT_BATCH_TOKENS,
                   help=f"padded tokens per batch; texts are sorted by length (default {DEFAULT_BATCH_TOKENS})")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="compute dtype; auto = bfloat16 where it measures faster than float32 (a bf16 GPU, an AMX "
                        "CPU; a quick matmul check), else float32 (default auto)")
    g.add_argument("--device", default="auto", help="auto (a GPU when present), cpu or cuda (default auto)")
    g.add_argument("--storage", default="float16", choices=["float16", "float32"], help="cache dtype (default float16)")
    g.add_argument("--cache-dir", help="cache root (default $LAYERFUSE_CACHE or ~/.cache/layerfuse)")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")


# ---------------------------------------------------------------------------------------------
# Commands


# What lives under the cache root, and how each part comes back when it is deleted.
CACHE_PARTS = {
    "embeddings": "per-layer pooled embeddings (extract, profile, fuse, run); recomputed when needed",
    "profiles": "finished layer profiles (profile, fuse, run); scored again when needed",
    "grid": "trained heads of finished grid rows (fuse, run); retrained when needed",
    "models": "dequantised copies of GGUF models; rebuilt from the GGUF when needed",
    "gguf": "GGUF files assembled from the packaged chunks; reassembled when needed",
}


def _folder_usage(d: Path) -> tuple[int, int]:
    """(entries directly under ``d``, bytes of every file below it); (0, 0) when absent."""
    if not d.is_dir():
        return 0, 0
    entries = sum(1 for e in d.iterdir() if not e.name.startswith("."))
    size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file() and not f.is_symlink())
    return entries, size


def cmd_cache(args) -> int:
    import shutil

    from .backbones import cache_root

    root = cache_root(args.cache_dir)
    parts = {}
    for name, what in CACHE_PARTS.items():
        n, size = _folder_usage(root / name)
        parts[name] = {"path": str(root / name), "entries": n, "bytes": size, "what": what}
    cleared = []
    if args.clear:
        cleared = list(CACHE_PARTS) if args.clear == "all" else [args.clear]
        for name in cleared:
            shutil.rmtree(root / name, ignore_errors=True)
    summary = {"root": str(root), "parts": parts, "total_bytes": sum(p["bytes"] for p in parts.values()),
               "cleared": cleared, "freed_bytes": sum(parts[n]["bytes"] for n in cleared)}
    if args.json:
        _emit_json(summary)
        return 0
    print(f"cache root  {root}")
    for name, part in parts.items():
        print(f"  {name:<11} {part['entries']:>5} entries  {_mb(part['bytes']):>12}   {part['what']}")
    print(f"  {'total':<11} {'':>13} {_mb(summary['total_bytes']):>12}")
    if cleared:
        print(f"cleared {', '.join(cleared)}: {_mb(summary['freed_bytes'])} freed")
    return 0


def cmd_datasets(args) -> int:
    from .data import list_builtin
    from .report import text_table

    rows = list_builtin()
    if args.json:
        _emit_json(rows)
        return 0
    table = []
    for r in rows:
        table.append({
            "name": r["name"],
            "splits": " / ".join(f"{k} {v:,}" for k, v in r["splits"].items()),
            "classes": r["n_classes"],
            "description": _short(r.get("description", "")),
        })
    print(text_table(table, ["name", "splits", "classes", "description"]))
    print("\nYour own data: --train FILE [--test FILE] with --text-column/--label-column (CSV, TSV, JSONL, Parquet).")
    return 0


def cmd_models(args) -> int:
    from .backbones import list_models
    from .report import text_table

    rows = list_models()
    if args.json:
        _emit_json(rows)
        return 0
    table = [{**r, "layers×width": f"{r['layers']} × {r['width']}", "installed": "yes" if r["installed"] else "no",
              "to install": "" if r["installed"] else r["install"]} for r in rows]
    print(text_table(table, ["alias", "layers×width", "params", "installed", "description", "to install"]))
    print("\nAlso accepted: a local Hugging Face folder, a .gguf file, or a hub id (org/name; needs a network).")
    return 0


def cmd_extract(args) -> int:
    from .extraction import extract

    from .runner import load_data

    ds = load_data(_config_from_args(args, models=args.model)["data"])
    try:
        layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    except ValueError:
        raise LayerfuseError(f"--layers takes comma-separated layer numbers, got '{args.layers}'") from None
    emb = extract(
        args.model, data=ds, poolings=args.pooling, max_length=args.max_length, batch_tokens=args.batch_tokens,
        dtype=args.dtype, device=args.device, layers=layers, storage=args.storage, cache_dir=args.cache_dir,
        progress=not args.no_progress and not args.json,
    )
    st = emb.stats
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
    }
    if args.json:
        _emit_json(summary)
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
    print(f"cache      {_mb(st['cache_bytes'])} under {summary['cache_path']}")
    return 0


def _config_from_args(args, *, models: str) -> dict:
    """Build a run configuration from command-line flags (same shape as a `run` config file)."""
    from .runner import merge_config

    data = {"limit": args.limit}
    if args.dataset:
        data["dataset"] = args.dataset
    if args.train:
        data.update(train=args.train, test=args.test, text_column=args.text_column, label_column=args.label_column,
                    test_fraction=args.test_fraction, seed=args.seed, encoding=args.encoding)
    if bool(args.dataset) == bool(args.train):
        raise LayerfuseError("pass either --dataset NAME or --train FILE (with an optional --test FILE)")
    if args.test and not args.train:
        raise LayerfuseError("--test needs --train (a built-in dataset brings its own test split)")
    user = {
        "data": data,
        "models": models,
        "extraction": {"pooling": args.pooling, "max_length": args.max_length, "dtype": args.dtype,
                       "batch_tokens": args.batch_tokens, "device": args.device, "storage": args.storage},
    }
    return merge_config(user, "command line")


def _out_dir(args, default: str):
    d = Path(args.out or default)
    d.mkdir(parents=True, exist_ok=True)
    return d


def _prepare(cfg, args, *, layers="auto", k=3, folds=5, windows=4, eval_test=False, progress=True):
    from .runner import load_data, prepare_models, profile_checkpoint_dir

    ds = load_data(cfg["data"])
    log = (lambda *a: print(*a, file=sys.stderr)) if progress else (lambda *a: None)
    ex = {k_: v for k_, v in cfg["extraction"].items() if k_ != "pooling"}
    cache_dir = getattr(args, "cache_dir", None)
    preps = prepare_models(ds, cfg["models"], poolings=cfg["extraction"]["pooling"], layers=layers, k=k,
                           folds=folds, windows=windows, extraction=ex, cache_dir=cache_dir,
                           eval_test=eval_test, profile_dir=profile_checkpoint_dir(cache_dir), progress=progress,
                           log=log)
    return ds, preps


def _workers(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"'{value}' is not a whole number of processes >= 1")
    return n


def _add_workers_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=_workers, default=1,
                   help="grid rows trained at a time, each in its own process with a share of the threads "
                        "(default 1; same numbers as one row at a time with that many threads); finished rows "
                        "are kept under CACHE/grid, so a rerun after an interruption trains only the rest")


def cmd_profile(args) -> int:
    from . import report
    from .runner import validate_choices

    cfg = _config_from_args(args, models=args.model)
    validate_choices([], [], args.select)
    progress = not args.no_progress and not args.json
    ds, preps = _prepare(cfg, args, layers=args.select, k=args.k, folds=args.folds, windows=args.windows,
                         eval_test=args.eval_test, progress=progress)
    out = _out_dir(args, f"out/profile-{ds.name}")
    summary = report.write_profile_outputs(preps, out, dataset=ds.name)
    if args.json:
        _emit_json(summary)
        return 0
    print(report.profile_text(summary))
    return 0


def cmd_fuse(args) -> int:
    from . import report
    from .runner import grid_checkpoint_dir, parse_list, run_grid, validate_choices

    cfg = _config_from_args(args, models=args.models)
    validate_choices(parse_list(args.fusion, "--fusion"), parse_list(args.heads, "--heads"), args.layers)
    progress = not args.no_progress and not args.json
    ds, preps = _prepare(cfg, args, layers=args.layers, k=args.k, folds=args.folds, windows=args.windows,
                         progress=progress)
    if "test" not in ds.splits:
        raise LayerfuseError(f"dataset {ds.name} has no test split")
    log = (lambda *a: print(*a, file=sys.stderr)) if progress else (lambda *a: None)
    seeds = list(range(args.seeds)) if args.seeds > 0 else [0]
    grid = run_grid(ds, preps, parse_list(args.fusion, "--fusion"), heads=parse_list(args.heads, "--heads"),
                    seeds=seeds, combos=args.combos, proj_dim=args.proj_dim, max_epochs=args.max_epochs,
                    patience=args.patience, val_fraction=args.val_fraction, lr=args.lr,
                    checkpoint_dir=grid_checkpoint_dir(args.cache_dir), workers=args.workers,
                    progress=progress, log=log)
    out = _out_dir(args, f"out/fuse-{ds.name}")
    summary = report.write_fusion_outputs(grid, preps, out, dataset=ds.name)
    if args.save:
        grid.pipeline.save(args.save)
        summary["saved"] = str(args.save)
    if args.json:
        _emit_json(summary)
        return 0
    print(report.fusion_text(summary))
    if args.save:
        print(f"\nsaved the configuration chosen on validation to {args.save}  "
              f"(try: layerfuse predict {args.save} --input texts.txt)")
    return 0


def cmd_run(args) -> int:
    from . import report
    from .runner import grid_checkpoint_dir, load_config_file, merge_config, run_grid

    cfg = load_config_file(args.config) if args.config else merge_config({}, "built-in default")
    if args.out:
        cfg["output"]["dir"] = args.out
        cfg["output"]["save"] = str(Path(args.out) / "classifier")
    progress = not args.no_progress and not args.json
    log = (lambda *a: print(*a, file=sys.stderr)) if progress else (lambda *a: None)
    if not args.config:
        log("layerfuse run: no config given, running the built-in default "
            f"({cfg['data']['dataset']} with {', '.join(cfg['models'])}; see `layerfuse run --help`)")
    t0 = time.perf_counter()
    ds, preps = _prepare(cfg, args, layers=cfg["selection"]["layers"], k=cfg["selection"]["k"],
                         folds=cfg["profile"]["folds"], windows=cfg["profile"]["windows"],
                         eval_test=cfg["profile"]["eval_test"], progress=progress)
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
                    progress=progress, log=log)
    fused = report.write_fusion_outputs(grid, preps, out, dataset=ds.name)
    if cfg["output"].get("save"):
        grid.pipeline.save(cfg["output"]["save"])
    import yaml

    (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    summary = {"dataset": ds.name, "seconds": round(time.perf_counter() - t0, 1), "profile": prof, "fusion": fused,
               "saved": cfg["output"].get("save"), "report": str(report.write_markdown_report(out))}
    if args.json:
        _emit_json(summary)
        return 0
    print(report.profile_text(prof))
    print()
    print(report.fusion_text(fused))
    print(f"\nreport   {summary['report']}  (plots and tables in {out})")
    if summary["saved"]:
        print(f"saved    {summary['saved']}  (try: layerfuse predict {summary['saved']} --input -)")
    print(f"time     {summary['seconds']:.0f} s")
    return 0


def _read_inputs(path: str, text_column: str, encoding: str) -> list[str]:
    from pathlib import Path

    if path == "-":
        texts = [line.rstrip("\n") for line in sys.stdin]
        where = "standard input"
    else:
        p = Path(path)
        if p.suffix.lower() in {".csv", ".tsv", ".jsonl", ".ndjson", ".parquet"}:
            from .data import read_texts

            return read_texts(p, text_column=text_column, encoding=encoding)
        if not p.exists():
            raise LayerfuseError(f"input file {p} does not exist")
        try:
            texts = p.read_text(encoding=encoding).splitlines()
        except UnicodeDecodeError as e:
            raise LayerfuseError(f"{p}: bytes that are not {encoding} at offset {e.start}: pass --encoding "
                                 "(e.g. --encoding latin-1)") from e
        where = str(p)
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise LayerfuseError(f"no texts in {where}: give one text per line")
    return texts


def cmd_predict(args) -> int:
    from .extraction import _resolve_device
    from .pipeline import load

    pipe = load(args.classifier)
    texts = _read_inputs(args.input, args.text_column, args.encoding)
    proba = pipe.predict_proba(texts, device=_resolve_device(args.device), cache_dir=args.cache_dir)
    labels = [pipe.classes[i] for i in proba.argmax(1)]
    out = open(args.output, "w") if args.output else sys.stdout
    try:
        if args.json:
            for t, lab, pr in zip(texts, labels, proba):
                out.write(json.dumps({"text": t, "label": lab,
                                      "proba": {c: round(float(v), 6) for c, v in zip(pipe.classes, pr)}}) + "\n")
        else:
            out.write("\t".join(["label", *[f"p_{c}" for c in pipe.classes], "text"]) + "\n")
            for t, lab, pr in zip(texts, labels, proba):
                out.write("\t".join([lab, *[f"{v:.4f}" for v in pr], t.replace("\t", " ")]) + "\n")
    finally:
        if args.output:
            out.close()
    return 0


def cmd_report(args) -> int:
    from pathlib import Path

    from . import report

    d = Path(args.dir)
    if not d.is_dir():
        raise LayerfuseError(f"{d} is not a folder: pass the --out folder of profile, fuse or run")
    path = report.write_markdown_report(d)
    if args.json:
        _emit_json({"report": str(path), "files": sorted(p.name for p in d.iterdir())})
    else:
        print(f"wrote {path}")
    return 0


# ---------------------------------------------------------------------------------------------
# Parser


def _examples(text: str) -> str:
    return "examples:\n" + textwrap.indent(textwrap.dedent(text).strip(), "  ")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="layerfuse",
        description="Strong text classifiers from frozen language models: pick the best layers, fuse them.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_examples("""
            layerfuse datasets
            layerfuse models
            layerfuse run                       # the whole method on a built-in default
            layerfuse extract --model smollm2-135m --dataset sst2 --limit 200
            layerfuse profile --model smollm2-135m --dataset sst2
            layerfuse fuse --dataset sst2 --models smollm2-135m,minilm-l6 --fusion concat,gated --save clf
            layerfuse predict clf --input texts.txt
        """),
    )
    parser.add_argument("--version", action="version", version=f"layerfuse {__import__('layerfuse').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name, help_, examples, func):
        p = sub.add_parser(name, help=help_, description=help_, epilog=_examples(examples),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--json", action="store_true", help="print one machine-readable JSON summary on stdout")
        p.set_defaults(func=func)
        return p

    add("datasets", "list the built-in datasets: splits, sizes, classes",
        "layerfuse datasets\nlayerfuse datasets --json", cmd_datasets)
    add("models", "list the packaged model aliases (installed or not), layers × width, parameters",
        "layerfuse models", cmd_models)
    p = add("extract", "run a model over a dataset once and cache the pooled embedding of every layer",
            """
            layerfuse extract --model smollm2-135m --dataset sst2 --limit 200
            layerfuse extract --model gemma3-270m --dataset r8 --max-length 256 --dtype bfloat16
            layerfuse extract --model ./my-model --train reviews.csv --text-column body --label-column stars
            """, cmd_extract)
    p.add_argument("--model", required=True, help="packaged alias, local HF folder, .gguf file, or hub id")
    p.add_argument("--layers", help="comma-separated layer numbers; the forward pass stops at the deepest (default: all)")
    _add_data_args(p)
    _add_extract_args(p)

    p = add("profile", "score every layer of one or more models on the training split, pick layers, plot it",
            """
            layerfuse profile --model smollm2-135m --dataset sst2
            layerfuse profile --model smollm2-135m,minilm-l6 --dataset mr --eval-test --out out/mr
            """, cmd_profile)
    p.add_argument("--model", required=True, help="one or more model references, comma-separated")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds on train (default 5)")
    p.add_argument("--windows", type=int, default=4, help="also score averaged windows of 2..W layers (default 4)")
    p.add_argument("--select", default="auto", help="selection saved for fusion: auto, best, top-k (top-3), window, all")
    p.add_argument("--k", type=int, default=3, help="k for top-k (default 3)")
    p.add_argument("--eval-test", action="store_true",
                   help="add per-layer test accuracy as an analysis-only column (never used to select)")
    p.add_argument("--out", help="output folder for tables and plots (default out/profile-DATASET)")
    _add_data_args(p)
    _add_extract_args(p)

    p = add("fuse", "train and compare fusions of selected layers across models (single models included)",
            """
            layerfuse fuse --dataset sst2 --models smollm2-135m,minilm-l6 --fusion concat,gated,attention
            layerfuse fuse --dataset r8 --models smollm2-135m --layers window --heads mlp,logreg --save clf/
            """, cmd_fuse)
    p.add_argument("--models", required=True, help="model references, comma-separated")
    p.add_argument("--fusion", default="concat", help="fusion strategies, comma-separated (default concat); "
                   "see layerfuse.fusion.FUSIONS: concat, sum, mean, hadamard, matmul, quaternion, gated, "
                   "attention, moe and +res variants")
    p.add_argument("--layers", default="auto", help="layer selection: auto, best, top-k (top-3), window, all")
    p.add_argument("--k", type=int, default=3, help="k for top-k (default 3)")
    p.add_argument("--heads", default="mlp", help="mlp (the paper's head) and/or logreg (default mlp)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per configuration, reported as mean ± std (default 3)")
    p.add_argument("--combos", default="all", choices=["all", "full"],
                   help="fuse every subset of 2+ models (all) or only all models together (full)")
    p.add_argument("--proj-dim", type=int, default=1024, help="projection size before fusion (default 1024)")
    p.add_argument("--max-epochs", type=int, default=50)
    p.add_argument("--patience", type=int, default=5, help="early-stopping patience on validation (default 5)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="validation share carved from train (default 0.1)")
    p.add_argument("--lr", type=float, default=1e-3)
    _add_workers_arg(p)
    p.add_argument("--folds", type=int, default=5, help="CV folds for layer selection (default 5)")
    p.add_argument("--windows", type=int, default=4, help="widest averaged window scored (default 4)")
    p.add_argument("--save", help="write the configuration chosen on validation as a classifier folder")
    p.add_argument("--out", help="output folder for tables and plots (default out/fuse-DATASET)")
    _add_data_args(p)
    _add_extract_args(p)

    p = add("run", "extract → profile → select → fuse → train → evaluate → report in one command",
            """
            layerfuse run                      # built-in default: SST-2 with smollm2-135m + minilm-l6
            layerfuse run configs/sst2.yaml    # your own configuration (see docs/config.md)
            """, cmd_run)
    p.add_argument("config", nargs="?", help="YAML configuration; without it the built-in default runs")
    p.add_argument("--out", help="output folder (overrides output.dir; the classifier goes to OUT/classifier)")
    p.add_argument("--cache-dir", help="cache root (default $LAYERFUSE_CACHE or ~/.cache/layerfuse)")
    _add_workers_arg(p)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    p = add("predict", "label texts with a saved classifier folder",
            """
            layerfuse predict out/run-sst2/classifier --input reviews.txt
            echo "a gorgeous, witty film" | layerfuse predict out/run-sst2/classifier --input - --json
            """, cmd_predict)
    p.add_argument("classifier", help="folder written by --save (fuse) or by run")
    p.add_argument("--input", required=True, help="a text file (one text per line), .csv/.tsv/.jsonl/.parquet "
                   "with --text-column, or - for standard input")
    p.add_argument("--text-column", default="text", help="text column for table inputs (default text)")
    p.add_argument("--encoding", default="utf-8")
    p.add_argument("--output", help="write here instead of standard output")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--cache-dir", help="cache root (for dequantised GGUF models)")

    p = add("report", "rebuild report.md (tables and plots) in an output folder of profile, fuse or run",
            "layerfuse report out/run-sst2", cmd_report)
    p.add_argument("dir", help="output folder")

    p = add("cache", "show what the cache holds (embeddings, trained grid rows, models) and free space",
            """
            layerfuse cache
            layerfuse cache --clear grid       # drop trained grid rows; the next fuse/run retrains them
            """, cmd_cache)
    p.add_argument("--cache-dir", help="cache root (default $LAYERFUSE_CACHE or ~/.cache/layerfuse)")
    p.add_argument("--clear", choices=[*CACHE_PARTS, "all"], help="delete one part of the cache (or all of it)")
    return parser


def main(argv: list[str] | None = None) -> int:
    _quiet_libraries()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except LayerfuseError as e:
        print(f"layerfuse {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"\nlayerfuse {args.command}: interrupted. Finished embedding chunks and grid rows are kept in "
              "the cache; run the same command again to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
