"""Scoring a Ray Dataset with any fitted detector.

The detector travels once, as the bytes of its saved safetensors file (``state.detector_bytes``: hyper-parameters
and fitted state, no pickled object); each worker process (a Ray Data task worker, or an actor with
``actors=True``) rebuilds it once and scores its batches with the same ``Detector.score`` as one process. Rows keep their other columns; a ``score`` column is added.

    scored = score_dataset(fitted, ds, columns={"features": "features"}, workers=2)

``columns`` maps the detector's feature names to the dataset's columns (default: the same names). A batch whose
feature has another width than the detector was fitted on raises the detector's own error, naming the feature.
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping

import numpy as np
import torch

from ..detectors.base import Detector
from ..errors import OODLensError
from ..features import Features
from ._ray import actor_pool, check_map_args, raise_cause, task_pool
from .state import detector_bytes, detector_from_bytes


_CACHE: dict[str, Detector] = {}  # per worker process: the detector rebuilt once per state


def _detector(state: bytes) -> Detector:
    key = hashlib.sha256(state).hexdigest()
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = detector_from_bytes(state)
    return _CACHE[key]


def _score_batch(batch: Mapping[str, np.ndarray], detector: Detector, columns: Mapping[str, str],
                 output: str) -> dict[str, np.ndarray]:
    missing = [c for c in columns.values() if c not in batch]
    if missing:
        raise OODLensError(f"the dataset has no column(s) {missing} (columns: {sorted(batch)})")
    feats = Features({name: torch.as_tensor(np.stack(batch[col]) if batch[col].dtype == object else batch[col])
                      for name, col in columns.items()})
    out = dict(batch)
    out[output] = detector.score(feats).detach().cpu().numpy()
    return out


def _score_task(batch: Mapping[str, np.ndarray], state: bytes, columns: Mapping[str, str], output: str,
                crash_marker: str | None) -> dict[str, np.ndarray]:
    """Ray Data task: the detector is rebuilt once per worker process (cached by the state's hash)."""
    _maybe_crash(crash_marker)
    return _score_batch(batch, _detector(state), columns, output)


class _ScoreActor:
    """Ray Data actor: rebuilds the detector once, then scores batches (``actors=True``: e.g. one per GPU)."""

    def __init__(self, state: bytes, columns: Mapping[str, str], output: str, crash_marker: str | None = None):
        self.detector = detector_from_bytes(state)
        self.columns, self.output, self.crash_marker = dict(columns), output, crash_marker

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        _maybe_crash(self.crash_marker)
        return _score_batch(batch, self.detector, self.columns, self.output)


def _maybe_crash(marker: str | None) -> None:
    """Test hook: the first worker that finds the marker file removes it and dies (a killed worker mid-job)."""
    import os  # noqa: PLC0415

    if marker and os.path.exists(marker):
        try:
            os.remove(marker)
        except FileNotFoundError:
            return
        os._exit(1)


def score_dataset(detector: Detector, ds: Any, columns: Mapping[str, str] | None = None, workers: int = 1,
                  batch_size: int = 4096, output: str = "score", actors: bool = False, gpus_per_worker: float = 0.0,
                  crash_marker: str | None = None) -> Any:
    """A lazy Ray Dataset: ``ds`` with a column ``output`` holding the detector's scores (higher = more OOD).

    ``workers`` tasks at a time (each worker process rebuilds the detector once from the shipped bytes), or with
    ``actors=True`` a pool of ``workers`` actors each holding the detector (``gpus_per_worker`` to place them on
    GPUs). ``crash_marker``: a test hook (see ``_maybe_crash``)."""
    if not isinstance(detector, Detector):
        raise OODLensError(f"detector must be an oodlens Detector, got {type(detector).__name__}")
    if detector.needs_model:
        raise OODLensError(f"{type(detector).__name__} needs the model itself; score it with the model in one process")
    cols = dict(columns) if columns is not None else {n: n for n in detector.required_features()}
    lacking = [n for n in detector.required_features() if n not in cols]
    if lacking:
        raise OODLensError(f"columns= does not map the detector's feature(s) {lacking} to dataset columns")
    check_map_args(ds, batch_size, gpus_per_worker, workers)
    if not isinstance(output, str) or not output or output in cols.values():
        raise OODLensError(f"output must be a new column name (not one of the feature columns {sorted(cols.values())}), "
                           f"got {output!r}")
    args = (detector_bytes(detector), cols, output, crash_marker)
    if actors:
        return ds.map_batches(_ScoreActor, fn_constructor_args=args, batch_size=batch_size,
                              compute=actor_pool(workers), num_gpus=gpus_per_worker or None, batch_format="numpy")
    return ds.map_batches(_score_task, fn_args=args, batch_size=batch_size, compute=task_pool(workers),
                          num_gpus=gpus_per_worker or None, batch_format="numpy")


def collect_scores(scored: Any, output: str = "score", order_by: str | None = "id") -> torch.Tensor:
    """Materialise a scored dataset's scores as a tensor (in the order of the ``order_by`` column when given);
    a worker's OODLensError is raised here as a plain OODLensError."""
    scores, keys = [], []
    try:
        for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
            scores.append(np.asarray(batch[output]))
            if order_by:
                if order_by not in batch:
                    raise OODLensError(f"the scored dataset has no column {order_by!r} to order by")
                keys.append(np.asarray(batch[order_by]))
    except OODLensError:
        raise
    except Exception as e:  # noqa: BLE001 - Ray wraps worker errors; ours are unwrapped, others re-raised
        raise_cause(e)
        raise
    out = torch.from_numpy(np.concatenate(scores)) if scores else torch.empty(0)
    return out[torch.from_numpy(np.argsort(np.concatenate(keys), kind="stable"))] if order_by and keys else out
