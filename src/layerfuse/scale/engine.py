"""Engine selection and the connection to Ray.

``engine="local"`` (the default) runs in this process (plus ``workers`` processes for the grid);
``engine="ray"`` sends extraction chunks to Ray actors and grid rows to Ray tasks. Ray is an
optional extra: without it, asking for the Ray engine raises a :class:`LayerfuseError` naming the
pip command.
"""

from __future__ import annotations

from dataclasses import dataclass

from layerfuse.config import DEFAULT_CPUS_PER_WORKER
from layerfuse.errors import LayerfuseError

__all__ = ["ENGINES", "RAY_INSTALL", "RayOptions", "check_engine", "require_ray", "connect", "ray_options",
           "extraction_runner", "fit_rows", "validate_engine_config", "engine_options",
           "user_error"]

#: The engines a stage can run on.
ENGINES = ("local", "ray")

#: What to run when Ray is missing.
RAY_INSTALL = 'pip install "layerfuse[ray]"'


@dataclass
class RayOptions:
    """How to use the Ray cluster.

    Parameters
    ----------
    address : str or None
        Ray cluster address (``ray://host:10001``, ``host:6379`` or ``auto``); None connects to
        ``$RAY_ADDRESS`` when set, else starts a Ray instance on this machine.
    num_workers : int or None
        Extraction: how many actors (each loads the backbone once). Grid: at most this many rows
        in flight. None: as many as the cluster's resources hold.
    cpus_per_worker : float
        CPUs each actor or row task declares (and the torch threads it uses, at least one).
    gpus_per_worker : float or None
        GPUs each extraction actor declares. None: 1 when the cluster has GPUs and the device
        allows it, else 0. Grid rows train on CPU and declare no GPU.
    """

    address: str | None = None
    num_workers: int | None = None
    cpus_per_worker: float = DEFAULT_CPUS_PER_WORKER
    gpus_per_worker: float | None = None

    def __post_init__(self) -> None:
        if self.num_workers is not None and (not isinstance(self.num_workers, int) or self.num_workers < 1):
            raise LayerfuseError(f"num_workers must be a whole number >= 1, got {self.num_workers!r}")
        try:
            self.cpus_per_worker = float(self.cpus_per_worker)
        except (TypeError, ValueError):
            raise LayerfuseError(f"cpus_per_worker must be a number, got {self.cpus_per_worker!r}") from None
        if self.cpus_per_worker <= 0:
            raise LayerfuseError(f"cpus_per_worker must be positive, got {self.cpus_per_worker}")
        if self.gpus_per_worker is not None:
            try:
                self.gpus_per_worker = float(self.gpus_per_worker)
            except (TypeError, ValueError):
                raise LayerfuseError(f"gpus_per_worker must be a number, got {self.gpus_per_worker!r}") from None
            if self.gpus_per_worker < 0:
                raise LayerfuseError(f"gpus_per_worker must be >= 0, got {self.gpus_per_worker}")

    @property
    def threads(self) -> int:
        """Torch threads of one worker: its declared CPUs, at least one."""
        return max(1, int(self.cpus_per_worker))


def ray_options(ray_address=None, num_workers=None, cpus_per_worker=DEFAULT_CPUS_PER_WORKER,
                gpus_per_worker=None) -> RayOptions:
    """A :class:`RayOptions` from the keyword parameters of ``extract``/``run_grid``."""
    return RayOptions(ray_address, num_workers, DEFAULT_CPUS_PER_WORKER if cpus_per_worker is None else cpus_per_worker,
                      gpus_per_worker)


def check_engine(engine: str) -> str:
    """``engine`` if it names a known engine; Ray must also be importable for ``ray``.

    Raises
    ------
    LayerfuseError
        For an unknown name, or ``ray`` without Ray installed (the message gives the pip command).
    """
    if engine not in ENGINES:
        raise LayerfuseError(f"unknown engine '{engine}': choose from {', '.join(ENGINES)}")
    if engine == "ray":
        require_ray()
    return engine


