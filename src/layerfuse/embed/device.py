"""The compute device and dtype: ``auto`` picks a GPU when present and bfloat16 where it is the
faster dtype on this hardware.
"""

from __future__ import annotations

import time
from pathlib import Path

from layerfuse.errors import LayerfuseError
from layerfuse.validation import check_choice

__all__ = ["DTYPES", "fast_bf16", "bf16_instructions", "bf16_speedup", "resolve_dtype", "resolve_device"]

DTYPES = ("auto", "float32", "bfloat16")


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
        check_choice(dtype, DTYPES, "`dtype`")
    if dtype == "auto":
        return "bfloat16" if fast_bf16(device) else "float32"
    return dtype


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise LayerfuseError("`device` cuda was asked for, but torch sees no GPU: use `device` cpu or auto")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise LayerfuseError(f"unknown device '{device}': use auto, cpu or cuda")
    return device
