"""Getting boxes out of real detectors.

* :func:`capture` — the generic path: any callable returning, per image, a dict with ``boxes`` (n, 4) xyxy,
  ``logits`` (n, C) (``background`` says which column is background, if any), optional ``scores`` (n,) (default:
  the largest known-class softmax probability), and optional per-box tensors (``features``, ``roi_map``, …).
* :func:`capture_two_stage` — a torchvision-style two-stage detector (``model.roi_heads.box_head`` →
  ROI features, ``model.roi_heads.box_predictor`` → class logits with background column 0, as torchvision's
  Faster R-CNN): forward hooks record every proposal's ROI feature and logits; each kept detection is traced
  back to its proposal as the one whose softmax probability of the detection's label equals its score
  (torchvision computes the score as exactly that probability). torchvision itself is never imported here; a
  torchvision model is only needed to call it.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import torch

from .._checks import as_tensor
from ..errors import OODLensError
from .boxes import Detections

INSTALL_HINT = "pip install torchvision  (CPU wheels: --index-url https://download.pytorch.org/whl/cpu)"


def capture(fn: Callable[[Any], Iterable[Mapping[str, Any]]], batches: Iterable[Any], num_classes: int,
            background: int | None = None) -> Detections:
    """Run ``fn`` over ``batches`` (each a batch of images) and gather every image's boxes into one
    :class:`Detections` (images numbered in order)."""
    per_image: list[Mapping[str, Any]] = []
    for batch in batches:
        out = fn(batch)
        if isinstance(out, Mapping) or not isinstance(out, Iterable):
            raise OODLensError(f"capture: the callable must return a list with one dict per image of the batch, "
                               f"got {type(out).__name__}")
        per_image += list(out)
    if not per_image:
        raise OODLensError("capture: the callable returned no images")
    if not isinstance(per_image[0], Mapping):
        raise OODLensError(f"capture: each image's output must be a dict, got {type(per_image[0]).__name__}")
    keys = set(per_image[0])
    for i, d in enumerate(per_image):
        if not isinstance(d, Mapping):
            raise OODLensError(f"capture: each image's output must be a dict, image {i}'s is {type(d).__name__}")
        for need in ("boxes", "logits"):
            if need not in d:
                raise OODLensError(f"capture: image {i}'s output has no {need!r} (it has {sorted(d)})")
        if set(d) != keys:
            raise OODLensError(f"capture: image {i}'s output has keys {sorted(d)}, image 0 has {sorted(keys)}")
    n_boxes = []
    for i, d in enumerate(per_image):
        b = as_tensor(d["boxes"], "boxes")
        if b.numel() and (b.ndim != 2 or b.shape[1] != 4):
            raise OODLensError(f"capture: image {i}'s 'boxes' must have shape (n, 4) as x1, y1, x2, y2, got "
                               f"{tuple(b.shape)}")
        n_boxes.append(b.shape[0] if b.numel() else 0)
    width = {"boxes": (4,), "logits": (int(num_classes) + (background is not None),)}
    cat = {k: _concat(per_image, k, n_boxes, width.get(k, ())) for k in keys}
    counts = torch.tensor(n_boxes)
    logits = cat.pop("logits").float()
    if "scores" in cat:
        conf = cat.pop("scores")
    else:
        p = torch.softmax(logits, 1)
        if background is not None:
            p = torch.cat([p[:, :background % logits.shape[1]], p[:, background % logits.shape[1] + 1:]], 1)
        conf = p.amax(1) if p.shape[0] else torch.zeros(0)
    boxes = cat.pop("boxes")
    labels = cat.pop("labels", None)
    image = torch.repeat_interleave(torch.arange(len(per_image)), counts)
    classes = None
    if labels is not None:  # torchvision labels count the background column (0) as class 0
        classes = labels.long() - (1 if background == 0 else 0)
    return Detections(image, boxes, logits, conf, len(per_image), num_classes, background, classes, cat)


def capture_two_stage(model: torch.nn.Module, batches: Iterable[list[torch.Tensor]]) -> Detections:
    """Kept detections of a torchvision-style two-stage detector with their ROI features (``features``) and
    class logits (background = column 0)."""
    heads = getattr(model, "roi_heads", None)
    if heads is None or not hasattr(heads, "box_head") or not hasattr(heads, "box_predictor"):
        raise OODLensError("capture_two_stage needs a torchvision-style detector with roi_heads.box_head and "
                           f"roi_heads.box_predictor (e.g. torchvision's Faster R-CNN; {INSTALL_HINT})")
    seen: dict[str, Any] = {}

    def on_heads(_m, inputs):  # RoIHeads.forward(features, proposals, image_shapes, targets=None)
        seen["counts"] = [p.shape[0] for p in inputs[1]]

    def on_box_head(_m, _i, out):
        seen["features"] = out.detach()

    def on_predictor(_m, _i, out):
        seen["logits"] = out[0].detach()

    hooks = [heads.register_forward_pre_hook(on_heads), heads.box_head.register_forward_hook(on_box_head),
             heads.box_predictor.register_forward_hook(on_predictor)]
    try:
        def run(batch: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
            was = model.training
            model.eval()
            with torch.no_grad():
                outs = model(batch)
            model.train(was)
            return _trace(outs, seen)

        num_classes = None
        dets = []
        for batch in batches:
            got = run(batch)
            dets += got
            num_classes = seen["logits"].shape[1] - 1
        return capture(lambda b: b, [dets], num_classes, background=0)
    finally:
        for h in hooks:
            h.remove()


def _trace(outs: list[Mapping[str, torch.Tensor]], seen: Mapping[str, Any]) -> list[dict[str, torch.Tensor]]:
    """Attach to each kept detection its proposal's logits and ROI feature (per image: one small matching)."""
    probs = torch.softmax(seen["logits"].float(), 1)
    res = []
    for i, (o, (lo, n)) in enumerate(zip(outs, _spans(seen["counts"]))):
        p, lab, sc = probs[lo:lo + n], o["labels"].long(), o["scores"].float()
        if lab.numel():
            r = (p[:, lab].T - sc[:, None]).abs().argmin(1)  # the proposal whose p(label) is the score
        else:
            r = torch.zeros(0, dtype=torch.long)
        res.append({"boxes": o["boxes"].detach(), "logits": seen["logits"][lo:lo + n][r],
                    "features": seen["features"][lo:lo + n][r], "scores": sc, "labels": lab})
    return res