def require_ray():
    """The ``ray`` module, or a :class:`LayerfuseError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise LayerfuseError(f"engine 'ray' needs Ray, which is not installed here: {RAY_INSTALL}") from None
    return ray


def connect(options: RayOptions):
    """The ``ray`` module, connected: an already initialised Ray is reused as it is; otherwise
    ``ray.init(address=options.address)`` (no address and no ``$RAY_ADDRESS``: a local instance).

    Raises
    ------
    LayerfuseError
        When the cluster at ``options.address`` cannot be reached.
    """
    ray = require_ray()
    if ray.is_initialized():
        return ray
    import os

    kwargs = {"log_to_driver": False, "logging_level": "WARNING"}
    if options.address is None and not os.environ.get("RAY_ADDRESS"):
        kwargs["include_dashboard"] = False  # a private instance on this machine needs no dashboard
    try:
        ray.init(address=options.address, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as e:
        where = options.address or "this machine (no address given)"
        raise LayerfuseError(f"cannot connect to the Ray cluster at {where}: {str(e).splitlines()[0]}") from e
    return ray


def extraction_runner(engine: str, model: str, *, dtype: str, device: str, cache_dir=None, ray_address=None,
                      num_workers=None, cpus_per_worker=DEFAULT_CPUS_PER_WORKER, gpus_per_worker=None):
    """The chunk runner of ``extract(engine=...)`` for an engine other than ``local``.

    Returns
    -------
    layerfuse.scale.ray_extract.RayExtraction
        With ``device`` and ``dtype`` resolved on a worker.
    """
    check_engine(engine)
    from layerfuse.scale.ray_extract import RayExtraction

    options = ray_options(ray_address, num_workers, cpus_per_worker, gpus_per_worker)
    return RayExtraction(model, dtype=dtype, device=device, cache_dir=cache_dir, options=options)


def fit_rows(engine: str, jobs, src_tr, src_te, y_tr, y_te, n_classes, settings, options: dict | None,
             progress: bool) -> dict:
    """Train the grid rows of ``jobs`` on ``engine`` (see :func:`layerfuse.scale.ray_grid.fit_rows_on_ray`)."""
    check_engine(engine)
    from layerfuse.scale.ray_grid import fit_rows_on_ray

    return fit_rows_on_ray(jobs, src_tr, src_te, y_tr, y_te, n_classes, settings,
                           ray_options(**(options or {})), progress)


def validate_engine_config(cfg: dict, source: str = "config") -> None:
    """Check the engine fields of a run configuration (``extraction.engine``, ``ray_address``,
    ``num_workers``, ``cpus_per_worker``, ``gpus_per_worker``; ``fusion.engine``) by name and
    type, without importing Ray (a missing Ray is reported when the engine is used)."""
    ex = cfg["extraction"]
    for where, value in (("extraction.engine", ex.get("engine")), ("fusion.engine", cfg["fusion"].get("engine"))):
        if value not in ENGINES:
            raise LayerfuseError(f"{source}: {where} is '{value}': choose from {', '.join(ENGINES)}")
    if ex.get("ray_address") is not None and not isinstance(ex["ray_address"], str):
        raise LayerfuseError(f"{source}: extraction.ray_address must be a string like host:6379 or auto")
    try:
        ray_options(ex.get("ray_address"), ex.get("num_workers"), ex.get("cpus_per_worker"), ex.get("gpus_per_worker"))
    except LayerfuseError as e:
        raise LayerfuseError(f"{source}: extraction.{e}") from None


def engine_options(extraction: dict) -> dict:
    """The Ray keyword parameters of ``run_grid`` (``engine_options``) from an extraction section:
    the grid uses the same cluster and per-worker CPUs as extraction."""
    return {"ray_address": extraction.get("ray_address"), "num_workers": extraction.get("num_workers"),
            "cpus_per_worker": extraction.get("cpus_per_worker", DEFAULT_CPUS_PER_WORKER)}


def user_error(e) -> BaseException:
    """A Ray task error whose cause is a :class:`LayerfuseError` (a bad model, a text that tokenises
    to nothing) as a plain one: one line, no remote traceback. Any other error unchanged."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, LayerfuseError):
        return LayerfuseError(str(cause))
    return e
