"""Training a :class:`~oodlens.multimodal.model.MultimodalClassifier` with MultiOOD's objectives.

Per step, with fused logits ``l``, per-modality logits ``l_m`` and labels ``y``::

    loss = CE(l, y)                                           or, with single_pred,  (CE(l, y) + Σ_m CE(l_m, y)) / (M + 1)
         + a2d_ratio · L_A2D(l_1 … l_M, y)                    if a2d
         + ood_entropy_ratio · L_ent(outliers)                if outliers (from epoch start_epoch on)
         + a2d_ratio_ood · L_disc(outliers)

(see :mod:`oodlens.multimodal.losses`). Outliers come from :class:`~oodlens.multimodal.npmix.NPMix` (queues of
detached concatenated embeddings) or :func:`~oodlens.multimodal.feature_mixing.feature_mixing` (the batch's
detached embeddings), and are scored by the per-modality heads only.

Defaults of :class:`TrainConfig` are the argparse defaults of MultiOOD's ``HMDB-rgb-flow/train_video_flow.py``:
``lr`` 1e-4, ``bsz`` 16 (``drop_last=True``), ``nepochs`` 50, Adam with weight decay 1e-4 (SGD: momentum 0.9,
weight decay 5e-4, Nesterov), ``a2d_ratio`` 0.5, ``a2d_ratio_ood`` 0.5, ``ood_entropy_ratio`` 0.5,
``start_epoch`` 10, ``sample_number`` 65, ``nn_k`` 3, ``mixup_alpha`` 10; ``use_single_pred`` off. The README's
commands differ from the argparse defaults: :meth:`TrainConfig.preset` reproduces them (A2D: single_pred,
Hellinger, a2d_ratio 1.0; A2D + NP-Mix on HMDB/UCF near-OOD: single_pred, Hellinger, 0.5 / 0.5 / 0.5; on EPIC,
Kinetics and far-OOD they use 0.1 / 0.1 / 0.1, ``preset(..., ratio=0.1)``).

Like the reference, each epoch is evaluated on the validation split and the weights with the best validation
accuracy are kept (ties go to the later epoch, ``>=``); they are loaded into the model at the end and, with
``checkpoint=``, written to a safetensors file (never ``torch.save``/pickle). The run is seeded: batch order
(``torch.Generator``), dropout (a forked global RNG; the epochs run in the shared
:func:`oodlens.training.loop.fit_epochs`) and outlier draws (NP-Mix's numpy generator, Feature
Mixing's torch generator) all derive from ``TrainConfig.seed``; the device follows the ``device`` argument.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

import torch
from torch import nn

from ..encoders._common import check_device
from ..errors import OODLensError
from ..training.base import check_numbers
from ..training.loop import TrainResult, check_class_labels, fit_epochs
from .feature_mixing import feature_mixing
from .losses import DISTANCES, a2d_loss, outlier_discrepancy_loss, outlier_entropy_loss
from .model import MultimodalClassifier
from .npmix import NPMix

OUTLIER_METHODS = ("npmix", "feature_mixing")


@dataclass
class TrainConfig:
    """Hyper-parameters; defaults are MultiOOD's argparse defaults (see the module docstring)."""

    epochs: int = 50
    batch_size: int = 16
    lr: float = 1e-4
    optimizer: str = "adam"
    single_pred: bool = False
    a2d: bool = False
    a2d_distance: str = "hellinger"
    a2d_ratio: float = 0.5
    outliers: str | None = None
    outlier_distance: str = "hellinger"
    a2d_ratio_ood: float = 0.5
    ood_entropy_ratio: float = 0.5
    start_epoch: int = 10
    sample_number: int = 65
    nn_k: int = 3
    mixup_alpha: float = 10.0
    swap_fraction: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        check_numbers("TrainConfig", ints={"epochs": self.epochs, "batch_size": self.batch_size, "seed": self.seed},
                      floats={"lr": self.lr})
        if self.epochs < 1 or self.batch_size < 1:
            raise OODLensError(f"epochs and batch_size must be ≥ 1, got {self.epochs}, {self.batch_size}")
        if not self.lr > 0:
            raise OODLensError(f"lr must be > 0, got {self.lr}")
        if self.optimizer not in ("adam", "sgd"):
            raise OODLensError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        for name in ("a2d_distance", "outlier_distance"):
            if getattr(self, name) not in DISTANCES:
                raise OODLensError(f"{name} must be one of {DISTANCES}, got {getattr(self, name)!r}")
        if self.outliers is not None and self.outliers not in OUTLIER_METHODS:
            raise OODLensError(f"outliers must be None or one of {OUTLIER_METHODS}, got {self.outliers!r}")

    @classmethod
    def preset(cls, method: str, ratio: float | None = None, **overrides: Any) -> "TrainConfig":
        """The README's configurations: ``"baseline"``, ``"a2d"``, ``"a2d_npmix"``, ``"a2d_feature_mixing"``.

        ``ratio`` sets a2d_ratio (and, with outliers, a2d_ratio_ood and ood_entropy_ratio); by default 1.0 for A2D
        alone and 0.5 with outliers (HMDB/UCF near-OOD; the README uses 0.1 for EPIC, Kinetics and far-OOD).
        """
        if method == "baseline":
            cfg: dict[str, Any] = {}
        elif method == "a2d":
            r = 1.0 if ratio is None else ratio
            cfg = {"single_pred": True, "a2d": True, "a2d_ratio": r}
        elif method in ("a2d_npmix", "a2d_feature_mixing"):
            r = 0.5 if ratio is None else ratio
            cfg = {"single_pred": True, "a2d": True, "a2d_ratio": r, "a2d_ratio_ood": r, "ood_entropy_ratio": r,
                   "outliers": "npmix" if method == "a2d_npmix" else "feature_mixing"}
        else:
            raise OODLensError(f"unknown preset {method!r}; use baseline, a2d, a2d_npmix or a2d_feature_mixing")
        return cls(**{**cfg, **overrides})

    def replace(self, **changes: Any) -> "TrainConfig":
        return replace(self, **changes)


