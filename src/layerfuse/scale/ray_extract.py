"""Extraction on Ray: length-sorted chunks shared out to actors that each load the backbone once.

The driver does everything a local :func:`~layerfuse.embed.extract.extract_texts` does — looks
up the cache, tokenises, sorts by length, cuts chunks, writes ``order.npy``/``meta.json``, and
finally assembles ``final.npy`` — except the forward passes, which run in
:class:`ChunkWorker` actors. Each actor gets one chunk's token ids at a time (two queued, so it
never waits for the driver) and returns its pooled arrays through the object store; the driver
writes each returned chunk with :meth:`~layerfuse.cache.CacheEntry.write_chunk`, the very call a
local run makes. So a Ray run and a local run with the same settings produce the same entry (same
key: the key does not mention the engine), an interrupted Ray run resumes after its last written
chunk, locally or on Ray, and the cache works wherever the *driver* can write it, including a
cache that no worker can see.

Why plain actors and not Ray Data: the unit of work and of checkpointing is the cache's chunk
(its index fixes its rows, and a finished chunk is never recomputed). Ray Data re-blocks its
input, and its recovery replays the dataset's lineage, not our chunks; with actors, the driver
hands out exactly the chunks still missing and retries exactly the ones a lost worker held.

Why the driver writes and not the actors: the cache's writes are temp-file-and-rename, which is
atomic on one POSIX filesystem but not on object storage or across machines; and a worker
without the cache mounted can still work. The cost is that every pooled chunk crosses the
network to the driver once (see docs/scale.md for sizes).
"""

from __future__ import annotations

import os
import time
from collections import deque

from layerfuse.errors import LayerfuseError
from layerfuse.scale.engine import RayOptions, connect, user_error

__all__ = ["ChunkWorker", "RayExtraction", "driver_tokenizer", "IN_FLIGHT", "MAX_ATTEMPTS"]

#: Chunks queued at each actor: one computing, one waiting, so it never idles on the driver.
IN_FLIGHT = 2
#: How many times one chunk is sent out before a run gives up on it (each loss of its worker counts).
MAX_ATTEMPTS = 3


class ChunkWorker:
    """A Ray actor holding one loaded backbone; it embeds chunks of token ids.

    A load error is kept and raised by every call, so the driver sees the error itself (Ray
    would report an error in ``__init__`` as a dead actor with the traceback as text).

    Parameters
    ----------
    ref : str
        The model reference, resolved on the worker's node (packaged alias, folder, GGUF, hub id).
    dtype, device : str
        Resolved compute dtype and device (``cuda`` is the GPU Ray assigned to this actor).
    cache_dir : str or None
        Cache root on the worker's node (for dequantised GGUF models and file fingerprints).
    threads : int
        Torch threads.
    """

    def __init__(self, ref: str, dtype: str, device: str, cache_dir, threads: int):
        self.error = None
        self.backbone = None
        try:
            import torch

            from layerfuse.embed.backbones import load_backbone

            torch.set_num_threads(threads)
            self.backbone = load_backbone(ref, dtype=dtype, device=device, root=cache_dir, progress=False)
        except Exception as exc:  # raised again by every call: see the class docstring
            self.error = exc

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    def describe(self) -> dict:
        """What the driver needs to know about the loaded backbone (and this worker)."""
        import layerfuse

        self._check()
        bb = self.backbone
        return {"fingerprint": bb.fingerprint, "n_layers": bb.n_layers, "width": bb.width,
                "is_decoder": bb.is_decoder, "n_params": bb.n_params, "load_seconds": bb.load_seconds,
                "source": bb.source, "version": layerfuse.__version__, "pid": os.getpid()}

    def embed(self, index: int, enc: list, poolings: list, depth: int, batch_tokens: int, padding_side: str,
              out_dtype) -> dict:
        """Pooled layers 0..depth of one chunk (token ids longest first), as ``embed_sorted`` gives them."""
        from layerfuse.embed.forward import embed_sorted

        self._check()
        t0, c0 = time.perf_counter(), time.process_time()
        arrays = embed_sorted(self.backbone, enc, poolings, depth, batch_tokens=batch_tokens,
                              padding_side=padding_side, out_dtype=out_dtype)
        return {"index": index, "arrays": arrays, "seconds": time.perf_counter() - t0,
                "cpu_seconds": time.process_time() - c0, "pid": os.getpid(), "fingerprint": self.backbone.fingerprint}


