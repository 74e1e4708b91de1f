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
from pathlib import Path
from typing import Sequence

import numpy as np

from . import cache as cache_mod
from .backbones import Backbone, cache_root, describe_reference, find_layer_list, load_backbone
from .errors import LayerfuseError

POOLINGS = ("mean", "last", "first", "max")
DTYPES = ("auto", "float32", "bfloat16")
STORAGE = ("float16", "float32")
DEFAULT_BATCH_TOKENS = 1024
DEFAULT_MAX_LENGTH = 512
DEFAULT_CHUNK_TEXTS = 512


# ---------------------------------------------------------------------------------------------
# Pooling


def pool(hidden, mask, pooling: str):
    """Pool ``hidden`` ``[..., B, T, d]`` over real tokens given ``mask`` ``[B, T]`` (1 = token).

    Correct for left and right padding alike: positions come from the mask, not from the side.
    """
    import torch

    pad = ~mask.bool()[..., None]
    if pooling == "mean":
        # masked_fill rather than a product: padded positions may hold NaN under left padding.
        count = mask.sum(-1, keepdim=True).clamp(min=1).to(hidden.dtype)
        return hidden.masked_fill(pad, 0.0).sum(-2) / count
    if pooling == "max":
        return hidden.masked_fill(pad, torch.finfo(hidden.dtype).min).amax(-2)
    T = mask.shape[-1]
    ar = torch.arange(T, device=mask.device)
    if pooling == "last":
        idx = torch.where(mask.bool(), ar, torch.full_like(ar, -1)).amax(-1)  # [B]
    elif pooling == "first":
        idx = torch.where(mask.bool(), ar, torch.full_like(ar, T)).amin(-1)
    else:
        raise LayerfuseError(f"unknown pooling '{pooling}': choose from {', '.join(POOLINGS)}")
    idx = idx.clamp(0, T - 1)
    gather = idx.view(*([1] * (hidden.dim() - 3)), -1, 1, 1).expand(*hidden.shape[:-2], 1, hidden.shape[-1])
    return hidden.gather(-2, gather).squeeze(-2)


def parse_poolings(poolings: str | Sequence[str]) -> list[str]:
    items = [p.strip() for p in (poolings.split(",") if isinstance(poolings, str) else poolings) if p.strip()]
    if not items:
        raise LayerfuseError(f"--pooling is empty: choose one or more of {', '.join(POOLINGS)}")
    for p in items:
        if p not in POOLINGS:
            raise LayerfuseError(f"unknown pooling '{p}': choose from {', '.join(POOLINGS)} (comma-separated)")
    return list(dict.fromkeys(items))


# ---------------------------------------------------------------------------------------------
# Batching


