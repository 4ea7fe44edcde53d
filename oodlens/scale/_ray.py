"""Ray, imported lazily with an install hint, and a local test cluster."""

from __future__ import annotations

import numbers
import os
import re
from typing import Any

from ..errors import OODLensError

INSTALL_HINT = "oodlens.scale needs Ray: pip install 'oodlens[ray]' (or pip install 'ray[data]')"


def ray():
    """The ``ray`` module (raises a clear error naming the extra when it is not installed)."""
    try:
        import ray as _ray  # noqa: PLC0415
        import ray.data  # noqa: F401, PLC0415
    except ImportError as e:
        raise OODLensError(INSTALL_HINT) from e
    return _ray


def init_local(num_cpus: int = 2, **kwargs) -> None:
    """Start (or join) a local Ray instance for tests and examples: ``num_cpus`` CPUs, no dashboard, token
    authentication off (Ray ≥ 2.60 asks for it otherwise; never do this on a shared cluster)."""
    _workers(num_cpus)
    r = ray()
    if r.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    r.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, **kwargs)


def _workers(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise OODLensError(f"number of workers (or CPUs) must be a positive integer, got {size!r}")
    return size


def check_map_args(ds: Any, batch_size: Any, gpus_per_worker: Any, workers: Any) -> None:
    """The arguments ``map_batches`` gets, checked before Ray sees them (its own errors name none of them)."""
    if not hasattr(ds, "map_batches"):
        raise OODLensError(f"ds must be a Ray Dataset (ray.data), got {type(ds).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise OODLensError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(gpus_per_worker, bool) or not isinstance(gpus_per_worker, numbers.Real) or not (
            0 <= gpus_per_worker < float("inf")):
        raise OODLensError(f"gpus_per_worker must be a number ≥ 0, got {gpus_per_worker!r}")
    _workers(workers)


def actor_pool(size: int):
    """A Ray Data actor pool of ``size`` actors (``compute=`` of ``map_batches``)."""
    return ray().data.ActorPoolStrategy(size=_workers(size))


def task_pool(size: int):
    """At most ``size`` Ray Data tasks at a time (``compute=`` of ``map_batches``)."""
    return ray().data.TaskPoolStrategy(size=_workers(size))


def raise_cause(error: BaseException) -> None:
    """Re-raise the OODLensError a Ray worker raised (wrapped by Ray in a RayTaskError, a Ray Data
    UserCodeException, ...) as a plain OODLensError with the worker's message; return if there is none."""
    seen = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OODLensError):
            text = str(e).strip()
            if "RayTaskError" in type(e).__name__:  # Ray's dual class: the message ends the traceback text
                text = text.splitlines()[-1].split(": ", 1)[-1] if text else text
            raise OODLensError(text) from None
        cause = getattr(e, "cause", None)
        e = cause if isinstance(cause, BaseException) else (e.__cause__ or e.__context__)
    # Ray Data keeps only the worker's traceback text: its last 'oodlens.errors.<Error>: message' line
    found = re.findall(r"^oodlens\.errors\.\w+: (.+)$", str(error), flags=re.M)
    if found:
        raise OODLensError(found[-1]) from None
