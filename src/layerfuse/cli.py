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


def _table(rows: list[dict], columns: list[str]) -> str:
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    out = [line(columns), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def _short(text: str, width: int = 72) -> str:
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def _mb(n_bytes: float) -> str:
    return f"{n_bytes / 1e6:.1f} MB"


def _emit_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, default=_json_default)
    sys.stdout.write("\n")


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


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


def _load_data(args):
    from .data import load_dataset

    if bool(args.dataset) == bool(args.train):
        raise LayerfuseError("pass either --dataset NAME or --train FILE (with an optional --test FILE)")
    if args.test and not args.train:
        raise LayerfuseError("--test needs --train")
    if args.dataset:
        ds = load_dataset(args.dataset)
    else:
        ds = load_dataset(
            train=args.train, test=args.test, text_column=args.text_column, label_column=args.label_column,
            test_fraction=args.test_fraction, seed=args.seed, encoding=args.encoding,
        )
    if args.limit is not None:
        if args.limit < 1:
            raise LayerfuseError(f"--limit must be positive, got {args.limit}")
        ds = ds.subsample(args.limit)
    return ds


def _add_extract_args(p: argparse.ArgumentParser) -> None:
    from .extraction import DEFAULT_BATCH_TOKENS, DEFAULT_MAX_LENGTH

    g = p.add_argument_group("extraction")
    g.add_argument("--pooling", default="mean,last", help="comma-separated: mean, last, first, max (default mean,last)")
    g.add_argument("--max-length", type=int, default=DEFAULT_MAX_LENGTH,
                   help=f"truncate texts to N tokens; the count of truncated texts is reported (default {DEFAULT_MAX_LENGTH})")
    g.add_argument("--batch-tokens", type=int, default=DEFAULT_BATCH_TOKENS,
                   help=f"padded tokens per batch; texts are sorted by length (default {DEFAULT_BATCH_TOKENS})")
    g.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="compute dtype (default float32)")
    g.add_argument("--device", default="auto", help="auto (a GPU when present), cpu or cuda (default auto)")
    g.add_argument("--storage", default="float16", choices=["float16", "float32"], help="cache dtype (default float16)")
    g.add_argument("--cache-dir", help="cache root (default $LAYERFUSE_CACHE or ~/.cache/layerfuse)")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")


# ---------------------------------------------------------------------------------------------
# Commands


def cmd_datasets(args) -> int:
    from .data import list_builtin

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
    print(_table(table, ["name", "splits", "classes", "description"]))
    print("\nYour own data: --train FILE [--test FILE] with --text-column/--label-column (CSV, TSV, JSONL, Parquet).")
    return 0


def cmd_models(args) -> int:
    from .backbones import list_models

    rows = list_models()
    if args.json:
        _emit_json(rows)
        return 0
    table = [{**r, "layers×width": f"{r['layers']} × {r['width']}", "installed": "yes" if r["installed"] else "no",
              "to install": "" if r["installed"] else r["install"]} for r in rows]
    print(_table(table, ["alias", "layers×width", "params", "installed", "description", "to install"]))
    print("\nAlso accepted: a local Hugging Face folder, a .gguf file, or a hub id (org/name; needs a network).")
    return 0


def cmd_extract(args) -> int:
    from .extraction import extract

    ds = _load_data(args)
    layers = [int(x) for x in args.layers.split(",")] if args.layers else None
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
        print(f"  {s:<10} shape {tuple(info['shape'])}  cache {info['cache_key']}"
              f"{'  (read from cache)' if info['from_cache'] else ''}")
    print(f"poolings   {', '.join(emb.poolings)}   dtype {st['dtype']}   device {st['device']}")
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
            layerfuse extract --model smollm2-135m --dataset sst2 --limit 200
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
        print(f"\nlayerfuse {args.command}: interrupted. Finished chunks are kept in the cache; run the same "
              "command again to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
