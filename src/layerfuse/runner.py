"""Orchestration: extract → profile → select → fuse → train → evaluate, for one dataset.

Every choice (pooling, layers, fusion strategy, epochs) is made on the training split (CV
scores) or the validation split carved from it; the test split is scored once per trained
model, after training, and only reported.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import LayerfuseError
from .pipeline import FusionPipeline, SourceSpec, build_sources


@dataclass
class ModelPrep:
    """One model's embeddings, layer profiles (per pooling) and chosen layers."""

    ref: str
    emb: object  # extraction.Embeddings
    profiles: dict  # pooling -> profile.LayerProfile
    pooling: str
    selection: object  # profile.LayerSelection
    spec: SourceSpec
    seconds: dict = field(default_factory=dict)

    def sources(self, split: str) -> list[np.ndarray]:
        return build_sources(self.spec, self.emb.array(split, self.pooling))


def parse_list(value: str | Sequence[str] | None, what: str) -> list[str]:
    if value is None:
        return []
    items = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if str(v).strip()]
    if not items:
        raise LayerfuseError(f"{what} is empty")
    return list(dict.fromkeys(items))


def prepare_models(ds, models: Sequence[str], *, poolings=("mean", "last"), layers: str = "auto", k: int = 3,
                   folds: int = 5, windows: int = 4, extraction: dict | None = None, cache_dir=None,
                   eval_test: bool = False, saved_profiles: dict | None = None, profile_dir=None,
                   progress: bool = True, log=print) -> list[ModelPrep]:
    """Extract every model, score every layer on train, pick the pooling and layers by CV.

    ``saved_profiles`` (model -> pooling -> LayerProfile, e.g. read back with
    ``LayerProfile.from_json``) are reused instead of scoring again when they were made on the
    same training labels and number of layers; anything else is scored afresh.

    ``profile_dir`` (e.g. :func:`profile_checkpoint_dir`): each profile scored is saved there
    atomically as soon as it is done, under a key of what it scored (:func:`profile_key`), and
    read back by a later call instead of scoring again, so an interrupted run keeps the models
    it already profiled."""
    from .extraction import extract
    from .profile import ANALYSIS_COLUMN, _label_digest, eval_test_column, score_layers, select_layers

    extraction = dict(extraction or {})
    preps = []
    y_train = ds.splits["train"].labels
    train_digest = _label_digest(np.asarray(y_train))
    # The per-layer test column (analysis only) needs the test labels: hashed once, like train's.
    test_digest = (_label_digest(np.asarray(ds.splits["test"].labels))
                   if eval_test and "test" in ds.splits else None)
    for ref in models:
        t0 = time.perf_counter()
        emb = extract(ref, data=ds, poolings=poolings, cache_dir=cache_dir, progress=progress, **extraction)
        t_extract = time.perf_counter() - t0
        profiles = {}
        for p in emb.poolings:
            old = (saved_profiles or {}).get(ref, {}).get(p)
            # Profiles saved before the scored embeddings were recorded lack "features".
            features = _scored_features(emb, "train", p)
            with_test = test_digest is not None and "test" in emb.splits

            def fits(prof) -> bool:
                return (prof is not None and prof.n_layers == emb.depth and prof.n_samples == len(y_train)
                        and prof.settings.get("label_digest") == train_digest
                        and prof.settings.get("features", features) == features
                        and (not with_test or any(ANALYSIS_COLUMN in r for r in prof.rows)))

            if fits(old):
                profiles[p] = old
                continue
            path = None
            if profile_dir is not None:
                key = profile_key(emb, p, train_digest, folds, windows, test_digest if with_test else None)
                path = Path(profile_dir) / f"{key}.json"
                cached = _read_profile(path, log)
                if fits(cached):
                    log(f"{ref}/{p}: layer profile read back from {path}")
                    profiles[p] = cached
                    continue
            prof = score_layers(emb.array("train", p), y_train, folds=folds, windows=windows, progress=progress,
                                name=f"{ref}/{p}")
            prof.settings["features"] = features
            if with_test:
                eval_test_column(prof, emb.array("train", p), y_train, emb.array("test", p), emb.labels["test"])
            if path is not None:
                prof.to_json(path)
            profiles[p] = prof
        # The pooling whose best layer has the highest CV probe accuracy on train.
        pooling = max(profiles, key=lambda p: profiles[p].best("probe_acc")["probe_acc"])
        sel = select_layers(profiles[pooling], layers, k=k)
        spec = SourceSpec(ref, pooling, list(sel.layers), sel.combine, emb.fingerprint)
        t_total = time.perf_counter() - t0
        log(f"{ref}: pooling {pooling}, layers {spec.label()} ({sel.reason})")
        preps.append(ModelPrep(ref, emb, profiles, pooling, sel, spec,
                               {"extract": t_extract, "profile": t_total - t_extract}))
    return preps


