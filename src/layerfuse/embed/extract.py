"""All-layer pooled embeddings: one forward pass per batch gives a vector per layer and pooling.

Index 0 is the token-embedding output, 1..L the transformer blocks (the last one as the model
returns it, i.e. after the final norm when the model has one). Batches are the texts sorted by
token length and cut under a token budget, so padding stays small. When fewer layers are
needed than the model has, the forward pass stops at the deepest one.

Results go through the cache in :mod:`layerfuse.cache`: an identical second call reads the
cache without loading the model, and an interrupted call resumes after the last whole chunk.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from layerfuse import cache as cache_mod
from layerfuse.cache.layout import cache_root
from layerfuse.config import (
    BATCH_TOKENS_BY_DTYPE,
    DEFAULT_BATCH_TOKENS,
    DEFAULT_CHUNK_TEXTS,
    DEFAULT_COMPILE,
    DEFAULT_CPUS_PER_WORKER,
    DEFAULT_DEVICE,
    DEFAULT_DTYPE,
    DEFAULT_ENGINE,
    DEFAULT_EXTRACT_WORKERS,
    DEFAULT_MAX_LENGTH,
    DEFAULT_POOLINGS,
    DEFAULT_STORAGE,
)
from layerfuse.embed.backbones import Backbone, describe_reference, load_backbone
from layerfuse.embed.compiled import compile_blocks, compile_decision, normalise_compile
from layerfuse.embed.device import resolve_device, resolve_dtype
from layerfuse.embed.forward import embed_sorted, packs, tokenize
from layerfuse.embed.pooling import parse_poolings
from layerfuse.errors import LayerfuseError
from layerfuse.validation import check_choice

__all__ = ["STORAGE", "Embeddings", "peak_rss_mb", "extract_texts", "extract"]

STORAGE = ("float16", "float32")


# ---------------------------------------------------------------------------------------------
# Result object


@dataclass
class Embeddings:
    """Per-layer pooled embeddings of one model over the splits of a dataset.

    ``array(split, pooling)`` is ``[depth+1, N, d]`` (memory-mapped, float16 or float32);
    ``get(split, layer, pooling)`` is ``[N, d]``; ``labels[split]`` is ``[N]``.
    """

    model: str
    fingerprint: str
    n_layers: int
    width: int
    depth: int
    poolings: list[str]
    classes: list[str]
    labels: dict[str, np.ndarray]
    arrays: dict[tuple[str, str], np.ndarray]
    keys: dict[str, str]
    stats: dict = field(default_factory=dict)

    @property
    def splits(self) -> list[str]:
        return list(self.labels)

    @property
    def layers(self) -> list[int]:
        return list(range(self.depth + 1))

    def array(self, split: str = "train", pooling: str | None = None) -> np.ndarray:
        pooling = pooling or self.poolings[0]
        if (split, pooling) not in self.arrays:
            raise LayerfuseError(
                f"no embeddings for split '{split}' with pooling '{pooling}': have splits "
                f"{self.splits} and poolings {self.poolings}"
            )
        return self.arrays[(split, pooling)]

    def get(self, split: str = "train", layer: int = -1, pooling: str | None = None) -> np.ndarray:
        arr = self.array(split, pooling)
        if layer < 0:
            layer = arr.shape[0] + layer
        if not 0 <= layer < arr.shape[0]:
            raise LayerfuseError(f"layer {layer} out of range 0..{arr.shape[0] - 1}")
        return np.asarray(arr[layer], dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Driver


def check_extract_workers(workers) -> int:
    """``workers`` of a local extraction: a whole number >= 1 (else a clear error)."""
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise LayerfuseError(f"extraction workers must be a whole number >= 1, got {workers!r}")
    return int(workers)


def peak_rss_mb() -> float:
    """Peak resident memory of this process. VmHWM where Linux has it: ru_maxrss also counts
    what a spawned child's parent held when it forked, which overstates a child's own peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _entry_fields(model_fp: str, text_fp: str, n: int, max_length: int, dtype: str, depth: int, storage: str,
                  padding_side: str | None) -> dict:
    return {
        "model": model_fp,
        "texts": text_fp,
        "n": n,
        "max_length": max_length,
        "dtype": dtype,
        "depth": depth,
        "storage": storage,
        "padding_side": padding_side,
    }


