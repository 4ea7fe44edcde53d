"""Train any classifier that exposes its penultimate features and logits, with a training-time OOD method.

The model is any ``nn.Module`` whose last layer (``head``, a submodule name, default ``"fc"``) maps the
penultimate features to the logits: a forward pre-hook on it captures the features, so no model change is needed.
The method (:class:`~oodlens.training.base.CrossEntropy` or one of its subclasses) may replace the head (AbeT) or
add parameters (VOS, NPOS). Hooks: ``outliers`` (a tensor of auxiliary outlier inputs sampled with replacement, or a
callable ``(n, generator) -> inputs``), ``extra_losses`` (callables ``StepContext -> scalar`` added to the loss),
``augment`` (``(x, generator) -> x``). The epochs run in :func:`oodlens.training.loop.fit_epochs`: seeded, the
best-validation-accuracy weights kept, a progress bar, the device following ``device``; ``checkpoint=`` writes
them to safetensors.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from .._checks import check_finite
from ..encoders._common import check_device
from ..errors import OODLensError
from .base import CrossEntropy, StepContext
from .checkpoint import save_checkpoint
from .loop import LoopResult, TrainResult, check_class_labels, fit_epochs

OutlierSource = Tensor | Callable[[int, torch.Generator], Tensor]
ExtraLoss = Callable[[StepContext], Tensor]


@dataclass
class ClassifierConfig:
    """Optimisation budget and recipe (the defaults are the digits CNN's: Adam 2e-3, weight decay 1e-4, cosine
    schedule over the epochs, batch 64). ``outlier_ratio``: outlier rows per ID row in a step."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3
    optimizer: str = "adam"
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "cosine"
    drop_last: bool = False
    outlier_ratio: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or (v < 1 and name != "seed"):
                raise OODLensError(f"{name} must be an integer{' >= 1' if name != 'seed' else ''}, got {v!r}")
        for name, lo in (("lr", 0.0), ("weight_decay", None), ("momentum", None), ("outlier_ratio", 0.0)):
            v = getattr(self, name)
            ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
            if not ok or (lo is not None and not v > lo) or (lo is None and v < 0):
                raise OODLensError(f"{name} must be a finite number {'> 0' if lo is not None else '>= 0'}, got {v!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise OODLensError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "none"):
            raise OODLensError(f"schedule must be 'cosine' or 'none', got {self.schedule!r}")


@dataclass
class ClassifierResult(TrainResult):
    method: dict[str, Any] = field(default_factory=dict)


class FeatureTap:
    """``tap(x) -> (features, logits)``: runs ``model`` and captures the input of its ``head`` submodule."""

    def __init__(self, model: nn.Module, head: str):
        self.model, self.head_name = model, head
        self._captured: Tensor | None = None

    @property
    def head(self) -> nn.Module:
        return self.model.get_submodule(self.head_name)

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        def grab(_module: nn.Module, args: tuple) -> None:
            self._captured = args[0]

        handle = self.head.register_forward_pre_hook(grab)
        try:
            logits = self.model(x)
        finally:
            handle.remove()
        feats, self._captured = self._captured, None
        if feats is None:
            raise OODLensError(f"the model's forward never called its head {self.head_name!r}")
        return feats, logits


def head_sizes(model: nn.Module, head: str) -> tuple[int, int]:
    """(feature_dim, num_classes) of a linear head."""
    try:
        module = model.get_submodule(head)
    except AttributeError as e:
        raise OODLensError(f"the model has no submodule {head!r} (the head that maps features to logits)") from e
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    d, c = getattr(module, "in_features", None), getattr(module, "num_classes", None)
    if d is None or c is None:
        raise OODLensError(f"head {head!r} is a {type(module).__name__}: give an nn.Linear head")
    return int(d), int(c)


def _probe(model: nn.Module, inputs: dict[str, Tensor], device: torch.device) -> None:
    """One row of each input through the model in eval mode (no gradients, no state change): a model that cannot
    take these inputs (wrong width, channels, size) fails here with an OODLensError, not mid-training."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for what, x in inputs.items():
                if x.shape[0]:
                    try:
                        model(x[:1].to(device))
                    except RuntimeError as e:
                        if isinstance(e, torch.cuda.OutOfMemoryError):
                            raise
                        raise OODLensError(f"the model cannot run on the {what} (rows of shape "
                                           f"{tuple(x.shape[1:])}): {e}") from e
    finally:
        model.train(was)


def _inputs(x: Any, what: str) -> Tensor:
    try:
        t = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as e:
        raise OODLensError(f"{what} must be a numeric array or tensor: {e}") from None
    if not t.is_floating_point():
        raise OODLensError(f"{what} must be floating point, got {t.dtype}")
    return check_finite(t.float(), what)


def _draw_outliers(source: OutlierSource, n: int, gen: torch.Generator) -> Tensor:
    if isinstance(source, Tensor):
        return source[torch.randint(0, source.shape[0], (n,), generator=gen)]
    out = source(n, gen)
    if not isinstance(out, Tensor) or out.shape[0] != n:
        raise OODLensError(f"the outlier source must return a tensor of {n} rows")
    return out


def _optimizer(model: nn.Module, method: CrossEntropy, cfg: ClassifierConfig) -> torch.optim.Optimizer:
    groups: list[dict[str, Any]] = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    for g in method.param_groups():
        g = dict(g)
        g["lr"] = cfg.lr * float(g.pop("lr_scale", 1.0))
        groups.append(g)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)


@torch.no_grad()
def accuracy_of(model: nn.Module, x: Tensor, y: Tensor, device: torch.device, batch_size: int = 2048) -> float:
    """Top-1 accuracy in eval mode (restores the previous mode)."""
    was = model.training
    model.eval()
    correct = 0
    try:
        for i in range(0, x.shape[0], batch_size):
            pred = model(x[i:i + batch_size].to(device)).argmax(1).cpu()
            correct += int((pred == y[i:i + batch_size]).sum())
    finally:
        model.train(was)
    return correct / max(x.shape[0], 1)


def train_classifier(model: nn.Module, x: Any, y: Any, x_val: Any, y_val: Any, method: CrossEntropy | None = None,
                     config: ClassifierConfig | None = None, *, head: str = "fc", outliers: OutlierSource | None = None,
                     extra_losses: Sequence[ExtraLoss] = (), augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
                     device: str | torch.device = "cpu", progress: bool = True,
                     checkpoint: str | os.PathLike | None = None) -> ClassifierResult:
    """Train ``model`` in place with ``method`` (default plain cross-entropy); returns the best validation accuracy,
    its epoch and the history. The best-validation weights end up in ``model`` (and in ``checkpoint``)."""
    method = method if method is not None else CrossEntropy()
    cfg = config or ClassifierConfig()
    if not isinstance(model, nn.Module):
        raise OODLensError(f"model must be an nn.Module, got {type(model).__name__}")
    if method.needs_outliers and outliers is None:
        raise OODLensError(f"{type(method).__name__} needs auxiliary outliers (outliers=...)")
    device = check_device(device) or torch.device("cpu")
    d, c = head_sizes(model, head)
    x_tr, x_va = _inputs(x, "training inputs"), _inputs(x_val, "validation inputs")
    y_tr = check_class_labels(y, x_tr.shape[0], c, "training")
    y_va = check_class_labels(y_val, x_va.shape[0], c, "validation")
    if x_va.shape[0] == 0:
        raise OODLensError("validation data is empty")
    if isinstance(outliers, Tensor):
        outliers = _inputs(outliers, "outlier inputs")
        if outliers.shape[0] == 0 or outliers.shape[1:] != x_tr.shape[1:]:
            raise OODLensError(f"outlier inputs must be non-empty and shaped like the inputs {tuple(x_tr.shape[1:])}, "
                               f"got {tuple(outliers.shape)}")
    model.to(device)
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)  # the method's new modules (AbeT head, VOS weights, NPOS MLP) start seeded
        method.setup(model, head, c, d)
    tap = FeatureTap(model, head)
    # training rows as the model sees them (after ``augment``, which may crop or pad), on a throw-away generator
    first = x_tr[:1] if augment is None or not len(x_tr) else augment(x_tr[:1], torch.Generator().manual_seed(0))
    _probe(model, {"training inputs": first, "validation inputs": x_va[:1]}, device)
    optim = _optimizer(model, method, cfg)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=cfg.epochs) if cfg.schedule == "cosine" else None
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    counter = {"step": 0}

    def step(idx: Tensor, epoch: int) -> dict[str, float]:
        xb, yb = x_tr[idx], y_tr[idx]
        if augment is not None:
            xb = augment(xb, gen)
        xb, yb = xb.to(device), yb.to(device)
        n = xb.shape[0]
        out_x = None
        if method.needs_outliers and outliers is not None:
            out_x = _draw_outliers(outliers, max(1, round(cfg.outlier_ratio * n)), gen).to(device)
        model.train()
        if out_x is not None and method.concat_outliers:
            feats, logits = tap(torch.cat([xb, out_x]))
            ctx = StepContext(xb, yb, feats[:n], logits[:n], epoch, counter["step"], tap, tap.head, gen,
                              out_x, feats[n:], logits[n:])
        else:
            feats, logits = tap(xb)
            ctx = StepContext(xb, yb, feats, logits, epoch, counter["step"], tap, tap.head, gen, out_x)
        terms = method.loss(ctx)
        loss = terms["loss"]
        for hook in extra_losses:
            loss = loss + hook(ctx)
        if not bool(torch.isfinite(loss)):
            raise OODLensError(f"training loss became non-finite at epoch {epoch} ({type(method).__name__}); lower the learning rate")
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        counter["step"] += 1
        return {"loss": float(loss.detach()), "correct": int((logits[:n].detach().argmax(1) == yb).sum()), "count": n}

    res: LoopResult = fit_epochs(model, x_tr.shape[0], step, lambda: accuracy_of(model, x_va, y_va, device),
                                 epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed, device=device,
                                 drop_last=cfg.drop_last, progress=progress, desc=f"train {method.name}",
                                 on_epoch_end=(lambda _e: sched.step()) if sched is not None else None)
    result = ClassifierResult(res.best_val, res.best_epoch, res.history, asdict(cfg),
                              {"name": method.name, **method.params()})
    if checkpoint is not None:
        save_checkpoint(model, checkpoint, {"best_val_acc": res.best_val, "best_epoch": res.best_epoch,
                                            "config": result.config, "method": result.method})
    return result