def profile_checkpoint_dir(cache_dir=None) -> Path:
    """Where :func:`prepare_models` keeps finished layer profiles: ``profiles/`` under the cache root."""
    from .backbones import cache_root

    return cache_root(cache_dir) / "profiles"


def _scored_features(emb, split: str, pooling: str) -> str:
    """Which embeddings a profile scored: the split's cache entry (model, texts, max length, dtype,
    storage) and the pooling."""
    return f"{emb.keys.get(split)}/{pooling}"


def profile_key(emb, pooling: str, train_digest: str, folds: int, windows: int,
                test_digest: str | None = None) -> str:
    """The file name of one saved profile: a digest of the embeddings it scored (the train split's
    cache entry and pooling), the training labels (``train_digest``, as the profile records it in
    ``settings["label_digest"]``), the CV folds and window widths, and, when it carries the
    per-layer test column, the test split's entry and labels (``test_digest``; None: no column)."""
    from .cache import make_key

    fields = {"what": "layer-profile", "features": _scored_features(emb, "train", pooling),
              "labels": train_digest, "folds": int(folds), "windows": int(windows)}
    if test_digest is not None:
        fields["test"] = _scored_features(emb, "test", pooling)
        fields["test_labels"] = test_digest
    return make_key(fields)


def _read_profile(path: Path, log):
    """A saved profile, or None when there is none; an unreadable one is reported and scored again."""
    from .profile import LayerProfile

    if not path.is_file():
        return None
    try:
        return LayerProfile.from_json(path)
    except (LayerfuseError, ValueError, KeyError, TypeError) as exc:
        log(f"  {path}: unreadable ({exc}); scoring again")
        return None


@dataclass
class GridResult:
    rows: list[dict]
    best: dict
    pipeline: FusionPipeline
    complementarity: list[dict]
    # Per row: (model indices, fusion, head, SeedResult), so any row can become a pipeline.
    results: list = field(default_factory=list, repr=False)
    ds: object = field(default=None, repr=False)
    preps: list = field(default_factory=list, repr=False)
    # How many rows were read back from ``checkpoint_dir`` instead of trained in this run.
    resumed: int = 0

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
    raise LayerfuseError(f"unknown --combos '{combos}': choose all or full")


def grid_configs(n: int, fusions: Sequence[str], heads: Sequence[str] = ("mlp",), combos: str = "all",
                 ) -> list[tuple[tuple[int, ...], str, str]]:
    """The (model indices, fusion, head) triples a grid trains. A single model needs no fusion:
    its row is the head on its own sources (recorded as concat)."""
    configs = []
    for subset in model_sets(n, combos):
        for f in (["concat"] if len(subset) == 1 else list(fusions)):
            for h in heads:
                configs.append((subset, f, h))
    return configs


