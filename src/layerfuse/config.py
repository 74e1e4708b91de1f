"""Every default of layerfuse, written once.

Function signatures, the command line, the estimator and :data:`DEFAULT_CONFIG` (the built-in
``layerfuse run`` configuration, also the base a YAML configuration is laid over) all read their
defaults from here; the ``--help`` texts print them from here too.
"""

from __future__ import annotations

# ---- data -----------------------------------------------------------------------------------
DEFAULT_DATASET = "sst2"
DEFAULT_TEXT_COLUMN = "text"
DEFAULT_LABEL_COLUMN = "label"
DEFAULT_TEST_FRACTION = 0.2  # held out of a user's train file when no test file is given
DEFAULT_SPLIT_SEED = 0
#: The seed of one fit, one validation carve or one set of CV folds when none is given.
DEFAULT_SEED = 0
DEFAULT_ENCODING = "utf-8"

# ---- extraction -----------------------------------------------------------------------------
DEFAULT_MODELS = ("smollm2-135m", "minilm-l6")
DEFAULT_POOLINGS = ("mean", "last")
DEFAULT_MAX_LENGTH = 512
DEFAULT_BATCH_TOKENS = 1024
#: ``batch_tokens: auto`` (the built-in run's default): the token budget per batch for the dtype
#: the run computes in, from the sweeps in docs/benchmarks.md (float32 peaked at 512-1,024 tokens
#: on all three CPUs measured, bfloat16 at 2,048 on an AMX CPU). Same numbers within float tolerance.
BATCH_TOKENS_BY_DTYPE = {"float32": 1024, "bfloat16": 2048}
#: Prediction's batch planner charges each batch this many tokens of overhead, so a request of
#: mixed lengths is split where padding would cost more than a batch does (docs/serve.md).
PREDICT_BATCH_COST = 64
#: The same for bf16 backbones on a CPU with AMX, where the products are fast and a batch's
#: element-wise work weighs more: 256 ran groups of 30 sentences 1.10x faster than 64
#: (``python benchmarks/batch_cost_sweep.py``, docs/serve.md).
PREDICT_BATCH_COST_AMX_BF16 = 256
#: The same for such backbones when their batches run packed (layerfuse.embed.packed: padding costs
#: only attention): the greedy cut (0) ran groups of 30 sentences 1.15x faster than 256
#: (``python benchmarks/batch_cost_sweep.py``, docs/serve.md).
PREDICT_BATCH_COST_PACKED_AMX_BF16 = 0
#: Processes that share a local extraction (``layerfuse.scale.local_extract``). One: on the 2-core
#: EPYC two processes ran SmolLM2 at 1.01x and MiniLM at 0.86x of one (docs/benchmarks.md).
DEFAULT_EXTRACT_WORKERS = 1
DEFAULT_CHUNK_TEXTS = 512  # texts per checksummed cache chunk: the unit an interrupted run resumes from
DEFAULT_DTYPE = "auto"
#: ``compile``: auto (torch.compile the blocks for a CPU pass long enough to repay compiling,
#: :data:`layerfuse.embed.compiled.COMPILE_MIN_FLOP`), on or off.
DEFAULT_COMPILE = "auto"
DEFAULT_DEVICE = "auto"
DEFAULT_STORAGE = "float16"

# ---- layer profiles and selection -----------------------------------------------------------
DEFAULT_FOLDS = 5
DEFAULT_WINDOWS = 4
DEFAULT_TOPK = 3
DEFAULT_SELECT = "auto"
DEFAULT_PROBE_L2 = 1e-2
DEFAULT_PROBE_MAX_ITER = 100
DEFAULT_PROBE_TOL = 1e-4
DEFAULT_KNN_K = 10
DEFAULT_KNN_SAMPLE = 700
DEFAULT_FISHER_SHRINK = 0.1
#: How much (accuracy fraction) a multi-layer choice must beat the best single layer by in ``auto``.
DEFAULT_MIN_GAIN = 0.002
#: Averaged windows scored per profile: the K whose member layers have the best mean CV probe
#: accuracy (0 or None: every window). K = 12 chose the same pooling and layers as every window
#: for every model and dataset of the reproduction (benchmarks/results/window_shortlist_agreement.json).
DEFAULT_WINDOW_SHORTLIST = 12

