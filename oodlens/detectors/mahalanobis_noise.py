"""Mahalanobis distance with input pre-processing (Lee, Lee, Lee & Shin, NeurIPS 2018, "A Simple Unified
Framework for Detecting Out-of-Distribution Samples and Adversarial Attacks"), one layer.

With z(x) the features of one layer (the penultimate by default), class means μ_c and the tied covariance Σ
fitted on the training inputs' features, and M_c(z) = (z − μ_c)ᵀ Σ⁺ (z − μ_c):

    ĉ     = argmin_c M_c(z(x))                                 (closest class at the clean input)
    g     = +1 where ∂M_ĉ(z(x))/∂x ≥ 0, −1 elsewhere            (the sign, with 0 ↦ +1 as the reference's torch.ge)
    x̃     = x − ε · g / σ                                      (a step that brings x closer to class ĉ)
    score(x) = min_c M_c(z(x̃))

The reference's confidence is max_c −½ M_c(z(x̃)) (higher = more ID); here it is negated and the factor ½ dropped
(a monotone map), so that ε = 0 gives exactly the ``mahalanobis`` detector on the same features.

Fitting follows the reference's ``sample_estimator``: the model is run over the training inputs (the ``inputs``
feature, in batches, no gradient) and the same hook as at scoring captures the layer, so training and test features
come from one place. Spatial outputs are averaged over their spatial dimensions, as in the reference. Class
means, tied covariance and its pseudo-inverse (as sklearn's ``EmpiricalCovariance`` in the reference; OAS shrinkage
when N < 2·D or the covariance is ill-conditioned, ``covariance="auto"``, see ``mahalanobis.py``) come from
``_gaussian.py``; distances to all classes are one matrix expansion after whitening.

Defaults: ε = 0.0014 (OpenOOD's ``mds_ensemble.yml``); ``param_grid`` is the reference's noise list
{0, 0.0005, 0.001, 0.0014, 0.002, 0.005, 0.01}. ``layer=None`` captures the input of the model's last
``nn.Linear`` (the classifier head), i.e. the penultimate features; name a module to use its (pooled) output.
``input_std``: the reference divides the sign map per channel by the normalisation std (0.2023, 0.1994, 0.2010
for its CIFAR ResNet); ``None`` (default) applies no division, so ε is in the units of the model's inputs.

Deliberate differences, none of which changes a score: one layer only (the paper's feature ensemble over layers
with a logistic regression trained on validation OOD is left to the fusion layer); the loss is summed over the
batch rather than averaged (same sign map); with ε = 0 the gradient pass is skipped. The model is put in eval
mode while scoring (mode restored), gradients are taken w.r.t. the inputs only (parameters' ``.grad`` are left
untouched), each batch runs on the model's device, scores come back on the inputs' device. Models are never saved:
after ``load`` call ``attach_model(model)``.
"""

from __future__ import annotations

import torch

from ..errors import OODLensError
from ._gaussian import check_covariance_choice, class_means, fit_whitener, sq_dist_to_means, tied_covariance
from .base import Detector
from .odin import InputStd, capture_layer, check_model_params, input_batches, model_placement, model_scoring, signed_step


class MahalanobisNoise(Detector):
    name = "mahalanobis_noise"
    needs_labels = True
    needs_model = True
    spatial_inputs = True  # reads the raw model inputs, e.g. (N, 3, H, W)
    param_grid = {"noise": [0.0, 0.0005, 0.001, 0.0014, 0.002, 0.005, 0.01]}
    score_only_params = frozenset({"noise", "input_std", "batch_size"})
    test_params = {"layer": "pool"}

    def __init__(self, noise: float = 0.0014, layer: str | None = None, input_std: InputStd = None,
                 batch_size: int = 128, inputs: str = "inputs", covariance: str = "auto"):
        self.covariance = check_covariance_choice(covariance)
        self.noise = noise
        self.layer = layer
        self.input_std = input_std
        self.batch_size = batch_size
        self.inputs = inputs

    def required_features(self) -> tuple[str, ...]:
        return (self.inputs,)

    def _fit(self, train, labels, head, model) -> None:
        check_model_params(self.noise, self.input_std, self.batch_size)
        inputs = train[self.inputs]
        device, dtype = model_placement(model, inputs.device)
        parts = []
        with model_scoring(model), torch.no_grad(), capture_layer(model, self.layer) as features:
            for xb in input_batches(inputs, self.batch_size, device, dtype):
                model(xb)
                parts.append(features().float())
        z = torch.cat(parts)
        if not bool(torch.isfinite(z).all()):
            raise OODLensError("the model produced non-finite features on the training inputs")
        means, _ = class_means(z, labels.to(z.device))
        cov = tied_covariance(z, labels.to(z.device), means)
        w, self.shrinkage_ = fit_whitener(cov, z.shape[0], self.covariance)
        self.center_ = means.mean(0)
        self.whiten_ = w.to(torch.float32)
        self.means_white_ = ((means - self.center_) @ w).to(torch.float32)

    def _whiten(self, z: torch.Tensor) -> torch.Tensor:
        if z.shape[1] != self.whiten_.shape[0]:
            raise OODLensError(f"the hooked layer gives {z.shape[1]} features but the detector was fitted on "
                               f"{self.whiten_.shape[0]}: is the attached model the one it was fitted with?")
        z = z.float()
        return (z - self.center_.to(z.device, z.dtype)) @ self.whiten_.to(z.device)

    def _score(self, x) -> torch.Tensor:
        check_model_params(self.noise, self.input_std, self.batch_size)
        inputs = x[self.inputs]
        model, eps = self.model, float(self.noise)
        device, dtype = model_placement(model, inputs.device)
        means = self.means_white_.to(device)
        out = []
        with model_scoring(model), capture_layer(model, self.layer) as features:
            for xb in input_batches(inputs, self.batch_size, device, dtype):
                if eps > 0:
                    xb.requires_grad_(True)
                    model(xb)
                    w = self._whiten(features())
                    closest = sq_dist_to_means(w.detach(), means).argmin(1)
                    loss = (w - means[closest]).square().sum()
                    (grad,) = torch.autograd.grad(loss, xb)
                    xb = signed_step(xb.detach(), grad, eps, self.input_std)
                with torch.no_grad():
                    model(xb)
                    w = self._whiten(features())
                out.append(sq_dist_to_means(w, means).amin(1))
        return torch.cat(out).to(inputs.device)