def run_grid(ds, preps: list[ModelPrep], fusions: Sequence[str], *, heads: Sequence[str] = ("mlp",),
             seeds: Sequence[int] = (0, 1, 2), combos: str = "all", proj_dim: int = 1024, max_epochs: int = 50,
             patience: int = 5, val_fraction: float = 0.1, lr: float = 1e-3, batch_size: int = 64,
             configs: Sequence[tuple] | None = None, checkpoint_dir=None, workers: int = 1,
             progress: bool = True, log=print) -> GridResult:
    """Train and evaluate every (model set × fusion × head); pick the best by validation only.
    ``configs`` (see :func:`grid_configs`) replaces the full product of sets, fusions and heads.

    ``checkpoint_dir`` (e.g. :func:`grid_checkpoint_dir`): each finished row's trained seeds are saved
    there atomically (:func:`~layerfuse.train.save_seeds`) under a key of everything that changes
    them (dataset, embedding cache keys, layers, fusion, head, seeds, training settings), and a
    rerun loads them instead of training again, so an interrupted grid resumes after its last row.

    ``workers`` > 1 trains that many rows at a time, each in its own process with
    ``torch.get_num_threads() // workers`` threads (at least one): small heads use several cores
    better as separate rows than as threads of one product. Rows, choice and numbers are the same
    as a sequential run with that many threads per row."""
    from .train import fit_seeds

    if configs is None:
        validate_choices(fusions, heads, "auto")
        configs = grid_configs(len(preps), fusions, heads, combos)
    else:
        configs = [(tuple(s), f, h) for s, f, h in configs]
        bad = [s for s, _, _ in configs if not s or any(not 0 <= i < len(preps) for i in s)]
        if bad:
            raise LayerfuseError(f"grid configuration names model set {bad[0]}, but there are {len(preps)} models "
                                 f"(indices 0..{len(preps) - 1})")
        validate_choices(sorted({f for _, f, _ in configs}), sorted({h for _, _, h in configs}), "auto")
    y_tr, y_te = ds.splits["train"].labels, ds.splits["test"].labels
    src_tr = [p.sources("train") for p in preps]
    src_te = [p.sources("test") for p in preps]
    rows, results = [], []
    settings = {"seeds": [int(x) for x in seeds], "proj_dim": proj_dim, "max_epochs": max_epochs,
                "patience": patience, "val_fraction": val_fraction, "lr": lr, "batch_size": batch_size}
    data_fp = ds.fingerprint() if checkpoint_dir is not None else None
    resumed = 0
    from tqdm.auto import tqdm

    def folder_of(subset, f, h):
        return None if checkpoint_dir is None else (
            Path(checkpoint_dir) / grid_row_key(data_fp, [preps[i] for i in subset], f, h, settings))

    def info_of(subset, f, h):
        return {"models": [preps[i].ref for i in subset], "fusion": f, "head": h, "dataset": ds.name}

    # Rows trained by worker processes in this run (already checkpointed where there is a folder).
    trained_now = {}
    if workers > 1:
        jobs = [(c, folder_of(*c), info_of(*c)) for c in configs if not has_checkpoint(folder_of(*c))]
        trained_now = _fit_rows_in_workers(jobs, src_tr, src_te, y_tr, y_te, len(ds.classes), settings,
                                           workers, progress)
    bar = tqdm(configs, desc="fuse", unit="config", disable=not progress or workers > 1, dynamic_ncols=True)
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
        s = res.summary()
        row = {
            "models": "+".join(names),
            "n_models": len(subset),
            "layers": " ; ".join(preps[i].spec.label() for i in subset),
            "fusion": f if len(subset) > 1 else "-",
            "head": h,
            "acc_mean": s["acc_mean"], "acc_std": s["acc_std"],
            "f1_mean": s["f1_mean"], "f1_std": s["f1_std"],
            "val_acc_mean": s["val_acc_mean"], "val_f1_mean": s["val_f1_mean"],
            "params": s["n_params"], "train_seconds": s["train_seconds_mean"],
            "seeds": len(seeds),
        }
        rows.append(row)
        results.append((subset, f, h, res))
        log(f"  {row['models']:<40} {row['fusion']:<14} {h:<6} test acc {100 * row['acc_mean']:.2f} ± "
            f"{100 * row['acc_std']:.2f}  (val F1 {100 * (row['val_f1_mean'] or 0):.2f})"
            + ("  [saved earlier, not retrained]" if loaded else ""))
    # Best configuration by validation macro-F1 (then validation accuracy): never by test.
    best_i = max(range(len(rows)), key=lambda i: validation_key(rows[i]))
    for i, r in enumerate(rows):
        r["chosen_on_validation"] = i == best_i
    pipe = _pipeline_for(ds, preps, rows[best_i], *results[best_i])
    comp = complementarity(preps, results, y_tr, val_fraction, src_tr)
    if resumed:
        log(f"  {resumed} of {len(rows)} rows read back from {checkpoint_dir} (trained by an earlier run)")
    return GridResult(rows, rows[best_i], pipe, comp, results, ds, list(preps), resumed)