def extract_texts(
    backbone_ref: str | Backbone,
    texts: Sequence[str],
    *,
    text_fingerprint: str,
    poolings: Sequence[str] = DEFAULT_POOLINGS,
    max_length: int = DEFAULT_MAX_LENGTH,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    dtype: str = "float32",
    device: str = "cpu",
    depth: int | None = None,
    storage: str = DEFAULT_STORAGE,
    cache_dir: str | os.PathLike | None = None,
    chunk_texts: int = DEFAULT_CHUNK_TEXTS,
    padding_side: str | None = None,
    progress: bool = True,
    desc: str = "extract",
    loader=None,
    runner=None,
    compile: str = DEFAULT_COMPILE,
) -> tuple[dict[str, np.ndarray], dict]:
    """Extract (or read from cache) ``{pooling: [depth+1, N, d]}`` for one list of texts.

    ``loader`` is called without arguments to get the :class:`Backbone` only when something must
    be computed. ``runner`` (e.g. :class:`layerfuse.scale.ray_extract.RayExtraction`) computes the
    missing chunks elsewhere instead of in this process; everything else, the cache writes
    included, is the same. ``compile`` (auto/on/off) is :func:`layerfuse.embed.compiled.compile_decision`'s
    setting for the local engine. Returns the arrays and a stats dict.

    Longer than 80 lines: one resumable pass over an entry (lock it, find the finished chunks,
    compute the missing ones, assemble) shares the entry, the lock and the progress bar from start
    to end, and reads best as one story; the next split would be the chunk loop.
    """
    root = cache_root(cache_dir)
    stats = {"texts": len(texts), "computed_texts": 0, "tokens": 0, "truncated": 0, "seconds": 0.0,
             "cache_hit": False}
    if isinstance(backbone_ref, Backbone):
        backbone = backbone_ref
        model_fp = backbone.fingerprint
    else:
        backbone = None
        model_fp = describe_reference(backbone_ref, cache_dir)["fingerprint"]
    stats["model_fingerprint"] = model_fp

    def fields_for(d):
        return _entry_fields(model_fp, text_fingerprint, len(texts), max_length, dtype, d, storage, padding_side)

    # 1. Look for a finished entry of at least the depth asked for (any deeper one serves a prefix;
    #    no depth asked for means every layer). First these very texts; failing that, an entry made
    #    with the same settings for a larger list that holds all of them (R8's documents are a
    #    subset of R52's, say, or a labelled sample of a corpus extracted before).
    hashes = None
    if model_fp is not None:
        entries = sorted(cache_mod.entries_root(root).glob("*")) if cache_mod.entries_root(root).exists() else []
        supersets = []
        for e_path in entries:
            e = cache_mod.CacheEntry(e_path)
            meta = e.read_meta()
            if not meta:
                continue
            f = meta.get("fields", {})
            need = meta.get("n_layers", 0) if depth is None else depth
            if f.get("depth", -1) < need:
                continue
            if f == fields_for(f.get("depth")):
                if all(e.has_final(p) for p in poolings):
                    arrays = {p: e.open_final(p) for p in poolings}
                    if depth is not None:
                        arrays = {p: a[: depth + 1] for p, a in arrays.items()}
                    if e.read_text_hashes() is None:  # entries made before hashes were kept
                        e.write_text_hashes(cache_mod.text_hashes(texts))
                    stats.update(cache_hit=True, key=e.key, n_layers=meta["n_layers"], width=meta["width"],
                                 cache_bytes=e.size_bytes(), truncated=meta.get("truncated", 0),
                                 tokens=meta.get("tokens", 0), cache_path=str(e.path))
                    return arrays, stats
            elif ({k: v for k, v in f.items() if k not in ("texts", "n")}
                  == {k: v for k, v in fields_for(f.get("depth")).items() if k not in ("texts", "n")}
                  and f.get("n", 0) >= len(texts)):
                supersets.append((e, meta))
        for e, meta in supersets:
            have = e.read_text_hashes()
            if have is None:
                continue
            if hashes is None:
                hashes = cache_mod.text_hashes(texts)
            rows = cache_mod.subset_rows(have, hashes)
            # The digests first: checking a final array reads all of it (SmolLM2's SST-2 train
            # entry: 0.5 GB), which a test split looking for its texts there need not pay.
            if rows is None or not all(e.has_final(p) for p in poolings):
                continue
            top = (depth if depth is not None else meta["n_layers"]) + 1
            arrays = {p: np.ascontiguousarray(e.open_final(p)[:top, rows]) for p in poolings}
            full = e.read_text_tokens()  # None for entries made before token counts were kept
            stats.update(cache_hit=True, key=e.key, subset_of=e.key, n_layers=meta["n_layers"], width=meta["width"],
                         cache_bytes=0, cache_path=str(e.path),
                         truncated=None if full is None else int((full[rows] > max_length).sum()),
                         tokens=0 if full is None else int(np.minimum(full[rows], max_length).sum()))
            return arrays, stats

    # 2. Compute what is missing.
    if backbone is None:
        backbone = loader() if loader is not None else load_backbone(backbone_ref, dtype=dtype, device=device,
                                                                     root=cache_dir, progress=progress)
        model_fp = backbone.fingerprint
        stats["load_seconds"] = backbone.load_seconds
    L = backbone.n_layers
    use_depth = L if depth is None else depth
    if not 0 <= use_depth <= L:
        raise LayerfuseError(f"layer {use_depth} asked for, but {backbone.ref} has layers 0..{L}")
    key = cache_mod.make_key(fields_for(use_depth))
    e = cache_mod.entry(root, key).lock()  # a second run of the same extraction waits here, then finds it done
    side = padding_side or getattr(backbone.tokenizer, "padding_side", "right") or "right"
    full_lengths: list[int] = []
    enc, truncated = tokenize(backbone, texts, max_length, full_lengths=full_lengths)
    lengths = np.array([len(ids) for ids in enc])
    order = np.argsort(-lengths, kind="stable")
    meta = {"fields": fields_for(use_depth), "model_ref": backbone.ref, "n_layers": L, "width": backbone.width,
            "truncated": int(truncated), "tokens": int(lengths.sum()), "chunk_texts": chunk_texts}
    old_order, old_meta = e.read_order(), e.read_meta() or {}
    same = all(old_meta.get(k) == meta[k] for k in ("fields", "chunk_texts", "n_layers", "width"))
    if not same or old_order is None or not np.array_equal(old_order, order):
        cache_mod.remove_entry(e)
        e.path.mkdir(parents=True, exist_ok=True)
        e.write_order(order)
        e.write_text_hashes(hashes if hashes is not None else cache_mod.text_hashes(texts),
                            np.asarray(full_lengths, dtype=np.int32))
        e.write_meta(meta)
    n = len(texts)
    n_chunks = (n + chunk_texts - 1) // chunk_texts
    todo_poolings = [p for p in poolings if not e.has_final(p)]
    stats["cache_hit"] = not todo_poolings  # another process finished it while this one waited for the lock
    store_dtype = np.float16 if storage == "float16" else np.float32
    done = {i for i in range(n_chunks) if all(e.chunk_info(p, i) for p in todo_poolings)}
    todo = [i for i in range(n_chunks) if i not in done]
    total_tokens = int(sum(lengths[order[i * chunk_texts:(i + 1) * chunk_texts]].sum() for i in todo))
    if runner is None and todo:
        _maybe_compile(backbone, compile, total_tokens, use_depth, cache_dir, progress, desc, stats)
        stats["packed"] = packs(backbone)  # the batches' real tokens as one row (layerfuse.embed.packed)
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_tokens, desc=desc, unit="tok", unit_scale=True, dynamic_ncols=True,
                   file=sys.stderr, smoothing=0.1)
        if done:
            bar.write(f"{desc}: resuming, {len(done)} of {n_chunks} chunks already in the cache", file=sys.stderr)
    t0 = time.perf_counter()
    texts_done = 0

    def on_batch(n_texts, n_tok):
        nonlocal texts_done
        stats["tokens"] += n_tok
        texts_done += n_texts
        if bar is not None:
            bar.update(n_tok)
            bar.set_postfix_str(f"{texts_done / (time.perf_counter() - t0):.1f} texts/s", refresh=False)

    def write(ci, outs):
        pos = order[ci * chunk_texts:(ci + 1) * chunk_texts]
        for p in todo_poolings:
            e.write_chunk(p, ci, outs[p], {"n": len(pos), "tokens": int(lengths[pos].sum())})

    try:
        if runner is not None:
            runner.run([(ci, order[ci * chunk_texts:(ci + 1) * chunk_texts]) for ci in todo], enc, todo_poolings,
                       use_depth, batch_tokens=batch_tokens, padding_side=side, out_dtype=store_dtype,
                       write=write, on_batch=on_batch)
        for ci in todo if runner is None else []:  # the local engine
            pos = order[ci * chunk_texts:(ci + 1) * chunk_texts]
            outs = embed_sorted(backbone, [enc[j] for j in pos], todo_poolings, use_depth, batch_tokens=batch_tokens,
                                padding_side=side, out_dtype=store_dtype, on_batch=on_batch)
            write(ci, outs)
    finally:
        if bar is not None:
            bar.close()
    stats["seconds"] = time.perf_counter() - t0
    stats["computed_texts"] = texts_done
    for p in todo_poolings:
        # float16 storage keeps a chunk whose values outgrow float16 in float32 (forward.embed_sorted);
        # the whole array is then float32, the float16 chunks widened exactly.
        wide = any((e.chunk_info(p, i, verify=False) or {}).get("dtype") == "float32" for i in range(n_chunks))
        e.finalise(p, n_chunks, order, (use_depth + 1, n, backbone.width), np.float32 if wide else store_dtype)
    arrays = {p: e.open_final(p) for p in poolings}
    e.unlock()
    stats.update(key=key, n_layers=L, width=backbone.width, truncated=int(truncated), cache_bytes=e.size_bytes(),
                 cache_path=str(e.path), resumed_chunks=len(done))
    return arrays, stats


