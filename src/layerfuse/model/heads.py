"""Classifier heads (the paper's MLP, logistic regression) and :class:`FusionClassifierNet`, the
network that standardises each source, fuses them and applies a head.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from layerfuse.model.fusion import Fusion
from layerfuse.validation import check_choice

__all__ = ["MLPHead", "LinearHead", "HEADS", "build_head", "FusionClassifierNet"]

# --------------------------------------------------------------------------------------------
# heads


class Dropout(nn.Module):
    """Inverted dropout, as :class:`torch.nn.Dropout`: in training each value is zeroed with
    probability ``p`` and the rest scaled by ``1 / (1 - p)``; identity in eval mode.

    The mask is drawn as ``rand >= p`` rather than by ``bernoulli_``, which on CPU took 3x as long
    for a [64, 1024] batch (0.85 vs 0.26 ms, a fifth of a head's training step;
    docs/benchmarks.md#training-the-heads). Same distribution, another random stream.
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand_like(x) >= self.p
        return x * keep * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MLPHead(nn.Module):
    """The paper's head: Linear(in, 1024) ReLU Dropout(0.5) Linear(1024, 256) ReLU Dropout(0.3) Linear(256, C)."""

    def __init__(self, in_dim: int, n_classes: int):
        super().__init__()
        self.in_dim, self.n_classes = in_dim, n_classes
        self.net = nn.Sequential(
            nn.Linear(in_dim, 1024),
            nn.ReLU(),
            Dropout(0.5),
            nn.Linear(1024, 256),
            nn.ReLU(),
            Dropout(0.3),
            nn.Linear(256, n_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class LinearHead(nn.Module):
    """Multinomial logistic regression: one Linear(in, C)."""

    def __init__(self, in_dim: int, n_classes: int):
        super().__init__()
        self.in_dim, self.n_classes = in_dim, n_classes
        self.linear = nn.Linear(in_dim, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


#: name -> head class, each built as ``cls(in_dim, n_classes)``.
HEADS: dict[str, type[nn.Module]] = {"mlp": MLPHead, "logreg": LinearHead}


def build_head(name: str, in_dim: int, n_classes: int) -> nn.Module:
    check_choice(name, list(HEADS), "head")
    return HEADS[name](in_dim, n_classes)


# --------------------------------------------------------------------------------------------
# the network


class FusionClassifierNet(nn.Module):
    """Standardise each source, fuse, classify. Returns logits ``[B, C]``.

    Per-source mean/std live in buffers (``input_mean_i`` / ``input_std_i``, shaped like one row of
    the source), so a saved state dict is all a loaded net needs. They start as 0/1 (identity);
    :meth:`set_standardization` fills them from training arrays.
    """

    def __init__(self, fusion: Fusion, head: nn.Module):
        super().__init__()
        self.fusion = fusion
        self.head = head
        for i, d in enumerate(fusion.source_dims):
            shape = (d,) if isinstance(d, int) else tuple(d)
            self.register_buffer(f"input_mean_{i}", torch.zeros(shape))
            self.register_buffer(f"input_std_{i}", torch.ones(shape))

    @property
    def source_dims(self) -> list:
        return self.fusion.source_dims

    def set_standardization(self, sources: list[np.ndarray]) -> None:
        """Compute per-feature mean/std of each source (axis 0); std below 1e-6 counts as 1."""
        for i, s in enumerate(sources):
            s64 = np.asarray(s, dtype=np.float64)
            mean = s64.mean(axis=0)
            std = s64.std(axis=0)
            std[std < 1e-6] = 1.0
            getattr(self, f"input_mean_{i}").copy_(torch.from_numpy(mean))
            getattr(self, f"input_std_{i}").copy_(torch.from_numpy(std))

    def forward(self, xs: list[Tensor]) -> Tensor:
        if isinstance(xs, (list, tuple)) and len(xs) == self.fusion.n_sources:
            xs = [
                (x - getattr(self, f"input_mean_{i}")) / getattr(self, f"input_std_{i}")
                if isinstance(x, Tensor) and x.shape[1:] == getattr(self, f"input_mean_{i}").shape
                else x  # wrong shape: let the fusion raise its clear error
                for i, x in enumerate(xs)
            ]
        return self.head(self.fusion(xs))
