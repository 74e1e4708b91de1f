"""The fusion grid: every (model set × fusion × head) trained over seeds, each finished row
checkpointed, the best row chosen on validation.

Every choice (pooling, layers, fusion strategy, epochs) is made on the training split (CV
scores) or the validation split carved from it; the test split is scored once per trained
model, after training, and only reported.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Sequence

from layerfuse.config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CHOOSE_BY,
    DEFAULT_CHOOSE_METRIC,
    DEFAULT_COMBOS,
    DEFAULT_CV_FOLDS,
    DEFAULT_ENGINE,
    DEFAULT_HEAD,
    DEFAULT_LR,
    DEFAULT_MAX_EPOCHS,
    DEFAULT_PATIENCE,
    DEFAULT_PROJ_DIM,
    DEFAULT_SEARCH,
    DEFAULT_SEARCH_MIN_GAIN,
    DEFAULT_SEEDS,
    DEFAULT_VAL_FRACTION,
    DEFAULT_WORKERS,
    SEARCHES,
)
from layerfuse.errors import LayerfuseError
from layerfuse.model.lexical import is_lexical
from layerfuse.pipeline import FusionPipeline
from layerfuse.run.checkpoints import grid_row_key, has_checkpoint, load_or_fit, load_or_score
from layerfuse.run.complementarity import complementarity
from layerfuse.run.prepare import ModelPrep
from layerfuse.run.workers import fit_rows_in_workers
from layerfuse.validation import check_choice, validate_choices

if TYPE_CHECKING:
    from layerfuse.data.dataset import Dataset
    from layerfuse.model.training import SeedResult

__all__ = ["RowResult", "GridResult", "checked_configs", "table_row", "model_sets", "grid_configs", "run_grid", "cv_scorer", "validation_key", "extraction_settings"]


class RowResult(NamedTuple):
    """One trained grid row: which models (indices into the preps), fused how, with which head,
    and every seed's trained model and scores."""

    subset: tuple[int, ...]
    fusion: str
    head: str
    result: SeedResult


@dataclass
class GridResult:
    """What :func:`run_grid` returns: one table row per configuration (``rows``), the row chosen on
    validation (``best``) as a saved-classifier ``pipeline``, the complementarity table, and per row
    its :class:`RowResult` so that any row can become a pipeline (:meth:`pipeline_for`).
    ``resumed`` counts the rows read back from checkpoints instead of trained in this run;
    ``search`` holds the greedy paths per fusion (:func:`~layerfuse.run.search.greedy_paths`) when
    the model sets were searched greedily."""

    rows: list[dict]
    best: dict
    pipeline: FusionPipeline
    complementarity: list[dict]
    results: list[RowResult] = field(default_factory=list, repr=False)
    ds: Dataset | None = field(default=None, repr=False)
    preps: list[ModelPrep] = field(default_factory=list, repr=False)
    resumed: int = 0
    search: dict | None = None

    def pipeline_for(self, i: int) -> FusionPipeline:
        """The saved-classifier form of row ``i`` (its best seed on validation)."""
        return _pipeline_for(self.ds, self.preps, self.rows[i], *self.results[i])


def model_sets(n: int, combos: str) -> list[tuple[int, ...]]:
    """Which subsets of the models to fuse: singles always; then all subsets or only the full set."""
    singles = [(i,) for i in range(n)]
    if n == 1:
        return singles
    if combos == "all":
        return singles + [c for r in range(2, n + 1) for c in itertools.combinations(range(n), r)]
    if combos == "full":
        return singles + [tuple(range(n))]
    raise LayerfuseError(f"unknown `combos` '{combos}': choose all or full")


def grid_configs(n: int, fusions: Sequence[str], heads: Sequence[str] = (DEFAULT_HEAD,), combos: str = DEFAULT_COMBOS,
                 ) -> list[tuple[tuple[int, ...], str, str]]:
    """The (model indices, fusion, head) triples a grid trains. A single model needs no fusion:
    its row is the head on its own sources (recorded as concat)."""
    configs = []
    for subset in model_sets(n, combos):
        for f in (["concat"] if len(subset) == 1 else list(fusions)):
            for h in heads:
                configs.append((subset, f, h))
    return configs