def _maybe_compile(backbone, setting, tokens, depth, cache_dir, progress, desc, stats) -> None:
    """Compile ``backbone``'s blocks for this pass where :func:`compile_decision` says so (once per
    loaded backbone); the choice, its reason and the compile time go into ``stats``."""
    def say(msg):
        if progress:
            print(f"{desc}: {msg}", file=sys.stderr, flush=True)

    already = bool(backbone.extra.get("compiled"))
    on, why = compile_decision(setting, backbone, tokens, depth)
    if on and not already:
        say(f"compiling {backbone.ref}'s blocks with torch.compile ({why}; the generated code is kept for next time) …")
        on = compile_blocks(backbone, root=cache_dir, announce=say)
        if on:
            say(f"compiled in {backbone.extra['compile_seconds']:.1f} s")
            stats["compile_seconds"] = backbone.extra["compile_seconds"]
    stats.update(compiled=bool(on), compile_reason=why)


def _auto_dtype_in_cache(model, ds, split, dtype, max_length, depth, storage, cache_dir) -> str:
    """``dtype`` unless the cache holds an entry for these texts and settings made under the other
    automatic choice; then that one, so a rerun resumes or reuses it instead of starting over."""
    try:
        model_fp = describe_reference(model, cache_dir)["fingerprint"]
    except LayerfuseError:
        return dtype
    if model_fp is None:
        return dtype
    sp = ds.splits[split]
    fields = _entry_fields(model_fp, ds.text_fingerprint(split), len(sp.texts), max_length, dtype, depth, storage,
                           None)
    return cache_mod.dtype_in_cache(cache_root(cache_dir), fields, ("float32", "bfloat16"), prefer=dtype) or dtype