def worker_threads(workers: int) -> int:
    """torch threads of each of ``workers`` grid processes: this process's threads divided among them."""
    import torch

    return max(1, torch.get_num_threads() // workers)


def _fit_rows_in_workers(jobs, src_tr, src_te, y_tr, y_te, n_classes, settings, workers, progress) -> dict:
    """Train the rows of ``jobs`` ((subset, fusion, head), checkpoint folder or None, info),
    ``workers`` at a time in spawned processes; each result is checkpointed in its folder as soon
    as it arrives. Returns {config: SeedResult}."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    from .train import save_seeds

    todo = list(jobs)
    if not todo:
        return {}
    # Widest inputs first (a proxy for the longest rows), so no worker is left with a long row at the end.
    width = [sum(int(np.prod(a.shape[1:])) for a in src) for src in src_tr]
    todo.sort(key=lambda job: -sum(width[i] for i in job[0][0]))
    threads = worker_threads(workers)
    done = {}
    with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=mp.get_context("spawn"),
                             initializer=_worker_init,
                             initargs=(src_tr, src_te, y_tr, y_te, n_classes, threads, os.getpid())) as pool:
        futures = {pool.submit(_worker_fit, config, settings): (config, folder, info) for config, folder, info in todo}
        bar = tqdm(total=len(futures), desc=f"fuse ({min(workers, len(todo))} workers)", unit="config",
                   disable=not progress, dynamic_ncols=True)
        try:
            for fut in as_completed(futures):
                config, folder, info = futures[fut]
                done[config] = fut.result()
                if folder is not None:
                    save_seeds(done[config], folder, info=info)
                bar.update(1)
                bar.set_postfix_str(f"{'+'.join(info['models'])} {config[1]}/{config[2]}", refresh=True)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            bar.close()
    return done


_WORKER: dict = {}


def _worker_init(src_tr, src_te, y_tr, y_te, n_classes, threads, parent) -> None:
    import torch

    torch.set_num_threads(threads)
    _WORKER.update(src_tr=src_tr, src_te=src_te, y_tr=y_tr, y_te=y_te, n_classes=n_classes)
    exit_with_parent(parent)


def _worker_fit(config, settings):
    from .train import fit_seeds

    subset, f, h = config
    w = _WORKER
    tr = [a for i in subset for a in w["src_tr"][i]]
    te = [a for i in subset for a in w["src_te"][i]]
    return fit_seeds(tr, w["y_tr"], te, w["y_te"], n_classes=w["n_classes"], fusion=f, head=h, **settings)


def exit_with_parent(parent: int) -> None:
    """In a child process: end it when ``parent`` is gone, so a killed run leaves nothing running."""
    import threading

    def watch():
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def load_or_fit(folder, fit, info: dict, log=print):
    """``fit()`` (returning a :class:`~layerfuse.train.SeedResult`) unless ``folder`` already holds
    its result from an earlier run; a new result is saved there atomically. ``folder`` None: just
    fit. Returns ``(result, loaded)``. An unreadable folder is reported and trained again."""
    from .train import load_seeds, save_seeds

    if has_checkpoint(folder):
        try:
            return load_seeds(folder), True
        except LayerfuseError as exc:
            log(f"  {folder}: unreadable ({exc}); training again")
    res = fit()
    if folder is not None:
        save_seeds(res, folder, info=info)
    return res, False


def grid_checkpoint_dir(cache_dir=None) -> Path:
    """Where grid rows are checkpointed by default: ``grid/`` under the cache root."""
    from .backbones import cache_root

    return cache_root(cache_dir) / "grid"


def has_checkpoint(folder) -> bool:
    """Whether ``folder`` holds a finished row (save_seeds renames it into place only when complete)."""
    from .train import SEEDS_FILE

    return folder is not None and (Path(folder) / SEEDS_FILE).is_file()


def grid_row_key(data_fingerprint: str, preps: Sequence[ModelPrep], fusion: str, head: str, settings: dict) -> str:
    """The checkpoint folder name of one grid row: a digest of everything its numbers depend on —
    the dataset (texts and labels), each model's embedding cache entries (model, texts, max length,
    dtype, storage) and chosen layers, the fusion, the head, the seeds and the training settings."""
    from .cache import make_key

    sources = [{"spec": asdict(p.spec), "splits": {s: p.emb.keys.get(s) for s in ("train", "test")}}
               for p in preps]
    return make_key({"what": "grid-row", "data": data_fingerprint, "sources": sources, "fusion": fusion,
                     "head": head, **settings})


def validation_key(row: dict) -> tuple[float, float]:
    """How grid rows are ranked when one is chosen: validation macro-F1, then validation accuracy
    (both carved from train; a row without validation ranks last). Never test."""
    return (row["val_f1_mean"] or 0, row["val_acc_mean"] or 0)


def _pipeline_for(ds, preps, row: dict, subset, f, h, res) -> FusionPipeline:
    """A saved-classifier form of one grid row: the seed whose model did best on validation
    (same order as ``validation_key``)."""
    j = max(range(len(res.models)), key=lambda k: (res.models[k].val_f1 or 0, res.models[k].val_acc or 0))
    return FusionPipeline(
        specs=[preps[i].spec for i in subset],
        trained=res.models[j],
        classes=list(ds.classes),
        extraction=_extraction_settings(preps[subset[0]].emb),
        metrics={"seed": res.per_seed[j]["seed"], "test_acc": res.per_seed[j]["test_acc"],
                 "test_macro_f1": res.per_seed[j]["test_macro_f1"],
                 "test_acc_mean_over_seeds": row["acc_mean"], "test_f1_mean_over_seeds": row["f1_mean"],
                 "val_f1": res.models[j].val_f1, "val_acc": res.models[j].val_acc},
        info={"dataset": ds.name, "dataset_fingerprint": ds.fingerprint(), "row": row,
              "chosen_by": "validation macro-F1 (validation carved from train)"},
    )


def _extraction_settings(emb) -> dict:
    st = emb.stats
    return {"max_length": st["max_length"], "dtype": st["dtype"], "storage": st["storage"],
            "batch_tokens": st["batch_tokens"]}


def linear_cka(a: np.ndarray, b: np.ndarray) -> float:
    """Linear centred kernel alignment between two representations of the same examples."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    num = np.linalg.norm(a.T @ b) ** 2
    den = np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)
    return float(num / den) if den > 0 else 0.0


