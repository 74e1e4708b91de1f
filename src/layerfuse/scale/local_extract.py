"""Extraction on this machine in several processes: the chunks of a split shared between this
process and spawned workers, one core's torch threads each.

Where one forward pass on all cores leaves them partly idle (small products and the elementwise
work between them scale poorly across many threads), passes side by side, each on a share of the
cores, can keep them busy. Not on the 2-core AMD EPYC this was measured on: two processes ran
SmolLM2 at 1.01x and MiniLM at 0.86x of one process on both threads (docs/benchmarks.md,
"Extraction in two processes"), so a local extraction runs in one process unless asked
(``extract(workers=N)``, ``--extract-workers N``, ``extraction.workers``).

The chunk stays the unit of the cache. :class:`ProcessExtraction` cuts the chunks (texts longest
first) into units of consecutive texts and hands them out as processes free up; a chunk is written
whole once its units are in, under the key a one-process run uses (an interrupted run resumes
after its last written chunk, with any number of workers). The arrays agree with a one-process
run's to the compute dtype's rounding, not bit for bit: the batches are cut within units and each
process runs one thread. Each worker loads the backbone once, from the same files (a GGUF model
from the dequantised copy the first load left in the cache); what it returns is checked against
this process's fingerprint.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, wait

import numpy as np

from layerfuse.errors import LayerfuseError
from layerfuse.run.workers import spawning_without_main

__all__ = ["ProcessExtraction", "extraction_processes", "UNIT_BATCHES"]

#: A unit of work handed to a process holds about this many batches' tokens (fewer near the end of
#: a split, so the processes finish together).
UNIT_BATCHES = 4


def extraction_processes(workers: int, *, device: str) -> tuple[int, str]:
    """How many processes compute a split, and why: ``workers`` on a CPU; one on a GPU (its device
    is shared, not split)."""
    if device != "cpu":
        return 1, f"device {device}"
    return int(workers), f"workers={workers}"


_WORKER: dict = {}


def _worker_init(model: str, dtype: str, device: str, cache_dir, threads: int, parent: int) -> None:
    import torch

    from layerfuse.run.workers import exit_with_parent

    exit_with_parent(parent)
    torch.set_num_threads(threads)
    try:
        from layerfuse.embed.backbones import load_backbone

        _WORKER["backbone"] = load_backbone(model, dtype=dtype, device=device, root=cache_dir, progress=False)
    except Exception as exc:  # raised by every call, so the driver sees the error itself
        _WORKER["error"] = exc


def _worker_ping() -> int:
    """Answered once this worker has loaded its model (or raises what loading raised)."""
    if "error" in _WORKER:
        raise _WORKER["error"]
    return os.getpid()


def _worker_embed(enc, poolings, depth, batch_tokens, padding_side, out_dtype) -> dict:
    from layerfuse.embed.forward import embed_sorted

    if "error" in _WORKER:
        raise _WORKER["error"]
    bb = _WORKER["backbone"]
    t0 = time.perf_counter()
    arrays = embed_sorted(bb, enc, poolings, depth, batch_tokens=batch_tokens, padding_side=padding_side,
                          out_dtype=out_dtype)
    return {"arrays": arrays, "fingerprint": bb.fingerprint, "pid": os.getpid(),
            "seconds": time.perf_counter() - t0}


class ProcessExtraction:
    """The chunk runner of a local :func:`~layerfuse.embed.extract.extract` (``workers``).

    Made by ``extract``; it loads the backbone in this process (:meth:`backbone`, also for the
    tokenizer), and :meth:`run` computes the missing chunks of one split, in this process alone or,
    when :func:`extraction_processes` says so, split with spawned workers. The workers start on
    the first split that uses them and stay up for the others; :meth:`close` ends them.

    Parameters
    ----------
    model : str
        Model reference (what ``extract`` was given).
    workers : int
        Processes in all, this one included (one on a GPU: :func:`extraction_processes`).
    dtype, device : str
        Resolved compute dtype and device.
    cache_dir : str, path or None
        Cache root, passed to the workers.
    progress : bool
        Progress while loading the model here.
    log : callable or None
        Where the line saying how many processes run goes (None: stderr).
    batch_tokens_auto : bool
        Whether ``run``'s ``batch_tokens`` is the automatic budget, then split between the
        processes (an explicit one is each process's own).
    """

    def __init__(self, model: str, *, workers: int = 2, dtype: str, device: str, cache_dir=None, progress: bool = True,
                 log=None, batch_tokens_auto: bool = False):
        self.model, self.workers, self.dtype, self.device = model, workers, dtype, device
        self.cache_dir = None if cache_dir is None else str(cache_dir)
        self.progress = progress
        self.log = log if log is not None else (lambda s: print(s, file=sys.stderr, flush=True))
        self.bb = None
        self.batch_tokens_auto = batch_tokens_auto
        self.pool = None
        self.ready = None  # the first worker's answer once it has loaded the model
        self.n_pool = 0
        self.announced = None
        self.stats = {"engine": "local", "processes": 1, "worker_pids": [], "worker_seconds": 0.0}

    def backbone(self):
        """The backbone, loaded in this process on first call."""
        if self.bb is None:
            from layerfuse.embed.backbones import load_backbone

            self.bb = load_backbone(self.model, dtype=self.dtype, device=self.device, root=self.cache_dir,
                                    progress=self.progress)
        return self.bb

    def _start(self, n_workers: int, threads: int) -> None:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        if self.pool is not None and self.n_pool == n_workers:
            return
        self.close()
        self.pool = ProcessPoolExecutor(max_workers=n_workers, mp_context=mp.get_context("spawn"),
                                        initializer=_worker_init,
                                        initargs=(self.model, self.dtype, self.device, self.cache_dir, threads,
                                                  os.getpid()))
        self.n_pool = n_workers
        with spawning_without_main():  # the pool starts its processes at a submit
            self.ready = self.pool.submit(_worker_ping)

    def run(self, jobs, enc, poolings, depth, *, batch_tokens, padding_side, out_dtype, write, on_batch) -> None:
        """Embed ``jobs`` (``(chunk index, positions into enc)``, positions longest first) and
        ``write(index, arrays)`` each chunk once all its rows are computed; ``on_batch(texts,
        tokens)`` reports progress (this process's batches as they finish, a worker's unit when it
        arrives).

        With workers, the chunks are cut into units of consecutive positions (:class:`_Units`) and
        handed out as the processes free up: each worker keeps at most two units queued, this
        process computes the next one itself, so a worker still loading its model holds no work
        back, and no process waits for another until the last units of the split."""
        import torch

        from layerfuse.embed.forward import embed_sorted

        jobs = list(jobs)
        if not jobs:
            return
        bb = self.backbone()
        n, why = extraction_processes(self.workers, device=self.device)
        n = max(1, min(n, sum(len(pos) for _, pos in jobs)))
        poolings = list(poolings)
        if n == 1:
            for ci, pos in jobs:
                write(ci, embed_sorted(bb, [enc[j] for j in pos], poolings, depth, batch_tokens=batch_tokens,
                                       padding_side=padding_side, out_dtype=out_dtype, on_batch=on_batch))
            return
        threads_before = torch.get_num_threads()
        threads = max(1, threads_before // n)
        if self.batch_tokens_auto:  # the budget is the machine's: each of n processes takes its share
            batch_tokens = max(1, batch_tokens // n)
        if self.announced != (n, threads, batch_tokens):
            self.log(f"extraction in {n} processes, {threads} torch thread(s) and {batch_tokens:,}-token batches "
                     f"each ({why})")
            self.announced = (n, threads, batch_tokens)
        self._start(n - 1, threads)
        self.stats["processes"] = max(self.stats["processes"], n)
        units = _Units(jobs, [len(ids) for ids in enc], unit_tokens=UNIT_BATCHES * batch_tokens, processes=n)
        inflight: dict = {}  # future -> (chunk index, start, stop)

        def embed(unit):
            ci, a, b = unit
            return embed_sorted(bb, [enc[j] for j in units.positions(ci)[a:b]], poolings, depth,
                                batch_tokens=batch_tokens, padding_side=padding_side, out_dtype=out_dtype,
                                on_batch=on_batch)

        def done(unit, arrays):
            full = units.add(unit, arrays)
            if full is not None:
                write(unit[0], full)

        torch.set_num_threads(threads)
        try:
            while units or inflight:
                for fut in [f for f in inflight if f.done()]:
                    unit = inflight.pop(fut)
                    done(unit, self._result(fut))
                    ci, a, b = unit
                    on_batch(b - a, int(sum(len(enc[j]) for j in units.positions(ci)[a:b])))
                if self.ready.done():
                    self._result(self.ready, arrays=False)  # raises what the worker's start raised
                    while units and len(inflight) < 2 * (n - 1):
                        unit = units.take()
                        ci, a, b = unit
                        with spawning_without_main():
                            fut = self.pool.submit(_worker_embed, [enc[j] for j in units.positions(ci)[a:b]],
                                                   poolings, depth, batch_tokens, padding_side, out_dtype)
                        inflight[fut] = unit
                if units:
                    unit = units.take()
                    done(unit, embed(unit))
                elif inflight:
                    wait(list(inflight), return_when=FIRST_COMPLETED)
        except BaseException:
            for fut in inflight:
                fut.cancel()
            raise
        finally:
            torch.set_num_threads(threads_before)

    def _result(self, fut, arrays: bool = True):
        from concurrent.futures.process import BrokenProcessPool

        try:
            out = fut.result()
        except BrokenProcessPool:
            self.close()
            raise LayerfuseError("an extraction worker process died (out of memory?): the chunks written so far "
                                 "are in the cache; run again to resume, or with extraction workers 1 "
                                 "(--extract-workers 1)") from None
        if not arrays:
            return out
        if out["fingerprint"] != self.bb.fingerprint:
            raise LayerfuseError(f"model {self.model}: a worker process (pid {out['pid']}) loaded weights with "
                                 f"fingerprint {out['fingerprint']}, this process {self.bb.fingerprint}: were the "
                                 "model's files changed during the run?")
        if out["pid"] not in self.stats["worker_pids"]:
            self.stats["worker_pids"].append(out["pid"])
        self.stats["worker_seconds"] += out["seconds"]
        return out["arrays"]

    def close(self) -> None:
        """End the worker processes. A worker still loading its model (this process computed every
        unit before it was ready) is terminated rather than waited for."""
        if self.pool is None:
            return
        if self.ready is not None and not self.ready.done():
            for proc in list(getattr(self.pool, "_processes", {}).values()):
                proc.terminate()
            self.pool.shutdown(wait=False, cancel_futures=True)
        else:
            self.pool.shutdown(wait=True, cancel_futures=True)
        self.pool, self.n_pool, self.ready = None, 0, None


class _Units:
    """The positions of a split's chunks, handed out as units of consecutive positions, and the
    chunks put back together from the units' arrays.

    A unit holds about ``unit_tokens`` tokens, and less towards the end of the split (at most the
    tokens left over ``2 * processes``, at least one text), so the last units are short and the
    processes finish close together. The cuts depend only on the lengths, not on which process
    takes a unit, so a split is cut the same way on every run.
    """

    def __init__(self, jobs, lengths, *, unit_tokens: int, processes: int):
        self.jobs = [(ci, np.asarray(pos)) for ci, pos in jobs]
        self.by_chunk = dict(self.jobs)
        self.lengths = lengths
        self.unit_tokens, self.processes = max(1, int(unit_tokens)), processes
        self.left = int(sum(lengths[j] for _, pos in self.jobs for j in pos))
        self.job, self.start = 0, 0
        self.open: dict = {}  # chunk index -> {start: arrays}, with its row count still missing

    def __bool__(self) -> bool:
        return self.job < len(self.jobs)

    def positions(self, ci) -> np.ndarray:
        """Chunk ``ci``'s positions, longest first."""
        return self.by_chunk[ci]

    def take(self) -> tuple[int, int, int]:
        """The next unit: ``(chunk index, start, stop)`` into that chunk's positions."""
        ci, pos = self.jobs[self.job]
        budget = max(1, min(self.unit_tokens, self.left // (2 * self.processes)))
        a = b = self.start
        tok = 0
        while b < len(pos) and (b == a or tok + self.lengths[pos[b]] <= budget):
            tok += self.lengths[pos[b]]
            b += 1
        self.left -= tok
        if b == len(pos):
            self.job, self.start = self.job + 1, 0
        else:
            self.start = b
        self.open.setdefault(ci, [{}, len(pos)])
        return ci, a, b

    def add(self, unit, arrays: dict):
        """Keep one unit's arrays; the chunk's whole arrays once its last unit is in, else None."""
        ci, a, b = unit
        parts, missing = self.open[ci]
        parts[a] = arrays
        missing -= b - a
        self.open[ci][1] = missing
        if missing:
            return None
        del self.open[ci]
        starts = sorted(parts)
        out = {}
        for p in parts[starts[0]]:
            # a pooling that one unit kept in float32 (values beyond float16) is float32 for the chunk
            out[p] = np.concatenate([parts[k][p] for k in starts], axis=1,
                                    dtype=np.result_type(*(parts[k][p].dtype for k in starts)))
        return out
