"""TODO docstring
"""

from __future__ import annotations

DEFAULT_BATCH_TOKENS = 1024
DEFAULT_MAX_LENGTH = 512
DEFAULT_CHUNK_TEXTS = 512


# ---------------------------------------------------------------------------------------------
# Configuration of a whole run (CLI flags and `layerfuse run CONFIG.yaml` both end up here)

DEFAULT_CONFIG: dict = {
    "data": {"dataset": "sst2", "limit": None},
    "models": ["smollm2-135m", "minilm-l6"],
    "extraction": {"pooling": ["mean", "last"], "max_length": 512, "dtype": "auto", "batch_tokens": 2048,
                   "device": "auto", "storage": "float16",
                   # where the forward passes run (layerfuse.scale): local, or ray with these resources
                   "engine": "local", "ray_address": None, "num_workers": None, "cpus_per_worker": 1,
                   "gpus_per_worker": None},
    "profile": {"folds": 5, "windows": 4, "eval_test": True},
    "selection": {"layers": "auto", "k": 3},
    "fusion": {"strategies": ["concat", "attention"], "heads": ["mlp"], "seeds": [0, 1, 2],
               "combos": "all", "proj_dim": 1024, "max_epochs": 50, "patience": 5, "val_fraction": 0.1,
               "lr": 1e-3, "batch_size": 64, "engine": "local"},
    "output": {"dir": "out/run-sst2", "save": "out/run-sst2/classifier"},
}

DATA_KEYS = {"dataset", "train", "test", "text_column", "label_column", "test_fraction", "seed", "encoding",
              "limit"}