def complementarity(preps, results, y_train, val_fraction: float, sources_train) -> list[dict]:
    """Per model pair on the validation split (carved from train, first seed): linear CKA of the
    selected representations, and how often both single-model heads are wrong together compared
    with what independent errors would give. Low CKA and few shared errors suggest fusion can help.
    ``sources_train``: per model, the training sources run_grid already built (reused, not rebuilt)."""
    from .train import stratified_validation_split

    if len(preps) < 2 or val_fraction <= 0:
        return []
    singles = {s[0]: r for (s, f, h, r) in results if len(s) == 1}
    # The validation rows that the first seed's single-model heads never trained on.
    first_seed = next(iter(singles.values())).seeds[0] if singles else 0
    _, val = stratified_validation_split(y_train, fraction=val_fraction, seed=first_seed)
    wrong = {}
    for i, prep in enumerate(preps):
        if i in singles:
            srcs = [a[val] for a in sources_train[i]]
            pred = singles[i].models[0].predict(srcs)
            wrong[i] = pred != y_train[val]
    rows = []
    for i, j in itertools.combinations(range(len(preps)), 2):
        a = np.concatenate([s[val].reshape(len(val), -1) for s in sources_train[i]], 1)
        b = np.concatenate([s[val].reshape(len(val), -1) for s in sources_train[j]], 1)
        row = {"a": preps[i].ref, "b": preps[j].ref, "cka": linear_cka(a.astype(np.float64), b.astype(np.float64))}
        if i in wrong and j in wrong:
            ei, ej = wrong[i].mean(), wrong[j].mean()
            both = float((wrong[i] & wrong[j]).mean())
            row.update(err_a=float(ei), err_b=float(ej), both_wrong=both, both_wrong_if_independent=float(ei * ej),
                       oracle_acc=float(1 - both))
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# Configuration of a whole run (CLI flags and `layerfuse run CONFIG.yaml` both end up here)

