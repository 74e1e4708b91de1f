"""Grid rows on Ray: each (model set, fusion, head) row is one Ray task with declared resources.

Called by :func:`layerfuse.run.grid.run_grid` for ``engine="ray"`` in place of the local process
pool (:func:`layerfuse.run.workers.fit_rows_in_workers`), with the same jobs: the rows that have
no checkpoint yet. Each model's train and test sources go into the object store once and every
row task reads the ones of its models from there (zero-copy on the worker's node). A task trains
with :func:`~layerfuse.model.training.fit_seeds` exactly as a local worker does, with
``cpus_per_worker`` torch threads; the driver saves each returned row with
:func:`~layerfuse.model.saving.save_seeds` into the same checkpoint folder, so a Ray run and a
local ``--workers`` run read each other's rows back, and an interrupted run keeps every row that
came back. A row whose worker dies is retried by Ray (``max_retries``).
"""

from __future__ import annotations

import numpy as np

from layerfuse.errors import LayerfuseError
from layerfuse.scale.engine import RayOptions, connect, user_error

__all__ = ["fit_rows_on_ray", "ROW_RETRIES"]

#: Times Ray runs a row again after its worker process or node is lost.
ROW_RETRIES = 3


def _fit_row(config, settings, n_classes, threads, y_tr, y_te, n_models, *sources):
    """One grid row in a Ray worker: ``sources`` are the row's models' train source lists, then their
    test source lists (``n_models`` of each)."""
    import torch

    from layerfuse.model.training import fit_seeds

    torch.set_num_threads(threads)
    _subset, f, h = config
    tr = [a for lst in sources[:n_models] for a in lst]
    te = [a for lst in sources[n_models:] for a in lst]
    return fit_seeds(tr, y_tr, te, y_te, n_classes=n_classes, fusion=f, head=h, **settings)


def fit_rows_on_ray(jobs, src_tr, src_te, y_tr, y_te, n_classes, settings, options: RayOptions,
                    progress: bool = True) -> dict:
    """Train the rows of ``jobs`` as Ray tasks; checkpoint each in its folder as it arrives.

    Parameters
    ----------
    jobs : list
        ``((subset, fusion, head), checkpoint folder or None, info)`` per row, as
        :func:`~layerfuse.run.workers.fit_rows_in_workers` takes them.
    src_tr, src_te : list of list of numpy.ndarray
        Per model, its train and test sources.
    y_tr, y_te : numpy.ndarray
        Labels.
    n_classes : int
        Number of classes.
    settings : dict
        ``fit_seeds`` keyword arguments (seeds and training settings).
    options : RayOptions
        ``cpus_per_worker`` CPUs declared per row (and its torch threads); ``num_workers`` rows in
        flight at most (None: all, Ray queues them by resources).
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict
        ``{(subset, fusion, head): SeedResult}``.
    """
    from tqdm.auto import tqdm

    from layerfuse.model.saving import save_seeds

    todo = list(jobs)
    if not todo:
        return {}
    ray = connect(options)
    width = [sum(int(np.prod(a.shape[1:])) for a in src) for src in src_tr]
    todo.sort(key=lambda job: -sum(width[i] for i in job[0][0]))  # widest first, as locally
    task = ray.remote(_fit_row).options(num_cpus=options.cpus_per_worker, num_gpus=0, max_retries=ROW_RETRIES)
    refs_tr = [ray.put([np.asarray(a) for a in s]) for s in src_tr]
    refs_te = [ray.put([np.asarray(a) for a in s]) for s in src_te]
    y_tr_ref, y_te_ref = ray.put(np.asarray(y_tr)), ray.put(np.asarray(y_te))
    limit = options.num_workers or len(todo)
    pending, inflight, done = list(reversed(todo)), {}, {}
    bar = tqdm(total=len(todo), desc="fuse (ray)", unit="config", disable=not progress, dynamic_ncols=True)
    try:
        while pending or inflight:
            while pending and len(inflight) < limit:
                config, folder, info = pending.pop()
                subset = config[0]
                ref = task.remote(config, settings, n_classes, options.threads, y_tr_ref, y_te_ref, len(subset),
                                  *[refs_tr[i] for i in subset], *[refs_te[i] for i in subset])
                inflight[ref] = (config, folder, info)
            (ref,), _ = ray.wait(list(inflight), num_returns=1)
            config, folder, info = inflight.pop(ref)
            try:
                done[config] = ray.get(ref)
            except ray.exceptions.RayTaskError as e:
                raise user_error(e) from None
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                    ray.exceptions.ObjectLostError) as e:
                raise LayerfuseError(f"grid row {'+'.join(info['models'])} {config[1]}/{config[2]} was lost "
                                     f"{ROW_RETRIES + 1} times ({type(e).__name__}); finished rows are kept: run "
                                     "again to resume") from None
            if folder is not None:
                save_seeds(done[config], folder, info=info)
            bar.update(1)
            bar.set_postfix_str(f"{'+'.join(info['models'])} {config[1]}/{config[2]}", refresh=True)
    except BaseException:
        # Queued rows are dropped and running ones killed with their worker processes. A soft cancel
        # raises KeyboardInterrupt inside the task, possibly halfway through an import (torch._dynamo
        # takes ~1 s), and Ray reuses that worker: the next row there failed with "partially
        # initialized module 'torch._dynamo'". A killed worker is replaced by a clean one.
        for ref in inflight:
            ray.cancel(ref, force=True)
        raise
    finally:
        bar.close()
    return done