#: ``workers="auto"`` trains rows in parallel processes only when the training arrays hold at least
#: this many values (rows x summed widths): starting a worker costs ~2-3 s. SST-2 with the built-in
#: models: 6,920 x 960 = 6.6M, and 2 workers made its fuse stage ~36 -> ~22 s
#: (benchmarks/results/run_default/README.md).
PARALLEL_GRID_VALUES = 2_000_000


def grid_workers(workers, n_rows: int, src_tr) -> int:
    """How many grid rows train at a time: ``workers`` itself, or for ``"auto"`` one per core
    (at most one per row still to train) when the training data is large enough, else 1."""
    import os

    if workers != "auto":
        return int(workers)
    values = sum(math.prod(a.shape) for arrays in src_tr for a in arrays)
    if n_rows < 2 or values < PARALLEL_GRID_VALUES:
        return 1
    return max(1, min(os.cpu_count() or 1, n_rows))


def resolve_precision(precision: str, cache_dir=None, log=print) -> str:
    """``fusion.precision`` of a run: ``auto`` is bfloat16 where the CPU runs bf16 matrix products
    fast (the decision ``--dtype auto`` makes, :func:`layerfuse.embed.device.dtype_decision`, kept
    per CPU model in the cache), else float32; the choice is logged."""
    if precision != "auto":
        return precision
    from layerfuse.embed.device import dtype_decision

    chosen, why = dtype_decision("cpu", cache_dir)
    log(f"head precision auto → {chosen}: {why}")
    return chosen