def plan_batches(lengths: Sequence[int], batch_tokens: int, max_batch: int | None = None) -> list[np.ndarray]:
    """Cut positions ``0..n-1`` (already sorted by length, longest first) into padded batches of at
    most ``batch_tokens`` tokens (batch size × longest length); a single longer text is its own batch."""
    batches, start, n = [], 0, len(lengths)
    while start < n:
        longest = max(int(lengths[start]), 1)
        size = max(1, batch_tokens // longest)
        if max_batch:
            size = min(size, max_batch)
        batches.append(np.arange(start, min(n, start + size)))
        start += size
    return batches


def _pad(seqs: list[list[int]], pad_id: int, side: str):
    import torch

    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        if side == "left":
            ids[i, T - len(s) :] = torch.tensor(s)
            mask[i, T - len(s) :] = 1
        else:
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
    return ids, mask


# ---------------------------------------------------------------------------------------------
# Forward pass


def _layer_parent(model):
    """(object, attribute) holding the block ModuleList, so it can be cut short for a pass."""
    blocks = find_layer_list(model)
    for mod in model.modules():
        for name, child in mod.named_children():
            if child is blocks:
                return mod, name
    raise LayerfuseError("cannot locate the transformer blocks to stop the forward pass early")


def forward_all_layers(backbone: Backbone, input_ids, attention_mask, depth: int):
    """Hidden states of layers 0..depth: a list of ``depth+1`` tensors ``[B, T, d]``."""
    import torch.nn as nn

    model = backbone.model
    L = backbone.n_layers
    depth = max(1, min(depth, L))
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    if backbone.extra.get("position_ids", True):
        kwargs["position_ids"] = position_ids
    if depth == L:
        out = model(**kwargs)
        return list(out.hidden_states)
    # Stop early: run only the first `depth` blocks. The model then returns the last of them
    # through its final norm, so take that block's raw output from a hook instead.
    parent, attr = _layer_parent(model)
    full = getattr(parent, attr)
    captured = {}

    def hook(_m, _inp, out):
        captured["h"] = out[0] if isinstance(out, tuple) else out

    handle = full[depth - 1].register_forward_hook(hook)
    setattr(parent, attr, nn.ModuleList(list(full)[:depth]))
    try:
        out = model(**kwargs)
    finally:
        setattr(parent, attr, full)
        handle.remove()
    states = list(out.hidden_states)[: depth + 1]
    states[depth] = captured["h"]
    return states


def tokenize(backbone: Backbone, texts: Sequence[str], max_length: int, *,
             full_lengths: list | None = None) -> tuple[list[list[int]], int]:
    """Token ids per text, cut to ``max_length``; also the number of texts that were cut.
    ``full_lengths``, when given, receives each text's token count before cutting."""
    tok = backbone.tokenizer
    # Tokenise once, untruncated, to count truncations; then cut to max_length. verbose=False: the
    # tokenizer would warn that a text is longer than the model takes, but it is cut below.
    enc = tok(list(texts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    if full_lengths is not None:
        full_lengths.extend(len(ids) for ids in enc)
    truncated = sum(len(ids) > max_length for ids in enc)
    if truncated:
        # Keep the start of the text; keep a trailing special token (e.g. BERT's [SEP]) if there was one.
        sep = tok.sep_token_id if not backbone.is_decoder else None
        enc = [ids if len(ids) <= max_length else (ids[: max_length - 1] + [sep] if sep is not None else ids[:max_length])
               for ids in enc]
    empty = [i for i, ids in enumerate(enc) if not ids]
    if empty:
        raise LayerfuseError(f"text {empty[0]} tokenises to nothing: remove empty texts")
    return enc, int(truncated)


def embed_sorted(backbone: Backbone, enc: list[list[int]], poolings: Sequence[str], depth: int, *,
                 batch_tokens: int = DEFAULT_BATCH_TOKENS, padding_side: str = "right", out_dtype=np.float32,
                 on_batch=None) -> dict[str, np.ndarray]:
    """Pooled layers 0..depth for token-id lists given longest first: ``{pooling: [depth+1, n, d]}``."""
    import torch

    tok = backbone.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    dev = next(backbone.model.parameters()).device
    outs = {p: np.empty((depth + 1, len(enc), backbone.width), dtype=out_dtype) for p in poolings}
    lengths = np.array([len(ids) for ids in enc])
    for b in plan_batches(lengths, batch_tokens):
        ids, mask = _pad([enc[j] for j in b], pad_id, padding_side)
        ids, mask = ids.to(dev), mask.to(dev)
        with torch.inference_mode():
            states = forward_all_layers(backbone, ids, mask, depth)
            for k in range(depth + 1):
                h = states[k].float()
                for p in poolings:
                    v = pool(h, mask, p)
                    if out_dtype == np.float16 and v.abs().max() > 65000:
                        raise LayerfuseError(f"{backbone.ref}: activations exceed the float16 range; "
                                             "pass --storage float32")
                    outs[p][k, b, :] = v.cpu().numpy()
        if on_batch is not None:
            on_batch(len(b), int(lengths[b].sum()))
    return outs


def embed_texts(backbone: Backbone, texts: Sequence[str], poolings: Sequence[str], depth: int, *,
                max_length: int = DEFAULT_MAX_LENGTH, batch_tokens: int = DEFAULT_BATCH_TOKENS,
                round_to: str | None = None) -> dict[str, np.ndarray]:
    """In memory, no cache: ``{pooling: [depth+1, N, d]}`` float32 in the texts' own order.

    ``round_to="float16"`` rounds through float16, to match embeddings that a classifier was
    trained on when they came from a float16 cache.
    """
    enc, _ = tokenize(backbone, texts, max_length)
    order = np.argsort(-np.array([len(e) for e in enc]), kind="stable")
    side = getattr(backbone.tokenizer, "padding_side", "right") or "right"
    out_dtype = np.float16 if round_to == "float16" else np.float32
    sorted_out = embed_sorted(backbone, [enc[j] for j in order], poolings, depth, batch_tokens=batch_tokens,
                              padding_side=side, out_dtype=out_dtype)
    result = {}
    for p, arr in sorted_out.items():
        full = np.empty(arr.shape, dtype=np.float32)
        full[:, order, :] = arr
        result[p] = full
    return result


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


def _peak_rss_mb() -> float:
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


def fast_bf16(device: str) -> bool:
    """Whether bfloat16 is the faster compute dtype here: a CUDA GPU with bf16; on a CPU, one that
    advertises AMX or AVX-512 BF16 (/proc/cpuinfo) *and* runs a bf16 matrix product at least 1.5x
    as fast as float32 (:func:`bf16_speedup`). The measurement matters: an AVX-512 BF16 CPU without
    AMX ran whole-model extraction at 0.67x fp32 (benchmarks/results/extract_throughput_no_amx.md), an AMX CPU
    at 2.58x."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    if bf16_instructions() == "none":
        return False
    return bf16_speedup() >= 1.5


def bf16_instructions() -> str:
    """What the CPU advertises for bf16 (from /proc/cpuinfo): AMX, AVX-512 BF16 without AMX, or none.
    Results in bf16 differ slightly between the two (different kernels), speed a lot."""
    flags = _cpu_flags()
    if "amx_bf16" in flags:
        return "AMX"
    return "AVX-512 BF16, no AMX" if "avx512_bf16" in flags else "none"


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {f for line in text.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}


_BF16_SPEEDUP: list[float] = []


def bf16_speedup() -> float:
    """How much faster a [256, 1024] x [1024, 1024] product runs on the CPU in bfloat16 than in
    float32 (best of 5 each, about 50 ms in all; measured once per process)."""
    import torch

    if not _BF16_SPEEDUP:
        best = {}
        for dt in (torch.float32, torch.bfloat16):
            a, b = torch.randn(256, 1024).to(dt), torch.randn(1024, 1024).to(dt)
            a @ b  # warm-up
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                a @ b
                times.append(time.perf_counter() - t0)
            best[dt] = min(times)
        _BF16_SPEEDUP.append(best[torch.float32] / max(best[torch.bfloat16], 1e-9))
    return _BF16_SPEEDUP[0]


def resolve_dtype(dtype: str, device: str) -> str:
    """``auto`` → bfloat16 where it is the faster dtype (:func:`fast_bf16`), else float32."""
    if dtype not in DTYPES:
        raise LayerfuseError(f"unknown --dtype '{dtype}': choose from {', '.join(DTYPES)}")
    if dtype == "auto":
        return "bfloat16" if fast_bf16(device) else "float32"
    return dtype


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise LayerfuseError("--device cuda was asked for, but torch sees no GPU: use --device cpu or auto")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise LayerfuseError(f"unknown device '{device}': use auto, cpu or cuda")
    return device


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
    poolings: Sequence[str] = ("mean", "last"),
    max_length: int = DEFAULT_MAX_LENGTH,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    dtype: str = "float32",
    device: str = "cpu",
    depth: int | None = None,
    storage: str = "float16",
    cache_dir: str | os.PathLike | None = None,
    chunk_texts: int = DEFAULT_CHUNK_TEXTS,
    padding_side: str | None = None,
    progress: bool = True,
    desc: str = "extract",
    loader=None,
) -> tuple[dict[str, np.ndarray], dict]:
    """Extract (or read from cache) ``{pooling: [depth+1, N, d]}`` for one list of texts.

    ``loader`` is called without arguments to get the :class:`Backbone` only when something must
    be computed. Returns the arrays and a stats dict.
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
            if have is None or not all(e.has_final(p) for p in poolings):
                continue
            if hashes is None:
                hashes = cache_mod.text_hashes(texts)
            rows = cache_mod.subset_rows(have, hashes)
            if rows is None:
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
    e = cache_mod.entry(root, key)
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
    store_dtype = np.float16 if storage == "float16" else np.float32
    done = {i for i in range(n_chunks) if all(e.chunk_info(p, i) for p in todo_poolings)}
    todo = [i for i in range(n_chunks) if i not in done]
    total_tokens = int(sum(lengths[order[i * chunk_texts:(i + 1) * chunk_texts]].sum() for i in todo))
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_tokens, desc=desc, unit="tok", unit_scale=True, dynamic_ncols=True,
                   file=sys.stderr, smoothing=0.1)
        if done:
            bar.write(f"{desc}: resuming, {len(done)} of {n_chunks} chunks already in the cache")
    t0 = time.perf_counter()
    texts_done = 0
    try:
        for ci in todo:
            pos = order[ci * chunk_texts:(ci + 1) * chunk_texts]

            def on_batch(n_texts, n_tok):
                nonlocal texts_done
                stats["tokens"] += n_tok
                texts_done += n_texts
                if bar is not None:
                    bar.update(n_tok)
                    bar.set_postfix_str(f"{texts_done / (time.perf_counter() - t0):.1f} texts/s", refresh=False)

            outs = embed_sorted(backbone, [enc[j] for j in pos], todo_poolings, use_depth, batch_tokens=batch_tokens,
                                padding_side=side, out_dtype=store_dtype, on_batch=on_batch)
            for p in todo_poolings:
                e.write_chunk(p, ci, outs[p], {"n": len(pos), "tokens": int(lengths[pos].sum())})
    finally:
        if bar is not None:
            bar.close()
    stats["seconds"] = time.perf_counter() - t0
    stats["computed_texts"] = texts_done
    for p in todo_poolings:
        e.finalise(p, n_chunks, order, (use_depth + 1, n, backbone.width), store_dtype)
    arrays = {p: e.open_final(p) for p in poolings}
    stats.update(key=key, n_layers=L, width=backbone.width, truncated=int(truncated), cache_bytes=e.size_bytes(),
                 cache_path=str(e.path), resumed_chunks=len(done))
    stats["backbone"] = backbone
    return arrays, stats


def extract(
    model: str,
    dataset: str | None = None,
    *,
    train: str | os.PathLike | None = None,
    test: str | os.PathLike | None = None,
    data=None,
    poolings: str | Sequence[str] = ("mean", "last"),
    max_length: int = DEFAULT_MAX_LENGTH,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    dtype: str = "auto",
    device: str = "auto",
    layers: Sequence[int] | None = None,
    limit: int | None = None,
    storage: str = "float16",
    cache_dir: str | os.PathLike | None = None,
    splits: Sequence[str] | None = None,
    progress: bool = True,
    **data_kw,
) -> Embeddings:
    """Per-layer pooled embeddings of ``model`` over every split of a dataset.

    ``dataset`` is a built-in name (``sst2``, ``mr``, ``r8``, ``r52``); or pass ``train=`` (and
    optionally ``test=``) files, or a ready :class:`layerfuse.data.Dataset` as ``data=``.
    ``layers`` limits the forward pass to the deepest layer listed.
    """
    from .data import load_dataset

    poolings = parse_poolings(poolings)
    if storage not in STORAGE:
        raise LayerfuseError(f"unknown --storage '{storage}': choose from {', '.join(STORAGE)}")
    if max_length < 2:
        raise LayerfuseError(f"--max-length must be at least 2, got {max_length}")
    if batch_tokens < 1:
        raise LayerfuseError(f"--batch-tokens must be positive, got {batch_tokens}")
    device = _resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    ds = data if data is not None else load_dataset(dataset, train=train, test=test, **data_kw)
    if limit is not None:
        if limit < 1:
            raise LayerfuseError(f"--limit must be positive, got {limit}")
        ds = ds.subsample(limit)
    depth = None if not layers else max(int(x) for x in layers)
    if layers and min(int(x) for x in layers) < 0:
        raise LayerfuseError("--layers takes layer numbers ≥ 0 (0 = token embeddings)")
    use_splits = list(splits) if splits else list(ds.splits)
    holder: dict = {}

    def loader():
        if "bb" not in holder:
            holder["bb"] = load_backbone(model, dtype=dtype, device=device, root=cache_dir, progress=progress)
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
            cache_dir=cache_dir, progress=progress, desc=f"{model} {ds.name}/{split}", loader=loader)
        if "backbone" in st:
            holder["bb"] = st.pop("backbone")
        for p, a in arrs.items():
            arrays[(split, p)] = a
        keys[split] = st.get("key")
        per_split[split] = st
        n_layers, width = st["n_layers"], st["width"]
    bb = holder.get("bb")
    seconds = sum(s["seconds"] for s in per_split.values())
    computed = sum(s["computed_texts"] for s in per_split.values())
    tokens = sum(s["tokens"] for s in per_split.values() if not s["cache_hit"])
    stats = {
        "model": model,
        "dataset": ds.name,
        "splits": {k: {kk: vv for kk, vv in v.items()} for k, v in per_split.items()},
        "texts": sum(len(ds.splits[s].texts) for s in use_splits),
        "computed_texts": computed,
        "cache_hits": sum(bool(s["cache_hit"]) for s in per_split.values()),
        "extract_seconds": seconds,
        "total_seconds": time.perf_counter() - t0,
        "load_seconds": bb.load_seconds if bb is not None else 0.0,
        "tokens_computed": tokens,
        "tokens_per_second": tokens / seconds if seconds > 0 else None,
        "texts_per_second": computed / seconds if seconds > 0 else None,
        # None when a split was read out of an older larger entry that kept no per-text token counts.
        "truncated": (None if any(s.get("truncated", 0) is None for s in per_split.values())
                      else sum(s.get("truncated", 0) for s in per_split.values())),
        "subset_of": {k: s["subset_of"] for k, s in per_split.items() if s.get("subset_of")},
        "peak_rss_mb": _peak_rss_mb(),
        "cache_bytes": sum(s.get("cache_bytes", 0) for s in per_split.values()),
        "dtype": dtype,
        "device": device,
        "max_length": max_length,
        "batch_tokens": batch_tokens,
        "storage": storage,
    }
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
