"""ODIN: temperature scaling plus input pre-processing (Liang, Li & Srikant, ICLR 2018, "Enhancing The
Reliability of Out-of-distribution Image Detection in Neural Networks").

With f the model's logits, T the temperature, ŷ = argmax_c f_c(x) and ε the noise magnitude:

    L(x)  = − log softmax(f(x) / T)_ŷ                       (cross-entropy against the predicted class)
    g     = +1 where ∂L/∂x ≥ 0, −1 elsewhere                 (the sign, with 0 ↦ +1 as the reference's torch.ge)
    x̃     = x − ε · g / σ                                    (σ: per-channel input std, or 1; see below)
    score(x) = − max_c softmax(f(x̃) / T)_c

The paper's confidence max_c softmax(f(x̃)/T) is higher for in-distribution inputs, so it is negated here
(higher = more OOD). The model is run twice per batch (once with a gradient w.r.t. the inputs only, once on x̃).

Defaults: T = 1000, ε = 0.0014 — the values of OpenOOD's ``configs/postprocessors/odin.yml``, also the paper's
CIFAR setting. ``param_grid`` is a subset of the paper's tuning grid (T ∈ {1, 2, 5, …, 1000}, ε ∈ 21 values in
[0, 0.004]).

Normalisation std: the reference codes divide the sign map per channel by the std the images were normalised
with (the facebookresearch/odin code hard-codes CIFAR's 63.0/255, 62.1/255, 66.7/255; OpenOOD uses its dataset's
std, 0.5 when unknown), so that ε is a step in [0, 1] pixel units. Here ``input_std=None`` (the default) applies
no division — ε is a step in the units of the model's inputs; pass the std (a float or one per channel) to
reproduce the reference on normalised images.

Deliberate differences, none of which changes a score: the loss is summed over the batch rather than averaged
(same sign map, no dependence on the batch size); with ε = 0 the gradient pass is skipped (x̃ = x); the final
softmax is computed in float64. The model is put in eval mode while scoring (its mode is restored afterwards),
gradients are taken w.r.t. the inputs only (parameters' ``.grad`` are left untouched), and each batch runs on the
model's device, the scores coming back on the inputs' device. Models are never saved with the detector: after
``load`` call ``attach_model(model)``.

The helpers below (model context, placement, batches, capture of a layer, the signed step) are shared with the
input-noise Mahalanobis detector (``mahalanobis_noise.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, Callable

import torch
from torch import nn

from ..errors import OODLensError
from ..extract import _first_tensor, _model_outputs, pool_output
from .base import Detector

InputStd = float | Sequence[float] | None


# -- helpers shared by the model-based detectors ---------------------------------------------------------------
@contextlib.contextmanager
def model_scoring(model: nn.Module) -> Iterator[None]:
    """Eval mode (restored afterwards) with autograd enabled, also inside a caller's ``no_grad``/``inference_mode``."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            yield
    except RuntimeError as e:  # the model's own shape/dtype checks (e.g. conv2d on inputs of the wrong rank)
        raise OODLensError(f"the model could not run on these inputs: {e}") from e
    finally:
        model.train(was_training)


def model_placement(model: nn.Module, fallback: torch.device) -> tuple[torch.device, torch.dtype]:
    """The device and floating dtype of the model's first parameter (or buffer); ``fallback``/float32 if none."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return fallback, torch.float32


def input_batches(inputs: torch.Tensor, batch_size: int, device: torch.device, dtype: torch.dtype
                  ) -> Iterator[torch.Tensor]:
    """Fresh (non-inference, gradient-free) copies of consecutive row blocks on ``device`` in ``dtype``."""
    for i in range(0, inputs.shape[0], batch_size):
        yield inputs[i:i + batch_size].to(device=device, dtype=dtype).clone()


def check_model_params(noise: float, input_std: InputStd, batch_size: int) -> None:
    """Validate the hyper-parameters common to the input-perturbation detectors."""
    if not isinstance(noise, (int, float)) or not noise >= 0:
        raise OODLensError(f"noise (the perturbation magnitude ε) must be a number ≥ 0, got {noise!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise OODLensError(f"batch_size must be a positive integer, got {batch_size!r}")
    if input_std is not None:
        stds = [input_std] if isinstance(input_std, (int, float)) else list(input_std)
        if not stds or not all(isinstance(s, (int, float)) and s > 0 for s in stds):
            raise OODLensError(f"input_std must be a positive number or a list of positive numbers, got {input_std!r}")


def signed_step(x: torch.Tensor, grad: torch.Tensor, noise: float, input_std: InputStd) -> torch.Tensor:
    """``x − ε · g / σ`` with ``g = +1 where grad ≥ 0 else −1`` and σ the per-channel (dim 1) std, or 1."""
    g = torch.where(grad >= 0, 1.0, -1.0).to(x.dtype)
    if input_std is not None:
        std = torch.as_tensor(input_std, dtype=x.dtype, device=x.device).reshape(-1)
        if std.numel() > 1:
            if x.ndim < 2 or x.shape[1] != std.numel():
                raise OODLensError(f"input_std has {std.numel()} values but the inputs have shape {tuple(x.shape)} "
                                   f"(one std per channel, dim 1)")
            std = std.reshape(1, -1, *([1] * (x.ndim - 2)))
        g = g / std
    return x - noise * g


def model_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The logits the model returns (a tensor, a tuple's first entry or a dict's ``logits``)."""
    out = _model_outputs(model(x))
    if "logits" not in out:
        raise OODLensError(f"the model returned a dict without a 'logits' entry (keys: {sorted(out)})")
    return out["logits"]