def run_grid(ds, preps: list[ModelPrep], fusions: Sequence[str], *, heads: Sequence[str] = ("mlp",),
             seeds: Sequence[int] = DEFAULT_SEEDS, combos: str = DEFAULT_COMBOS, proj_dim: int = DEFAULT_PROJ_DIM,
             max_epochs: int = DEFAULT_MAX_EPOCHS, patience: int = DEFAULT_PATIENCE,
             val_fraction: float = DEFAULT_VAL_FRACTION, lr: float = DEFAULT_LR, batch_size: int = DEFAULT_BATCH_SIZE,
             configs: Sequence[tuple] | None = None, checkpoint_dir=None, workers: int | str = DEFAULT_WORKERS,
             engine: str = DEFAULT_ENGINE, engine_options: dict | None = None,
             rule: str = DEFAULT_CHOOSE_BY, cv_folds: int = DEFAULT_CV_FOLDS, search: str = DEFAULT_SEARCH, beam: int | None = None,
             min_gain: float = DEFAULT_SEARCH_MIN_GAIN, metric: str = DEFAULT_CHOOSE_METRIC, progress: bool = True,
             precision: str = "float32", log=print) -> GridResult:
    """Train and evaluate every (model set × fusion × head); pick the best by validation only.
    ``configs`` (see :func:`grid_configs`) replaces the full product of sets, fusions and heads.

    ``precision``: how the heads' training steps compute (``fit_head``'s ``precision``: float32,
    or bfloat16 autocast).

    ``checkpoint_dir`` (e.g. :func:`grid_checkpoint_dir`): each finished row's trained seeds are saved
    there atomically (:func:`~layerfuse.model.saving.save_seeds`) under a key of everything that changes
    them (dataset, embedding cache keys, layers, fusion, head, seeds, training settings), and a
    rerun loads them instead of training again, so an interrupted grid resumes after its last row.

    ``workers`` > 1 trains that many seeds of rows at a time (``"auto"``: :func:`grid_workers`), one in
    this process and the others in ``workers - 1`` spawned ones (:func:`~layerfuse.run.workers.share_tasks`),
    each with ``torch.get_num_threads() // workers`` threads (at least one): small heads use several
    cores better side by side than as threads of one product. Rows, choice and numbers are the same
    as a sequential run with that many threads per row.

    ``engine="ray"`` trains the rows as Ray tasks instead (``engine_options``: ``ray_address``,
    ``num_workers``, ``cpus_per_worker`` — see :class:`layerfuse.scale.RayOptions`), with the same
    checkpoints; its numbers are those of ``workers`` local processes with ``cpus_per_worker``
    threads each.

    ``rule`` (see :mod:`layerfuse.run.selection_rules`): ``validation`` picks by the seeds' 10 %
    carves; ``cv`` and ``cv-1se`` also score every row by ``cv_folds``-fold CV on train (first
    seed; ``cv_f1_mean``, ``cv_f1_se``, ``cv_acc_mean``, ``cv_acc_se`` in the row) and pick by that.
    Every rule and the greedy search rank by ``metric`` (``macro-f1`` or ``accuracy``, see
    :data:`~layerfuse.run.selection_rules.METRICS`). CV scores are kept beside the row checkpoints
    (:func:`cv_scorer`), so a rerun reads them back.

    ``search="greedy"`` replaces the product of model sets by a greedy search per fusion
    (:func:`~layerfuse.run.search.greedy_paths`: from the best single model by CV, add the model
    that raises the CV score most while the gain exceeds ``min_gain`` plus the CV standard error;
    ``beam`` caps the candidates tried per step); the grid then trains every model alone and each
    set on each path. Every row has CV scores, and ``rule`` still makes the final choice.

    Over 80 lines with this docstring; the body is one loop over the rows between the checks
    (:func:`checked_configs`) and the choice (:mod:`layerfuse.run.selection_rules`)."""
    from layerfuse.model.training import PRECISIONS, fit_seeds
    from layerfuse.run.selection_rules import METRICS, RULES

    check_choice(rule, RULES, "selection rule")
    check_choice(metric, list(METRICS), "selection metric")
    check_choice(search, SEARCHES, "search")
    y_tr, y_te = ds.splits["train"].labels, ds.splits["test"].labels
    src_tr = [p.sources("train") for p in preps]
    src_te = [p.sources("test") for p in preps]
    rows, results = [], []
    settings = {"seeds": [int(x) for x in seeds], "proj_dim": proj_dim, "max_epochs": max_epochs,
                "patience": patience, "val_fraction": val_fraction, "lr": lr, "batch_size": batch_size}
    check_choice(precision, PRECISIONS, "precision")
    if precision != "float32":  # only then part of the settings, so float32 rows keep their checkpoint keys
        settings["precision"] = precision
    data_fp = ds.fingerprint() if checkpoint_dir is not None else None
    resumed = 0
    score_cv = cv_scorer(ds, preps, settings, cv_folds, checkpoint_dir, log, src_tr=src_tr, data_fp=data_fp)
    paths = None
    if search == "greedy":
        from layerfuse.run.search import greedy_configs, greedy_paths

        if configs is not None:
            raise LayerfuseError("give either `configs` or search='greedy', not both")
        validate_choices(fusions, heads, "auto")
        paths = greedy_paths([p.ref for p in preps], y_tr, fusions, lambda s, f: score_cv(s, f, heads[0]),
                             min_gain=min_gain, beam=beam, metric=metric, log=log)
        configs = greedy_configs(len(preps), [], fusions, heads, paths=paths)
    configs = checked_configs(len(preps), fusions, heads, combos, configs)
    from tqdm.auto import tqdm

    def folder_of(subset, f, h):
        return None if checkpoint_dir is None else (
            Path(checkpoint_dir) / grid_row_key(data_fp, [preps[i] for i in subset], f, h, settings))

    def info_of(subset, f, h):
        return {"models": [preps[i].ref for i in subset], "fusion": f, "head": h, "dataset": ds.name}

    # Rows trained by worker processes in this run (already checkpointed where there is a folder).
    trained_now = {}
    workers = grid_workers(workers, sum(not has_checkpoint(folder_of(*c)) for c in configs), src_tr)
    if workers > 1 or engine != "local":
        jobs = [(c, folder_of(*c), info_of(*c)) for c in configs if not has_checkpoint(folder_of(*c))]
        if engine != "local":
            from layerfuse.scale.engine import fit_rows

            trained_now = fit_rows(engine, jobs, src_tr, src_te, y_tr, y_te, len(ds.classes), settings,
                                   engine_options, progress)
        else:
            trained_now = fit_rows_in_workers(jobs, src_tr, src_te, y_tr, y_te, len(ds.classes), settings,
                                               workers, progress)
    bar = tqdm(configs, desc="fuse", unit="config", disable=not progress or workers > 1 or engine != "local",
               dynamic_ncols=True)
    for subset, f, h in bar:
        names = [preps[i].ref for i in subset]
        bar.set_postfix_str(f"{'+'.join(names)} {f}/{h}", refresh=True)

        def fit(subset=subset, f=f, h=h):
            tr = [a for i in subset for a in src_tr[i]]
            te = [a for i in subset for a in src_te[i]]
            return fit_seeds(tr, y_tr, te, y_te, n_classes=len(ds.classes), fusion=f, head=h, **settings)

        if (subset, f, h) in trained_now:
            res, loaded = trained_now[(subset, f, h)], False
        else:
            res, loaded = load_or_fit(folder_of(subset, f, h), fit, info_of(subset, f, h), log)
        resumed += loaded
        row = table_row([preps[i] for i in subset], f, h, res)
        rows.append(row)
        results.append(RowResult(subset, f, h, res))
        log(f"  {row['models']:<40} {row['fusion']:<14} {h:<6} test acc {100 * row['acc_mean']:.2f} ± "
            f"{100 * row['acc_std']:.2f}  (val F1 {100 * (row['val_f1_mean'] or 0):.2f})"
            + ("  [saved earlier, not retrained]" if loaded else ""))
    # Best configuration by validation or by CV on train, ranked by `metric`: never by test.
    from layerfuse.run.selection_rules import add_cv_scores, choose

    if rule != "validation" or search == "greedy":
        add_cv_scores(rows, results, score_cv, cv_folds, log, metric=metric)
    best_i = choose(rows, rule, metric)
    for i, r in enumerate(rows):
        r["chosen_on_validation"] = i == best_i
    pipe = _pipeline_for(ds, preps, rows[best_i], *results[best_i], metric=metric)
    pipe.info["chosen_by"] = chosen_by_text(rule, metric, cv_folds)
    comp = complementarity(preps, results, y_tr, val_fraction, src_tr)
    if resumed:
        log(f"  {resumed} of {len(rows)} rows read back from {checkpoint_dir} (trained by an earlier run)")
    return GridResult(rows, rows[best_i], pipe, comp, results, ds, list(preps), resumed, paths)


