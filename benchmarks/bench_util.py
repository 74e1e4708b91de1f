"""Small helpers shared by the benchmark scripts: per-row peak memory and matmul ceilings."""

from __future__ import annotations

import time

import torch


def _status_mb(field: str) -> float:
    """One memory line of /proc/self/status (``VmRSS``, ``VmHWM``) in MB; NaN where there is none."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def rss_mb() -> float:
    return _status_mb("VmRSS")


def peak_mb() -> float:
    return _status_mb("VmHWM")


def release_free_memory() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``), so that a row's peak counts
    every page it touches, not only what the allocator did not already hold from an earlier row."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux ``clear_refs`` 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measured(fn):
    """Run ``fn()``; return its result dict with ``seconds`` kept and the peak RSS during the call
    above the RSS at its start (``peak_above_start_mb``) added."""
    import gc

    gc.collect()
    release_free_memory()
    ok = reset_peak()
    start = rss_mb()
    r = fn()
    r["peak_above_start_mb"] = (peak_mb() - start) if ok else None
    return r


def matmul_ceiling(dtype: torch.dtype, n: int = 2048, seconds: float = 3.0) -> float:
    """Best GFLOP/s of an n×n matmul over repeated trials."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best
