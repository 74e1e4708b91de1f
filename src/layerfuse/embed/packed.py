"""Packed batches: a batch's per-token work without its padding.

A batch of length-sorted texts is padded to its longest text, and every padded position goes
through every product, norm and MLP of every block. On the 300-sentence SST-2 default of the
throughput benchmark the greedy batches compute 1.14× the real tokens at 1,024 tokens a batch and
1.23× at 2,048 (``benchmarks/padding.py``, docs/benchmarks.md). Only attention needs the
``[B, T]`` layout; everything else in a block works token by token. So a packed pass feeds the
model the batch's real tokens as one row ``[1, N]`` (each text's own positions), and attention —
the one step that mixes tokens — copies queries, keys and values into the padded ``[B, T]`` frame,
attends there with the padding mask (causal where the model is, and its sliding window), and
gathers the real positions again. The arithmetic is the padded pass's on the real tokens: float32
vectors come out identical (SmolLM2) or within 1e-6 (MiniLM), bf16 ones within bf16 rounding (the
products run at other row counts, which changes their blocking).

It works through transformers' attention interface: :data:`PACKED_ATTENTION` is registered as an
attention implementation (and a mask function that builds no mask: the packing carries it), and
:func:`attention_packed` switches the model to it for a call only, so other callers (the
``output_hidden_states`` path, a model shared with other code) keep the model's own attention.
:func:`supports_packing` says which architectures route attention that way (checked in the tests on
tiny random models of each).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["PACKED_ATTENTION", "PACKED_MODEL_TYPES", "Packing", "attention_packed", "pack", "packed_attention",
           "packed_inputs", "supports_packing"]

#: The name the packed attention is registered under with transformers.
PACKED_ATTENTION = "layerfuse_packed"

#: Model types (``config.model_type``) whose attention goes through transformers' attention
#: interface with the arguments :func:`packed_attention` reads (tests/embed/test_packed.py runs a
#: tiny model of each against the padded pass).
PACKED_MODEL_TYPES = frozenset({"llama", "qwen2", "qwen3", "mistral", "gemma3_text", "bert"})


@dataclass
class Packing:
    """Where a padded batch's real tokens sit. ``flat`` ``[N]``: their positions in the flattened
    ``[B*T]`` frame, row by row; ``gather`` ``[B, T]``: for each frame position, its token in the
    packed row (padding points at the row's first token, and is masked); ``allowed`` ``[B, 1, T, T]``:
    which keys each query attends to (real keys, and not later ones where the model is causal);
    ``bias``: ``allowed`` as the additive mask of the attention scores (0, or the dtype's least
    value), as transformers' eager attention adds it (the CPU path adds ``bias``; a GPU's fused
    kernel takes ``allowed``)."""

    flat: object
    gather: object
    allowed: object
    bias: object


def pack(mask, causal: bool, dtype=None) -> Packing:
    """The :class:`Packing` of a ``[B, T]`` attention mask (1 = token; either padding side), its
    additive mask in ``dtype`` (float32 by default: the compute dtype of the scores)."""
    import torch

    real = mask.bool()
    B, T = real.shape
    flat = real.reshape(-1).nonzero().squeeze(1)
    gather = torch.zeros(B * T, dtype=torch.long, device=mask.device)
    gather[flat] = torch.arange(flat.numel(), device=mask.device)
    first = gather.view(B, T)[torch.arange(B, device=mask.device), real.int().argmax(-1)]
    gather = torch.where(real, gather.view(B, T), first[:, None])
    allowed = real[:, None, None, :].expand(B, 1, T, T)
    if causal:
        ar = torch.arange(T, device=mask.device)
        allowed = allowed & (ar[None, :] <= ar[:, None])
    dtype = dtype or torch.float32
    bias = torch.zeros(allowed.shape, dtype=dtype, device=mask.device).masked_fill_(~allowed, torch.finfo(dtype).min)
    return Packing(flat=flat, gather=gather, allowed=allowed, bias=bias)


def packed_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, *, packing=None,
                     sliding_window=None, softcap=None, **kwargs):
    """Attention of a packed row (query ``[1, H, N, dh]``, key and value ``[1, Hkv, N, dh]``) in
    the padded frame of ``packing``: returns ``([1, N, H, dh], None)`` as transformers' attention
    functions do. ``sliding_window`` (a query sees the last ``w`` positions) and ``softcap`` are
    honoured where a model passes them."""
    import torch

    if packing is None:
        raise RuntimeError("the packed attention was called without a packing (layerfuse.embed.packed)")
    B, T = packing.gather.shape
    N = query.shape[2]
    q, k, v = (_frame(x, packing) for x in (query, key, value))  # [B, H, T, dh]
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    allowed, bias = packing.allowed, packing.bias
    if sliding_window is not None:
        ar = torch.arange(T, device=q.device)
        window = ar[:, None] - ar[None, :] < sliding_window
        allowed = allowed & window
        bias = bias.masked_fill(~window, torch.finfo(bias.dtype).min)
    if q.device.type != "cpu" and softcap is None:  # a GPU: its fused kernel (eager math is the CPU's choice)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scaling)
        return _packed_rows(out, packing, N), None
    scores = torch.matmul(q, k.transpose(2, 3)) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores + bias.to(scores.dtype)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    return _packed_rows(torch.matmul(probs, v), packing, N), None


def _frame(x, packing: Packing):
    """Packed ``[1, H, N, dh]`` (a transposed view of the projection's ``[1, N, H, dh]``) → the padded
    frame ``[B, H, T, dh]``, laid out as the padded pass has it: whole token rows are copied
    (``index_select`` on the projection's own layout), then viewed transposed."""
    B, T = packing.gather.shape
    rows = x[0].transpose(0, 1).index_select(0, packing.gather.reshape(-1))  # [B*T, H, dh]
    return rows.view(B, T, x.shape[1], x.shape[3]).transpose(1, 2)


def _packed_rows(out, packing: Packing, n: int):
    """Attention output ``[B, H, T, dh]`` in the padded frame → ``[1, N, H, dh]``, the real tokens."""
    B, H, T, dh = out.shape
    rows = out.transpose(1, 2)[packing.flat // T, packing.flat % T]  # one gather of the real rows: [N, H, dh]
    return rows.reshape(1, n, H, dh)


def _no_mask(*args, **kwargs):
    """The mask function of :data:`PACKED_ATTENTION`: none (the packing holds the mask)."""
    return None


_registered = False


def _register() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(PACKED_ATTENTION, packed_attention)
    AttentionMaskInterface.register(PACKED_ATTENTION, _no_mask)
    _registered = True


def supports_packing(model) -> bool:
    """Whether ``model``'s attention can run packed (:data:`PACKED_MODEL_TYPES`)."""
    return getattr(getattr(model, "config", None), "model_type", None) in PACKED_MODEL_TYPES


@contextmanager
def attention_packed(model):
    """``model`` runs :func:`packed_attention` inside the block (its own attention again after)."""
    _register()
    config = model.config
    former = config._attn_implementation
    config._attn_implementation = PACKED_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = former


def packed_inputs(kwargs: dict, packing: Packing) -> dict:
    """A padded pass's keyword arguments (``input_ids``, ``attention_mask``, ``position_ids`` if
    given) as one packed row of the real tokens, with the ``packing`` for the attention."""
    out = dict(kwargs)
    out["input_ids"] = kwargs["input_ids"].reshape(-1)[packing.flat][None]
    if kwargs.get("position_ids") is not None:
        out["position_ids"] = kwargs["position_ids"].reshape(-1)[packing.flat][None]
    out["attention_mask"] = None
    out["packing"] = packing
    return out