# ---- fusion and training --------------------------------------------------------------------
DEFAULT_FUSION = "concat"
DEFAULT_HEAD = "mlp"
DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_COMBOS = "all"
DEFAULT_PROJ_DIM = 1024
DEFAULT_MAX_EPOCHS = 50
DEFAULT_PATIENCE = 5
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_LR = 1e-3
DEFAULT_BATCH_SIZE = 64
#: How the heads' training steps compute in a run (``fusion.precision``), ``layerfuse fuse`` and the
#: estimator: float32, bfloat16 (autocast) or auto (bfloat16 where the CPU runs it fast: the decision
#: extraction's ``dtype auto`` makes, ``run.grid.resolve_precision``). bf16 heads scored within their
#: seeds' spread of float32's on SST-2, R8 and R52 (docs/benchmarks.md, training the heads).
DEFAULT_PRECISION = "auto"
#: Grid rows trained at a time, side by side in this and spawned processes: ``auto`` is one per core when the grid is
#: large enough for processes to pay (``run.grid.PARALLEL_GRID_VALUES``), else 1.
DEFAULT_WORKERS = "auto"
#: Folds of the CV on train that the ``cv`` / ``cv-1se`` rules and the greedy search score rows by.
DEFAULT_CV_FOLDS = 5
#: Folds of each level of the nested CV that compares selection rules (``compare_rules``).
DEFAULT_NESTED_FOLDS = 3
#: What a greedy step must gain (metric fraction) beyond the CV standard error to be taken.
DEFAULT_SEARCH_MIN_GAIN = 0.0
#: ``stack`` fusion: folds of its out-of-fold probabilities and the L2 of its meta-learner.
DEFAULT_STACK_FOLDS = 5
DEFAULT_STACK_L2 = 1e-2
#: How the grid's row is chosen: ``validation`` (the seeds' carves), ``cv`` or ``cv-1se`` (k-fold CV on train).
DEFAULT_CHOOSE_BY = "validation"
#: What that choice (and the greedy search) ranks rows by: ``accuracy`` or ``macro-f1``. Accuracy,
#: the metric every table leads with: in nested CV on train it picked better on R52 and alike on R8
#: (benchmarks/results/choose_metric.md); macro-F1 for users whose rare classes matter most.
DEFAULT_CHOOSE_METRIC = "accuracy"
#: Which model sets the grid trains: ``grid`` (every set, or only the full one: ``combos``) or
#: ``greedy`` (forward selection by CV on train, :mod:`layerfuse.run.search`).
SEARCHES = ("grid", "greedy")
DEFAULT_SEARCH = "grid"
#: Where forward passes and grid rows run: ``local`` (this process and its workers) or ``ray``.
DEFAULT_ENGINE = "local"
#: CPUs each Ray worker declares (and uses as its torch thread count).
DEFAULT_CPUS_PER_WORKER = 1

# ---- serving (`layerfuse serve`, layerfuse.serve) ----------------------------------------------
DEFAULT_SERVE_HOST = "127.0.0.1"
DEFAULT_SERVE_PORT = 8000
#: Most texts the model runs at once, and the longest a request waits for others to join its batch.
DEFAULT_SERVE_MAX_BATCH = 32
DEFAULT_SERVE_MAX_WAIT_MS = 10.0
#: Request limits: texts per request, UTF-8 bytes per text, texts waiting for the model (then 503).
DEFAULT_SERVE_MAX_TEXTS = 256
DEFAULT_SERVE_MAX_TEXT_BYTES = 16384
DEFAULT_SERVE_MAX_QUEUE = 4096
#: Seconds in-flight requests get to finish after SIGTERM / Ctrl-C.
DEFAULT_SERVE_SHUTDOWN_TIMEOUT = 30.0

# ---------------------------------------------------------------------------------------------
# Configuration of a whole run (CLI flags and `layerfuse run CONFIG.yaml` both end up here)

DEFAULT_CONFIG: dict = {
    "data": {"dataset": DEFAULT_DATASET, "limit": None},
    "models": list(DEFAULT_MODELS),
    "extraction": {"pooling": list(DEFAULT_POOLINGS), "max_length": DEFAULT_MAX_LENGTH, "dtype": DEFAULT_DTYPE,
                   "batch_tokens": "auto", "device": DEFAULT_DEVICE, "storage": DEFAULT_STORAGE,
                   "compile": DEFAULT_COMPILE,
                   # where the forward passes run (layerfuse.scale): local, or ray with these resources
                   "engine": DEFAULT_ENGINE, "ray_address": None, "num_workers": None,
                   "cpus_per_worker": DEFAULT_CPUS_PER_WORKER,
                   "gpus_per_worker": None,
                   # processes sharing a local extraction, one core's threads each
                   "workers": DEFAULT_EXTRACT_WORKERS},
    "profile": {"folds": DEFAULT_FOLDS, "windows": DEFAULT_WINDOWS, "eval_test": True,
                "window_shortlist": DEFAULT_WINDOW_SHORTLIST},
    "selection": {"layers": DEFAULT_SELECT, "k": DEFAULT_TOPK},
    "fusion": {"strategies": ["concat", "attention"], "heads": [DEFAULT_HEAD], "seeds": list(DEFAULT_SEEDS),
               "combos": DEFAULT_COMBOS, "proj_dim": DEFAULT_PROJ_DIM, "max_epochs": DEFAULT_MAX_EPOCHS,
               "patience": DEFAULT_PATIENCE, "val_fraction": DEFAULT_VAL_FRACTION, "lr": DEFAULT_LR,
               "batch_size": DEFAULT_BATCH_SIZE, "engine": DEFAULT_ENGINE, "choose_by": DEFAULT_CHOOSE_BY,
               "choose_metric": DEFAULT_CHOOSE_METRIC, "search": DEFAULT_SEARCH,
               "precision": DEFAULT_PRECISION},
    "output": {"dir": "out/run-sst2", "save": "out/run-sst2/classifier"},
}

#: Fields accepted in a configuration's ``data`` section.
DATA_KEYS = {"dataset", "train", "test", "text_column", "label_column", "test_fraction", "seed", "encoding",
             "limit"}
