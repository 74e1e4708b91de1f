"""Device and compute dtype.

``dtype="auto"`` picks bfloat16 where it is the faster compute dtype. On a CPU that depends on
more than the instruction flags (whole-model extraction without AMX ran slower in bf16 than in
fp32, with AMX much faster: docs/benchmarks.md#measurements-behind-the-defaults), so it also rests on a measured bf16/fp32 matmul ratio. That ratio
is measured **once per CPU model and torch version** and kept in
``<cache_root>/hardware/<digest>.json``; every later run reads it back, so the same command picks
the same dtype however busy the machine is. Where no measurement can be kept (an unwritable
cache), the flags alone decide: AMX → bfloat16, anything else → float32.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from layerfuse.errors import LayerfuseError
from layerfuse.validation import check_choice

__all__ = ["DTYPES", "fast_bf16", "bf16_instructions", "predict_batch_cost", "bf16_speedup", "bf16_measurement", "hardware_file",
           "dtype_decision", "resolve_dtype", "resolve_device"]

DTYPES = ("auto", "float32", "bfloat16")

#: bf16 must run the measured matmul at least this much faster than fp32 to be the auto choice.
BF16_MIN_SPEEDUP = 1.5


def fast_bf16(device: str) -> bool:
    """Whether bfloat16 is the faster compute dtype here (see :func:`dtype_decision`)."""
    return dtype_decision(device)[0] == "bfloat16"


def dtype_decision(device: str, root: str | os.PathLike | None = None) -> tuple[str, str]:
    """``(dtype, why)`` for ``--dtype auto``: on CUDA, bfloat16 where the GPU supports it; on a CPU,
    bfloat16 only where it advertises AMX or AVX-512 BF16 *and* the kept measurement
    (:func:`bf16_speedup`) shows bf16 ≥ 1.5× fp32; with no measurement, AMX alone decides."""
    import torch

    if device.startswith("cuda"):
        ok = torch.cuda.is_bf16_supported()
        return ("bfloat16", "CUDA GPU with bf16") if ok else ("float32", "CUDA GPU without bf16")
    flags = bf16_instructions()
    if flags == "none":
        return "float32", "the CPU advertises no bf16 instructions (no AMX, no AVX-512 BF16)"
    speedup = bf16_speedup(root)
    if speedup is None:
        dt = "bfloat16" if flags == "AMX" else "float32"
        return dt, f"{flags}; no kept measurement (cache not writable), so the flags decide"
    where = _measured_note(root)
    dt = "bfloat16" if speedup >= BF16_MIN_SPEEDUP else "float32"
    cmp = "≥" if dt == "bfloat16" else "<"
    return dt, f"{flags}; bf16 matmul {speedup:.2f}× fp32 {cmp} {BF16_MIN_SPEEDUP}× ({where})"


def bf16_instructions() -> str:
    """What the CPU advertises for bf16 (from /proc/cpuinfo): AMX, AVX-512 BF16 without AMX, or none.
    Results in bf16 differ slightly between the two (different kernels), speed a lot."""
    flags = _cpu_flags()
    if "amx_bf16" in flags:
        return "AMX"
    return "AVX-512 BF16, no AMX" if "avx512_bf16" in flags else "none"


def predict_batch_cost(device: str = "cpu", dtype: str = "float32", packed: bool = False) -> int:
    """Tokens of overhead per model batch that prediction's batch planner charges
    (:func:`layerfuse.embed.forward.plan_batches`): for bf16 on a CPU with AMX, where it measured
    fastest, ``config.PREDICT_BATCH_COST_AMX_BF16``, or ``config.PREDICT_BATCH_COST_PACKED_AMX_BF16``
    when the batches run ``packed`` (:mod:`layerfuse.embed.packed`); else ``config.PREDICT_BATCH_COST``."""
    from layerfuse.config import PREDICT_BATCH_COST, PREDICT_BATCH_COST_AMX_BF16, PREDICT_BATCH_COST_PACKED_AMX_BF16

    if device == "cpu" and dtype == "bfloat16" and bf16_instructions() == "AMX":
        return PREDICT_BATCH_COST_PACKED_AMX_BF16 if packed else PREDICT_BATCH_COST_AMX_BF16
    return PREDICT_BATCH_COST


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _cpu_flags() -> set[str]:
    text = _cpuinfo()
    return {f for line in text.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}


def _cpu_model() -> str:
    import platform

    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def hardware_file(root: str | os.PathLike | None = None) -> Path:
    """Where the bf16 measurement of this CPU model (and torch version) is kept."""
    import torch

    from layerfuse.cache.layout import cache_root, hardware_root

    # The product is part of the key: a measurement kept with the former, load-prone one is retaken.
    ident = json.dumps({"cpu": _cpu_model(), "bf16": bf16_instructions(), "cores": os.cpu_count(),
                        "torch": torch.__version__, "product": list(MEASURED_PRODUCT)})
    return hardware_root(cache_root(root)) / (hashlib.sha256(ident.encode()).hexdigest()[:16] + ".json")


#: The product :func:`measure_bf16_speedup` times, ``(m, k, n)``. The former [256, 1024] × [1024,
#: 1024] took ~0.2 ms in bf16 on an AMX CPU, so thread wake-ups decided its ratio: one busy core
#: beside it moved it between 3.2× and 10.7× (and a kept 1.49× once chose fp32 on an AMX Xeon);
#: [512, 2048] × [2048, 2048] gave 4.3–4.7× with the core busy or idle (``benchmarks/dtype_auto.py``).
MEASURED_PRODUCT = (512, 2048, 2048)


def measure_bf16_speedup(rounds: int = 15, shape: tuple[int, int, int] = MEASURED_PRODUCT) -> float:
    """fp32 time / bf16 time of a :data:`MEASURED_PRODUCT` product: the median over ``rounds`` of
    the ratio within a round, the two dtypes run back to back so that a burst of load hits both
    (about 0.3 s in all); how much steadier this is under load than a best-of-5 timing and than
    the former smaller product: docs/benchmarks.md#--dtype-auto-is-the-same-on-a-busy-machine."""
    import statistics

    import torch

    m, k, n = shape
    mats = {dt: (torch.randn(m, k).to(dt), torch.randn(k, n).to(dt)) for dt in (torch.float32, torch.bfloat16)}
    for a, b in mats.values():
        a @ b  # warm-up
    ratios = []
    for _ in range(rounds):
        t = {}
        for dt, (a, b) in mats.items():
            t0 = time.perf_counter()
            a @ b
            t[dt] = time.perf_counter() - t0
        ratios.append(t[torch.float32] / max(t[torch.bfloat16], 1e-9))
    return statistics.median(ratios)


