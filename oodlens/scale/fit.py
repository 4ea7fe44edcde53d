"""Fitting from sufficient statistics reduced across shards, equal to the one-process fit.

Each shard file is read by one Ray task, which returns its statistics as safetensors bytes:

* Gaussian family (Mahalanobis, RMDS, GMM tied / per-class): class counts, class means and centred within-class
  scatter (per-class scatters for GMM ``per_class``), float64 — ``detectors._gaussian_stats.GaussianStats``, merged
  in a fixed balanced tree by Chan et al.'s pairwise update;
* principal subspace (Residual, ViM): row count and Σ (z − u)(z − u)ᵀ about the head's origin u = −W⁺b, float64
  — ``detectors._principal.PrincipalStats``, merged by addition; ViM then needs one more pass for its scale α
  (Σ max logit and Σ residual norm under the fitted basis, added over shards).

The merged statistics go to the detector's ``fit_from_stats`` — the code its ordinary ``fit`` runs on the statistics
of all rows — so the two fits differ only by float64 summation order (≈ 1e-15 relative in the statistics). Shards
whose feature width differs from the first shard's are refused, naming the file.
"""

from __future__ import annotations

import numbers
import os
from typing import Any, Sequence

import torch

from .._checks import as_float, check_finite
from ..detectors.base import Detector, Head
from ..detectors._gaussian_stats import GaussianStats, gaussian_stats
from ..detectors._principal import PrincipalStats, head_origin, principal_stats
from ..detectors.gmm import GMM
from ..detectors.mahalanobis import Mahalanobis
from ..detectors.residual import Residual
from ..detectors.rmds import RMDS
from ..detectors.vim import ViM
from ..errors import OODLensError
from ._ray import raise_cause, ray
from .shards import check_widths, feature_shapes, read_shard
from .state import detector_bytes, detector_from_bytes, tensors_bytes, tensors_from_bytes

GAUSSIAN = (Mahalanobis, RMDS, GMM)
PRINCIPAL = (Residual,)  # ViM is a Residual


def _feature_of(path: str, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    feats, _, labels = read_shard(path)
    return feats[name], labels


def _shard_stats(path: str, name: str, kind: str, per_class: bool, origin: bytes | None) -> bytes:
    """The statistics of one shard as safetensors bytes (runs in a Ray task)."""
    z, labels = _feature_of(path, name)
    z = as_float(z, f"feature {name!r} of shard {path}")
    check_finite(z, f"feature {name!r} of shard {path}")
    if kind == "gaussian":
        if labels is None:
            raise OODLensError(f"shard {path} has no labels (_labels); this detector needs class labels")
        return tensors_bytes(gaussian_stats(z, labels, per_class=per_class).to_tensors())
    return tensors_bytes(principal_stats(z, tensors_from_bytes(origin)["origin"]).to_tensors())


def _shard_alpha(path: str, name: str, state: bytes) -> bytes:
    det = detector_from_bytes(state)
    z, _ = _feature_of(path, name)
    return tensors_bytes({"sums": det.alpha_sums(as_float(z))})


def _gather(fn, args_per_shard: list[tuple], retries: int) -> list[Any]:
    r = ray()
    task = r.remote(max_retries=retries)(fn)
    try:
        return r.get([task.remote(*a) for a in args_per_shard])
    except r.exceptions.RayTaskError as e:
        raise_cause(e)
        raise


def shard_statistics(detector: Detector, paths: Sequence[str | os.PathLike], head: Any = None,
                     retries: int = 3) -> GaussianStats | PrincipalStats:
    """The merged sufficient statistics of ``detector``'s feature over the shard files (one Ray task each)."""
    if not isinstance(detector, Detector):
        raise OODLensError(f"detector must be an oodlens Detector, got {type(detector).__name__}")
    if isinstance(retries, bool) or not isinstance(retries, numbers.Integral) or retries < 0:
        raise OODLensError(f"retries must be an integer ≥ 0, got {retries!r}")
    paths = [str(p) for p in paths]
    if not paths:
        raise OODLensError("no shard files given")
    name = detector.features
    if isinstance(detector, GAUSSIAN):
        kind, origin = "gaussian", None
        per_class = isinstance(detector, GMM) and detector.covariance == "per_class"
    elif isinstance(detector, PRINCIPAL):
        if head is None:
            raise OODLensError(f"{type(detector).__name__} needs the classifier head (head=...)")
        h = Head.coerce(head)
        kind, per_class = "principal", False
        origin = tensors_bytes({"origin": head_origin(h, h.weight.shape[1]).cpu()})
    else:
        raise OODLensError(f"{type(detector).__name__} has no distributed fit from statistics; supported: "
                           f"{', '.join(c.name for c in (*GAUSSIAN, *PRINCIPAL, ViM))} (KNN: ShardedKNN)")
    width = check_widths(feature_shapes(paths, name))[name]  # from the headers: a bad shard fails before any task
    if len(width) != 1:
        raise OODLensError(f"{type(detector).__name__} needs a 2-D feature (N, D); shards hold per-row shape "
                           f"{tuple(width)}")
    if kind == "principal" and width[0] != Head.coerce(head).weight.shape[1]:
        raise OODLensError(f"head weight has shape {tuple(Head.coerce(head).weight.shape)} but the shards' feature "
                           f"{name!r} has D={width[0]}")
    results = _gather(_shard_stats, [(p, name, kind, per_class, origin) for p in paths], retries)
    cls = GaussianStats if kind == "gaussian" else PrincipalStats
    parts = [cls.from_tensors(tensors_from_bytes(b)) for b in results]
    if kind == "gaussian":
        return GaussianStats.merge_all(parts)
    merged = parts[0]
    for p in parts[1:]:
        merged = merged.merge(p)
    return merged


def fit_shards(detector: Detector, paths: Sequence[str | os.PathLike], head: Any = None,
               retries: int = 3) -> Detector:
    """Fit ``detector`` on the rows of all shard files through merged statistics (see the module); returns it."""
    stats = shard_statistics(detector, paths, head, retries)
    detector.fit_from_stats(stats, head)
    if isinstance(detector, ViM):  # second pass: α from sums under the fitted basis
        blob = detector_bytes(detector)
        sums = _gather(_shard_alpha, [(str(p), detector.features, blob) for p in paths], retries)
        detector.fit_alpha(sum(tensors_from_bytes(s)["sums"] for s in sums))
    return detector
