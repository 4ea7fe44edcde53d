"""An interpretable OOD degree: for each input, the degree ``1 − p``, the group it was calibrated in, the calibration
quantile in words, the nearest training examples (indices and distances in a feature bank) and, where several
detectors, layers or modalities are combined, which one drives the degree.

* :class:`FeatureBank` — nearest training examples by the KNN detector's exact search (Sun et al. 2022): cosine
  neighbours of L2-normalised features, distance ``‖ẑ − ẑ_j‖₂`` (the quantity KNN scores), ``k`` per input.
* :func:`drivers` — the member with the smallest p-value per input (for Bonferroni / min-p the combined p-value is
  ``K · p_min``, so that member alone decides the flag; for other rules it is the most atypical member).
* :func:`explain_table` — the columns the Monitor's ``assess`` returns, and one ``reading`` sentence per input.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from .._checks import as_float, as_scores
from ..errors import OODLensError
from .groups import POOLED


class FeatureBank:
    """A bank of training features to name the nearest training examples of an input.

    >>> bank = FeatureBank(train_features["features"], k=3)
    >>> idx, dist = bank.nearest(batch_features["features"])      # (N, 3) each, nearest first
    """

    def __init__(self, features: Any, k: int = 3, ids: Sequence[Any] | None = None):
        from ..detectors.knn import KNN

        x = as_float(features, "feature bank")
        if x.ndim != 2 or x.shape[0] == 0:
            raise OODLensError(f"the feature bank must be a non-empty (N, D) tensor, got shape {tuple(x.shape)}")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= x.shape[0]:
            raise OODLensError(f"k must be an integer in 1..{x.shape[0]} (the bank size), got {k!r}")
        if ids is not None and len(ids) != x.shape[0]:
            raise OODLensError(f"{len(ids)} ids for a bank of {x.shape[0]} rows")
        self.k, self.ids = k, list(ids) if ids is not None else None
        self.knn = KNN(k=k, backend="torch").fit({"features": x})
        self.bank = x

    def nearest(self, features: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Bank indices (N, k) and distances (N, k) between unit-normalised features, nearest first."""
        x = as_float(features, "features")
        if x.ndim != 2 or x.shape[1] != self.bank.shape[1]:
            raise OODLensError(f"features must be (N, {self.bank.shape[1]}) like the bank, got {tuple(x.shape)}")
        sims, idx = self.knn.neighbours({"features": x})
        return idx, (2.0 - 2.0 * sims.double()).clamp_min(0.0).sqrt()

    def label(self, i: int) -> str:
        return f"#{i}" if self.ids is None else str(self.ids[i])


def drivers(member_pvalues: Mapping[str, Any] | Any, names: Sequence[str] | None = None
            ) -> tuple[list[str], torch.Tensor]:
    """Per input, the member (detector, layer or modality) with the smallest p-value, and that p-value.

    ``member_pvalues``: a mapping name → (N,) or an (N, K) tensor with ``names``."""
    if isinstance(member_pvalues, Mapping):
        if not member_pvalues:
            raise OODLensError("drivers needs the p-values of at least one member, got an empty mapping")
        names = [str(k) for k in member_pvalues]
        cols = [as_scores(v, f"p-values of {k}") for k, v in member_pvalues.items()]
        sizes = {n: int(c.numel()) for n, c in zip(names, cols)}
        if len(set(sizes.values())) != 1:
            raise OODLensError(f"members disagree on the number of inputs: {sizes}")
        p = torch.stack([c.reshape(-1).double() for c in cols], 1)
    else:
        p = as_float(member_pvalues, "member p-values").double()
        if p.ndim != 2 or names is None or len(names) != p.shape[1]:
            raise OODLensError("member p-values must be (N, K) with K names")
    best, j = p.min(1)
    return [names[i] for i in j.tolist()], best


def _neighbour_text(bank: FeatureBank | None, idx: list[int], dist: list[float]) -> str:
    if bank is None or not idx:
        return ""
    near = ", ".join(f"{bank.label(i)} ({d:.2f})" for i, d in zip(idx, dist))
    return f"; nearest training examples {near}"


def explain_table(pvalues: Any, quantile: Sequence[str], calibrated_in: Sequence[str] | None = None,
                  bank: FeatureBank | None = None, features: Any = None,
                  driver: tuple[Sequence[str], Any] | None = None) -> dict[str, list]:
    """Columns ``degree``, ``group``, ``quantile``, ``nearest``, ``nearest_distance``, ``driver`` and a ``reading``
    sentence per input.

    ``quantile``: the calibration quantile in words per input (e.g. from
    :meth:`~oodlens.calibrate.GroupPValues.describe`, after the first ``": "``); ``calibrated_in``: the group per
    input (default ``"all"``); ``bank`` + ``features``: nearest training examples; ``driver``: (names, p-values)
    from :func:`drivers`."""
    p = as_scores(pvalues, "p-values").reshape(-1).double()
    n = int(p.numel())
    if len(quantile) != n:
        raise OODLensError(f"{len(quantile)} quantile descriptions for {n} p-values")
    groups = list(calibrated_in) if calibrated_in is not None else ["all"] * n
    idx, dist = [[] for _ in range(n)], [[] for _ in range(n)]
    if bank is not None:
        if features is None:
            raise OODLensError("nearest training examples need the inputs' features")
        i_t, d_t = bank.nearest(features)
        if i_t.shape[0] != n:
            raise OODLensError(f"{i_t.shape[0]} feature rows for {n} p-values")
        idx, dist = i_t.tolist(), d_t.tolist()
    names, member_p = (list(driver[0]), as_scores(driver[1], "driver p-values").reshape(-1).tolist()) \
        if driver is not None else ([""] * n, [float("nan")] * n)
    readings = []
    for i in range(n):
        where = "all calibration data" if groups[i] == "all" else \
            "all groups pooled" if groups[i] == POOLED else f"group {groups[i]!r}"
        text = f"OOD degree {1 - float(p[i]):.3f} (calibrated in {where}): {quantile[i]}"
        text += _neighbour_text(bank, idx[i], dist[i])
        if names[i]:
            text += f"; driven by {names[i]} (its p = {member_p[i]:.3g})"
        readings.append(text)
    return {"degree": (1.0 - p).tolist(), "group": groups, "quantile": list(quantile), "nearest": idx,
            "nearest_distance": dist, "driver": names, "reading": readings}


__all__ = ["FeatureBank", "drivers", "explain_table"]