def extract(
    model: str,
    dataset: str | None = None,
    *,
    train: str | os.PathLike | None = None,
    test: str | os.PathLike | None = None,
    data=None,
    poolings: str | Sequence[str] = DEFAULT_POOLINGS,
    max_length: int = DEFAULT_MAX_LENGTH,
    batch_tokens: int | str = DEFAULT_BATCH_TOKENS,
    dtype: str = DEFAULT_DTYPE,
    device: str = DEFAULT_DEVICE,
    layers: Sequence[int] | None = None,
    limit: int | None = None,
    storage: str = DEFAULT_STORAGE,
    cache_dir: str | os.PathLike | None = None,
    splits: Sequence[str] | None = None,
    progress: bool = True,
    engine: str = DEFAULT_ENGINE,
    ray_address: str | None = None,
    num_workers: int | None = None,
    cpus_per_worker: float = DEFAULT_CPUS_PER_WORKER,
    gpus_per_worker: float | None = None,
    workers: int | str = DEFAULT_EXTRACT_WORKERS,
    compile: str | bool = DEFAULT_COMPILE,
    **data_kw,
) -> Embeddings:
    """Per-layer pooled embeddings of ``model`` over every split of a dataset.

    ``dataset`` is a built-in name (``sst2``, ``mr``, ``r8``, ``r52``); or pass ``train=`` (and
    optionally ``test=``) files, or a ready :class:`layerfuse.data.Dataset` as ``data=``.
    ``layers`` limits the forward pass to the deepest layer listed. ``batch_tokens="auto"`` takes
    the budget for the dtype the pass runs in (:data:`layerfuse.config.BATCH_TOKENS_BY_DTYPE`); the
    budget used is in ``stats["batch_tokens"]``.

    ``engine="ray"`` runs the forward passes on Ray actors (``ray_address``, ``num_workers``,
    ``cpus_per_worker``, ``gpus_per_worker``: see :class:`layerfuse.scale.RayOptions`); the cache
    entry, its key and its arrays are those of a local run (docs/scale.md). With the local engine,
    ``workers`` processes share each split on a CPU (:mod:`layerfuse.scale.local_extract`; 1, the
    default: this process alone); the entry's key, order and shapes are the same whatever the
    count, its values the same to the compute dtype's rounding.

    ``compile`` (``auto``, ``on``, ``off``): whether this process runs the blocks through
    ``torch.compile`` (:mod:`layerfuse.embed.compiled`; auto: on a CPU, with a C++ compiler, for a
    pass long enough to repay compiling). Worker processes and Ray actors run eager. Whether a
    split ran compiled is in ``stats["splits"][split]["compiled"]``.
    """
    poolings = parse_poolings(poolings)
    compile = normalise_compile(compile)
    check_choice(storage, STORAGE, "`storage`")
    if max_length < 2:
        raise LayerfuseError(f"`max_length` must be at least 2, got {max_length}")
    if batch_tokens != "auto" and (isinstance(batch_tokens, (bool, str, float)) or not batch_tokens >= 1):
        raise LayerfuseError(f"`batch_tokens` must be a positive whole number or 'auto', got {batch_tokens!r}")
    asked_dtype = dtype
    why: list[str] = []  # what auto chose and why: said when the model is loaded, not for a cache hit or an error
    runner = None
    if engine != "local":
        from layerfuse.scale.engine import extraction_runner

        runner = extraction_runner(engine, model, dtype=dtype, device=device, cache_dir=cache_dir,
                                   ray_address=ray_address, num_workers=num_workers,
                                   cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker)
        device, dtype = runner.device, runner.dtype
    else:
        device = resolve_device(device)
        dtype = resolve_dtype(dtype, device, root=cache_dir, announce=why.append)
        workers = check_extract_workers(workers)
        if workers != 1 and device == "cpu":  # a GPU's device is shared, not split: one process
            from layerfuse.scale.local_extract import ProcessExtraction

            runner = ProcessExtraction(model, workers=workers, dtype=dtype, device=device, cache_dir=cache_dir,
                                       progress=progress, log=None if progress else (lambda s: None),
                                       batch_tokens_auto=batch_tokens == "auto")
    if batch_tokens == "auto":  # after the dtype is known, for the local and the Ray path alike
        batch_tokens = BATCH_TOKENS_BY_DTYPE[dtype]
    try:
        return _extract_splits(model, dataset, train, test, data, poolings, max_length, batch_tokens, dtype, device,
                               layers, limit, storage, cache_dir, splits, progress, runner, data_kw,
                               asked_dtype if engine == "local" else dtype, why, compile)
    finally:
        if runner is not None:
            runner.close()


