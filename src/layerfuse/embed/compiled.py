"""Compiled transformer blocks: ``torch.compile`` for long extractions.

Between a block's matrix products sit element-wise steps (RMSNorm's float32 round trip, the rotary
embedding, SiLU × up, the residual adds, dtype copies). In eager mode each is its own pass over
memory; with AMX the products are fast enough that these passes are half of a bf16 forward
(docs/benchmarks.md, op profile). Inductor fuses them into a few generated C++ loops; gated MLPs also get gate and up as one
product (:func:`stack_gate_up`), and the mean pooling between blocks becomes one fused loop
(:func:`~layerfuse.embed.pooling.masked_mean` compiled).
On the 2-core AMX Xeon SmolLM2-135M's extraction ran 1.30× faster in bf16 and 1.07× in fp32
(``benchmarks/extract_throughput.py``, 300 sentences) and 1.21× / 1.36× on the built-in run's
train / test splits (docs/benchmarks.md); pooled fp32 vectors stay equal within 4e-7, bf16 ones
are as close to the fp32 vectors as eager bf16's, or closer.

Compiling costs time once: ~17 s with an empty compile cache, ~2.5 s once inductor's cache holds
the generated code (kept under the layerfuse cache, ``<cache_root>/inductor``, so it lasts with
the cache). ``compile="auto"`` (the
default) therefore compiles only where the pass left to run is long enough to earn that back:
on a CPU, with a C++ compiler on the PATH (inductor needs one), and at least
:data:`COMPILE_MIN_FLOP` of block products to compute. Every block of a model has the same code,
so one dynamic-shape graph serves all blocks and every batch shape. Hooks stay outside the
compiled code, so streaming pooling and the early stop work as in eager mode. If compiling fails
(no working compiler, an unsupported model), the blocks go back to eager and the pass goes on.

The choice is not part of a cache key: compiled and eager vectors differ by float rounding (as
another thread count or CPU would make them); an extraction's stats say which way each split ran
(``stats["splits"][split]["compiled"]``). A resumed extraction decides again on what is left, so
one entry can hold chunks of both.
"""

from __future__ import annotations

import os
import shutil
import time

from layerfuse.errors import LayerfuseError

__all__ = ["COMPILE_CHOICES", "COMPILE_MIN_FLOP", "block_flops_per_token", "compiler", "compile_decision",
           "compile_blocks", "eager_blocks", "normalise_compile", "stack_gate_up"]

COMPILE_CHOICES = ("auto", "on", "off")

#: ``compile="auto"`` compiles when the blocks' products left to run come to at least this many
#: FLOPs (tokens × 2 × the parameters of the blocks run). The built-in run's SmolLM2 train split
#: is 34 TFLOP (+ 9 for test): compiled from an empty cache it took 144 s against 145 s eager, the
#: 16.7 s of compiling just paid back by ~20 % faster extraction. 1e14 (~470k SmolLM2 tokens, or
#: SST-2's train split through a 0.5B model) is where a cold compile pays back several times;
#: below it the pass runs eager, as the built-in run does.
COMPILE_MIN_FLOP = 1e14


def normalise_compile(value) -> str:
    """``auto``/``on``/``off`` from a setting (booleans and their usual spellings taken too)."""
    if value is True or (isinstance(value, str) and value.lower() in ("on", "true", "yes", "1")):
        return "on"
    if value is False or value is None or (isinstance(value, str) and value.lower() in ("off", "false", "no", "0")):
        return "off"
    if isinstance(value, str) and value.lower() == "auto":
        return "auto"
    raise LayerfuseError(f"`compile` must be one of auto, on, off; got {value!r}")


def compiler() -> str | None:
    """The C++ compiler inductor would call (``$CXX``, else ``g++``, ``c++``, ``clang++``), or None."""
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def block_flops_per_token(backbone, depth: int | None = None) -> float:
    """2 × the parameters of blocks 1..depth (all by default): the products' FLOPs per token."""
    from layerfuse.embed.backbones import find_layer_list

    blocks = list(find_layer_list(backbone.model))
    if depth is not None:
        blocks = blocks[: max(1, depth)]
    return 2.0 * sum(p.numel() for b in blocks for p in b.parameters())


def compile_decision(setting: str, backbone, tokens: int, depth: int | None = None) -> tuple[bool, str]:
    """``(compile?, why)`` for a pass of ``tokens`` tokens through blocks 1..depth of ``backbone``."""
    setting = normalise_compile(setting)
    if backbone.extra.get("compiled"):
        return True, "blocks already compiled"
    if setting == "off":
        return False, "compile off"
    device = str(next(backbone.model.parameters()).device)
    cxx = compiler()
    if setting == "on":
        if device == "cpu" and cxx is None:
            return False, "compile on, but no C++ compiler (g++, c++, clang++ or $CXX) is on the PATH: running eager"
        return True, "compile on"
    if device != "cpu":
        return False, f"auto: eager on {device} (compiling there was not measured; --compile on to try)"
    if cxx is None:
        return False, "auto: no C++ compiler on the PATH, which torch.compile needs on a CPU"
    work = tokens * block_flops_per_token(backbone, depth)
    if work < COMPILE_MIN_FLOP:
        return False, (f"auto: {work / 1e12:.1f} TFLOP to run, under the {COMPILE_MIN_FLOP / 1e12:.0f} TFLOP "
                       "that repay compiling")
    return True, f"auto: {work / 1e12:.0f} TFLOP to run ≥ {COMPILE_MIN_FLOP / 1e12:.0f} TFLOP"


