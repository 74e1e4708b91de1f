"""Reproduce the paper's experiments on SST-2, MR, R8 and R52 with the packaged models.

    python benchmarks/reproduce.py --datasets sst2                  # one dataset (resumes through the cache)
    python benchmarks/reproduce.py --datasets sst2,mr,r8,r52        # all of them (hours on 2 cores)
    python benchmarks/reproduce.py --docs                           # rebuild docs/RESULTS.md from result files

Per dataset, every decision is made on the training split (cross-validation) or on a validation
split carved from it; the official test split is scored once per trained model:

* layer profile of every model on train, with per-layer test accuracy as an analysis column
  (Figure 2 analogue) and averaged windows (Figure 3 analogue);
* best single layer (chosen by CV) against the last layer, same head and seeds;
* fusion of every set of 2, 3 and 4 models with each strategy, at auto-selected layers;
* baselines on the same splits: TF-IDF (word 1-2-grams) + logistic regression and + linear SVM
  (C chosen by CV on train), and the sentence-transformers recipe for MiniLM (mean pooling of the
  last layer, L2-normalised) + logistic regression;
* resources: per model peak memory, extraction time and tokens/s, cache size; per configuration
  head training time and prediction latency per text.

Results go to benchmarks/results/reproduce/DATASET/ (JSON, CSV, PNG); `--docs` turns all result
files present into docs/RESULTS.md.

An interrupted run loses nothing finished: embeddings resume chunk by chunk, layer profiles are read
back from the result files or, for a run that had not finished, from `$LAYERFUSE_CACHE/profiles/`
(each model's profile is saved there as soon as it is scored), and every trained grid row (and
best/last-layer row) is kept with its heads under `$LAYERFUSE_CACHE/grid/`, so the same command
resumes after the last finished row. A row read back keeps the numbers of the run that trained it
(thread count included).

Embedding dtype: `--dtype auto` (default) takes bfloat16 where this CPU computes it faster than
float32 (measured; in practice CPUs with AMX) and float32 elsewhere; the dtype used is written into
the recorded command. Runs recorded without `--dtype` used bfloat16 (the default then).

`--workers 2` on 2 cores trains two grid rows at a time with one thread each: the same numbers
as a run with OMP_NUM_THREADS=1 (how the committed results were made), in less time
(benchmarks/grid_workers.py). torch's threads are divided among the workers.

Two datasets side by side on one small machine: give each process one thread
(`OMP_NUM_THREADS=1 python benchmarks/reproduce.py --datasets r8 & OMP_NUM_THREADS=1 ... r52`).
Two processes with torch's default thread count oversubscribe the cores; on 2 cores the R52 grid
ran several times slower that way. Results differ by float reduction order across thread counts
(single-model heads on R52 within ~0.5 points, about the seed spread).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

RESULTS = ROOT / "benchmarks" / "results" / "reproduce"
MODELS = ["smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "minilm-l6"]
MAX_LENGTH = {"sst2": 128, "mr": 128, "r8": 256, "r52": 256}
TARGETS = {"sst2": 0.915, "mr": 0.87, "r8": 0.978, "r52": 0.95}  # test accuracy the project aims for (issue 16)
# Fusions tried on every set of 2, 3 and 4 models; every other registered fusion is tried on the set
# of all models (the whole product, 11 sets x 14 fusions x 3 seeds, is hours on 2 cores).
FUSIONS = ["concat", "sum", "attention"]
LATENCY_TEXTS = 100  # test texts per prediction-latency measurement


# ---------------------------------------------------------------------------------------------
# Extraction in a child process, so each model's peak memory is its own


from layerfuse.config import DEFAULT_CHOOSE_METRIC as C_DEFAULT_CHOOSE_METRIC  # noqa: E402
from layerfuse.embed.extract import peak_rss_mb  # noqa: E402
from layerfuse.run.grid import validation_key  # noqa: E402
from layerfuse.run.selection_rules import metric_label  # noqa: E402


def _child_main(target, args, parent, q):
    from layerfuse.run.workers import exit_with_parent

    exit_with_parent(parent)
    q.put(target(*args))


def in_child(target, *args, what: str) -> dict:
    """``target(*args)`` in a fresh spawned process (its own peak memory); its result comes back
    through a queue. A child that dies without a result is an error, not a hang."""
    import queue

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child_main, args=(target, args, os.getpid(), q))
    p.start()
    while True:
        try:
            out = q.get(timeout=2)
            break
        except queue.Empty:
            if not p.is_alive():
                raise SystemExit(f"{what} failed (child exit code {p.exitcode}); see the messages above")
    p.join()
    return out


def _extract_child(model, dataset, poolings, max_length, dtype):

    from layerfuse.data.builtin import load_builtin
    from layerfuse.embed.extract import extract

    ds = load_builtin(dataset)
    emb = extract(model, data=ds, poolings=poolings, max_length=max_length, dtype=dtype, progress=True)
    st = dict(emb.stats)
    st["peak_rss_mb"] = peak_rss_mb()
    st["peak_memory_method"] = "VmHWM"
    st["splits"] = {k: {kk: vv for kk, vv in v.items() if kk != "backbone"} for k, v in st["splits"].items()}
    return st


def extract_isolated(model, dataset, poolings, max_length, dtype) -> dict:
    return in_child(_extract_child, model, dataset, poolings, max_length, dtype,
                    what=f"extraction of {model} on {dataset}")


# ---------------------------------------------------------------------------------------------
# Baselines


def tfidf_baselines(ds, seed=0) -> list[dict]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.svm import LinearSVC

    tr, te = ds.splits["train"], ds.splits["test"]
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    Xtr, Xte = vec.fit_transform(tr.texts), vec.transform(te.texts)
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    rows = []
    for name, est in [("TF-IDF 1-2g + logistic regression", LogisticRegression(max_iter=2000)),
                      ("TF-IDF 1-2g + linear SVM", LinearSVC(max_iter=10000, random_state=seed))]:
        t0 = time.perf_counter()
        g = GridSearchCV(est, {"C": [0.1, 1, 10, 100]}, cv=folds, scoring="accuracy", n_jobs=1).fit(Xtr, tr.labels)
        rows.append(_baseline_row(name, g.best_estimator_.predict(Xte), te.labels, time.perf_counter() - t0,
                                  f"C={g.best_params_['C']} by 5-fold CV on train"))
    return rows


def minilm_baseline(ds, seed=0) -> dict:
    """The usual sentence-transformers recipe: last layer, mean pooling, L2 normalised, + LR."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    from layerfuse.embed.extract import extract

    emb = extract("minilm-l6", data=ds, poolings="mean", max_length=256, progress=False)
    norm = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    Xtr, Xte = norm(emb.get("train", -1, "mean")), norm(emb.get("test", -1, "mean"))
    t0 = time.perf_counter()
    g = GridSearchCV(LogisticRegression(max_iter=3000), {"C": [0.1, 1, 10, 100]},
                     cv=StratifiedKFold(5, shuffle=True, random_state=seed), n_jobs=1).fit(Xtr, emb.labels["train"])
    return _baseline_row("MiniLM-L6 sentence embedding + logistic regression", g.best_estimator_.predict(Xte),
                         emb.labels["test"], time.perf_counter() - t0, f"C={g.best_params_['C']} by 5-fold CV on train")