def _concat(per_image: list[Mapping[str, Any]], key: str, counts: list[int], default: tuple[int, ...] = ()
            ) -> torch.Tensor:
    """One per-box tensor over all images; each image's must have one row per box and the same trailing shape
    (an empty tensor, e.g. ``torch.zeros(0)``, stands for an image without boxes)."""
    parts = [as_tensor(d[key], key).detach().cpu() for d in per_image]
    ref = next((t.shape[1:] for t in parts if t.numel() and t.ndim), torch.Size(default))
    out = []
    for i, (t, n) in enumerate(zip(parts, counts)):
        if t.numel() == 0 and n == 0:
            t = t.reshape(0, *ref)
        if t.ndim == 0 or t.shape[0] != n:
            raise OODLensError(f"capture: image {i}'s {key!r} has shape {tuple(t.shape)}, expected one row per box "
                               f"({n} boxes)")
        if t.shape[1:] != ref:
            raise OODLensError(f"capture: image {i}'s {key!r} has per-box shape {tuple(t.shape[1:])}, other "
                               f"images' {tuple(ref)}")
        out.append(t)
    return torch.cat(out)


def _spans(counts: list[int]) -> list[tuple[int, int]]:
    out, s = [], 0
    for c in counts:
        out.append((s, c))
        s += c
    return out
