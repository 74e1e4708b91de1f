"""Running the heavy stages on a Ray cluster (``engine="ray"``).

* :mod:`layerfuse.scale.engine` — engine names, connecting to Ray, the message when Ray is
  missing (``pip install "layerfuse[ray]"``).
* :mod:`layerfuse.scale.ray_extract` — extraction: the length-sorted chunks of
  :func:`layerfuse.embed.extract.extract_texts` shared out to Ray actors that each load the
  backbone once; the driver writes every returned chunk into the same checksummed cache entry a
  local run writes.
* :mod:`layerfuse.scale.ray_grid` — grid rows as Ray tasks with declared resources; the driver
  checkpoints each returned row exactly as ``--workers`` does.

Ray is imported only when an engine other than ``local`` is asked for.
"""

from layerfuse.scale.engine import ENGINES, RAY_INSTALL, RayOptions, check_engine

__all__ = ["ENGINES", "RAY_INSTALL", "RayOptions", "check_engine"]
