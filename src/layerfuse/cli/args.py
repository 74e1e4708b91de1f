"""Argument groups shared by several commands, and their translation into a run configuration.
"""

from __future__ import annotations

import argparse
import sys

from layerfuse import config as C
from layerfuse.errors import LayerfuseError

__all__ = ["DeprecatedAlias", "add_data_args", "add_extract_args", "config_from_args", "workers_arg", "positive_arg",
           "add_workers_arg", "add_engine_args", "ENGINE_FLAGS"]



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
    g.add_argument("--extract-workers", type=positive_arg, default=C.DEFAULT_EXTRACT_WORKERS, metavar="N",
                   help="processes sharing a local CPU extraction, the threads divided among them (default "
                        f"{C.DEFAULT_EXTRACT_WORKERS}; 2 measured no faster on a 2-core CPU, see docs/benchmarks.md); "
                        "the cache entry is the same whatever the number")
    g.add_argument("--dtype", default=C.DEFAULT_DTYPE, choices=["auto", "float32", "bfloat16"],
                   help="compute dtype; auto = bfloat16 where it measures faster than float32 (a bf16 GPU, an AMX "
                        "CPU; a quick matmul check), else float32 (default auto)")
    g.add_argument("--device", default=C.DEFAULT_DEVICE, help="auto (a GPU when present), cpu or cuda (default auto)")
    g.add_argument("--compile", default=C.DEFAULT_COMPILE, choices=["auto", "on", "off"],
                   help="run the transformer blocks through torch.compile: auto = on a CPU with a C++ compiler, "
                        "for a pass long enough to repay compiling (100 TFLOP: SmolLM2 ~470k tokens); the generated code is "
                        f"kept in the cache for the next run (default {C.DEFAULT_COMPILE}; docs/benchmarks.md)")
    g.add_argument("--storage", default=C.DEFAULT_STORAGE, choices=["float16", "float32"],
                   help=f"cache dtype (default {C.DEFAULT_STORAGE}; a chunk whose values outgrow float16 is kept "
                        "in float32)")
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
                       "batch_tokens": args.batch_tokens, "device": args.device, "storage": args.storage,
                       "workers": args.extract_workers, "compile": args.compile, **engine_fields(args)},
    }
    return merge_config(user, "command line")


def _whole_number(value: str, minimum: int, what: str) -> int:
    """``value`` as an int of at least ``minimum``, else an argparse error naming ``what``."""
    try:
        n = int(value)
    except ValueError:
        n = minimum - 1
    if n < minimum:
        raise argparse.ArgumentTypeError(f"'{value}' is not {what} >= {minimum}")
    return n


def workers_arg(value: str) -> int | str:
    if str(value).strip().lower() == "auto":
        return "auto"
    return _whole_number(value, 1, "a whole number of processes or auto")


def positive_arg(value: str) -> int:
    """A whole number >= 1."""
    return _whole_number(value, 1, "a whole number")


def count_arg(value: str) -> int:
    """A whole number >= 0 (e.g. ``--window-shortlist``, where 0 means every one)."""
    return _whole_number(value, 0, "a whole number")


def add_workers_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=workers_arg, default=C.DEFAULT_WORKERS,
                   help="grid rows trained at a time, side by side in this and spawned processes with a share of the threads "
                        "(default auto: one per core when the grid holds enough data, else 1; same numbers as "
                        "one row at a time with that many threads); finished rows "
                        "are kept under CACHE/grid, so a rerun after an interruption trains only the rest")


#: Engine flags (``--engine`` and the Ray resources) → extraction fields of a run configuration.
ENGINE_FLAGS = {"engine": "engine", "ray_address": "ray_address", "num_workers": "num_workers",
                "cpus_per_worker": "cpus_per_worker", "gpus_per_worker": "gpus_per_worker"}


def engine_fields(args) -> dict:
    """The engine flags given on the command line, as extraction fields (flags not given: absent)."""
    return {field: getattr(args, dest) for dest, field in ENGINE_FLAGS.items() if getattr(args, dest, None) is not None}


def _positive_float(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        x = -1.0
    if x < 0:
        raise argparse.ArgumentTypeError(f"'{value}' is not a number >= 0")
    return x


def add_engine_args(p: argparse.ArgumentParser, grid: bool = False) -> None:
    """``--engine`` and the Ray flags (docs/scale.md); every default comes from the run configuration."""
    g = p.add_argument_group("engine (docs/scale.md)")
    what = "extraction chunks to Ray actors" + (" and grid rows to Ray tasks" if grid else "")
    g.add_argument("--engine", choices=["local", "ray"], default=None,
                   help=f"local (default) or ray: send {what}; needs pip install \"layerfuse[ray]\". The cache "
                        "entries and checkpoints are those of a local run" + ("; --workers is for the local engine"
                                                                            if grid else ""))
    g.add_argument("--ray-address", metavar="ADDR", help="Ray cluster to join (host:6379, ray://host:10001 or auto; default "
                   "$RAY_ADDRESS, else a Ray instance on this machine)")
    g.add_argument("--num-workers", type=workers_arg, metavar="N", help="Ray workers at a time: extraction actors"
                   + (", and grid rows in flight" if grid else "") + " (default: as many as the cluster holds)")
    g.add_argument("--cpus-per-worker", type=_positive_float, metavar="C", help="CPUs each Ray worker declares and uses as "
                   "torch threads (default 1)")
    g.add_argument("--gpus-per-worker", type=_positive_float, metavar="G", help="GPUs each extraction actor declares (default: 1 "
                   "when the cluster has GPUs and --device is not cpu, else 0)")
