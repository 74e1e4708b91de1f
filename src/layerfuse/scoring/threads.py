"""Thread settings for scoring: small products on one thread, large ones on several.

On a machine shared with other jobs, small multi-threaded operations can run far slower than
single-threaded ones because worker threads wait on busy cores (measurements in
docs/benchmarks.md), so scoring runs on one thread except for the large products.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch

__all__ = ["torch_threads", "big_threads"]


@contextmanager
def torch_threads(n: int | None):
    """Run a block with ``n`` torch threads (None: unchanged), restoring the old count after.

    Why: on a machine shared with other jobs, small multi-threaded ops (d x d factorisations,
    [N, d] x [d, 10] products) run far slower than single-threaded ones because worker threads
    wait on busy cores (docs/benchmarks.md#measurements-behind-the-defaults). Only the large products (Gram matrix, k-NN similarities) gain
    from extra threads, so everything else runs on one thread (see ``score_layers(threads=)``).
    """
    old = torch.get_num_threads()
    change = bool(n) and int(n) != old
    if change:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if change:
            torch.set_num_threads(old)


def big_threads(threads: int | None = None) -> int:
    """Threads for the large products: ``threads`` if given, else half the cores (at least 1,
    at most torch's setting): what measured best on a shared 2-core machine (docs/benchmarks.md#measurements-behind-the-defaults)."""
    if threads:
        return int(threads)
    return max(1, min(torch.get_num_threads(), (os.cpu_count() or 2) // 2))
