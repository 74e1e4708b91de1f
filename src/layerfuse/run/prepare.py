"""Per model: extract, score every layer on train (profiles kept under the cache root), pick the
pooling and the layers by CV. Hands a :class:`ModelPrep` to the grid.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from layerfuse.config import (
    DEFAULT_FOLDS,
    DEFAULT_POOLINGS,
    DEFAULT_SELECT,
    DEFAULT_TOPK,
    DEFAULT_WINDOW_SHORTLIST,
    DEFAULT_WINDOWS,
)
from layerfuse.errors import LayerfuseError
from layerfuse.model.sources import SourceSpec, build_sources

if TYPE_CHECKING:
    from layerfuse.embed.extract import Embeddings
    from layerfuse.scoring.layer_profile import LayerProfile
    from layerfuse.scoring.selection import LayerSelection

__all__ = ["ModelPrep", "prepare_models", "profile_key"]


@dataclass
class ModelPrep:
    """One model's embeddings, layer profiles (per pooling) and chosen layers: what
    :func:`prepare_models` hands to the grid.

    ``spec`` is ``selection.source(ref, pooling, emb.fingerprint)``; ``seconds`` holds the time
    spent extracting (``extract``) and profiling (``profile``).
    """

    ref: str
    emb: Embeddings
    profiles: dict[str, LayerProfile]
    pooling: str
    selection: LayerSelection
    spec: SourceSpec
    seconds: dict[str, float] = field(default_factory=dict)

    def sources(self, split: str) -> list[np.ndarray]:
        return build_sources(self.spec, self.emb.array(split, self.pooling))


def prepare_models(ds, models: Sequence[str], *, poolings=DEFAULT_POOLINGS, layers: str = DEFAULT_SELECT,
                   k: int = DEFAULT_TOPK, folds: int = DEFAULT_FOLDS, windows: int = DEFAULT_WINDOWS, extraction: dict | None = None, cache_dir=None,
                   eval_test: bool = False, saved_profiles: dict | None = None, profile_dir=None,
                   window_shortlist: int | None = DEFAULT_WINDOW_SHORTLIST, profile_workers: int | None = None,
                   progress: bool = True, log=print) -> list[ModelPrep]:
    """Extract every model (train and test splits), score every layer on train, pick the pooling
    and layers by CV.

    ``saved_profiles`` (model -> pooling -> LayerProfile, e.g. read back with
    ``LayerProfile.from_json``) are reused instead of scoring again when they were made on the
    same training labels and number of layers; anything else is scored afresh.

    ``profile_dir`` (e.g. :func:`profile_checkpoint_dir`): each profile scored is saved there
    atomically as soon as it is done, under a key of what it scored (:func:`profile_key`), and
    read back by a later call instead of scoring again, so an interrupted run keeps the models
    it already profiled.

    ``window_shortlist``: score only that many averaged windows per profile (see
    :func:`~layerfuse.scoring.score_layers`; default ``config.DEFAULT_WINDOW_SHORTLIST``); 0 or None
    scores every window.

    ``profile_workers``: a model's poolings are profiled that many at a time, each in its own
    process (same numbers as one after another: the workers keep this process's thread count).
    None: one per core when the profile is large enough to repay starting a process
    (:data:`PARALLEL_PROFILE_VALUES`, or :data:`PARALLEL_PROFILE_VALUES_KEPT` where
    ``run.workers.keep_workers`` already holds a started one), else in this process."""
    from layerfuse.scoring.features import label_digest

    y_train = ds.splits["train"].labels
    digests = {"train": label_digest(np.asarray(y_train)),
               # The per-layer test column (analysis only) needs the test labels: hashed once, like train's.
               "test": (label_digest(np.asarray(ds.splits["test"].labels))
                        if eval_test and "test" in ds.splits else None)}
    score_kw = {"folds": folds, "windows": windows, "window_shortlist": window_shortlist or None,
                "saved_profiles": saved_profiles, "profile_dir": profile_dir, "profile_workers": profile_workers,
                "progress": progress, "log": log}
    return [_prepare_model(ref, ds, digests, poolings=poolings, layers=layers, k=k, extraction=dict(extraction or {}),
                           cache_dir=cache_dir, **score_kw)
            for ref in models]


def _prepare_model(ref: str, ds, digests: dict, *, poolings, layers: str, k: int, extraction: dict, cache_dir,
                   progress: bool, log, **score_kw) -> ModelPrep:
    """One model of :func:`prepare_models`: its embeddings, its profiles, its pooling and layers."""
    from layerfuse.embed.extract import extract
    from layerfuse.model.lexical import is_lexical, lexical_embeddings
    from layerfuse.scoring.selection import select_layers

    t0 = time.perf_counter()
    if is_lexical(ref):  # tfidf: fitted on train, scored like a one-layer model
        emb = lexical_embeddings(ref, ds, extraction, folds=score_kw["folds"])
    else:
        # Only the splits the run reads: train (profiles, heads, its validation carve) and test. A
        # dataset's own validation split is not used by the run, so it is not extracted either.
        used = [s for s in ds.splits if s in ("train", "test")]
        emb = extract(ref, data=ds, poolings=poolings, cache_dir=cache_dir, progress=progress, splits=used,
                      **extraction)
    t_extract = time.perf_counter() - t0
    profiles = _model_profiles(ref, emb, ds.splits["train"].labels, digests, progress=progress, log=log, **score_kw)
    # The pooling whose best layer has the highest CV probe accuracy on train.
    pooling = max(profiles, key=lambda p: profiles[p].best("probe_acc")["probe_acc"])
    # A lexical source has one "layer": nothing to choose.
    sel = (select_layers(profiles[pooling], "best", k=1) if is_lexical(ref)
           else select_layers(profiles[pooling], layers, k=k))
    spec = sel.source(ref, pooling, emb.fingerprint)
    t_total = time.perf_counter() - t0
    log(f"{ref}: pooling {pooling}, layers {spec.label()} ({sel.reason})")
    return ModelPrep(ref, emb, profiles, pooling, sel, spec, {"extract": t_extract, "profile": t_total - t_extract})


def _model_profiles(ref: str, emb: Embeddings, y_train, digests: dict, *, folds: int, windows: int,
                    window_shortlist: int | None, saved_profiles: dict | None, profile_dir, profile_workers,
                    progress: bool, log) -> dict[str, LayerProfile]:
    """One profile per pooling of ``emb``: a saved one that fits, else one read back from
    ``profile_dir``, else scored now (and saved there at once)."""
    import torch

    from layerfuse.run.workers import profile_job, score_profiles_in_workers
    from layerfuse.scoring.layer_profile import ANALYSIS_COLUMN
    from layerfuse.scoring.layer_scores import effective_shortlist

    train_digest, test_digest = digests["train"], digests["test"]
    profiles, todo = {}, {}
    # A shortlist holding every window is no shortlist: same profile, same key.
    shortlist = effective_shortlist(window_shortlist, emb.depth + 1, windows)
    for p in emb.poolings:
        old = (saved_profiles or {}).get(ref, {}).get(p)
        # Profiles saved before the scored embeddings were recorded lack "features".
        features = _scored_features(emb, "train", p)
        with_test = test_digest is not None and "test" in emb.splits

        def fits(prof) -> bool:
            return (prof is not None and prof.n_layers == emb.depth and prof.n_samples == len(y_train)
                    and prof.settings.get("label_digest") == train_digest
                    and prof.settings.get("features", features) == features
                    and prof.settings.get("window_shortlist") == shortlist
                    and (not with_test or any(ANALYSIS_COLUMN in r for r in prof.rows)))

        if fits(old):
            profiles[p] = old
            continue
        path = None
        if profile_dir is not None:
            key = profile_key(emb, p, train_digest, folds, windows, test_digest if with_test else None, shortlist)
            path = Path(profile_dir) / f"{key}.json"
            cached = _read_profile(path, log)
            if fits(cached):
                log(f"{ref}/{p}: layer profile read back from {path}")
                profiles[p] = cached
                continue
        todo[p] = (path, features, with_test)
    workers = _profile_workers(profile_workers, emb, todo)
    # The many-class probe's two products are nearly all of such a profile: a profile that runs
    # alone gives them every core, profiles side by side share the cores (docs/benchmarks.md).
    probe_threads = max(1, torch.get_num_threads() // workers)
    jobs = {p: {"X": emb.array("train", p), "y": y_train,
                "score_kw": {"folds": folds, "windows": windows, "name": f"{ref}/{p}",
                             "window_shortlist": shortlist, "progress": progress and workers == 1,
                             "probe_threads": probe_threads},
                **({"X_test": emb.array("test", p), "y_test": emb.labels["test"]} if with_test else {})}
            for p, (_, _, with_test) in todo.items()}

    def keep(p, prof):  # saved as soon as it is scored, so an interrupted run keeps it
        path, features, _ = todo[p]
        prof.settings["features"] = features
        if path is not None:
            prof.to_json(path)
        profiles[p] = prof

    if workers > 1:
        score_profiles_in_workers(jobs, workers, log, on_done=keep)
    else:
        for p, job in jobs.items():
            keep(p, profile_job(**job))
    # Keep the poolings' order whatever was read back or scored first.
    return {p: profiles[p] for p in emb.poolings}

#: Profiles of fewer values (layers x texts x width) than this are scored in this process: starting
#: a worker (importing torch) costs a few seconds, more than such a profile takes.
PARALLEL_PROFILE_VALUES = 20_000_000
#: The same threshold where a started worker is already kept (``run.workers.keep_workers``, as in
#: `layerfuse run`): handing it a pooling costs only mapping the cached arrays.
PARALLEL_PROFILE_VALUES_KEPT = 2_000_000


def _profile_workers(requested: int | None, emb, todo: dict) -> int:
    """How many poolings of one model are profiled at a time (see ``prepare_models``)."""
    import os

    if len(todo) < 2:
        return 1
    if requested is not None:
        return max(1, min(int(requested), len(todo)))
    from layerfuse.run.workers import kept_workers

    shape = emb.array("train", next(iter(todo))).shape
    threshold = PARALLEL_PROFILE_VALUES_KEPT if kept_workers() else PARALLEL_PROFILE_VALUES
    if int(np.prod(shape)) < threshold:
        return 1
    return max(1, min(os.cpu_count() or 1, len(todo)))


def _scored_features(emb, split: str, pooling: str) -> str:
    """Which embeddings a profile scored: the split's cache entry (model, texts, max length, dtype,
    storage) and the pooling."""
    return f"{emb.keys.get(split)}/{pooling}"


def profile_key(emb, pooling: str, train_digest: str, folds: int, windows: int,
                test_digest: str | None = None, window_shortlist: int | None = None) -> str:
    """The file name of one saved profile: a digest of the embeddings it scored (the train split's
    cache entry and pooling), the training labels (``train_digest``, as the profile records it in
    ``settings["label_digest"]``), the CV folds and window widths, and, when it carries the
    per-layer test column, the test split's entry and labels (``test_digest``; None: no column), and
    the window shortlist when there is one (profiles of every window keep their old keys)."""
    from layerfuse.cache.layout import make_key

    fields = {"what": "layer-profile", "features": _scored_features(emb, "train", pooling),
              "labels": train_digest, "folds": int(folds), "windows": int(windows)}
    if window_shortlist is not None:
        fields["window_shortlist"] = int(window_shortlist)
    if test_digest is not None:
        fields["test"] = _scored_features(emb, "test", pooling)
        fields["test_labels"] = test_digest
    return make_key(fields)


def _read_profile(path: Path, log):
    """A saved profile, or None when there is none; an unreadable one is reported and scored again."""
    from layerfuse.scoring.layer_profile import LayerProfile

    if not path.is_file():
        return None
    try:
        return LayerProfile.from_json(path)
    except (LayerfuseError, ValueError, KeyError, TypeError) as exc:
        log(f"  {path}: unreadable ({exc}); scoring again")
        return None
