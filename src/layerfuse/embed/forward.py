"""The forward pass: token batches in, pooled vectors per layer out.

:func:`forward_pooled` (the default path) pools each block's output while the forward pass runs,
through forward hooks, and keeps only the ``[B, d]`` vectors: a batch's memory no longer grows with
the number of layers, and the pass stops at the deepest layer asked for. :func:`forward_all_layers`
is the former path (Hugging Face ``output_hidden_states``, every layer's ``[B, T, d]`` kept, then
pooled); it stays for the benchmark's side-by-side row and for tests that compare the two.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Sequence

import numpy as np

from layerfuse.config import DEFAULT_BATCH_TOKENS, DEFAULT_MAX_LENGTH
from layerfuse.embed.backbones import Backbone, find_layer_list
from layerfuse.embed.packed import attention_packed, pack, packed_inputs, supports_packing
from layerfuse.embed.pooling import LayerPooler, pool
from layerfuse.errors import LayerfuseError

__all__ = ["plan_batches", "forward_pooled", "packs", "forward_all_layers", "tokenize", "embed_sorted", "embed_texts",
           "prediction_batch_cost"]

#: Largest magnitude stored as float16 (its maximum is 65,504); a pooled array with a larger value
#: is stored in float32.
FLOAT16_LIMIT = 65000.0

# ---------------------------------------------------------------------------------------------
# Batching


def plan_batches(lengths: Sequence[int], batch_tokens: int, max_batch: int | None = None,
                 batch_cost: int = 0) -> list[np.ndarray]:
    """Cut positions ``0..n-1`` (already sorted by length, longest first) into padded batches of at
    most ``batch_tokens`` tokens (batch size × longest length); a single longer text is its own batch.

    ``batch_cost=0`` fills each batch greedily (extraction: long sorted runs of similar lengths,
    where padding is small). ``batch_cost=c > 0`` chooses the cuts that minimise the padded tokens
    plus ``c`` per batch (an exact dynamic programme over the sorted positions): a short group of
    mixed lengths, as a prediction request or a served batch brings, is then split where one long
    text would pad many short ones, without falling apart into one-text batches.
    """
    n = len(lengths)
    lens = np.maximum(np.asarray(lengths, dtype=np.int64), 1)
    sizes = np.maximum(1, batch_tokens // lens)
    if max_batch:
        sizes = np.minimum(sizes, max_batch)
    if batch_cost <= 0 or n == 0:
        batches, start = [], 0
        while start < n:
            batches.append(np.arange(start, min(n, start + int(sizes[start]))))
            start += int(sizes[start])
        return batches
    best = np.full(n + 1, np.inf)  # best[j]: least cost of cutting positions 0..j-1
    best[0] = 0.0
    cut = np.zeros(n + 1, dtype=np.int64)  # cut[j]: where the last batch ending at j starts
    for i in range(n):
        ends = np.arange(i + 1, min(n, i + int(sizes[i])) + 1)
        cost = best[i] + (ends - i) * lens[i] + batch_cost
        better = cost < best[ends]
        best[ends[better]] = cost[better]
        cut[ends[better]] = i
    batches, end = [], n
    while end > 0:
        batches.append(np.arange(cut[end], end))
        end = int(cut[end])
    return batches[::-1]


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


def _model_kwargs(backbone: Backbone, input_ids, attention_mask, no_cache: bool = True) -> dict:
    """Keyword arguments of one pass. ``no_cache=False`` leaves the model's default key/value
    cache on, as the former path did (a decoder then allocates K and V of every layer)."""
    kwargs = dict(input_ids=input_ids, attention_mask=attention_mask)
    if backbone.extra.get("position_ids", True):
        kwargs["position_ids"] = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    if backbone.is_decoder and no_cache:
        kwargs["use_cache"] = False  # no key/value cache: one pass, nothing is generated
    return kwargs


class _StopForward(Exception):
    """Raised from the hook of the deepest block needed, to end the forward pass there."""


def forward_pooled(backbone: Backbone, input_ids, attention_mask, depth: int, poolings) -> list[dict]:
    """Pooled layers 0..depth as the forward pass produces them: ``depth+1`` dicts
    ``{pooling: float32 [B, d]}``. Layer 0 is the input of the first block (Hugging Face's
    ``hidden_states[0]``), layer k the output of block k, and layer L, when asked for, the model's
    ``last_hidden_state`` (after the final norm, as ``output_hidden_states`` gives it). With
    ``depth < L`` the pass ends after block ``depth``. Only the pooled vectors are kept: each
    layer's ``[B, T, d]`` output is freed by the model as it goes on. Where :func:`packs` says so,
    the batch runs packed (:mod:`layerfuse.embed.packed`): its real tokens as one row, so no block
    computes the padding, attention in the padded frame; the padded pass's values (float32 equal
    or within 1e-6, bf16 within its rounding)."""
    blocks = find_layer_list(backbone.model)
    L = backbone.n_layers
    depth = max(1, min(depth, L))
    kwargs = _model_kwargs(backbone, input_ids, attention_mask)
    packing = None
    if packs(backbone):
        packing = pack(attention_mask, causal=backbone.is_decoder, dtype=next(backbone.model.parameters()).dtype)
        kwargs = packed_inputs(kwargs, packing)
    pooler = LayerPooler(attention_mask, poolings, mean=backbone.extra.get("pooled_mean"),
                         gather=None if packing is None else packing.gather)
    pooled: list = [None] * (depth + 1)

    def first_input(_m, args, kwargs):
        pooled[0] = pooler(args[0] if args else kwargs["hidden_states"])

    def block_output(k):
        def hook(_m, _inp, out):
            pooled[k] = pooler(out[0] if isinstance(out, tuple) else out)
            if k == depth and depth < L:
                raise _StopForward

        return hook

    handles = [blocks[0].register_forward_pre_hook(first_input, with_kwargs=True)]
    handles += [blocks[k - 1].register_forward_hook(block_output(k)) for k in range(1, min(depth, L - 1) + 1)]
    try:
        with attention_packed(backbone.model) if packing is not None else nullcontext():
            out = backbone.model(**kwargs)
        pooled[L] = pooler(out.last_hidden_state)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    return pooled


def packs(backbone: Backbone) -> bool:
    """Whether :func:`forward_pooled` runs ``backbone`` packed (:mod:`layerfuse.embed.packed`): where
    its architecture supports it and it is given positions, unless ``backbone.extra["packed"]``
    says otherwise."""
    choice = backbone.extra.get("packed")
    if choice is not None:
        return bool(choice)
    return backbone.extra.get("position_ids", True) and supports_packing(backbone.model)


def forward_all_layers(backbone: Backbone, input_ids, attention_mask, depth: int, *, no_cache: bool = False):
    """Hidden states of layers 0..depth: a list of ``depth+1`` tensors ``[B, T, d]`` (the former
    path, through ``output_hidden_states``; see the module docstring). Its default keeps the
    former path's key/value cache, so that the benchmark's row is the method as it was."""
    import torch.nn as nn

    model = backbone.model
    L = backbone.n_layers
    depth = max(1, min(depth, L))
    kwargs = dict(_model_kwargs(backbone, input_ids, attention_mask, no_cache), output_hidden_states=True)
    if depth == L:
        out = model(**kwargs)
        return list(out.hidden_states)
    # Stop early: run only the first `depth` blocks. The model then returns the last of them
    # through its final norm, so take that block's raw output from a hook instead.
    parent, attr = _layer_parent(model)
    full = getattr(parent, attr)
    captured = {}
    try:  # transformers >= 5 installs its capturing hooks lazily, on the blocks present at first use:
        # install them on the whole list first, or a later deeper pass misses the blocks cut here.
        from transformers.utils.output_capturing import maybe_install_capturing_hooks

        maybe_install_capturing_hooks(model)
    except ImportError:
        pass

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


def _pooled_batch(backbone: Backbone, ids, mask, depth: int, poolings, streaming: bool) -> list[dict]:
    """Layers 0..depth of one batch pooled (depth 0 still runs the first block: the passes start at 1)."""
    if streaming:
        return forward_pooled(backbone, ids, mask, depth, poolings)[: depth + 1]
    states = forward_all_layers(backbone, ids, mask, depth)[: depth + 1]
    return [{p: pool(h.float(), mask, p) for p in poolings} for h in states]


def embed_sorted(backbone: Backbone, enc: list[list[int]], poolings: Sequence[str], depth: int, *,
                 batch_tokens: int = DEFAULT_BATCH_TOKENS, padding_side: str = "right", out_dtype=np.float32,
                 on_batch=None, streaming: bool = True, batch_cost: int = 0) -> dict[str, np.ndarray]:
    """Pooled layers 0..depth for token-id lists given longest first: ``{pooling: [depth+1, n, d]}``.

    ``out_dtype=float16`` stores each pooling in float16 unless one of its values exceeds
    :data:`FLOAT16_LIMIT`; that pooling's array is then float32 (no infinities; rows stored before
    the widening keep their float16 rounding).
    ``streaming=False`` takes the former all-hidden-states path (benchmarks and tests);
    ``batch_cost`` is :func:`plan_batches`'s (0: greedy batches, as extraction uses)."""
    import torch

    tok = backbone.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    dev = next(backbone.model.parameters()).device
    outs = {p: np.empty((depth + 1, len(enc), backbone.width), dtype=out_dtype) for p in poolings}
    lengths = np.array([len(ids) for ids in enc])
    for b in plan_batches(lengths, batch_tokens, batch_cost=batch_cost):
        ids, mask = _pad([enc[j] for j in b], pad_id, padding_side)
        ids, mask = ids.to(dev), mask.to(dev)
        with torch.inference_mode():
            layers = _pooled_batch(backbone, ids, mask, depth, poolings, streaming)
            for k, by_pooling in enumerate(layers):
                for p, v in by_pooling.items():
                    if outs[p].dtype == np.float16 and float(v.abs().max()) > FLOAT16_LIMIT:
                        # Some models' pooled values outgrow float16 on some texts (EmbeddingGemma on
                        # long Reuters documents): this pooling of these texts is kept in float32.
                        outs[p] = outs[p].astype(np.float32)
                    outs[p][k, b, :] = v.cpu().numpy()
        if on_batch is not None:
            on_batch(len(b), int(lengths[b].sum()))
    return outs