@contextlib.contextmanager
def capture_layer(model: nn.Module, layer: str | None) -> Iterator[Callable[[], torch.Tensor]]:
    """Hook one module; yields a function returning its (avg-pooled to (N, D)) output of the last forward, with
    its autograd graph. ``layer=None`` captures the input of the model's last ``nn.Linear`` (the classifier head),
    i.e. the penultimate features."""
    modules = dict(model.named_modules())
    store: dict[str, torch.Tensor] = {}
    if layer is None:
        linears = [m for m in modules.values() if isinstance(m, nn.Linear)]
        if not linears:
            raise OODLensError("the model has no nn.Linear head; name the penultimate module with layer=...")

        def pre_hook(_m: nn.Module, args: tuple) -> None:
            store["z"] = args[0]

        handle = linears[-1].register_forward_pre_hook(pre_hook)
        what = "the input of the last nn.Linear"
    else:
        if layer not in modules:
            import difflib

            names = [m for m in modules if m]
            close = difflib.get_close_matches(layer, names, n=5, cutoff=0.4)
            raise OODLensError(f"model has no module named {layer!r}; "
                               + (f"close matches: {', '.join(close)}" if close else f"modules: {', '.join(names[:20])}"))

        def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
            store["z"] = out

        handle = modules[layer].register_forward_hook(hook)
        what = f"module {layer!r}"

    def get() -> torch.Tensor:
        if "z" not in store:
            raise OODLensError(f"{what} was not run by the model's forward")
        z = pool_output(_first_tensor(store.pop("z")), "avg")
        if z.ndim != 2:
            raise OODLensError(f"{what} gave an output of shape {tuple(z.shape)}; cannot pool it to (N, D)")
        return z

    try:
        yield get
    finally:
        handle.remove()


# -- the detector ---------------------------------------------------------------------------------------------
class ODIN(Detector):
    name = "odin"
    needs_model = True
    spatial_inputs = True  # reads the raw model inputs, e.g. (N, 3, H, W)
    param_grid = {"temperature": [1.0, 10.0, 100.0, 1000.0],
                  "noise": [0.0, 0.0005, 0.001, 0.0014, 0.002, 0.003, 0.004]}
    score_only_params = frozenset({"temperature", "noise", "input_std", "batch_size"})

    def __init__(self, temperature: float = 1000.0, noise: float = 0.0014, input_std: InputStd = None,
                 batch_size: int = 128, inputs: str = "inputs"):
        self.temperature = temperature
        self.noise = noise
        self.input_std = input_std
        self.batch_size = batch_size
        self.inputs = inputs

    def required_features(self) -> tuple[str, ...]:
        return (self.inputs,)

    def _check_params(self) -> None:
        if not isinstance(self.temperature, (int, float)) or not self.temperature > 0:
            raise OODLensError(f"temperature must be > 0, got {self.temperature!r}")
        check_model_params(self.noise, self.input_std, self.batch_size)

    def _fit(self, train, labels, head, model) -> None:
        self._check_params()  # ODIN learns nothing from the training data

    def _score(self, x) -> torch.Tensor:
        self._check_params()
        inputs = x[self.inputs]
        model, t, eps = self.model, float(self.temperature), float(self.noise)
        device, dtype = model_placement(model, inputs.device)
        out = []
        with model_scoring(model):
            for xb in input_batches(inputs, self.batch_size, device, dtype):
                if eps > 0:
                    xb.requires_grad_(True)
                    logits = model_logits(model, xb)
                    pred = logits.detach().argmax(1)
                    loss = nn.functional.cross_entropy(logits / t, pred, reduction="sum")
                    (grad,) = torch.autograd.grad(loss, xb)
                    xb = signed_step(xb.detach(), grad, eps, self.input_std)
                with torch.no_grad():
                    logits = model_logits(model, xb).to(torch.float64)
                out.append(-torch.softmax(logits / t, dim=1).amax(1).to(torch.float32))
        return torch.cat(out).to(inputs.device)