def _baseline_row(name, pred, y, seconds, note) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    return {"method": name, "acc": float(accuracy_score(y, pred)), "macro_f1": float(f1_score(y, pred, average="macro")),
            "train_seconds": seconds, "note": note}


# ---------------------------------------------------------------------------------------------
# One dataset


def best_vs_last(ds, preps, seeds, workers: int = 1) -> dict:
    """Per model, the same head and seeds on its CV-best single layer and on its last layer: single-model
    grid rows, so they resume from checkpoints and train ``workers`` at a time like the grid."""
    from dataclasses import replace

    from layerfuse.model.sources import SourceSpec
    from layerfuse.cache.layout import grid_checkpoint_dir
    from layerfuse.run.grid import run_grid

    variants, where = [], []
    for p in preps:
        prof = p.profiles[p.pooling]
        for name, layer in [("best", prof.best("probe_acc")["start"]), ("last", prof.n_layers)]:
            variants.append(replace(p, spec=SourceSpec(p.ref, p.pooling, [layer], "single", p.spec.fingerprint)))
            where.append((p.ref, name, layer))
    grid = run_grid(ds, variants, [], seeds=seeds, configs=[((i,), "concat", "mlp") for i in range(len(variants))],
                    checkpoint_dir=grid_checkpoint_dir(), workers=workers, progress=True)
    out = {p.ref: {"pooling": p.pooling} for p in preps}
    for (ref, name, layer), r in zip(where, grid.rows):
        out[ref][name] = {"layer": layer, "acc_mean": r["acc_mean"], "acc_std": r["acc_std"], "f1_mean": r["f1_mean"],
                          "f1_std": r["f1_std"]}
    return out


def _predict_child(directory, texts):

    from layerfuse.pipeline import load

    t0 = time.perf_counter()
    pipe = load(directory)
    pipe.predict(texts[:8])  # loads every backbone, warms up
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    pipe.predict(texts)
    seconds = time.perf_counter() - t0
    return {"load_seconds": t_load, "latency_ms_per_text": 1000 * seconds / len(texts),
            "peak_rss_mb": peak_rss_mb(), "peak_memory_method": "VmHWM"}


def configuration_resources(grid, texts) -> list[dict]:
    """Per model set, the cost of its saved classifier, measured in a fresh process: peak memory,
    backbone loading, and prediction latency per text from raw text (one batch of ``texts``, models
    loaded). Measured on the set's best fusion by validation; the fusion head is a few MB and
    microseconds, so the backbones make the cost. Head training time is the grid row's."""
    import tempfile

    out = []
    by_set: dict[str, int] = {}
    for i, r in enumerate(grid.rows):
        j = by_set.get(r["models"])
        if j is None or validation_key(r) > validation_key(grid.rows[j]):
            by_set[r["models"]] = i
    for models, i in by_set.items():
        r = grid.rows[i]
        with tempfile.TemporaryDirectory() as tmp:
            grid.pipeline_for(i).save(Path(tmp) / "clf")
            m = in_child(_predict_child, str(Path(tmp) / "clf"), list(texts), what=f"prediction with {models}")
        m.update(models=models, n_models=r["n_models"], fusion=r["fusion"], head=r["head"], params=r["params"],
                 train_seconds=r["train_seconds"], texts=len(texts))
        print(f"  {models:<60} {m['peak_rss_mb']:7.0f} MB  {m['latency_ms_per_text']:7.1f} ms/text", flush=True)
        out.append(m)
    return out