def prediction_batch_cost(backbone: Backbone) -> int:
    """The per-batch cost prediction's planner charges for ``backbone``'s device and dtype and
    whether it runs packed (:func:`layerfuse.embed.device.predict_batch_cost`), looked up once per
    backbone (it reads /proc/cpuinfo) and kept in ``backbone.extra``."""
    cost = backbone.extra.get("predict_batch_cost")
    if cost is None:
        from layerfuse.embed.device import predict_batch_cost

        param = next(backbone.model.parameters(), None)
        cost = predict_batch_cost(param.device.type if param is not None else "cpu",
                                  str(param.dtype).replace("torch.", "") if param is not None else "float32",
                                  packed=packs(backbone))
        backbone.extra["predict_batch_cost"] = cost
    return cost


def embed_texts(backbone: Backbone, texts: Sequence[str], poolings: Sequence[str], depth: int, *,
                max_length: int = DEFAULT_MAX_LENGTH, batch_tokens: int = DEFAULT_BATCH_TOKENS,
                round_to: str | None = None, batch_cost: int | None = None) -> dict[str, np.ndarray]:
    """In memory, no cache: ``{pooling: [depth+1, N, d]}`` float32 in the texts' own order.

    Batches are cut by :func:`plan_batches` with ``batch_cost`` (a few dozen texts of mixed lengths,
    as prediction and serving bring, pad far less than in greedy batches); None takes
    :func:`prediction_batch_cost` for the backbone's device and dtype.

    ``round_to="float16"`` rounds through float16, to match embeddings that a classifier was
    trained on when they came from a float16 cache.
    """
    if batch_cost is None:
        batch_cost = prediction_batch_cost(backbone)
    enc, _ = tokenize(backbone, texts, max_length)
    order = np.argsort(-np.array([len(e) for e in enc]), kind="stable")
    side = getattr(backbone.tokenizer, "padding_side", "right") or "right"
    out_dtype = np.float16 if round_to == "float16" else np.float32
    sorted_out = embed_sorted(backbone, [enc[j] for j in order], poolings, depth, batch_tokens=batch_tokens,
                              padding_side=side, out_dtype=out_dtype, batch_cost=batch_cost)
    result = {}
    for p, arr in sorted_out.items():
        full = np.empty(arr.shape, dtype=np.float32)
        full[:, order, :] = arr
        result[p] = full
    return result