def cv_scorer(ds, preps: Sequence[ModelPrep], settings: dict, folds: int, checkpoint_dir=None, log=print,
              src_tr=None, data_fp: str | None = None):
    """``score(subset, fusion, head)``: the CV scores on train
    (:func:`~layerfuse.run.selection_rules.cv_scores`, first seed, the grid's training settings) of
    one configuration, remembered in memory and, with ``checkpoint_dir``, in a JSON file beside the
    row's checkpoint folder (named by the same key, the fold count appended), so the greedy search
    and the CV rules of a rerun read them back. A single model needs no fusion: it is scored once,
    as ``concat``. ``src_tr`` and ``data_fp`` (``ds.fingerprint()``) may be passed when the caller
    already has them."""
    from layerfuse.run.selection_rules import complete_cv, cv_scores

    src_tr = [p.sources("train") for p in preps] if src_tr is None else src_tr
    y = ds.splits["train"].labels
    fit_kw = {k: settings[k] for k in ("proj_dim", "max_epochs", "patience", "val_fraction", "lr", "batch_size",
                                        "precision") if k in settings}
    if data_fp is None and checkpoint_dir is not None:
        data_fp = ds.fingerprint()
    memo: dict = {}

    def score(subset, f, h):
        subset = tuple(subset)
        f = f if len(subset) > 1 else "concat"
        if (subset, f, h) not in memo:
            path = None if checkpoint_dir is None else Path(checkpoint_dir) / (
                f"{grid_row_key(data_fp, [preps[i] for i in subset], f, h, settings)}-cv{int(folds)}.json")
            arrays = [a for i in subset for a in src_tr[i]]
            memo[(subset, f, h)] = complete_cv(load_or_score(
                path, lambda: cv_scores(arrays, y, n_classes=len(ds.classes), fusion=f, head=h, folds=folds,
                                        seed=settings["seeds"][0], **fit_kw), log), y, settings["seeds"][0])
        return memo[(subset, f, h)]

    return score