_BF16_SPEEDUP: dict = {}


def bf16_measurement(root: str | os.PathLike | None = None) -> dict | None:
    """The kept measurement of this CPU model: read back from :func:`hardware_file`, or measured and
    written there the first time. None where it can be neither read nor written."""
    from layerfuse.cache.atomic import atomic_write_bytes

    path = hardware_file(root)
    if str(path) in _BF16_SPEEDUP:
        return _BF16_SPEEDUP[str(path)]
    try:
        rec = json.loads(path.read_text())
        float(rec["bf16_speedup"])
    except (OSError, ValueError, KeyError, TypeError):
        rec = {"bf16_speedup": measure_bf16_speedup(), "cpu": _cpu_model(), "bf16_instructions": bf16_instructions(),
               "measured": time.strftime("%Y-%m-%d %H:%M"),
               "what": "fp32/bf16 time of a [{},{}]x[{},{}] matmul, median of 15 back-to-back rounds".format(
                   *MEASURED_PRODUCT[:2], *MEASURED_PRODUCT[1:])}
        try:
            import torch

            rec["torch"] = torch.__version__
            atomic_write_bytes(path, json.dumps(rec, indent=1).encode())
        except (OSError, LayerfuseError):  # an unwritable cache (WriteError): the flags decide
            return None
    rec["path"] = str(path)
    _BF16_SPEEDUP[str(path)] = rec
    return rec


def bf16_speedup(root: str | os.PathLike | None = None) -> float | None:
    """bf16 speed-up over fp32 of this CPU model, from :func:`bf16_measurement` (None: none kept)."""
    rec = bf16_measurement(root)
    return None if rec is None else float(rec["bf16_speedup"])


def _measured_note(root) -> str:
    rec = _BF16_SPEEDUP.get(str(hardware_file(root))) or {}
    return f"measured once on {rec.get('measured', '?')}, kept in {rec.get('path', '?')}"


def resolve_dtype(dtype: str, device: str, *, announce=None, root: str | os.PathLike | None = None) -> str:
    """``auto`` → bfloat16 where it is the faster dtype (:func:`dtype_decision`), else float32.
    ``announce``, when given, is called with a line saying what ``auto`` chose and why."""
    check_choice(dtype, DTYPES, "`dtype`")
    if dtype == "auto":
        dt, why = dtype_decision(device, root)
        if announce is not None:
            announce(f"dtype auto → {dt}: {why}")
        return dt
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
