"""Argument groups shared by several commands, and their translation into a run configuration.
"""

from __future__ import annotations

import argparse
import sys

from layerfuse import config as C
from layerfuse.errors import LayerfuseError

__all__ = ["DeprecatedAlias", "add_data_args", "add_extract_args", "config_from_args", "workers_arg", "add_workers_arg"]



class DeprecatedAlias(argparse.Action):
    """An old spelling of a flag: sets the new flag's value and warns once on stderr."""

    def __init__(self, option_strings, dest, new: str, **kw):
        self.new = new
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: warning: {option_string} is an old spelling of {self.new}; use {self.new}",
              file=sys.stderr)
        setattr(namespace, self.dest, values)


# ---------------------------------------------------------------------------------------------
# Shared argument groups


def add_data_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("data (a built-in dataset or your own files)")
    g.add_argument("--dataset", help="built-in dataset: sst2, mr, r8, r52 (see `layerfuse datasets`)")
    g.add_argument("--train", help="your training file (.csv, .tsv, .jsonl, .parquet), or a folder saved with "
                   "Hugging Face datasets' save_to_disk (a DatasetDict brings its test split)")
    g.add_argument("--test", help="your test file; without it a stratified --test-fraction of --train is held out")
    g.add_argument("--text-column", default=C.DEFAULT_TEXT_COLUMN,
                   help=f"column holding the text (default: {C.DEFAULT_TEXT_COLUMN})")
    g.add_argument("--label-column", default=C.DEFAULT_LABEL_COLUMN,
                   help=f"column holding the label (default: {C.DEFAULT_LABEL_COLUMN})")
    g.add_argument("--test-fraction", type=float, default=C.DEFAULT_TEST_FRACTION,
                   help=f"held-out share when no --test (default {C.DEFAULT_TEST_FRACTION})")
    g.add_argument("--seed", type=int, default=C.DEFAULT_SPLIT_SEED,
                   help=f"seed for the held-out split (default {C.DEFAULT_SPLIT_SEED})")
    g.add_argument("--encoding", default=C.DEFAULT_ENCODING,
                   help=f"text encoding of your files (default {C.DEFAULT_ENCODING})")
    g.add_argument("--limit", type=int, help="use at most N texts per split (stratified sample), for a quick look")


def add_extract_args(p: argparse.ArgumentParser) -> None:
    pooling = ",".join(C.DEFAULT_POOLINGS)
    g = p.add_argument_group("extraction")
    g.add_argument("--pooling", default=pooling, help=f"comma-separated: mean, last, first, max (default {pooling})")
    g.add_argument("--max-length", type=int, default=C.DEFAULT_MAX_LENGTH,
                   help=f"truncate texts to N tokens; the count of truncated texts is reported "
                        f"(default {C.DEFAULT_MAX_LENGTH})")
    g.add_argument("--batch-tokens", type=int, default=C.DEFAULT_BATCH_TOKENS,
                   help=f"padded tokens per batch; texts are sorted by length (default {C.DEFAULT_BATCH_TOKENS})")
    g.add_argument("--dtype", default=C.DEFAULT_DTYPE, choices=["auto", "float32", "bfloat16"],
                   help="compute dtype; auto = bfloat16 where it measures faster than float32 (a bf16 GPU, an AMX "
                        "CPU; a quick matmul check), else float32 (default auto)")
    g.add_argument("--device", default=C.DEFAULT_DEVICE, help="auto (a GPU when present), cpu or cuda (default auto)")
    g.add_argument("--storage", default=C.DEFAULT_STORAGE, choices=["float16", "float32"],
                   help=f"cache dtype (default {C.DEFAULT_STORAGE})")
    g.add_argument("--cache-dir", help="cache root (default $LAYERFUSE_CACHE or ~/.cache/layerfuse)")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")


def config_from_args(args, *, models: str) -> dict:
    """Build a run configuration from command-line flags (same shape as a `run` config file)."""
    from layerfuse.run.config_file import merge_config

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


def workers_arg(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"'{value}' is not a whole number of processes >= 1")
    return n


def add_workers_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=workers_arg, default=C.DEFAULT_WORKERS,
                   help="grid rows trained at a time, each in its own process with a share of the threads "
                        "(default 1; same numbers as one row at a time with that many threads); finished rows "
                        "are kept under CACHE/grid, so a rerun after an interruption trains only the rest")