def checked_configs(n_models: int, fusions, heads, combos: str, configs=None) -> list[tuple]:
    """The grid's (model indices, fusion, head) triples: ``configs`` checked, or the product of
    model sets, fusions and heads (:func:`grid_configs`); unknown names fail before any training."""
    if configs is None:
        validate_choices(fusions, heads, "auto")
        return grid_configs(n_models, fusions, heads, combos)
    configs = [(tuple(s), f, h) for s, f, h in configs]
    bad = [s for s, _, _ in configs if not s or any(not 0 <= i < n_models for i in s)]
    if bad:
        raise LayerfuseError(f"grid configuration names model set {bad[0]}, but there are {n_models} models "
                             f"(indices 0..{n_models - 1})")
    validate_choices(sorted({f for _, f, _ in configs}), sorted({h for _, _, h in configs}), "auto")
    return configs


def table_row(preps: Sequence[ModelPrep], fusion: str, head: str, res: SeedResult) -> dict:
    """One grid row as the results table shows it: models, layers, fusion, head, test and validation
    scores (mean ± std over seeds), parameters and training time."""
    s = res.summary()
    return {
        "models": "+".join(p.ref for p in preps),
        "n_models": len(preps),
        "layers": " ; ".join(p.spec.label() for p in preps),
        "fusion": fusion if len(preps) > 1 else "-",
        "head": head,
        "acc_mean": s["acc_mean"], "acc_std": s["acc_std"],
        "f1_mean": s["f1_mean"], "f1_std": s["f1_std"],
        "val_acc_mean": s["val_acc_mean"], "val_f1_mean": s["val_f1_mean"],
        "params": s["n_params"], "train_seconds": s["train_seconds_mean"],
        "seeds": len(res.seeds),
    }


def validation_key(row: dict, metric: str = DEFAULT_CHOOSE_METRIC) -> tuple[float, float]:
    """How grid rows are ranked by the ``validation`` rule: validation macro-F1, then validation
    accuracy (``metric="accuracy"``: the other way round; both carved from train; a row without
    validation ranks last). Never test."""
    f1, acc = row["val_f1_mean"] or 0, row["val_acc_mean"] or 0
    return (acc, f1) if metric == "accuracy" else (f1, acc)


def chosen_by_text(rule: str, metric: str, cv_folds: int) -> str:
    """How the chosen row was chosen, in words (tables, saved classifiers)."""
    from layerfuse.run.selection_rules import metric_label

    name = metric_label(metric)
    if rule == "validation":
        return f"validation {name} (validation carved from train)"
    return f"{rule}: {cv_folds}-fold CV {name} on train"


def _pipeline_for(ds, preps, row: dict, subset, f, h, res, metric: str = DEFAULT_CHOOSE_METRIC) -> FusionPipeline:
    """A saved-classifier form of one grid row: the seed whose model did best on validation
    (same order as ``validation_key``)."""
    j = max(range(len(res.models)), key=lambda k: validation_key(
        {"val_f1_mean": res.models[k].val_f1, "val_acc_mean": res.models[k].val_acc}, metric))
    return FusionPipeline(
        specs=[preps[i].spec for i in subset],
        trained=res.models[j],
        classes=list(ds.classes),
        # A lexical source runs no model: the settings come from the first model in the set.
        extraction=extraction_settings(next((preps[i].emb for i in subset if not is_lexical(preps[i].ref)),
                                            preps[subset[0]].emb)),
        lexical={preps[i].ref: preps[i].emb.source for i in subset if is_lexical(preps[i].ref)},
        metrics={"seed": res.per_seed[j]["seed"], "test_acc": res.per_seed[j]["test_acc"],
                 "test_macro_f1": res.per_seed[j]["test_macro_f1"],
                 "test_acc_mean_over_seeds": row["acc_mean"], "test_f1_mean_over_seeds": row["f1_mean"],
                 "val_f1": res.models[j].val_f1, "val_acc": res.models[j].val_acc},
        info={"dataset": ds.name, "dataset_fingerprint": ds.fingerprint(), "row": row,
              "chosen_by": chosen_by_text("validation", metric, 0)},
    )


def extraction_settings(emb) -> dict:
    st = emb.stats
    return {"max_length": st["max_length"], "dtype": st["dtype"], "storage": st["storage"],
            "batch_tokens": st["batch_tokens"]}