def _as_inputs(data: Mapping[str, Any], modalities: list[str], what: str) -> tuple[dict[str, torch.Tensor], int]:
    missing = [m for m in modalities if m not in data]
    if missing:
        raise OODLensError(f"{what} lacks modalities {missing} (has {sorted(data)})")
    tensors = {m: torch.as_tensor(data[m]) for m in modalities}
    tensors = {m: (t.float() if t.is_floating_point() else t) for m, t in tensors.items()}  # float16/64 → float32
    sizes = {m: t.shape[0] for m, t in tensors.items()}
    if len(set(sizes.values())) != 1:
        raise OODLensError(f"{what}: modalities disagree on N: {sizes}")
    for m, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise OODLensError(f"{what}: modality {m!r} has non-finite values")
    return tensors, next(iter(sizes.values()))


def _make_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=1e-4)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)


class Trainer:
    """Holds the model, optimiser and outlier state; :meth:`fit` runs the epochs, :meth:`train_step` one step."""

    def __init__(self, model: MultimodalClassifier, config: TrainConfig | None = None,
                 device: str | torch.device = "cpu", progress: bool = True):
        self.model = model
        self.cfg = config or TrainConfig()
        self.device = check_device(device) or torch.device("cpu")
        self.progress = progress
        self.model.to(self.device)
        self.optim = _make_optimizer([p for p in model.parameters() if p.requires_grad], self.cfg)
        self.criterion = nn.CrossEntropyLoss()
        self.npmix: NPMix | None = None
        if self.cfg.outliers == "npmix":
            self.npmix = NPMix(model.num_classes, sum(model.dims.values()), self.cfg.sample_number, self.cfg.nn_k,
                               self.cfg.mixup_alpha, seed=self.cfg.seed, device=self.device)
        self.mix_gen = torch.Generator().manual_seed(self.cfg.seed + 1)

    # -- one step ---------------------------------------------------------------------------------------------
    def losses(self, batch: Mapping[str, torch.Tensor], labels: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        """Every loss term of one training step (the model must be in train mode); ``"loss"`` is their sum."""
        cfg, model = self.cfg, self.model
        out = model(batch)
        per_mod = [out.logits[m] for m in model.modalities]
        ce = self.criterion(out.fused_logits, labels)
        if cfg.single_pred:
            ce = (ce + sum(self.criterion(l, labels) for l in per_mod)) / (len(per_mod) + 1)
        terms: dict[str, torch.Tensor] = {"ce": ce, "fused_logits": out.fused_logits.detach()}
        loss = ce
        if cfg.a2d:
            terms["a2d"] = a2d_loss(per_mod, labels, cfg.a2d_distance)
            loss = loss + cfg.a2d_ratio * terms["a2d"]
        outliers = None
        if cfg.outliers == "npmix":
            assert self.npmix is not None
            concat = torch.cat([out.embeddings[m] for m in model.modalities], 1)
            draw = self.npmix.step(concat, labels, synthesize=epoch >= cfg.start_epoch)
            if draw is not None:
                outliers = model.split(draw.outliers)
        elif cfg.outliers == "feature_mixing" and epoch >= cfg.start_epoch:
            outliers = feature_mixing([out.embeddings[m] for m in model.modalities], cfg.swap_fraction, self.mix_gen)
        if outliers is not None:
            ood_logits = [model.heads[m](z) for m, z in zip(model.modalities, outliers)]
            terms["ood_disc"] = outlier_discrepancy_loss(ood_logits, cfg.outlier_distance)
            terms["ood_entropy"] = outlier_entropy_loss(ood_logits)
            loss = loss + cfg.ood_entropy_ratio * terms["ood_entropy"] + cfg.a2d_ratio_ood * terms["ood_disc"]
        terms["loss"] = loss
        return terms

    def train_step(self, batch: Mapping[str, torch.Tensor], labels: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        self.model.train()
        terms = self.losses(batch, labels, epoch)
        if not bool(torch.isfinite(terms["loss"])):
            raise OODLensError(f"training loss became non-finite at epoch {epoch}; lower the learning rate")
        self.optim.zero_grad(set_to_none=True)
        terms["loss"].backward()
        self.optim.step()
        return terms

    @torch.no_grad()
    def accuracy(self, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, batch_size: int = 4096) -> float:
        was = self.model.training
        self.model.eval()
        correct = 0
        n = labels.shape[0]
        try:
            for i in range(0, n, batch_size):
                b = {m: t[i:i + batch_size].to(self.device, torch.float32 if t.is_floating_point() else t.dtype)
                     for m, t in inputs.items()}
                pred = self.model(b).fused_logits.argmax(1).cpu()
                correct += int((pred == labels[i:i + batch_size]).sum())
        finally:
            self.model.train(was)
        return correct / max(n, 1)

    # -- the loop -----------------------------------------------------------------------------------------------
    def fit(self, train: Mapping[str, Any], train_labels: Any, val: Mapping[str, Any], val_labels: Any,
            checkpoint: str | os.PathLike | None = None) -> TrainResult:
        """Train for ``epochs``; keep (and load) the weights with the best validation accuracy."""
        cfg, model = self.cfg, self.model
        x_tr, n = _as_inputs(train, model.modalities, "training data")
        x_va, n_va = _as_inputs(val, model.modalities, "validation data")
        y_tr = check_class_labels(train_labels, n, model.num_classes, "training")
        y_va = check_class_labels(val_labels, n_va, model.num_classes, "validation")
        if n_va == 0:
            raise OODLensError("validation data is empty")

        def step(idx: torch.Tensor, epoch: int) -> dict[str, float]:
            # batches are gathered where the data live, then moved to the device
            batch = {m: t[idx.to(t.device)].to(self.device, non_blocking=True) for m, t in x_tr.items()}
            y = y_tr[idx].to(self.device, non_blocking=True)
            terms = self.train_step(batch, y, epoch)
            return {"loss": float(terms["loss"].detach()), "count": y.shape[0],
                    "correct": int((terms["fused_logits"].argmax(1) == y).sum())}

        # the shared seeded loop: batch order, forked global RNG, best-validation weights (drop_last as the reference)
        res = fit_epochs(model, n, step, lambda: self.accuracy(x_va, y_va), epochs=cfg.epochs,
                         batch_size=cfg.batch_size, seed=cfg.seed, device=self.device, drop_last=True,
                         progress=self.progress, desc="train")
        best_acc, best_epoch, history = res.best_val, res.best_epoch, res.history
        result = TrainResult(best_acc, best_epoch, history, asdict(cfg))
        if checkpoint is not None:
            model.save(checkpoint, {"best_val_acc": best_acc, "best_epoch": best_epoch, "config": asdict(cfg)})
        return result


def train(model: MultimodalClassifier, train: Mapping[str, Any], train_labels: Any, val: Mapping[str, Any],
          val_labels: Any, config: TrainConfig | None = None, device: str | torch.device = "cpu",
          progress: bool = True, checkpoint: str | os.PathLike | None = None) -> TrainResult:
    """Train ``model`` in place (see :class:`Trainer`); returns the best validation accuracy, its epoch, history."""
    return Trainer(model, config, device, progress).fit(train, train_labels, val, val_labels, checkpoint)
