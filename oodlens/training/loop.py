"""The one seeded epoch loop every trainer in oodlens runs (ordinary classifiers and the multimodal trainer).

Per epoch: a fresh permutation of the N training rows from a ``torch.Generator`` seeded with ``seed``; consecutive
batches of ``batch_size`` (the last partial batch dropped when ``drop_last``); a caller-supplied ``step(idx, epoch)``
that trains on those rows and returns running totals; then ``validate()``; the state with the best validation value
is kept (ties go to the later epoch, ``>=``) and loaded back at the end. Global torch randomness (dropout,
``torch.randn`` inside losses) runs in a forked RNG seeded with ``seed``, so a run is reproducible and leaves the
caller's RNG untouched. A tqdm bar shows loss and validation per epoch (``progress=False`` hides it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from torch import nn

from ..errors import OODLensError

#: step(idx, epoch) -> totals for the batch: "loss" (summed per step), and optionally "correct" and "count"
StepFn = Callable[[torch.Tensor, int], Mapping[str, float]]


@dataclass
class LoopResult:
    """Best validation value, its epoch (0-based) and one row per epoch (train_loss, train_acc, val_acc)."""

    best_val: float
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class TrainResult:
    """What a trainer returns: best validation accuracy, its epoch, the history and the configuration."""

    best_val_acc: float
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    config: dict = field(default_factory=dict)


def check_class_labels(y: object, n: int, num_classes: int, what: str) -> torch.Tensor:
    """(n,) int64 labels on the CPU in 0..num_classes−1, else an error naming ``what``."""
    try:
        t = torch.as_tensor(y)
    except (TypeError, ValueError, RuntimeError) as e:
        raise OODLensError(f"{what} labels must be integer class indices: {e}") from None
    if t.shape != (n,):
        raise OODLensError(f"{what} labels must have shape ({n},), got {tuple(t.shape)}")
    if t.dtype == torch.bool or t.is_complex():
        raise OODLensError(f"{what} labels must be integer class indices, got dtype {t.dtype}")
    if t.is_floating_point() and n and not bool((torch.isfinite(t) & (t == t.round())).all()):
        raise OODLensError(f"{what} labels must be integer class indices; got non-integer or NaN values")
    t = t.long().cpu()
    if n and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise OODLensError(f"{what} labels must be in 0..{num_classes - 1}, got range {int(t.min())}..{int(t.max())}")
    return t


def fit_epochs(model: nn.Module, n: int, step: StepFn, validate: Callable[[], float], *, epochs: int,
               batch_size: int, seed: int, device: torch.device | str = "cpu", drop_last: bool = True,
               progress: bool = True, desc: str = "train", on_epoch_end: Callable[[int], None] | None = None,
               keep: nn.Module | None = None) -> LoopResult:
    """Run ``epochs`` epochs of ``step`` over shuffled batches of ``n`` rows; keep and load the best-validation state.

    ``keep`` is the module whose state is kept (default ``model``); ``on_epoch_end(epoch)`` runs after each epoch's
    steps, before validation (learning-rate schedules)."""
    from tqdm.auto import tqdm

    if epochs < 1 or batch_size < 1:
        raise OODLensError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    if n < (batch_size if drop_last else 1):
        raise OODLensError(f"training data has {n} rows, fewer than one batch ({batch_size}); batches drop the last partial one")
    keep = model if keep is None else keep
    device = torch.device(device)
    order_gen = torch.Generator().manual_seed(int(seed))
    steps = n // batch_size if drop_last else math.ceil(n / batch_size)
    best_val, best_epoch, best_state = -math.inf, -1, None
    history: list[dict[str, float]] = []
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=False, unit="epoch")
        for epoch in bar:
            perm = torch.randperm(n, generator=order_gen)
            total, correct, count = 0.0, 0, 0
            for s in range(steps):
                out = step(perm[s * batch_size:(s + 1) * batch_size], epoch)
                total += float(out["loss"])
                correct += int(out.get("correct", 0))
                count += int(out.get("count", 0))
            if on_epoch_end is not None:
                on_epoch_end(epoch)
            val = float(validate())
            history.append({"epoch": epoch, "train_loss": total / steps, "train_acc": correct / max(count, 1),
                            "val_acc": val})
            if val >= best_val:
                best_val, best_epoch = val, epoch
                best_state = {k: v.detach().clone() for k, v in keep.state_dict().items()}
            bar.set_postfix(loss=f"{total / steps:.3f}", val=f"{val:.3f}", best=f"{best_val:.3f}")
    assert best_state is not None
    keep.load_state_dict(best_state)
    model.eval()
    return LoopResult(best_val, best_epoch, history)