def _inductor_cache(root) -> None:
    """Keep inductor's generated code under the layerfuse cache unless the user chose a place.
    (Inductor writes its default into ``TORCHINDUCTOR_CACHE_DIR`` the first time it looks, so a
    value equal to that default counts as not chosen.)"""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    now = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if now is not None and os.path.abspath(now) != os.path.abspath(default_cache_dir()):
        return
    from layerfuse.cache.layout import cache_root

    path = cache_root(root) / "inductor"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # an unwritable cache: inductor's own default (under the temp folder) serves
    if now is not None and os.path.abspath(now) == str(path.resolve()):
        return
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    if now is not None:  # paths derived from the former value are memoised: forget them
        from torch._inductor.utils import clear_caches

        clear_caches()


def _fused_gate_up(self, x):
    """A gated MLP's forward with gate and up as one product (``self.gate_up_weight``: both
    weights stacked; the two projections' weights are views of its halves)."""
    import torch.nn.functional as F

    gu = F.linear(x, self.gate_up_weight)
    h = gu.shape[-1] // 2
    return self.down_proj(self.act_fn(gu[..., :h]) * gu[..., h:])


def stack_gate_up(model) -> list:
    """Give every gated MLP (``gate_proj``, ``up_proj``, ``down_proj``, ``act_fn``; no biases) one
    product for gate and up: their weights are stacked into one ``[2h, d]`` buffer whose halves
    become the two weights (views: no extra memory, same values), and the MLP's forward runs
    :func:`_fused_gate_up`. Returns the modules patched (:func:`eager_blocks` undoes it)."""
    import types

    import torch

    patched = []
    for mod in model.modules():
        if not all(hasattr(mod, a) for a in ("gate_proj", "up_proj", "down_proj", "act_fn")):
            continue
        g, u = mod.gate_proj, mod.up_proj
        if (getattr(g, "bias", None) is not None or getattr(u, "bias", None) is not None
                or getattr(g, "weight", None) is None or g.weight.shape != u.weight.shape):
            continue
        h = g.weight.shape[0]
        w = torch.cat([g.weight.detach(), u.weight.detach()], 0)
        g.weight.data, u.weight.data = w[:h], w[h:]
        mod.register_buffer("gate_up_weight", w, persistent=False)
        mod.forward = types.MethodType(_fused_gate_up, mod)
        patched.append(mod)
    return patched


def compile_blocks(backbone, *, root=None, warm_up: bool = True, announce=None, gate_up: bool = True) -> bool:
    """Replace each block's ``forward`` by its compiled form (dynamic shapes) and, with
    ``warm_up``, compile now on a two-text batch so a failure shows here. ``gate_up`` first gives
    gated MLPs one product for gate and up (:func:`stack_gate_up`; inductor does not merge two
    products). Returns whether the blocks run compiled; on failure they are eager again and
    ``announce`` (if given) says why."""
    import torch

    from layerfuse.embed.backbones import find_layer_list
    from layerfuse.embed.pooling import masked_mean

    if backbone.extra.get("compiled"):
        return True
    _inductor_cache(root)
    blocks = list(find_layer_list(backbone.model))
    backbone.extra["eager_forwards"] = [b.forward for b in blocks]
    backbone.extra["stacked_mlps"] = stack_gate_up(backbone.model) if gate_up else []
    for b in blocks:
        b.forward = torch.compile(b.forward, dynamic=True)
    # The mean pooling of every layer, eager three passes over a float32 copy of the layer: 0.46 s
    # of a 5.4 s compiled bf16 pass over 1,200 SST-2 sentences, 0.15 s compiled; the pass 1.04×
    # (benchmarks/pooling_ab.py --compiled, docs/benchmarks.md).
    backbone.extra["pooled_mean"] = torch.compile(masked_mean, dynamic=True)
    backbone.extra["compiled"] = True
    if not warm_up:
        return True
    t0 = time.perf_counter()
    try:
        _warm_up(backbone)
    except Exception as e:  # inductor raises many types (BackendCompilerFailed, CalledProcessError, ...)
        eager_blocks(backbone)
        if announce is not None:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            announce(f"compiling {backbone.ref} failed ({type(e).__name__}: {first}); running eager")
        return False
    backbone.extra["compile_seconds"] = time.perf_counter() - t0
    return True


def _warm_up(backbone) -> None:
    """One pass (:func:`~layerfuse.embed.forward.embed_sorted`) over one batch of two token lists
    of different lengths (sizes 0 and 1 are specialised by torch.compile, so the batch and its
    length stay above them)."""
    from layerfuse.embed.forward import embed_sorted

    tok = backbone.tokenizer
    first = min(int(getattr(tok, "vocab_size", 100) or 100) - 1, 100)
    seqs = [list(range(first - 7, first + 1)), list(range(first - 4, first + 1))]
    embed_sorted(backbone, seqs, ["mean"], backbone.n_layers,
                 padding_side=getattr(tok, "padding_side", "right") or "right")


def eager_blocks(backbone) -> None:
    """Undo :func:`compile_blocks`: the blocks run their eager ``forward`` again."""
    from layerfuse.embed.backbones import find_layer_list

    former = backbone.extra.pop("eager_forwards", None)
    if former is not None:
        for b, fwd in zip(find_layer_list(backbone.model), former):
            b.forward = fwd
    for mod in backbone.extra.pop("stacked_mlps", []):  # the weights stay views of the stacked buffer
        del mod.forward
        del mod._buffers["gate_up_weight"]
    backbone.extra.pop("pooled_mean", None)
    backbone.extra.pop("compiled", None)