DEFAULT_CONFIG: dict = {
    "data": {"dataset": "sst2", "limit": None},
    "models": ["smollm2-135m", "minilm-l6"],
    "extraction": {"pooling": ["mean", "last"], "max_length": 512, "dtype": "auto", "batch_tokens": 2048,
                   "device": "auto", "storage": "float16"},
    "profile": {"folds": 5, "windows": 4, "eval_test": True},
    "selection": {"layers": "auto", "k": 3},
    "fusion": {"strategies": ["concat", "attention"], "heads": ["mlp"], "seeds": [0, 1, 2],
               "combos": "all", "proj_dim": 1024, "max_epochs": 50, "patience": 5, "val_fraction": 0.1,
               "lr": 1e-3, "batch_size": 64},
    "output": {"dir": "out/run-sst2", "save": "out/run-sst2/classifier"},
}

_DATA_KEYS = {"dataset", "train", "test", "text_column", "label_column", "test_fraction", "seed", "encoding",
              "limit"}


def merge_config(user: dict, source: str = "config") -> dict:
    """DEFAULT_CONFIG overlaid with ``user``; unknown keys are errors naming the field."""
    import copy

    if not isinstance(user, dict):
        raise LayerfuseError(f"{source}: the top level must be a mapping of sections ({', '.join(DEFAULT_CONFIG)})")
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    for key, value in user.items():
        if key not in cfg:
            raise LayerfuseError(f"{source}: unknown section '{key}': expected one of {', '.join(DEFAULT_CONFIG)}")
        if isinstance(cfg[key], dict):
            if not isinstance(value, dict):
                raise LayerfuseError(f"{source}: '{key}' must be a mapping")
            allowed = _DATA_KEYS if key == "data" else set(cfg[key])
            for sub in value:
                if sub not in allowed:
                    raise LayerfuseError(f"{source}: unknown field '{key}.{sub}': expected one of "
                                         f"{', '.join(sorted(allowed))}")
            if key == "data" and ("train" in value):
                cfg["data"].pop("dataset", None)
            cfg[key].update(value)
        else:
            cfg[key] = value
    cfg["models"] = parse_list(cfg["models"], f"{source}: models")
    cfg["extraction"]["pooling"] = parse_list(cfg["extraction"]["pooling"], f"{source}: extraction.pooling")
    cfg["fusion"]["strategies"] = parse_list(cfg["fusion"]["strategies"], f"{source}: fusion.strategies")
    cfg["fusion"]["heads"] = parse_list(cfg["fusion"]["heads"], f"{source}: fusion.heads")
    validate_choices(cfg["fusion"]["strategies"], cfg["fusion"]["heads"], cfg["selection"]["layers"], source)
    seeds = cfg["fusion"]["seeds"]
    if isinstance(seeds, int):
        seeds = list(range(seeds))
    try:
        cfg["fusion"]["seeds"] = [int(s) for s in seeds]
    except (TypeError, ValueError) as e:
        raise LayerfuseError(f"{source}: fusion.seeds must be a list of integers or a count") from e
    return cfg


def validate_choices(fusions: Sequence[str], heads: Sequence[str], layers: str, source: str = "") -> None:
    """Fail before any model runs when a fusion, head or layer strategy name is unknown."""
    from .fusion import FUSIONS
    from .profile import _parse_strategy
    from .train import HEADS

    pre = f"{source}: " if source else ""
    for f in fusions:
        if f not in FUSIONS:
            raise LayerfuseError(f"{pre}unknown fusion '{f}': choose from {', '.join(FUSIONS)}")
    for h in heads:
        if h not in HEADS:
            raise LayerfuseError(f"{pre}unknown head '{h}': choose from {', '.join(HEADS)}")
    _parse_strategy(layers, 1)


def load_config_file(path) -> dict:
    import yaml
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        raise LayerfuseError(f"config file {p} does not exist")
    try:
        user = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise LayerfuseError(f"{p}{where}: not valid YAML ({getattr(e, 'problem', e)})") from e
    return merge_config(user, str(p))


def load_data(data_cfg: dict):
    from .data import load_dataset

    d = dict(data_cfg)
    limit = d.pop("limit", None)
    name = d.pop("dataset", None)
    if name and d.get("train"):
        raise LayerfuseError("give either data.dataset or data.train, not both")
    if name:
        ds = load_dataset(name)
    elif d.get("train"):
        ds = load_dataset(train=d.pop("train"), test=d.pop("test", None), **d)
    else:
        raise LayerfuseError("no data: pass --dataset NAME or --train FILE (or data.dataset in the config)")
    if limit:
        ds = ds.subsample(int(limit))
    return ds
