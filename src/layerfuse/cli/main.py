"""The `layerfuse` command line: one sub-command per stage.

Progress bars go to stderr; tables (or, with --json, one JSON document) go to stdout. Input the
user can fix ends with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap

from layerfuse.cli.args import add_data_args, add_extract_args, add_workers_arg
from layerfuse.cli.listing import CACHE_PARTS, cmd_cache, cmd_datasets, cmd_models, cmd_report
from layerfuse.cli.models_install import add_models_install_args, cmd_models_entry
from layerfuse.cli.predict import cmd_predict
from layerfuse.cli.stages import cmd_extract, cmd_fuse, cmd_profile, cmd_run
from layerfuse.errors import LayerfuseError

__all__ = ["quiet_libraries", "build_parser", "main"]


def quiet_libraries() -> None:
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
    add_models_install_args(add("models", "list the packaged model aliases (installed or not), layers × width, "
                                "parameters; `models install ALIAS` installs one that pip cannot",
                                "layerfuse models\nlayerfuse models install embeddinggemma-300m", cmd_models_entry))
    p = add("extract", "run a model over a dataset once and cache the pooled embedding of every layer",
            """
            layerfuse extract --model smollm2-135m --dataset sst2 --limit 200
            layerfuse extract --model gemma3-270m --dataset r8 --max-length 256 --dtype bfloat16
            layerfuse extract --model ./my-model --train reviews.csv --text-column body --label-column stars
            """, cmd_extract)
    p.add_argument("--model", required=True, help="packaged alias, local HF folder, .gguf file, or hub id")
    p.add_argument("--layers", help="comma-separated layer numbers; the forward pass stops at the deepest (default: all)")
    add_data_args(p)
    add_extract_args(p)

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
    add_data_args(p)
    add_extract_args(p)

    p = add("fuse", "train and compare fusions of selected layers across models (single models included)",
            """
            layerfuse fuse --dataset sst2 --models smollm2-135m,minilm-l6 --fusion concat,gated,attention
            layerfuse fuse --dataset r8 --models smollm2-135m --layers window --heads mlp,logreg --save clf/
            """, cmd_fuse)
    p.add_argument("--models", required=True, help="model references, comma-separated; tfidf adds the lexical source")
    p.add_argument("--fusion", default="concat", help="fusion strategies, comma-separated (default concat); "
                   "see layerfuse.fusion.FUSIONS: concat, sum, mean, hadamard, matmul, quaternion, gated, "
                   "attention, moe, +res variants and stack (out-of-fold per-source heads + meta-classifier)")
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
    add_workers_arg(p)
    p.add_argument("--folds", type=int, default=5, help="CV folds for layer selection (default 5)")
    p.add_argument("--windows", type=int, default=4, help="widest averaged window scored (default 4)")
    p.add_argument("--save", help="write the configuration chosen on validation as a classifier folder")
    p.add_argument("--out", help="output folder for tables and plots (default out/fuse-DATASET)")
    add_data_args(p)
    add_extract_args(p)

    p = add("run", "extract → profile → select → fuse → train → evaluate → report in one command",
            """
            layerfuse run                      # built-in default: SST-2 with smollm2-135m + minilm-l6
            layerfuse run configs/sst2.yaml    # your own configuration (see docs/config.md)
            """, cmd_run)
    p.add_argument("config", nargs="?", help="YAML configuration; without it the built-in default runs")
    p.add_argument("--out", help="output folder (overrides output.dir; the classifier goes to OUT/classifier)")
    p.add_argument("--cache-dir", help="cache root (default $LAYERFUSE_CACHE or ~/.cache/layerfuse)")
    add_workers_arg(p)
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
    quiet_libraries()
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
