"""Fusion of several pooled embeddings into one vector.

A *source* is one model's selected representation of a batch of texts: a tensor ``[B, d]`` (one
layer, or a window of layers already averaged) or ``[B, K, d]`` (K layers kept for a learned
:class:`ScalarMix`). Every fusion module takes a ``list`` of sources, one per model/layer choice,
each of its own width, and returns one tensor ``[B, out_dim]``.

Each fusion first turns 3-D sources into 2-D ones with its own :class:`ScalarMix` per source, then
combines the 2-D vectors. Strategies live in :data:`FUSIONS`; adding one is one class decorated
with :func:`register_fusion`. Build by name with :func:`build_fusion`.

Shapes are described by ``source_dims``: one entry per source, an ``int`` ``d`` for ``[B, d]``
sources or a pair ``(K, d)`` for ``[B, K, d]`` sources.

Multiplicative fusions (``hadamard``, ``matmul``, ``quaternion``) layer-normalise each projection
(without affine parameters) before multiplying and rescale each product so its entries keep unit
variance; a product of many raw projections otherwise explodes or vanishes during training.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from layerfuse.config import DEFAULT_PROJ_DIM
from layerfuse.errors import LayerfuseError
from layerfuse.validation import check_choice

__all__ = ["FUSIONS", "register_fusion", "build_fusion", "ScalarMix", "Fusion", "ConcatFusion", "SumFusion", "MeanFusion", "HadamardFusion", "MatmulFusion", "hamilton_product", "QuaternionFusion", "GatedFusion", "AttentionFusion", "MoEFusion", "SumResidualFusion", "MeanResidualFusion", "HadamardResidualFusion", "MatmulResidualFusion", "QuaternionResidualFusion"]

#: name -> fusion class. Filled by :func:`register_fusion`.
FUSIONS: dict[str, type[Fusion]] = {}


def register_fusion(name: str):
    """Class decorator: register a :class:`Fusion` subclass under ``name``."""

    def decorate(cls):
        if name in FUSIONS:
            raise ValueError(f"fusion name {name!r} is already registered to {FUSIONS[name].__name__}")
        cls.name = name
        FUSIONS[name] = cls
        return cls

    return decorate


def build_fusion(name: str, source_dims: Sequence, proj_dim: int = DEFAULT_PROJ_DIM, **kw) -> Fusion:
    """Build the fusion registered as ``name`` for sources of the given shapes.

    ``source_dims``: one entry per source, ``d`` for ``[B, d]`` or ``(K, d)`` for ``[B, K, d]``.
    ``proj_dim``: common width that projecting strategies map every source to (ignored by
    ``concat``). Extra keyword arguments go to the strategy (e.g. ``n_experts`` for ``moe``).
    """
    check_choice(name, list(FUSIONS), "fusion")
    cls = FUSIONS[name]
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        allowed = [p for p in params if p not in ("self", "source_dims", "proj_dim")]
        bad = sorted(set(kw) - set(allowed))
        if bad:
            hint = f"it accepts {', '.join(allowed)}" if allowed else "it accepts no extra options"
            raise LayerfuseError(f"fusion {name!r} got unknown option(s) {', '.join(bad)}: {hint}")
    return cls(source_dims, proj_dim=proj_dim, **kw)


# --------------------------------------------------------------------------------------------
# building blocks


class ScalarMix(nn.Module):
    """ELMo-style learned mix of K layers: ``gamma * sum_k softmax(w)_k * x[:, k]``.

    ``[B, K, d] -> [B, d]``. Weights start equal (plain layer average) and gamma at 1.
    """

    def __init__(self, n_layers: int):
        super().__init__()
        if not isinstance(n_layers, int) or n_layers < 1:
            raise LayerfuseError(f"ScalarMix needs a positive layer count, got {n_layers!r}")
        self.n_layers = n_layers
        self.weights = nn.Parameter(torch.zeros(n_layers))
        self.gamma = nn.Parameter(torch.ones(()))

    def layer_weights(self) -> Tensor:
        """Current normalised layer weights ``[K]`` (sum to 1)."""
        return torch.softmax(self.weights, dim=0)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[1] != self.n_layers:
            raise LayerfuseError(
                f"ScalarMix expects [B, {self.n_layers}, d], got {list(x.shape)}"
            )
        w = self.layer_weights().to(x.dtype)
        return self.gamma * torch.einsum("k,bkd->bd", w, x)


def _normalise_source_dims(source_dims) -> list:
    if isinstance(source_dims, (int, str)) or not isinstance(source_dims, Sequence):
        raise LayerfuseError(
            f"source_dims must be a list with one entry per source (d or (K, d)), got {source_dims!r}"
        )
    if len(source_dims) == 0:
        raise LayerfuseError("source_dims is empty: pass one entry per source, d or (K, d)")
    out: list = []
    for i, d in enumerate(source_dims):
        if isinstance(d, bool):
            d = None
        if isinstance(d, int) and d > 0:
            out.append(int(d))
        elif (
            isinstance(d, Sequence)
            and not isinstance(d, str)
            and len(d) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in d)
        ):
            out.append((int(d[0]), int(d[1])))
        else:
            raise LayerfuseError(
                f"source_dims[{i}] is {d!r}: pass a positive width d for a [N, d] source "
                "or a pair (K, d) for a [N, K, d] source"
            )
    return out


def _width(dim) -> int:
    return dim if isinstance(dim, int) else dim[1]


def _shape_text(dim) -> str:
    return f"[B, {dim}]" if isinstance(dim, int) else f"[B, {dim[0]}, {dim[1]}]"


# --------------------------------------------------------------------------------------------
# base class


class Fusion(nn.Module):
    """Base class: scalar-mixes 3-D sources, then calls :meth:`fuse` on the 2-D vectors.

    Subclasses set ``self.fused_dim`` in ``__init__`` and implement ``fuse(xs) -> [B, fused_dim]``.
    A subclass with ``residual = True`` returns ``cat([*sources, fused])`` instead.
    """

    name: str = "?"
    residual: bool = False
    #: A fusion trained by its own procedure instead of end to end by gradient descent (``stack``)
    #: sets this to a function taking :func:`~layerfuse.model.training.fit_head`'s arguments.
    custom_fit = None

    def __init__(self, source_dims: Sequence, proj_dim: int = DEFAULT_PROJ_DIM):
        super().__init__()
        if isinstance(proj_dim, bool) or not isinstance(proj_dim, int) or proj_dim < 1:
            raise LayerfuseError(f"proj_dim must be a positive integer, got {proj_dim!r}")
        self.source_dims = _normalise_source_dims(source_dims)
        self.proj_dim = proj_dim
        self.widths = [_width(d) for d in self.source_dims]
        self.n_sources = len(self.source_dims)
        self.mixes = nn.ModuleList(
            ScalarMix(d[0]) if isinstance(d, tuple) else nn.Identity() for d in self.source_dims
        )
        self.extra_kwargs: dict = {}
        self.fused_dim = 0

    @property
    def out_dim(self) -> int:
        """Width of the returned vector."""
        return self.fused_dim + (sum(self.widths) if self.residual else 0)

    def get_config(self) -> dict:
        """JSON-friendly description; ``build_fusion(**...)`` style rebuild via :func:`from_config`."""
        return {
            "name": self.name,
            "source_dims": [d if isinstance(d, int) else list(d) for d in self.source_dims],
            "proj_dim": self.proj_dim,
            "kwargs": dict(self.extra_kwargs),
        }

    @staticmethod
    def from_config(config: dict) -> Fusion:
        return build_fusion(
            config["name"], config["source_dims"], proj_dim=config["proj_dim"], **config.get("kwargs", {})
        )

    def mix(self, xs) -> list[Tensor]:
        """Check the sources against ``source_dims`` and scalar-mix the 3-D ones."""
        if isinstance(xs, Tensor) or not isinstance(xs, (list, tuple)):
            raise LayerfuseError(
                f"fusion {self.name!r} expects a list of {self.n_sources} source tensor(s), "
                f"got {type(xs).__name__}"
            )
        if len(xs) != self.n_sources:
            raise LayerfuseError(
                f"fusion {self.name!r} was built for {self.n_sources} source(s) but got {len(xs)}: "
                f"pass sources shaped {', '.join(_shape_text(d) for d in self.source_dims)}"
            )
        out = []
        for i, (x, d, mix) in enumerate(zip(xs, self.source_dims, self.mixes)):
            expected = (d,) if isinstance(d, int) else tuple(d)
            if not isinstance(x, Tensor) or tuple(x.shape[1:]) != expected or x.dim() != len(expected) + 1:
                got = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise LayerfuseError(
                    f"source {i} has shape {got}: fusion {self.name!r} expects {_shape_text(d)}"
                )
            out.append(mix(x))
        batch = {x.shape[0] for x in out}
        if len(batch) != 1:
            raise LayerfuseError(
                f"sources have different batch sizes {sorted(batch)}: pass the same texts to every source"
            )
        return out

    def fuse(self, xs: list[Tensor]) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, xs) -> Tensor:
        xs = self.mix(xs)
        fused = self.fuse(xs)
        if self.residual:
            return torch.cat([*xs, fused], dim=-1)
        return fused

    def extra_repr(self) -> str:
        return f"sources={self.source_dims}, out_dim={self.out_dim}"


def _projections(widths: Sequence[int], proj_dim: int) -> nn.ModuleList:
    return nn.ModuleList(nn.Linear(w, proj_dim) for w in widths)


# --------------------------------------------------------------------------------------------
# strategies


@register_fusion("concat")
class ConcatFusion(Fusion):
    """Concatenate the sources; no projection (``proj_dim`` is ignored)."""

    def __init__(self, source_dims, proj_dim: int = DEFAULT_PROJ_DIM):
        super().__init__(source_dims, proj_dim)
        self.fused_dim = sum(self.widths)

    def fuse(self, xs):
        return torch.cat(xs, dim=-1)


@register_fusion("sum")
class SumFusion(Fusion):
    """Project each source to ``proj_dim``, L2-normalise, sum."""

    def __init__(self, source_dims, proj_dim: int = DEFAULT_PROJ_DIM):
        super().__init__(source_dims, proj_dim)
        self.proj = _projections(self.widths, proj_dim)
        self.fused_dim = proj_dim

    def fuse(self, xs):
        return torch.stack([F.normalize(p(x), dim=-1) for p, x in zip(self.proj, xs)]).sum(0)


@register_fusion("mean")
class MeanFusion(Fusion):
    """Project each source to ``proj_dim`` and average."""

    def __init__(self, source_dims, proj_dim: int = DEFAULT_PROJ_DIM):
        super().__init__(source_dims, proj_dim)
        self.proj = _projections(self.widths, proj_dim)
        self.fused_dim = proj_dim

    def fuse(self, xs):
        return torch.stack([p(x) for p, x in zip(self.proj, xs)]).mean(0)


class _NormedProjections(Fusion):
    """Shared part of the multiplicative fusions: projection followed by LayerNorm (no affine)."""

    def __init__(self, source_dims, proj_dim: int = DEFAULT_PROJ_DIM):
        super().__init__(source_dims, proj_dim)
        self.proj = _projections(self.widths, proj_dim)
        self.fused_dim = proj_dim

    def projected(self, xs) -> list[Tensor]:
        return [F.layer_norm(p(x), (self.proj_dim,)) for p, x in zip(self.proj, xs)]


@register_fusion("hadamard")
class HadamardFusion(_NormedProjections):
    """Project, layer-normalise, element-wise product across sources."""

    def fuse(self, xs):
        hs = self.projected(xs)
        out = hs[0]
        for h in hs[1:]:
            out = out * h
        return out


@register_fusion("matmul")
class MatmulFusion(_NormedProjections):
    """Project to ``proj_dim = m*m``, view each as an ``m x m`` matrix, multiply in source order.

    Each product is divided by ``sqrt(m)`` so entries keep unit variance.
    """

    def __init__(self, source_dims, proj_dim: int = DEFAULT_PROJ_DIM):
        side = math.isqrt(proj_dim) if isinstance(proj_dim, int) and proj_dim > 0 else 0
        if side * side != proj_dim:
            raise LayerfuseError(
                f"fusion 'matmul' needs proj_dim to be a perfect square (e.g. 1024 = 32x32), got {proj_dim!r}"
            )
        super().__init__(source_dims, proj_dim)
        self.side = side

    def fuse(self, xs):
        m = self.side
        hs = [h.view(-1, m, m) for h in self.projected(xs)]
        out = hs[0]
        scale = 1.0 / math.sqrt(m)
        for h in hs[1:]:
            out = torch.bmm(out, h) * scale
        return out.reshape(out.shape[0], m * m)


def hamilton_product(p: Tensor, q: Tensor) -> Tensor:
    """Hamilton product of quaternions stored in the last dimension ``[..., 4] = (a, b, c, d)``."""
    a1, b1, c1, d1 = p.unbind(-1)
    a2, b2, c2, d2 = q.unbind(-1)
    return torch.stack(
        (
            a1 * a2 - b1 * b2 - c1 * c2 - d1 * d2,
            a1 * b2 + b1 * a2 + c1 * d2 - d1 * c2,
            a1 * c2 - b1 * d2 + c1 * a2 + d1 * b2,
            a1 * d2 + b1 * c2 - c1 * b2 + d1 * a2,
        ),
        dim=-1,
    )


@register_fusion("quaternion")
class QuaternionFusion(_NormedProjections):
    """Project to ``proj_dim``, view as ``proj_dim/4`` quaternions, Hamilton product in source order.

    Each product is halved so components keep unit variance.
    """

    def __init__(self, source_dims, proj_dim: int = DEFAULT_PROJ_DIM):
        if isinstance(proj_dim, int) and not isinstance(proj_dim, bool) and proj_dim % 4 != 0:
            raise LayerfuseError(
                f"fusion 'quaternion' needs proj_dim divisible by 4 (e.g. 1024), got {proj_dim!r}"
            )
        super().__init__(source_dims, proj_dim)

    def fuse(self, xs):
        hs = [h.view(h.shape[0], -1, 4) for h in self.projected(xs)]
        out = hs[0]
        for h in hs[1:]:
            out = hamilton_product(out, h) * 0.5
        return out.reshape(out.shape[0], self.proj_dim)


@register_fusion("gated")
class GatedFusion(Fusion):
    """Gated multimodal unit (Arevalo et al. 2017) generalised to S sources.

    ``h_s = tanh(W_s x_s)``; gates ``z = W_z [x_1; ...; x_S]`` give one value per source and
    dimension, normalised by a softmax over sources (S >= 2; for two sources this is GMU's
    ``z, 1 - z``) or a sigmoid (S = 1, a feature gate). Output ``sum_s z_s * h_s``.
    """

    def __init__(self, source_dims, proj_dim: int = DEFAULT_PROJ_DIM):
        super().__init__(source_dims, proj_dim)
        self.proj = _projections(self.widths, proj_dim)
        self.gate = nn.Linear(sum(self.widths), self.n_sources * proj_dim)
        self.fused_dim = proj_dim
        self.last_gates: Tensor | None = None

    def gates(self, xs: list[Tensor]) -> Tensor:
        """Gate values ``[B, S, proj_dim]`` for already-mixed 2-D sources."""
        z = self.gate(torch.cat(xs, dim=-1)).view(-1, self.n_sources, self.proj_dim)
        return torch.sigmoid(z) if self.n_sources == 1 else torch.softmax(z, dim=1)

    def fuse(self, xs):
        h = torch.stack([torch.tanh(p(x)) for p, x in zip(self.proj, xs)], dim=1)
        z = self.gates(xs)
        self.last_gates = z.detach()
        return (z * h).sum(1)


@register_fusion("attention")
class AttentionFusion(Fusion):
    """Per-example softmax attention over projected sources.

    ``h_s = W_s x_s``; score ``e_s = v^T tanh(U h_s)`` (``hidden`` units, shared across sources);
    ``alpha = softmax(e)`` over sources; output ``sum_s alpha_s h_s``. The weights of the last
    forward call are kept in ``last_weights`` ``[B, S]``; :meth:`source_weights` computes them.
    With one source there is nothing to weigh: no scoring layer is built and the weight is 1.
    """

    def __init__(self, source_dims, proj_dim: int = DEFAULT_PROJ_DIM, hidden: int = 128):
        super().__init__(source_dims, proj_dim)
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise LayerfuseError(f"attention fusion needs a positive integer hidden, got {hidden!r}")
        self.extra_kwargs = {"hidden": hidden}
        self.proj = _projections(self.widths, proj_dim)
        self.scorer = (
            nn.Sequential(nn.Linear(proj_dim, hidden), nn.Tanh(), nn.Linear(hidden, 1, bias=False))
            if self.n_sources > 1
            else None
        )
        self.fused_dim = proj_dim
        self.last_weights: Tensor | None = None

    def _weights(self, h: Tensor) -> Tensor:
        if self.scorer is None:
            return h.new_ones(h.shape[0], 1)
        return torch.softmax(self.scorer(h).squeeze(-1), dim=1)

    def source_weights(self, xs) -> Tensor:
        """Attention weights ``[B, S]`` (rows sum to 1) for raw sources, without gradients."""
        with torch.no_grad():
            xs = self.mix(xs)
            h = torch.stack([p(x) for p, x in zip(self.proj, xs)], dim=1)
            return self._weights(h)

    def fuse(self, xs):
        h = torch.stack([p(x) for p, x in zip(self.proj, xs)], dim=1)  # [B, S, P]
        alpha = self._weights(h)
        self.last_weights = alpha.detach()
        return (alpha.unsqueeze(-1) * h).sum(1)


@register_fusion("moe")
class MoEFusion(Fusion):
    """Mixture of experts over the concatenated sources.

    ``n_experts`` linear experts map ``[x_1; ...; x_S]`` to ``proj_dim``; a softmax gate on the
    same input weighs them per example. The gate of the last forward call is in ``last_gates``.
    """

    def __init__(self, source_dims, proj_dim: int = DEFAULT_PROJ_DIM, n_experts: int = 4):
        super().__init__(source_dims, proj_dim)
        if isinstance(n_experts, bool) or not isinstance(n_experts, int) or n_experts < 1:
            raise LayerfuseError(f"moe fusion needs a positive integer n_experts, got {n_experts!r}")
        self.extra_kwargs = {"n_experts": n_experts}
        self.n_experts = n_experts
        in_dim = sum(self.widths)
        self.experts = nn.Linear(in_dim, n_experts * proj_dim)
        self.gate = nn.Linear(in_dim, n_experts)
        self.fused_dim = proj_dim
        self.last_gates: Tensor | None = None

    def fuse(self, xs):
        x = torch.cat(xs, dim=-1)
        e = self.experts(x).view(-1, self.n_experts, self.proj_dim)
        g = torch.softmax(self.gate(x), dim=-1)
        self.last_gates = g.detach()
        return (g.unsqueeze(-1) * e).sum(1)


# residual variants: original (mixed) sources concatenated with the fused vector


@register_fusion("sum+res")
class SumResidualFusion(SumFusion):
    residual = True


@register_fusion("mean+res")
class MeanResidualFusion(MeanFusion):
    residual = True


@register_fusion("hadamard+res")
class HadamardResidualFusion(HadamardFusion):
    residual = True


@register_fusion("matmul+res")
class MatmulResidualFusion(MatmulFusion):
    residual = True


@register_fusion("quaternion+res")
class QuaternionResidualFusion(QuaternionFusion):
    residual = True


# Registers "stack" (per-source heads out-of-fold on train + a meta-classifier): its own module.
from layerfuse.model import stacking as _stacking  # noqa: E402,F401
