"""Hyper-parameter choice on validation data only: each detector's ``param_grid`` is searched on ID validation
vs validation OOD, never on test sets. Parameters in ``score_only_params`` reuse one fit."""

from __future__ import annotations

import itertools
from typing import Any, Callable

from ..detectors.base import Detector
from ..errors import OODLensError
from ..metrics import ood_metrics
from .protocol import Benchmark


def fit_detector(det: Detector, bench: Benchmark) -> Detector:
    """``fit`` on ID train, then the detector's validation stage (ID validation, plus validation OOD if it asks)."""
    det.fit(bench.train, bench.train_labels, head=bench.head, model=bench.model)
    if det.validation_needs:
        ood = bench.val_ood if det.validation_needs == "id+ood" else None
        det.fit_validation(bench.val, bench.val_labels, ood)
    return det


def grid_candidates(det: Detector, max_candidates: int = 32, grid: dict[str, list] | None = None) -> list[dict[str, Any]]:
    """Cartesian product of the grid (``det.param_grid`` unless given), the detector's current values first; at
    most ``max_candidates`` (taken evenly over the product, deterministically)."""
    grid = {k: list(v) for k, v in (det.param_grid if grid is None else grid).items() if v}
    if not grid:
        return [{}]
    current = det.get_params()
    keys = list(grid)
    combos = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
    default = {k: current[k] for k in keys}
    combos = [default] + [c for c in combos if c != default]
    if len(combos) > max_candidates:
        step = (len(combos) - 1) / (max_candidates - 1)
        combos = [combos[0]] + [combos[1 + round(i * step)] for i in range(max_candidates - 1) if 1 + round(i * step) < len(combos)]
    return combos


def tune(det: Detector, bench: Benchmark, objective: str = "auroc", max_candidates: int = 32,
         on_step: Callable[[], None] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Choose hyper-parameters maximising ``objective`` (a key of :func:`ood_metrics`; FPR-type keys are
    minimised) on validation. Returns (best params, one record per candidate)."""
    if bench.val_ood is None:
        raise ValueError("tuning needs validation OOD data")
    minimise = objective.startswith(("ood_accepted", "id_rejected"))
    candidates = grid_candidates(det, max_candidates, bench.param_grids.get(det.name))
    fitted: dict[tuple, Detector] = {}
    records = []
    best, best_value = candidates[0], None
    errors: list[str] = []
    for cand in candidates:
        fit_key = tuple(sorted((k, repr(v)) for k, v in cand.items() if k not in det.score_only_params))
        try:  # a grid value can be invalid for this data (e.g. k larger than the training set): skip it
            if fit_key not in fitted:
                fitted[fit_key] = fit_detector(det.clone(**cand), bench)
            model = fitted[fit_key].set_params(**{k: v for k, v in cand.items() if k in det.score_only_params})
            value = ood_metrics(model.score(bench.val), model.score(bench.val_ood))[objective]
        except OODLensError as e:
            errors.append(f"{cand}: {e}")
            records.append({**cand, objective: None, "error": str(e)})
            continue
        records.append({**cand, objective: value})
        better = best_value is None or (value < best_value if minimise else value > best_value)
        if better:
            best, best_value = cand, value
        if on_step:
            on_step()
    if best_value is None:
        raise OODLensError(f"every tuning candidate failed; first: {errors[0]}")
    return best, records