def _extract_splits(model, dataset, train, test, data, poolings, max_length, batch_tokens, dtype, device, layers,
                    limit, storage, cache_dir, splits, progress, runner, data_kw, asked_dtype, why,
                    compile=DEFAULT_COMPILE) -> Embeddings:
    """The body of :func:`extract` once the engine, device and dtype are settled: one backbone
    (loaded on first need) runs every split, then :func:`_extraction_stats` sums them. ``asked_dtype``
    ``auto`` lets an unfinished entry of an earlier auto run decide the dtype; ``why`` holds the line
    saying what auto chose, printed when the model is loaded."""
    from layerfuse.data.loading import load_dataset

    ds = data if data is not None else load_dataset(dataset, train=train, test=test, **data_kw)
    if limit is not None:
        if limit < 1:
            raise LayerfuseError(f"`limit` must be positive, got {limit}")
        ds = ds.subsample(limit)
    depth = None if not layers else max(int(x) for x in layers)
    if layers and min(int(x) for x in layers) < 0:
        raise LayerfuseError("`layers` takes layer numbers ≥ 0 (0 = token embeddings)")
    use_splits = list(splits) if splits else list(ds.splits)
    if asked_dtype == "auto":  # resume what an earlier auto run started, whichever dtype it chose
        dtype = _auto_dtype_in_cache(model, ds, use_splits[0], dtype, max_length, depth, storage, cache_dir)
    holder: dict = {}

    def loader():
        if "bb" not in holder:
            if progress and why:
                line = why[0] if why[0].startswith(f"dtype auto → {dtype}:") else (
                    f"dtype auto → {dtype}: resuming the cache entry an earlier run started in {dtype}")
                print(line, file=sys.stderr, flush=True)
            holder["bb"] = (runner.backbone() if runner is not None else
                            load_backbone(model, dtype=dtype, device=device, root=cache_dir, progress=progress))
        return holder["bb"]

    arrays, keys, per_split = {}, {}, {}
    t0 = time.perf_counter()
    n_layers = width = None
    for split in use_splits:
        sp = ds.splits[split]
        ref = holder.get("bb", model)
        arrs, st = extract_texts(
            ref, sp.texts, text_fingerprint=ds.text_fingerprint(split), poolings=poolings, max_length=max_length,
            batch_tokens=batch_tokens, dtype=dtype, device=device, depth=depth, storage=storage,
            cache_dir=cache_dir, progress=progress, desc=f"{model} {ds.name}/{split}", loader=loader, runner=runner,
            compile=compile)
        for p, a in arrs.items():
            arrays[(split, p)] = a
        keys[split] = st.get("key")
        per_split[split] = st
        n_layers, width = st["n_layers"], st["width"]
    bb = holder.get("bb")
    stats = _extraction_stats(model, ds, use_splits, per_split, time.perf_counter() - t0, bb,
                              dtype=dtype, device=device, max_length=max_length,
                              batch_tokens=batch_tokens, storage=storage, runner=runner)
    depth_used = next(iter(arrays.values())).shape[0] - 1
    return Embeddings(
        model=model,
        fingerprint=(bb.fingerprint if bb is not None else per_split[use_splits[0]]["model_fingerprint"]) or "",
        n_layers=n_layers,
        width=width,
        depth=depth_used,
        poolings=poolings,
        classes=list(ds.classes),
        labels={s: ds.splits[s].labels for s in use_splits},
        arrays=arrays,
        keys=keys,
        stats=stats,
    )


