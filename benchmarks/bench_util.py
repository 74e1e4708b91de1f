"""Small helpers shared by the benchmark scripts: per-row peak memory, matmul ceilings, how far
two runs' arrays differ, length-sorted token ids (of SST-2 sentences through a loaded backbone), and
writing a result as JSON plus a Markdown table."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch


def max_rel_diff(reference, other) -> float:
    """Largest |other - reference| over the largest |reference| (both read as float32)."""
    ref = np.asarray(reference, dtype=np.float32)
    return float(np.abs(np.asarray(other, dtype=np.float32) - ref).max() / np.abs(ref).max())


def sorted_tokens(backbone, texts, max_length: int) -> tuple[list[list[int]], str]:
    """``texts`` as ``backbone``'s token ids (at most ``max_length``), longest first, and its
    padding side: what ``layerfuse.embed.forward.embed_sorted`` takes."""
    from layerfuse.embed.forward import tokenize

    enc, _ = tokenize(backbone, texts, max_length)
    return sorted(enc, key=len, reverse=True), getattr(backbone.tokenizer, "padding_side", "right") or "right"


def sst2_sorted(model: str, dtype: str, n_texts: int, max_length: int):
    """The set-up of the single-backbone extraction benchmarks: ``dtype`` resolved (``auto`` as
    ``layerfuse`` does), its default token budget, the backbone loaded on the CPU, and the first
    ``n_texts`` SST-2 train sentences as :func:`sorted_tokens`. Returns
    ``(dtype, batch_tokens, backbone, token_ids, padding_side)``."""
    from layerfuse.config import BATCH_TOKENS_BY_DTYPE
    from layerfuse.data.builtin import load_builtin
    from layerfuse.embed.backbones import load_backbone
    from layerfuse.embed.device import resolve_dtype

    dtype = resolve_dtype(dtype, "cpu")
    backbone = load_backbone(model, dtype=dtype, progress=False)
    enc, side = sorted_tokens(backbone, list(load_builtin("sst2").splits["train"].texts[:n_texts]), max_length)
    return dtype, BATCH_TOKENS_BY_DTYPE[dtype], backbone, enc, side


def write_results(out, data: dict, md_lines: list[str]) -> None:
    """``out``.json (``data``) and ``out``.md (the lines), then say where they went."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    out.with_suffix(".md").write_text("\n".join(md_lines) + "\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


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