def machine_info() -> dict:
    """What the numbers were measured on."""
    import torch

    from layerfuse.embed.device import bf16_instructions, fast_bf16

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        mem_gb = None
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem_gb, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "native_bf16": fast_bf16("cpu"),
            "bf16_instructions": bf16_instructions(),
            "python": platform.python_version(), "os": platform.platform(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def saved_profiles(out: Path, models: list[str], max_length: int, dtype: str, previous: dict | None) -> dict:
    """Profiles a previous run of this dataset wrote, when that run extracted with the same max
    length and dtype (its summary.json says; prepare_models checks labels and depth)."""
    from layerfuse.scoring.layer_profile import LayerProfile

    if not previous or previous.get("max_length") != max_length or previous.get("dtype") != dtype:
        return {}
    found = {}
    for m in models:
        for pooling in ("mean", "last"):
            f = out / f"profile_{m.replace('/', '_')}_{pooling}.json"
            if f.exists():
                found.setdefault(m, {})[pooling] = LayerProfile.from_json(f)
    return found


RESOURCE_KEYS = ("peak_rss_mb", "extract_seconds", "load_seconds", "tokens_computed", "tokens_per_second",
                 "texts_per_second", "cache_bytes", "truncated", "cache_hits", "subset_of")


def extraction_resources(out: Path, model: str, st: dict, max_length: int, dtype: str,
                         previous: dict | None = None) -> dict:
    """A model's extraction cost for the resource table. When this run read the cache, the cost is that
    of the run that computed it: ``extraction_MODEL.json``, written when it was computed, or else the
    per-model resources of the previous ``summary.json`` (runs before the records existed), saved
    as the record from then on."""
    record = out / f"extraction_{model}.json"
    if not st.get("cache_hits"):  # computed now: recorded with when and on what
        info = machine_info()
        st = {**st, "measured_on": {"date": time.strftime("%Y-%m-%d"), "cpu": info["cpu"], "cores": info["cores"]}}
        record.write_text(json.dumps(st, indent=2, default=str))
    elif record.exists():
        old = json.loads(record.read_text())
        if old.get("max_length") == max_length and old.get("dtype") == dtype:
            st = old
    elif previous and previous.get("max_length") == max_length and previous.get("dtype") == dtype:
        old = previous.get("resources", {}).get(model) or {}
        if old.get("cache_hits") == 0:
            st = {**old, "model": model, "max_length": max_length, "dtype": dtype,
                  "recorded_from": f"summary.json of the run on {previous.get('date')}"}
            record.write_text(json.dumps(st, indent=2, default=str))
    res = {k: st.get(k) for k in RESOURCE_KEYS}
    if st.get("subset_of"):  # read out of a larger entry (R8 out of R52): name the dataset it came from
        res["subset_of_dataset"] = _dataset_of_entries(set(st["subset_of"].values()), model)
    return res


def grid_settings(seeds: list[int]) -> dict:
    """The training settings run_grid uses by default (the reproduction changes none), as its CV
    checkpoints key them."""
    from layerfuse import config as C

    return {"seeds": [int(x) for x in seeds], "proj_dim": C.DEFAULT_PROJ_DIM, "max_epochs": C.DEFAULT_MAX_EPOCHS,
            "patience": C.DEFAULT_PATIENCE, "val_fraction": C.DEFAULT_VAL_FRACTION, "lr": C.DEFAULT_LR,
            "batch_size": C.DEFAULT_BATCH_SIZE}


def greedy_search(ds, preps, fusions, heads, seeds, cv_folds, beam,
                  metric: str = C_DEFAULT_CHOOSE_METRIC) -> tuple[list[tuple], dict]:
    """Model sets by greedy forward selection on CV on train (layerfuse.run.search), once over every
    source and once over the models alone (no lexical source: the paper's question), per fusion.
    Returns the grid configurations (every source alone, each set on each path) and the paths by
    name. CV scores are checkpointed beside the grid rows, so an interrupted search resumes."""
    from layerfuse.cache.layout import grid_checkpoint_dir
    from layerfuse.model.lexical import is_lexical
    from layerfuse.run.grid import cv_scorer
    from layerfuse.run.search import greedy_configs, greedy_paths
    from layerfuse.run.selection_rules import cv_metric

    names = [p.ref for p in preps]
    score = cv_scorer(ds, preps, grid_settings(seeds), cv_folds, grid_checkpoint_dir())
    y = ds.splits["train"].labels
    groups = {"all sources": None}
    models_only = [i for i, p in enumerate(preps) if not is_lexical(p.ref)]
    if len(models_only) < len(preps):
        groups["models only"] = models_only
    configs, searched = [], {}
    for group, cand in groups.items():
        paths = greedy_paths(names, y, fusions, lambda sub, f: score(sub, f, heads[0]), candidates=cand, beam=beam,
                             metric=metric)
        for c in greedy_configs(len(preps), [], fusions, heads, paths=paths):
            if c not in configs:
                configs.append(c)
        searched[group] = {f: {"path": ["+".join(names[i] for i in sub) for sub in g["path"]],
                               "cv_score": [cv_metric(score(sub, f, heads[0]), metric)[0] for sub in g["path"]],
                               "stopped": g["stopped"], "scored": g["scored"], "exhaustive": g["exhaustive"]}
                           for f, g in paths.items()}
    return configs, {"folds": cv_folds, "beam": beam, "head": heads[0], "metric": metric, "groups": searched}


def models_only_choice(rows: list[dict], lexical: list[str], rule: str,
                       metric: str = C_DEFAULT_CHOOSE_METRIC) -> dict | None:
    """The row ``rule`` picks by ``metric`` among the rows without a lexical source (None when no
    row has one)."""
    from layerfuse.run.selection_rules import choose

    if not lexical:
        return None
    keep = [r for r in rows if not set(r["models"].split("+")) & set(lexical)]
    if not keep:
        return None
    r = keep[choose(keep, rule, metric)]
    return {k: r.get(k) for k in ("models", "fusion", "head", "n_models", "acc_mean", "acc_std", "f1_mean",
                                  "f1_std", "cv_f1_mean", "cv_acc_mean", "val_f1_mean", "val_acc_mean")}


def run_dataset(name: str, models: list[str], fusions: list[str], seeds: list[int], dtype: str,
                combos: str = "all", extra: list[str] | None = None, workers: int = 1,
                heads: list[str] | None = None, search: str = "grid", choose_by: str = "validation",
                cv_folds: int = 5, max_length: int | None = None, beam: int | None = None,
                window_shortlist: int | None = None, choose_metric: str = C_DEFAULT_CHOOSE_METRIC) -> None:
    from layerfuse import report
    from layerfuse.data.builtin import load_builtin
    from layerfuse.model.fusion import FUSIONS as FUSION_REGISTRY
    from layerfuse.cache.layout import grid_checkpoint_dir, profile_checkpoint_dir
    from layerfuse.model.lexical import is_lexical
    from layerfuse.run.grid import grid_configs, run_grid
    from layerfuse.run.prepare import prepare_models
    from layerfuse.run.workers import worker_threads

    out = RESULTS / name
    out.mkdir(parents=True, exist_ok=True)
    ds = load_builtin(name)
    max_length = max_length or MAX_LENGTH[name]
    previous = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else None
    resources = {}
    for m in models:
        if is_lexical(m):  # tfidf runs no model: nothing to extract
            continue
        print(f"[{name}] extracting {m} (max length {max_length}, {dtype})", flush=True)
        st = extract_isolated(m, name, ["mean", "last"], max_length, dtype)
        resources[m] = extraction_resources(out, m, st, max_length, dtype, previous)
    t0 = time.perf_counter()
    preps = prepare_models(ds, models, poolings=["mean", "last"], layers="auto", eval_test=True,
                           extraction={"max_length": max_length, "dtype": dtype}, progress=True,
                           saved_profiles=saved_profiles(out, models, max_length, dtype, previous),
                           profile_dir=profile_checkpoint_dir(),
                           window_shortlist=window_shortlist)  # None: every window (Figure 3)
    prof = report.write_profile_outputs(preps, out, dataset=name)
    print(f"[{name}] profiles done in {time.perf_counter() - t0:.0f} s", flush=True)
    bvl = best_vs_last(ds, [p for p in preps if not is_lexical(p.ref)], seeds, workers)
    heads = heads or ["mlp"]
    searched = None
    if search == "greedy":
        configs, searched = greedy_search(ds, preps, fusions, heads, seeds, cv_folds, beam, choose_metric)
    else:
        configs = grid_configs(len(preps), fusions, heads=heads, combos=combos)
        full_set_only = [f for f in FUSION_REGISTRY if f not in fusions] if extra is None else extra
        if len(preps) > 1:
            full = tuple(range(len(preps)))
            configs += [(full, f, h) for f in full_set_only if f not in fusions for h in heads]
    grid = run_grid(ds, preps, fusions, seeds=seeds, configs=configs, checkpoint_dir=grid_checkpoint_dir(),
                    workers=workers, rule=choose_by, cv_folds=cv_folds, metric=choose_metric, progress=True)
    if searched is not None and choose_by == "validation":  # the search's CV scores, read back, for the tables
        from layerfuse.run.grid import cv_scorer
        from layerfuse.run.selection_rules import add_cv_scores

        add_cv_scores(grid.rows, grid.results, cv_scorer(ds, preps, grid_settings(seeds), cv_folds,
                                                         grid_checkpoint_dir()), cv_folds, metric=choose_metric)
    fused = report.write_fusion_outputs(grid, preps, out, dataset=name)
    if searched is not None:
        fused["search"] = searched
    fused["models_only"] = models_only_choice(grid.rows, [p.ref for p in preps if is_lexical(p.ref)], choose_by,
                                              choose_metric)
    baselines = tfidf_baselines(ds) + [minilm_baseline(ds)]
    per_set = configuration_resources(grid, ds.splits["test"].texts[:LATENCY_TEXTS])
    chosen_set = grid.best["models"]
    latency = {"chosen": next(r["latency_ms_per_text"] for r in per_set if r["models"] == chosen_set) / 1000}
    summary = {
        "dataset": name, "date": time.strftime("%Y-%m-%d"), "dtype": dtype, "max_length": max_length, "seeds": seeds,
        "models": models, "fusions": fusions, "search": search, "choose_by": choose_by,
        "choose_metric": choose_metric, "cv_folds": cv_folds,
        "window_shortlist": window_shortlist,
        "machine": {**machine_info(), **({"grid_workers": workers, "grid_threads_per_worker": worker_threads(workers)}
                                         if workers > 1 else {})},
        "resources": resources, "profile": prof, "best_vs_last": bvl, "fusion": fused, "baselines": baselines,
        "prediction_latency_s_per_text": latency, "configuration_resources": per_set,
        "seconds_after_extraction": round(time.perf_counter() - t0, 1), "grid_rows_resumed": grid.resumed,
        "command": " ".join(["python benchmarks/reproduce.py --datasets", name]
                            + ([f"--models {','.join(models)}"] if models != MODELS else [])
                            + ([f"--fusions {','.join(fusions)}"] if fusions != FUSIONS else [])
                            + ([f"--combos {combos}"] if combos != "all" else [])
                            + ([f"--extra-fusions {','.join(extra) or 'none'}"] if extra is not None else [])
                            + ([f"--seeds {len(seeds)}"] if len(seeds) != 3 else [])
                            + [f"--dtype {dtype}"]
                            + ([f"--heads {','.join(heads)}"] if heads != ["mlp"] else [])
                            + ([f"--search {search}"] if search != "grid" else [])
                            + ([f"--beam {beam}"] if beam else [])
                            + ([f"--choose-by {choose_by}"] if choose_by != "validation" else [])
                            + ([f"--choose-metric {choose_metric}"] if choose_metric != C_DEFAULT_CHOOSE_METRIC else [])
                            + ([f"--cv-folds {cv_folds}"] if cv_folds != 5 and (search != "grid"
                                                                               or choose_by != "validation") else [])
                            + ([f"--max-length {max_length}"] if max_length != MAX_LENGTH[name] else [])
                            + ([f"--window-shortlist {window_shortlist}"] if window_shortlist else [])),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    remove_other_models_outputs(out, models)
    report.write_markdown_report(out)
    print(f"[{name}] wrote {out}", flush=True)


def remove_other_models_outputs(out: Path, models: list[str]) -> list[str]:
    """Delete the per-model profiles and plots an earlier run with other models left in ``out``
    (``profile_M_P.*``, ``windows_M.png``, ``agreement_M.png``), so the folder holds this run's
    outputs only. ``extraction_M.json`` stays: it records what computing that cache entry cost,
    which a later run that reads the entry back quotes."""
    removed = []
    for f in sorted(out.iterdir()):
        stem = f.stem
        if stem.startswith(("windows_", "agreement_")):
            model = stem.split("_", 1)[1]
        elif stem.startswith("profile_") and f.suffix in (".json", ".csv"):
            model = stem[len("profile_"):].rsplit("_", 1)[0]
        else:
            continue
        if model not in models:
            f.unlink()
            removed.append(f.name)
    return removed


# ---------------------------------------------------------------------------------------------
# docs/RESULTS.md from whatever result files exist


def write_docs() -> Path:
    """docs/RESULTS.md and the fusion bar charts it shows, drawn again from each dataset's
    ``fusion_results.json`` by the current plotting code (same table in, same figure out)."""
    from layerfuse.report.plots import plot_fusion_chart

    for table in sorted(RESULTS.glob("*/fusion_results.json")):
        plot_fusion_chart(json.loads(table.read_text()), table.parent, dataset=table.parent.name)
    path = ROOT / "docs" / "RESULTS.md"
    path.write_text(render_docs())
    return path


def render_docs() -> str:
    """docs/RESULTS.md, made from the result files only."""
    lines = ["# Results: the paper's experiments, reproduced with layerfuse", "",
             "Every number on this page is read from `benchmarks/results/reproduce/DATASET/summary.json`, written by",
             "`python benchmarks/reproduce.py --datasets DATASET`; rebuild this page with",
             "`python benchmarks/reproduce.py --docs`. Layer choices, early stopping and the chosen configuration",
             "use training / validation data only; test is scored once per trained model.", ""]
    done = sorted(p.parent.name for p in RESULTS.glob("*/summary.json"))
    missing = [d for d in MAX_LENGTH if d not in done]
    if missing:
        lines += [f"**Not yet run:** {', '.join(missing)} (see the open issue; the script resumes through the cache).", ""]
    summaries = {name: json.loads((RESULTS / name / "summary.json").read_text()) for name in done}
    greedy = [n for n, x in summaries.items() if x.get("search") == "greedy"]
    if greedy and len(greedy) < len(summaries):  # say which runs have issue 16's sources and search
        lines += ["**Two generations of runs.** " + " ".join(
                      f"{n}: {len(summaries[n]['models'])} sources ({', '.join(summaries[n]['models'])}), model sets "
                      f"searched greedily by CV on train, the configuration {chosen_by(summaries[n])}." for n in greedy)
                  + f" {', '.join(n for n in summaries if n not in greedy)}: the earlier grid of every set of the four "
                  "packaged models, chosen on validation; not yet rerun with the new sources (each section names the "
                  "command that made it).", ""]
    dtypes = {}
    for name, s in summaries.items():
        fast = s["machine"].get("native_bf16")
        dtypes.setdefault((s["dtype"], fast), []).append(name)
    if len({d for d, _ in dtypes}) > 1:  # runs on different machines: say which dtype each used and why
        parts = [f"{', '.join(names)} in {d} (bf16 {'faster' if fast else 'slower'} than fp32 on the machine that ran "
                 "it)" for (d, fast), names in sorted(dtypes.items(), key=lambda kv: kv[1])]
        matched = all((d == "bfloat16") == bool(fast) for d, fast in dtypes)
        lines += ["Embeddings: " + "; ".join(parts)
                  + (": each run used the dtype its CPU computes faster, as `--dtype auto` would" if matched else "")
                  + " (bf16 changes layer scores by less than their fold-to-fold std: "
                  "[benchmarks](benchmarks.md#does-bf16-cost-accuracy)).", ""]
    if summaries:
        rules = sorted({chosen_by(x) for x in summaries.values()})
        lines += [f"| dataset | {rules[0] if len(rules) == 1 else 'chosen configuration'} | test acc | target | "
                  "best single model | best baseline | above every comparison? |",
                  "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
        for name, s in summaries.items():
            rows = s["fusion"]["rows"]
            ch = chosen_row(rows)
            single = max((r for r in rows if r["n_models"] == 1), key=lambda r: r["acc_mean"])
            base = max(s["baselines"], key=lambda b: b["acc"])
            t = TARGETS.get(name)
            lines.append(f"| {name} | {ch['models']} [{fusion_label(ch)}] | {100 * ch['acc_mean']:.2f} ± "
                         f"{100 * ch['acc_std']:.2f} | {'' if t is None else f'{100 * t:.1f}'}"
                         f"{'' if t is None else (' met' if ch['acc_mean'] >= t else ' missed')} | "
                         f"{100 * single['acc_mean']:.2f} ({single['models']}) | {100 * base['acc']:.2f} | "
                         f"{_above_all(s)} |")
        lines += ["", "*Comparisons*: each model's best single layer (chosen by CV on train) and, where it differs, its "
                  "last layer, with the same head and seeds, and every baseline; each dataset's findings name the "
                  "ones at or above the chosen fusion. Differences smaller than the 3-seed std (±) are ties. *Best single "
                  "model*: a model alone with its auto-selected layers (a row of the fusion grid, where layers may "
                  "be averaged), the bar fusion has to clear to help; it is not one of the comparisons.", ""]
        lines += across_datasets(summaries)
    for name in done:
        s = summaries[name]
        rows = s["fusion"]["rows"]
        chosen = chosen_row(rows)
        took = s.get("seconds_after_extraction")
        lines += [f"## {name}", "", f"Command: `{s['command']}` ({s['date']}, {s['dtype']}, max length "
                  f"{s['max_length']}, seeds {s['seeds']}, {s['machine']['cores']} cores"
                  + (f"; {took / 60:.0f} min after extraction: profiles, grid, baselines, latency" if took else "")
                  + (f", {s['grid_rows_resumed']} of {len(rows)} grid rows read back from an earlier run's checkpoints"
                     if took and s.get("grid_rows_resumed") else "")
                  + ").", ""]
        mach = s["machine"]
        if mach.get("memory_gb"):
            lines += [f"Machine: {mach['cpu']}, {mach['cores']} cores, {mach['memory_gb']:.0f} GB memory, "
                      f"{mach['os']}, Python {mach['python']}, torch {mach['torch']} ({mach['torch_threads']} threads, "
                      f"bf16 faster than fp32: {'yes' if mach['native_bf16'] else 'no'}"
                      + (f", {mach['bf16_instructions']}" if mach.get("bf16_instructions") else "")
                      + f"); GPU: {mach.get('gpu') or 'none'}"
                      + (f"; grid rows trained {mach['grid_workers']} at a time, {mach['grid_threads_per_worker']} "
                         "thread(s) each" if mach.get("grid_workers") else "") + ".", ""]
        lines += ["| method | test acc | test macro-F1 |", "| --- | ---: | ---: |"]
        lines.append(f"| **layerfuse, {chosen_by(s)}**: {chosen['models']} [{fusion_label(chosen)}] | "
                     f"**{100 * chosen['acc_mean']:.2f} ± {100 * chosen['acc_std']:.2f}** | "
                     f"{100 * chosen['f1_mean']:.2f} ± {100 * chosen['f1_std']:.2f} |")
        for m, b in s["best_vs_last"].items():
            for k in ("best", "last"):
                lines.append(f"| {m}, {k} layer ({b[k]['layer']}, {b['pooling']}) | {100 * b[k]['acc_mean']:.2f} ± "
                             f"{100 * b[k]['acc_std']:.2f} | {100 * b[k]['f1_mean']:.2f} ± {100 * b[k]['f1_std']:.2f} |")
        for b in s["baselines"]:
            lines.append(f"| {b['method']} ({b['note']}) | {100 * b['acc']:.2f} | {100 * b['macro_f1']:.2f} |")
        lines += [""] + search_lines(s)
        lines += ["What the numbers say (generated from the same file):", ""] + [f"* {f}" for f in findings(s)]
        for pooling in ("last", "mean"):
            lines += ["", f"![layer profile, {pooling} pooling](../benchmarks/results/reproduce/{name}/"
                          f"layer_profile_{pooling}.png)"]
        lines += ["", f"![fusion](../benchmarks/results/reproduce/{name}/fusion_results.png)", "",
                  f"![complementarity](../benchmarks/results/reproduce/{name}/complementarity.png)", "",
                  "Resources per model (extraction of train + validation + test in a child process; splits already "
                  "in the cache are read, not recomputed, and not counted in tokens/s):", "",
                  f"| model | peak memory MB | extraction s | tokens/s | splits from cache | cache MB | "
                  f"texts cut at {s['max_length']} tokens |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        n_texts = sum(len(v) for v in _split_sizes(name).values())
        subset = {}
        for m, r in s["resources"].items():
            tps = r.get("tokens_per_second")
            cut = r.get("truncated", 0)
            if r.get("subset_of"):
                subset[m] = r.get("subset_of_dataset") or "a larger cache entry"
            lines.append(f"| {m} | {r['peak_rss_mb']:.0f} | {r['extract_seconds']:.0f} | "
                         f"{'—' if tps is None else f'{tps:.0f}'} | {r.get('cache_hits', 0)} | "
                         f"{r['cache_bytes'] / 1e6:.1f} | {'—' if cut is None else cut} of {n_texts} |")
        if subset:
            src = sorted(set(subset.values()))
            # The larger dataset's table shows this extraction only when its run used the same settings.
            same = all(summaries.get(d, {}).get("dtype") == s["dtype"]
                       and summaries.get(d, {}).get("max_length") == s["max_length"] for d in src)
            where = (f"is in the {', '.join(src)} table" if same else
                     f"({s['dtype']}, max length {s['max_length']}; not the run in the {', '.join(src)} table) is "
                     "recorded in " + ", ".join(f"`benchmarks/results/reproduce/{d}/extraction_MODEL.json`" for d in src))
            lines += ["", f"Every {name} text is also in {', '.join(src)} (same settings), so {', '.join(subset)} "
                          f"were read out of the {', '.join(src)} cache entries: no forward pass, no cache of their "
                          f"own; their extraction cost {where}."]
        per_set = s.get("configuration_resources")
        lat = s.get("prediction_latency_s_per_text", {}).get("chosen")
        if per_set:
            lines += ["", f"Resources per configuration (its saved classifier loaded in a fresh process, then one batch "
                          f"of {per_set[0]['texts']} test texts predicted from raw text; measured on each model set's "
                          "fusion chosen by validation). Memory and latency grow with every backbone added; the "
                          "fusion head itself is small:", "",
                          "| models | fusion | peak memory MB | load s | ms per text | head params | head training s per seed |",
                          "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
            for r in sorted(per_set, key=lambda r: (r["n_models"], r["latency_ms_per_text"])):
                lines.append(f"| {r['models']} | {fusion_label(r)} | {r['peak_rss_mb']:.0f} | {r['load_seconds']:.1f} | "
                             f"{r['latency_ms_per_text']:.1f} | {r['params']:,} | {r['train_seconds']:.1f} |")
        elif lat:
            lines += ["", f"Prediction with the chosen classifier (all its backbones, from raw text, batches of 200 "
                          f"test texts, models loaded): {1000 * lat:.1f} ms per text. Head training time per "
                          "configuration is in the `train s` column of the full table."]
        lines += ["", f"Full tables: [report.md](../benchmarks/results/reproduce/{name}/report.md).", ""]
    return "\n".join(lines) + "\n"


def _dataset_of_entries(keys: set, model: str) -> str | None:
    """Which reproduced dataset's recorded extraction made these cache entries."""
    for rec in RESULTS.glob(f"*/extraction_{model}.json"):
        made = {sp.get("key") for sp in json.loads(rec.read_text()).get("splits", {}).values()}
        if keys <= made:
            return rec.parent.name
    return None


def _split_sizes(name: str) -> dict:
    from layerfuse.data.builtin import load_builtin

    return {k: v.texts for k, v in load_builtin(name).splits.items()}


def chosen_row(rows: list[dict]) -> dict:
    """The grid row run_grid chose (on validation, or by CV on train: ``chosen_by``)."""
    return next(r for r in rows if r.get("chosen_on_validation"))


def chosen_by(s: dict) -> str:
    """How a summary's configuration was chosen, as the docs say it."""
    rule = s.get("choose_by", "validation")
    metric = metric_label(s.get("choose_metric", "macro-f1"))
    if rule == "validation":
        return f"chosen on validation {metric}"
    return f"chosen by {s.get('cv_folds', 5)}-fold CV {metric} on train" + (" (one-SE rule)" if rule == "cv-1se" else "")



def search_lines(s: dict) -> list[str]:
    """The greedy search's paths (model sets by CV on train), per source group and fusion."""
    g = s["fusion"].get("search")
    if not g:
        return []
    metric = metric_label(g.get("metric", "macro-f1"))
    out = [f"Model sets searched greedily ({g['folds']}-fold CV {metric} on train, {g['head']} head"
           + (f", beam {g['beam']}" if g.get("beam") else "") + "; a set is kept while it gains more than the CV "
           "standard error):", "", f"| sources | fusion | path (CV {metric} on train) | sets scored | why it stopped |",
           "| --- | --- | --- | ---: | --- |"]
    for group, by_f in g["groups"].items():
        for f, p in by_f.items():
            path = " → ".join(f"{m} ({100 * v:.2f})" for m, v in zip(p["path"], p.get("cv_score", p.get("cv_f1"))))
            out.append(f"| {group} | {f} | {path} | {p['scored']} of {p['exhaustive']} | {p['stopped']} |")
    return out + [""]


def _head_note(r: dict) -> str:
    head = r.get("head", "mlp")
    return "" if head == "mlp" else f" ({head} head)"


def fusion_label(r: dict) -> str:
    """A row's fusion as the docs name it: the head is named when it is not the paper's MLP."""
    return r["fusion"] + _head_note(r)


def model_label(r: dict) -> str:
    """A row's model set, with its head named when it is not the paper's MLP."""
    return r["models"] + _head_note(r)


def fusions_beating_members(rows: list[dict]) -> tuple[int, list[dict]]:
    """How many multi-model rows beat, on test, the best single model they contain (same head); and those rows."""
    singles = {(r["models"], r.get("head", "mlp")): r["acc_mean"] for r in rows if r["n_models"] == 1}
    multi = [r for r in rows if r["n_models"] > 1]
    return sum(r["acc_mean"] > max(singles[(m, r.get("head", "mlp"))] for m in r["models"].split("+"))
               for r in multi), multi


def across_datasets(summaries: dict) -> list[str]:
    """Which layers win where, when fusion helps, and what it costs, over every dataset run."""
    lines = ["## Across datasets", "",
             "Layer chosen by 5-fold CV on train for each model (the pooling with the best CV score), as a fraction "
             "of the model's depth, and what it gains on test over the last layer (same head, 3 seeds):", "",
             "| model | " + " | ".join(summaries) + " |", "| --- |" + " ---: |" * len(summaries)]
    models = list(dict.fromkeys(m for s in summaries.values() for m in s["best_vs_last"]))
    for m in models:
        cells = []
        for s in summaries.values():
            b = s["best_vs_last"].get(m)
            prof = next((p for p in s["profile"]["models"] if p["model"] == m), None)
            if not b or not prof:
                cells.append("—")
                continue
            d = 100 * (b["best"]["acc_mean"] - b["last"]["acc_mean"])
            cells.append(f"{b['best']['layer']}/{prof['n_layers']} ({b['best']['layer'] / prof['n_layers']:.2f}), "
                         f"{d:+.2f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "Fusion against the best single model, per dataset (test accuracy; the chosen row is picked on "
              "train or validation, the others are shown for analysis):", "",
              "| dataset | best single model | chosen fusion | gain | fusions beating their best member | "
              "chosen: ms per text | best single: ms per text |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, s in summaries.items():
        rows = s["fusion"]["rows"]
        chosen = chosen_row(rows)
        best = max((r for r in rows if r["n_models"] == 1), key=lambda r: r["acc_mean"])
        helped, multi = fusions_beating_members(rows)
        per_set = {r["models"]: r for r in s.get("configuration_resources") or []}
        ms = lambda m: f"{per_set[m]['latency_ms_per_text']:.1f}" if m in per_set else "—"  # noqa: E731
        lines.append(f"| {name} | {100 * best['acc_mean']:.2f} ({model_label(best)}) | {100 * chosen['acc_mean']:.2f} "
                     f"({chosen['models']}, {fusion_label(chosen)}) | {100 * (chosen['acc_mean'] - best['acc_mean']):+.2f} "
                     f"| {helped} of {len(multi)} | {ms(chosen['models'])} | {ms(best['models'])} |")
    lines.append("")
    return lines


def comparisons(s: dict) -> list[tuple[str, float]]:
    """What the chosen configuration is meant to beat, with test accuracy: each model's best single layer
    and (when it differs) its last layer, same head and seeds; every baseline."""
    out = []
    for m, b in s["best_vs_last"].items():
        out.append((f"{m} best layer ({b['best']['layer']})", b["best"]["acc_mean"]))
        if b["last"]["layer"] != b["best"]["layer"]:
            out.append((f"{m} last layer ({b['last']['layer']})", b["last"]["acc_mean"]))
    out += [(b["method"], b["acc"]) for b in s["baselines"]]
    return out


def _comparisons_not_beaten(s: dict) -> tuple[int, list[tuple[str, float]], list[tuple[str, float]]]:
    """How many comparisons there are; those at or above the chosen configuration's test accuracy;
    and those below it by less than its 3-seed std (ties, though it is nominally above them)."""
    chosen = chosen_row(s["fusion"]["rows"])
    comp = comparisons(s)
    higher = [(n, a) for n, a in comp if a >= chosen["acc_mean"]]
    ties = [(n, a) for n, a in comp if chosen["acc_mean"] - chosen["acc_std"] < a < chosen["acc_mean"]]
    return len(comp), higher, ties


def _above_all(s: dict) -> str:
    n_comp, higher, ties = _comparisons_not_beaten(s)
    if higher:
        return f"no: {len(higher)} of {n_comp} at or above it"
    return "yes" + (f", but {len(ties)} of {n_comp} within its std (a tie)" if ties else "")


def findings(s: dict) -> list[str]:
    """Plain-language statements, each computed from the summary it describes."""
    out = []
    rows = s["fusion"]["rows"]
    chosen = chosen_row(rows)
    singles = [r for r in rows if r["n_models"] == 1]
    best_single = max(singles, key=lambda r: r["acc_mean"])
    for m, b in s["best_vs_last"].items():
        d = 100 * (b["best"]["acc_mean"] - b["last"]["acc_mean"])
        prof = next(p for p in s["profile"]["models"] if p["model"] == m)
        out.append(f"{m}: the layer chosen by CV on train is {b['best']['layer']} of {prof['n_layers']} "
                   f"(depth {b['best']['layer'] / prof['n_layers']:.2f}); on test it is {d:+.2f} points against "
                   f"the last layer.")
    out.append(f"The configuration {chosen_by(s)} ({chosen['models']}, {fusion_label(chosen)}) scores "
               f"{100 * chosen['acc_mean']:.2f} on test, {100 * (chosen['acc_mean'] - best_single['acc_mean']):+.2f} "
               f"points against the best single model ({model_label(best_single)}, {100 * best_single['acc_mean']:.2f}).")
    target = TARGETS.get(s["dataset"])
    tried = sorted({fusion_label(r) for r in rows if r["n_models"] > 1})
    if target is not None:
        gap = chosen["acc_mean"] - target
        out.append(f"Target {100 * target:.1f}: " + ("met" if gap >= 0 else
                   f"**missed by {-100 * gap:.2f} points** with what was tried here ({len(s['models'])} models, "
                   f"fusions {', '.join(tried)}, auto-selected layers, {len(s['seeds'])} seeds, "
                   f"{s['dtype']}, max length {s['max_length']})") + ".")
    mo = s["fusion"].get("models_only")
    if mo:
        from layerfuse.model.lexical import is_lexical

        lex = [m for m in s["models"] if is_lexical(m)]
        best_model = max((r for r in singles if not is_lexical(r["models"])), key=lambda r: r["acc_mean"])
        out.append(f"Models only (no {', '.join(lex)}; the paper's question): the same rule picks {mo['models']} "
                   f"({mo['fusion']}) at {100 * mo['acc_mean']:.2f} ± {100 * mo['acc_std']:.2f} on test, "
                   f"{100 * (mo['acc_mean'] - best_model['acc_mean']):+.2f} points against the best model alone "
                   f"({best_model['models']}, {100 * best_model['acc_mean']:.2f}) and "
                   f"{100 * (mo['acc_mean'] - chosen['acc_mean']):+.2f} points against the configuration chosen "
                   "with every source.")
    if all(r.get("cv_f1_mean") is not None for r in rows):  # every rule can be read off the same rows
        from layerfuse.run.selection_rules import METRICS, RULES, choose

        metrics = [m for m in METRICS if all(r.get(f"cv_{METRICS[m]}_mean") is not None for r in rows)]
        picks = [(f"{rule} by {metric_label(m)}", rows[choose(rows, rule, m)]) for m in metrics for rule in RULES]
        out.append("Each selection rule on these rows (test accuracy for analysis only; the rules read validation or "
                   "CV on train): " + "; ".join(f"{rule} → {r['models']} ({fusion_label(r)}) {100 * r['acc_mean']:.2f}"
                                                for rule, r in picks) + ".")
    best_b = max(s["baselines"], key=lambda b: b["acc"])
    out.append(f"Best baseline: {best_b['method']} at {100 * best_b['acc']:.2f}; the chosen fusion is "
               f"{100 * (chosen['acc_mean'] - best_b['acc']):+.2f} points from it.")
    n_comp, higher, ties = _comparisons_not_beaten(s)
    named = lambda pairs: ", ".join(  # noqa: E731
        f"{n} {100 * a:.2f} ({100 * (a - chosen['acc_mean']):+.2f})" for n, a in pairs)
    out.append(f"Against the {n_comp} comparisons (each model's best layer and, where different, last layer; every "
               "baseline): "
               + ("above all of them" if not higher else
                  f"above {n_comp - len(higher)}; at or above the chosen fusion: " + named(higher))
               + (f"; below it by less than its std (±{100 * chosen['acc_std']:.2f}), so a tie: " + named(ties)
                  if ties else "") + ".")
    helped, multi = fusions_beating_members(rows)
    out.append(f"{helped} of {len(multi)} fusions beat the best single model they contain on test.")
    by_f = {}
    for r in multi:
        if r["fusion"] in s["fusions"]:
            by_f.setdefault(fusion_label(r), []).append(r["acc_mean"])
    out.append("Mean test accuracy over all model sets, per fusion: " + ", ".join(
        f"{f} {100 * np.mean(v):.2f}" for f, v in sorted(by_f.items(), key=lambda kv: -np.mean(kv[1]))) + ".")
    n_all = max(r["n_models"] for r in rows)
    full = sorted((r for r in rows if r["n_models"] == n_all and n_all > 1), key=lambda r: -r["acc_mean"])
    if len({r["fusion"] for r in full}) > len(s["fusions"]):
        out.append(f"Every fusion on the set of all {n_all} models (test accuracy, for analysis; validation chose "
                   "among them): " + ", ".join(f"{fusion_label(r)} {100 * r['acc_mean']:.2f}" for r in full) + ".")
    per_set = s.get("configuration_resources")
    if per_set:
        one = min((r for r in per_set if r["n_models"] == 1), key=lambda r: r["latency_ms_per_text"])
        big = max(per_set, key=lambda r: (r["n_models"], r["latency_ms_per_text"]))
        ch = next((r for r in per_set if r["models"] == chosen["models"]), None)
        out.append(f"Cost: the cheapest single model ({one['models']}) predicts in {one['latency_ms_per_text']:.1f} ms "
                   f"per text and {one['peak_rss_mb']:.0f} MB; all {big['n_models']} models together take "
                   f"{big['latency_ms_per_text']:.1f} ms and {big['peak_rss_mb']:.0f} MB"
                   + (f"; the chosen configuration {ch['latency_ms_per_text']:.1f} ms and {ch['peak_rss_mb']:.0f} MB"
                      if ch else "") + ".")
    return out


def main() -> None:
    from layerfuse.cli.args import workers_arg  # the CLI's --workers check: a whole number >= 1
    from layerfuse.embed.device import resolve_dtype

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="", help="comma-separated: sst2, mr, r8, r52")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--fusions", default=",".join(FUSIONS),
                    help="fusions tried on every model set; every other registered fusion is tried on the set of all "
                         "models (default: %(default)s)")
    ap.add_argument("--combos", default="all", choices=["all", "full"],
                    help="model sets: every set of 2..4 models, or only all of them (plus each model alone)")
    ap.add_argument("--extra-fusions", default=None,
                    help="fusions tried on the set of all models only (default: every other registered fusion; "
                         "'none' for none)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                    help="embedding dtype (default auto: bfloat16 where this CPU computes it faster than float32, "
                         "as measured by layerfuse; the dtype used is recorded and in the command written down)")
    ap.add_argument("--heads", default="mlp",
                    help="grid heads, comma-separated: mlp (the paper's) and/or logreg (default mlp); every "
                         "configuration is trained with each; the best/last-layer comparison uses mlp")
    ap.add_argument("--workers", type=workers_arg, default=1,
                    help="grid rows trained at a time, each in its own process with torch's threads divided "
                         "among them (default 1); see benchmarks/grid_workers.py for what it gains")
    ap.add_argument("--search", default="grid", choices=["grid", "greedy"],
                    help="model sets: grid (every set of --combos; --extra-fusions on the full set) or greedy "
                         "(forward selection by CV on train per fusion, over every source and over the models "
                         "without tfidf; for the larger source lists of issue 16)")
    ap.add_argument("--beam", type=int, default=None,
                    help="greedy search: candidates tried per step, most complementary first (default all)")
    ap.add_argument("--choose-by", default="validation", choices=["validation", "cv", "cv-1se"],
                    help="how the reported configuration is chosen (default validation; docs/selection.md)")
    ap.add_argument("--choose-metric", default=C_DEFAULT_CHOOSE_METRIC, choices=["macro-f1", "accuracy"],
                    help=f"what the choice and the greedy search rank by (default {C_DEFAULT_CHOOSE_METRIC}; "
                         "benchmarks/choose_metric.py compares them by nested CV on train)")
    ap.add_argument("--cv-folds", type=int, default=5, help="folds of the CV on train (greedy search, CV rules)")
    ap.add_argument("--max-length", type=int, default=None,
                    help=f"tokens per text (default per dataset: {MAX_LENGTH})")
    ap.add_argument("--window-shortlist", type=int, default=None,
                    help="score only the K averaged windows whose layers probe best (the library default 12; "
                         "chose as every window did in 18 of 18 profiles, docs/benchmarks.md); default: every "
                         "window, for the full window figures")
    ap.add_argument("--docs", action="store_true",
                    help="rebuild docs/RESULTS.md and its fusion bar charts from the result files")
    args = ap.parse_args()
    from layerfuse.cli.main import quiet_libraries
    from layerfuse.errors import LayerfuseError
    from layerfuse.validation import validate_choices

    quiet_libraries()
    extra = None if args.extra_fusions is None else [f for f in args.extra_fusions.split(",") if f and f != "none"]
    heads = [h for h in args.heads.split(",") if h]
    try:  # before hours of extraction, not after
        validate_choices(args.fusions.split(",") + (extra or []), heads, "auto")
    except LayerfuseError as exc:
        ap.error(str(exc))
    datasets = [x for x in args.datasets.split(",") if x]
    dtype = resolve_dtype(args.dtype, "cpu") if datasets else args.dtype
    for d in datasets:
        run_dataset(d, args.models.split(","), args.fusions.split(","), list(range(args.seeds)), dtype,
                    combos=args.combos, extra=extra, workers=args.workers, heads=heads, search=args.search,
                    choose_by=args.choose_by, cv_folds=args.cv_folds, max_length=args.max_length, beam=args.beam,
                    window_shortlist=args.window_shortlist, choose_metric=args.choose_metric)
    if args.docs or args.datasets:
        print(f"wrote {write_docs()}")


if __name__ == "__main__":
    main()