def _extraction_stats(model, ds, use_splits, per_split, total_seconds, bb, *, dtype, device, max_length,
                      batch_tokens, storage, runner) -> dict:
    """The ``stats`` of an :class:`Embeddings`: the per-split statistics summed, with the settings used."""
    seconds = sum(s["seconds"] for s in per_split.values())
    computed = sum(s["computed_texts"] for s in per_split.values())
    tokens = sum(s["tokens"] for s in per_split.values() if not s["cache_hit"])
    return {
        "model": model,
        "dataset": ds.name,
        "splits": {k: {kk: vv for kk, vv in v.items()} for k, v in per_split.items()},
        "texts": sum(len(ds.splits[s].texts) for s in use_splits),
        "computed_texts": computed,
        "cache_hits": sum(bool(s["cache_hit"]) for s in per_split.values()),
        "extract_seconds": seconds,
        "total_seconds": total_seconds,
        "load_seconds": bb.load_seconds if bb is not None else 0.0,
        "tokens_computed": tokens,
        "tokens_per_second": tokens / seconds if seconds > 0 else None,
        "texts_per_second": computed / seconds if seconds > 0 else None,
        # None when a split was read out of an older larger entry that kept no per-text token counts.
        "truncated": (None if any(s.get("truncated", 0) is None for s in per_split.values())
                      else sum(s.get("truncated", 0) for s in per_split.values())),
        "subset_of": {k: s["subset_of"] for k, s in per_split.items() if s.get("subset_of")},
        "peak_rss_mb": peak_rss_mb(),
        "cache_bytes": sum(s.get("cache_bytes", 0) for s in per_split.values()),
        "dtype": dtype,
        "device": device,
        "max_length": max_length,
        "batch_tokens": batch_tokens,
        "storage": storage,
        "compiled": any(s.get("compiled") for s in per_split.values()),
        "packed": any(s.get("packed") for s in per_split.values()),
        "compile_seconds": sum(s.get("compile_seconds", 0.0) for s in per_split.values()),
        "engine": "local" if runner is None else dict(runner.stats),
    }
