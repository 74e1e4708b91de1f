"""Pooling a layer's token states ``[B, T, d]`` into one vector per text, over the real tokens.

:func:`pool` works on any leading shape; :class:`LayerPooler` is the streaming form used during the
forward pass: it prepares the mask-derived indices once per batch and pools one layer at a time,
staying in the compute dtype except for the mean's sum (float32, as before). Its mean is
:func:`masked_mean`, or a compiled form of it where the blocks run compiled
(:func:`layerfuse.embed.compiled.compile_blocks`): one fused loop instead of three passes over a
float32 copy of the layer.
"""

from __future__ import annotations

from typing import Sequence

from layerfuse.errors import LayerfuseError
from layerfuse.validation import parse_list

__all__ = ["POOLINGS", "pool", "masked_mean", "LayerPooler", "parse_poolings"]

POOLINGS = ("mean", "last", "first", "max")


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


def masked_mean(hidden, pad, count):
    """float32 mean of ``hidden`` ``[B, T, d]`` over the positions where ``pad`` ``[B, T, 1]`` is
    False, ``count`` ``[B, 1]`` of them per row (padded positions may hold NaN: filled, not multiplied)."""
    return hidden.float().masked_fill(pad, 0.0).sum(-2) / count


class LayerPooler:
    """Pool one layer's ``[B, T, d]`` states into ``{pooling: float32 [B, d]}`` for a fixed mask.

    Gives the same numbers as ``pool(h.float(), mask, p)``: ``last``/``first`` gather and ``max``
    takes a maximum in the compute dtype before the (exact) conversion to float32, so only the
    mean converts the whole layer, and that one layer at a time. ``mean`` computes it
    (:func:`masked_mean`'s arguments; a compiled form gives the same values up to summation order).
    ``gather`` (a :class:`~layerfuse.embed.packed.Packing`'s): the layers arrive as one packed row
    ``[1, N, d]`` of the batch's real tokens; ``last``/``first`` index that row directly, ``mean``
    and ``max`` work on its padded frame (one row copy; inside a compiled mean the indexed loads
    measured slower than the copy).
    """

    def __init__(self, mask, poolings, mean=None, gather=None):
        import torch

        for p in poolings:
            if p not in POOLINGS:
                raise LayerfuseError(f"unknown pooling '{p}': choose from {', '.join(POOLINGS)}")
        self.poolings = list(poolings)
        self.mean = masked_mean if mean is None else mean
        real = mask.bool()
        self.pad = ~real[..., None]
        self.count = mask.sum(-1, keepdim=True).clamp(min=1).to(torch.float32)
        T = mask.shape[-1]
        ar = torch.arange(T, device=mask.device)
        self.index = {}
        if "last" in self.poolings:
            self.index["last"] = torch.where(real, ar, torch.full_like(ar, -1)).amax(-1).clamp(0, T - 1)
        if "first" in self.poolings:
            self.index["first"] = torch.where(real, ar, torch.full_like(ar, T)).amin(-1).clamp(0, T - 1)
        self.rows = torch.arange(mask.shape[0], device=mask.device)
        self.gather = gather
        if gather is not None:
            self.index = {p: gather[self.rows, idx] for p, idx in self.index.items()}

    def __call__(self, hidden) -> dict:
        import torch

        out = {}
        frame = hidden
        if self.gather is not None and ("mean" in self.poolings or "max" in self.poolings):
            frame = hidden[0].index_select(0, self.gather.reshape(-1)).view(*self.gather.shape, hidden.shape[-1])
        for p in self.poolings:
            if p == "mean":
                out[p] = self.mean(frame, self.pad, self.count)
            elif p == "max":
                out[p] = frame.masked_fill(self.pad, torch.finfo(hidden.dtype).min).amax(-2).float()
            elif self.gather is None:
                out[p] = hidden[self.rows, self.index[p]].float()
            else:
                out[p] = hidden[0, self.index[p]].float()
        return out


def parse_poolings(poolings: str | Sequence[str]) -> list[str]:
    return parse_list(poolings, "`pooling`", choices=POOLINGS, noun="pooling")
