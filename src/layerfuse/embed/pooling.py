"""Masked poolings over real tokens (mean, last, first, max), correct under left and right padding.
"""

from __future__ import annotations

from typing import Sequence

from layerfuse.errors import LayerfuseError
from layerfuse.validation import parse_list

__all__ = ["POOLINGS", "pool", "parse_poolings"]

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


def parse_poolings(poolings: str | Sequence[str]) -> list[str]:
    return parse_list(poolings, "`pooling`", choices=POOLINGS, noun="pooling")