def _resolve_on_worker(device: str, dtype: str) -> tuple[str, str]:
    """Device and dtype as a worker with the actors' resources resolves them (``auto`` measures
    that worker's hardware, not the driver's)."""
    from layerfuse.embed.device import resolve_device, resolve_dtype

    d = resolve_device(device)
    return d, resolve_dtype(dtype, d)


def driver_tokenizer(model: str, cache_dir=None):
    """The tokenizer :func:`~layerfuse.embed.backbones.load_backbone` would give ``model``,
    without loading the weights (the driver only tokenises)."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from layerfuse.cache.layout import cache_root
    from layerfuse.embed.backbones import resolve

    src, _ = resolve(model, cache_root(cache_dir))
    try:
        if isinstance(src, Path) and src.is_file():  # GGUF: the tokenizer is in its metadata
            tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        else:
            tok = AutoTokenizer.from_pretrained(str(src))
    except OSError as e:
        raise LayerfuseError(f"cannot load the tokenizer of {model}: {str(e).splitlines()[0]}") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


class RayExtraction:
    """Runs the chunks of one or more :func:`extract_texts` calls on Ray actors.

    Made by :func:`layerfuse.embed.extract.extract` for ``engine="ray"``: it resolves the device
    and dtype on a worker, hands ``extract_texts`` a driver-side :class:`Backbone` (tokenizer and
    shape, no weights) through :meth:`backbone`, and runs the missing chunks through :meth:`run`.
    The actors stay up across the splits of one ``extract`` call; :meth:`close` ends them.

    Parameters
    ----------
    model : str
        Model reference.
    dtype, device : str
        As for ``extract`` (``auto`` is resolved on a worker).
    cache_dir : str, path or None
        Cache root, passed to the workers as it is (None: each node's default).
    options : RayOptions
        Cluster address and per-worker resources.
    max_attempts : int
        Sends of one chunk before the run fails.
    on_chunk : callable or None
        Called as ``on_chunk(index, info)`` after each chunk is written (``info``: the worker's
        seconds and CPU seconds on it, its pid).
    """

    def __init__(self, model: str, *, dtype: str = "auto", device: str = "auto", cache_dir=None,
                 options: RayOptions | None = None, max_attempts: int = MAX_ATTEMPTS, on_chunk=None):
        self.model, self.cache_dir = model, None if cache_dir is None else str(cache_dir)
        self.options = options or RayOptions()
        self.max_attempts, self.on_chunk = max_attempts, on_chunk
        self.ray = connect(self.options)
        self.gpus = self._gpus_per_worker(device)
        res = {"num_cpus": self.options.cpus_per_worker, "num_gpus": self.gpus}
        ask = "cuda" if self.gpus else "cpu"
        if ask == "cpu" and dtype != "auto":
            self.device, self.dtype = _resolve_on_worker("cpu", dtype)  # nothing to measure on a worker
        else:
            try:
                self.device, self.dtype = self.ray.get(
                    self.ray.remote(_resolve_on_worker).options(**res).remote(ask, dtype))
            except self.ray.exceptions.RayTaskError as e:
                raise user_error(e) from None
        self.actor_cls = self.ray.remote(ChunkWorker).options(**res, max_restarts=0)
        self.actors: list[list] = []  # [handle, generation]
        self.info: dict | None = None
        self.stats = {"engine": "ray", "workers": 0, "workers_started": 0, "workers_lost": 0, "retried_chunks": 0,
                      "gpus_per_worker": self.gpus, "cpus_per_worker": self.options.cpus_per_worker,
                      "worker_pids": [], "worker_seconds": 0.0, "worker_cpu_seconds": 0.0}

    # -- set-up ---------------------------------------------------------------------------------
    def _gpus_per_worker(self, device: str) -> float:
        g, cluster = self.options.gpus_per_worker, self.ray.cluster_resources().get("GPU", 0)
        if device not in ("auto", "cpu", "cuda"):
            raise LayerfuseError(f"device '{device}' with engine 'ray': use auto, cpu or cuda (Ray assigns "
                                 "each worker its GPU)")
        if device == "cpu":
            if g:
                raise LayerfuseError(f"gpus_per_worker={g:g} asks for GPUs, but device is 'cpu'")
            return 0.0
        if g is None:
            g = 1.0 if cluster > 0 else 0.0
        if device == "cuda" and (g == 0 or cluster == 0):
            raise LayerfuseError("device 'cuda' asked for, but the Ray cluster has no GPUs"
                                 if cluster == 0 else "device 'cuda' asked for with gpus_per_worker=0")
        if g > cluster:
            raise LayerfuseError(f"gpus_per_worker={g:g}, but the Ray cluster has {cluster:g} GPUs in all")
        return float(g)

    def _capacity(self) -> int:
        """Actors the cluster holds at once with the declared resources."""
        res = self.ray.cluster_resources()
        by_cpu = int(res.get("CPU", 1) // self.options.cpus_per_worker)
        n = min(by_cpu, int(res.get("GPU", 0) // self.gpus)) if self.gpus else by_cpu
        return max(1, n)

    def _start(self, n: int) -> None:
        args = (self.model, self.dtype, self.device, self.cache_dir, self.options.threads)
        for _ in range(n):
            self.actors.append([self.actor_cls.remote(*args), 0])
        self.stats["workers_started"] += n
        self.stats["workers"] = len(self.actors)

    def backbone(self):
        """A driver-side :class:`~layerfuse.embed.backbones.Backbone`: the tokenizer and the shape of
        the model as the first actor loaded it (``model`` is None: the weights stay on the workers)."""
        from layerfuse.embed.backbones import Backbone, describe_reference

        if self.info is None:
            if not self.actors:
                self._start(1)
            try:
                self.info = self.ray.get(self.actors[0][0].describe.remote())
            except self.ray.exceptions.RayTaskError as e:
                raise user_error(e) from None
            except self.ray.exceptions.RayActorError as e:  # died loading: out of memory, say
                raise LayerfuseError(f"the Ray worker loading {self.model} died ({type(e).__name__}): see the "
                                     "worker logs under /tmp/ray/session_latest/logs on its node") from None
            import layerfuse

            if self.info["version"] != layerfuse.__version__:
                raise LayerfuseError(f"the Ray workers run layerfuse {self.info['version']}, this driver "
                                     f"{layerfuse.__version__}: install the same version on every node")
            here = describe_reference(self.model, self.cache_dir)["fingerprint"]
            if here is not None and here != self.info["fingerprint"]:
                raise LayerfuseError(f"model {self.model}: the workers load weights with fingerprint "
                                     f"{self.info['fingerprint']}, this machine has {here}: give every node "
                                     "the same files")
        i = self.info
        return Backbone(ref=self.model, model=None, tokenizer=driver_tokenizer(self.model, self.cache_dir),
                        n_layers=i["n_layers"], width=i["width"], fingerprint=i["fingerprint"],
                        is_decoder=i["is_decoder"], n_params=i["n_params"], load_seconds=i["load_seconds"],
                        source=i["source"], extra={"engine": "ray"})

    def warm_up(self, n: int | None = None) -> float:
        """Start ``n`` actors (default ``num_workers``, else what the cluster holds) and wait until
        every one has loaded the backbone; returns the seconds it took. Optional: :meth:`run` starts
        what it needs. Benchmarks use it to time the chunks apart from the model loads."""
        t0 = time.perf_counter()
        n = n or self.options.num_workers or self._capacity()
        self.backbone()
        if len(self.actors) < n:
            self._start(n - len(self.actors))
        try:
            self.ray.get([h.describe.remote() for h, _ in self.actors])
        except self.ray.exceptions.RayTaskError as e:
            raise user_error(e) from None
        return time.perf_counter() - t0

    # -- running chunks -------------------------------------------------------------------------
    def run(self, jobs, enc, poolings, depth, *, batch_tokens, padding_side, out_dtype, write, on_batch) -> None:
        """Embed ``jobs`` (``(chunk index, positions into enc)``) on the actors; ``write(index,
        arrays)`` each result as it arrives, then ``on_batch(texts, tokens)``.

        An actor gets chunks only once it has loaded the model (so one that waits for resources, or
        fails to load, holds none), at most :data:`IN_FLIGHT` at a time, least loaded first. A chunk
        whose worker is lost (process killed, node gone) goes back to the front of the queue, for
        the other actors and for a fresh actor started in the lost one's place, up to
        ``max_attempts`` sends. Finished chunks are written as they arrive, so an interruption
        loses only the chunks in flight.

        Raises
        ------
        LayerfuseError
            An error a worker raised (a bad model, a text that tokenises to nothing), a chunk that
            failed ``max_attempts`` times, workers lost more than ``max_attempts`` times per actor,
            or weights that differ between workers.

    Longer than 80 lines: handing out chunks, retrying them and replacing lost actors is one
    scheduling loop whose state (queue, in-flight calls, attempts) is clearest in one place.
        """
        ray = self.ray
        lost_errors = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                       ray.exceptions.ObjectLostError)
        queue = deque(jobs)
        if not queue:
            return
        # Never more actors than the cluster holds: one that cannot be placed would only wait.
        want = min(self.options.num_workers or self._capacity(), self._capacity(), len(queue))
        if len(self.actors) < want:
            self._start(want - len(self.actors))
        sends: dict[int, int] = {}
        # object ref -> (chunk index or None for a readiness check, positions, actor slot, actor generation)
        inflight: dict = {h.describe.remote(): (None, None, slot, gen) for slot, (h, gen) in enumerate(self.actors)}
        load, ready = [0] * len(self.actors), [False] * len(self.actors)
        poolings = list(poolings)
        while queue or any(v[0] is not None for v in inflight.values()):
            for slot in sorted((s for s in range(len(self.actors)) if ready[s]), key=lambda s: load[s]) * IN_FLIGHT:
                if load[slot] < IN_FLIGHT and queue:  # round robin over the ready actors, least loaded first
                    ci, pos = queue.popleft()
                    sends[ci] = sends.get(ci, 0) + 1
                    handle, gen = self.actors[slot]
                    ref = handle.embed.remote(ci, [enc[j] for j in pos], poolings, depth, batch_tokens,
                                              padding_side, out_dtype)
                    inflight[ref] = (ci, pos, slot, gen)
                    load[slot] += 1
            (ref,), _ = ray.wait(list(inflight), num_returns=1)
            ci, pos, slot, gen = inflight.pop(ref)
            current = self.actors[slot][1] == gen  # False: an actor since replaced
            if ci is not None and current:
                load[slot] -= 1
            try:
                out = ray.get(ref)
            except ray.exceptions.RayTaskError as e:
                raise user_error(e) from None
            except lost_errors as e:
                if ci is not None:
                    if sends[ci] >= self.max_attempts:
                        raise LayerfuseError(f"chunk {ci} was lost with its worker {sends[ci]} times; giving up "
                                             f"(last: {type(e).__name__}). Finished chunks are in the cache: run "
                                             "again to resume") from None
                    self.stats["retried_chunks"] += 1
                    queue.appendleft((ci, pos))
                if current:  # the first loss seen from this actor: start another in its place
                    self._replace(slot)
                    load[slot], ready[slot] = 0, False
                    handle, new_gen = self.actors[slot]
                    inflight[handle.describe.remote()] = (None, None, slot, new_gen)
                continue
            if out["fingerprint"] != self.info["fingerprint"]:
                raise LayerfuseError(f"model {self.model}: a worker (pid {out['pid']}) loaded weights with "
                                     f"fingerprint {out['fingerprint']}, others {self.info['fingerprint']}: give "
                                     "every node the same files")
            if ci is None:
                if out["version"] != self.info["version"]:
                    raise LayerfuseError(f"a Ray worker (pid {out['pid']}) runs layerfuse {out['version']}, the "
                                         f"others {self.info['version']}: install the same version on every node")
                ready[slot] = ready[slot] or current
                continue
            write(ci, out["arrays"])
            on_batch(len(pos), int(sum(len(enc[j]) for j in pos)))
            if out["pid"] not in self.stats["worker_pids"]:
                self.stats["worker_pids"].append(out["pid"])
            self.stats["worker_seconds"] += out["seconds"]
            self.stats["worker_cpu_seconds"] += out["cpu_seconds"]
            if self.on_chunk is not None:
                self.on_chunk(ci, {"seconds": out["seconds"], "cpu_seconds": out["cpu_seconds"], "pid": out["pid"]})

    def _replace(self, slot: int) -> None:
        handle, gen = self.actors[slot]
        self.ray.kill(handle, no_restart=True)
        self.stats["workers_lost"] += 1
        if self.stats["workers_lost"] > self.max_attempts * len(self.actors):
            raise LayerfuseError(f"{self.stats['workers_lost']} Ray workers lost in this run ({len(self.actors)} at "
                                 "a time): giving up. Finished chunks are in the cache: run again to resume")
        args = (self.model, self.dtype, self.device, self.cache_dir, self.options.threads)
        self.actors[slot] = [self.actor_cls.remote(*args), gen + 1]
        self.stats["workers_started"] += 1

    def close(self) -> None:
        """End the actors (their CPUs and GPUs go back to the cluster)."""
        for handle, _ in self.actors:
            try:
                self.ray.kill(handle, no_restart=True)
            except Exception:  # already gone
                pass
        self.actors = []
