"""The box data model: many images' detections in flat tensors (ragged through an image index per box), and the
ground truth beside them.

:class:`Detections` holds, per kept box: its image, its box (xyxy, pixels), its class logits (with or without a
background column), the detector's confidence, optional per-box features (ROI vectors ``(N, D)`` or ROI feature
maps ``(N, D, h, w)``) and, for video, its frame and track id. :meth:`Detections.to_features` turns it into a
:class:`~oodlens.features.Features` so every registered detector scores boxes unchanged — the background column
is dropped first, as VOS does (``inter_feat[:, :-1]``).

:class:`GroundTruth` holds annotated boxes with labels ``0..K-1`` for known classes and :data:`UNKNOWN` (−1) for
annotated OOD objects.
"""

from __future__ import annotations

import json
import numbers
import os
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import torch

from .._checks import as_tensor, check_finite
from ..errors import OODLensError
from ..features import Features
from ..safetensors_io import load_tensors, save_tensors

#: ground-truth label of an annotated unknown (OOD) object
UNKNOWN = -1


def _ints(x: Any, n: int, name: str) -> torch.Tensor:
    t = as_tensor(x, name)
    if t.ndim != 1 or t.shape[0] != n:
        raise OODLensError(f"{name} must have shape ({n},), got {tuple(t.shape)}")
    if t.is_floating_point():
        if not bool(torch.isfinite(t).all()) or not bool((t == t.round()).all()):
            raise OODLensError(f"{name} must hold integers")
    return t.long()


def check_boxes(boxes: Any, name: str = "boxes") -> torch.Tensor:
    """Boxes as a float (N, 4) xyxy tensor; NaN/inf coordinates and x2 < x1 or y2 < y1 raise, naming the row."""
    b = as_tensor(boxes, name)
    if b.ndim != 2 or b.shape[1] != 4:
        raise OODLensError(f"{name} must have shape (N, 4) as x1, y1, x2, y2, got {tuple(b.shape)}")
    b = b.float() if not b.is_floating_point() or b.dtype in (torch.float16, torch.bfloat16) else b
    if b.numel() and not bool(torch.isfinite(b).all()):
        row = int((~torch.isfinite(b)).any(1).nonzero()[0])
        raise OODLensError(f"{name} has NaN or infinite coordinates (first at box {row})")
    bad = (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
    if bool(bad.any()):
        row = int(bad.nonzero()[0])
        raise OODLensError(f"{name} has {int(bad.sum())} box(es) with x2 < x1 or y2 < y1 (first at box {row}: "
                           f"{[round(float(v), 3) for v in b[row]]}); boxes must be x1, y1, x2, y2")
    return b


def _check_image(image: Any, n: int, n_images: int | None, name: str) -> tuple[torch.Tensor, int]:
    img = _ints(image, n, f"{name} image index")
    top = int(img.max()) + 1 if n else 0
    if n_images is not None:
        if isinstance(n_images, torch.Tensor) and n_images.numel() == 1:
            n_images = n_images.item()
        if isinstance(n_images, bool) or not isinstance(n_images, numbers.Real) or not float(n_images).is_integer() \
                or n_images < 0:
            raise OODLensError(f"{name}: n_images must be a non-negative integer, got {n_images!r}")
    n_images = top if n_images is None else int(n_images)
    if n and (int(img.min()) < 0 or top > n_images):
        bad = int(((img < 0) | (img >= n_images)).nonzero()[0])
        raise OODLensError(f"{name} image index out of range: box {bad} has image {int(img[bad])}, "
                           f"but there are n_images={n_images}")
    return img, n_images


def _check_tracks(track: torch.Tensor, image: torch.Tensor, frame: torch.Tensor | None, name: str) -> None:
    """A track id may appear once per image and once per frame; a track seen twice in one image, or in two images
    with the same frame index (two videos), 'jumps between images'."""
    has = track >= 0
    if not bool(has.any()):
        return
    t, i = track[has], image[has]
    for what, other in (("image", i), ("frame", frame[has] if frame is not None else None)):
        if other is None:
            continue
        key = t * (int(other.max()) + 1) + other
        u, counts = torch.unique(key, return_counts=True)
        if bool((counts > 1).any()):
            k = int(u[counts > 1][0])
            tid, val = divmod(k, int(other.max()) + 1)
            raise OODLensError(f"{name}: track id {tid} jumps between images: it appears {int(counts.max())} times "
                               f"at {what} {val} (a track has at most one box per {what})")


def _index(index: Any, n: int) -> torch.Tensor:
    """A boolean mask of length n or integer indices in [-n, n) as a tensor; anything else raises."""
    idx = as_tensor(index, "index")
    if idx.dtype == torch.bool:
        if idx.shape != (n,):
            raise OODLensError(f"a boolean index must have shape ({n},), got {tuple(idx.shape)}")
        return idx
    idx = _ints(idx.reshape(-1), idx.numel(), "index")
    if idx.numel() and (int(idx.min()) < -n or int(idx.max()) >= n):
        raise OODLensError(f"index out of range for {n} boxes (got values in {int(idx.min())}..{int(idx.max())})")
    return idx


def _load(path: str | os.PathLike, kind: str, tensors: tuple[str, ...], keys: tuple[str, ...],
          ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and JSON info of a saved ``kind`` file; a missing tensor or key, or bad JSON, raises naming it."""
    t, meta = load_tensors(path, mmap=False)
    if meta.get("oodlens") != kind:
        raise OODLensError(f"{path} is not a saved oodlens {kind} file")
    try:
        info = json.loads(meta["info"])
    except (KeyError, TypeError, json.JSONDecodeError):
        raise OODLensError(f"{path}: the {kind} header has no valid 'info' JSON") from None
    missing = [k for k in keys if not isinstance(info, dict) or k not in info] + [k for k in tensors if k not in t]
    if missing:
        raise OODLensError(f"{path}: saved {kind} file is incomplete, missing {missing}")
    return t, info


@dataclass(frozen=True)
class Detections:
    """Kept boxes of a detector over ``n_images`` images (flat, one row per box).

    ``logits`` (N, C) with ``background`` = the background column's index (``-1``/``C-1`` for detectron2 and
    torchvision-style heads) or None when there is none; ``num_classes`` is then the number of known classes
    and must equal C − 1 with a background column, C without. ``classes``: predicted class per box (default:
    argmax over the known-class logits). ``extra``: named per-box tensors (``features`` (N, D), ``roi_map``
    (N, D, h, w), ...). ``frame`` / ``track`` (N,) for video (track −1 = untracked).
    """

    image: torch.Tensor
    boxes: torch.Tensor
    logits: torch.Tensor
    confidence: torch.Tensor
    n_images: int
    num_classes: int
    background: int | None = None
    classes: torch.Tensor | None = None
    extra: Mapping[str, torch.Tensor] = field(default_factory=dict)
    frame: torch.Tensor | None = None
    track: torch.Tensor | None = None

    def __post_init__(self) -> None:
        boxes = check_boxes(self.boxes, "detection boxes")
        n = boxes.shape[0]
        image, n_images = _check_image(self.image, n, self.n_images, "detection")
        logits = as_tensor(self.logits, "logits")
        if logits.ndim != 2 or logits.shape[0] != n:
            raise OODLensError(f"logits must have shape ({n}, C), got {tuple(logits.shape)}")
        logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) or not logits.is_floating_point() else logits
        check_finite(logits, "logits")
        nc = self.num_classes.item() if isinstance(self.num_classes, torch.Tensor) and self.num_classes.numel() == 1 \
            else self.num_classes
        if isinstance(nc, bool) or not isinstance(nc, numbers.Real) or not float(nc).is_integer():
            raise OODLensError(f"num_classes must be a positive integer, got {self.num_classes!r}")
        k, c = int(nc), logits.shape[1]
        if k < 1:
            raise OODLensError(f"num_classes must be ≥ 1 (the number of known classes), got {self.num_classes}")
        bg = self.background
        if bg is not None:
            if not -c <= int(bg) < c:
                raise OODLensError(f"background column {bg} is out of range for logits with {c} columns "
                                   f"(use -1 or {c - 1} for the last column)")
            if c != k + 1:
                raise OODLensError(f"a background column is declared (background={bg}) but the logits have {c} "
                                   f"columns for num_classes={k}: expected {k + 1} (known classes + background)")
            bg = bg % c
        elif c != k:
            raise OODLensError(f"logits have {c} columns but num_classes={k} and no background column is declared "
                               f"(pass background=-1 if the last column is background)")
        conf = as_tensor(self.confidence, "confidence")
        if conf.shape != (n,):
            raise OODLensError(f"confidence must have shape ({n},), got {tuple(conf.shape)}")
        conf = check_finite(conf.float() if not conf.is_floating_point() else conf, "confidence")
        classes = self.classes
        if classes is None:
            classes = self._known_logits(logits, bg).argmax(1) if n else torch.zeros(0, dtype=torch.long)
        classes = _ints(classes, n, "classes")
        if n and (int(classes.min()) < 0 or int(classes.max()) >= k):
            raise OODLensError(f"classes must be in 0..{k - 1}, got values in {int(classes.min())}..{int(classes.max())}")
        extra = {}
        for name, t in dict(self.extra).items():
            t = as_tensor(t, f"feature {name!r}")
            if t.ndim == 0 or t.shape[0] != n:
                raise OODLensError(f"per-box feature {name!r} must have N={n} rows, got shape {tuple(t.shape)}")
            extra[name] = t
        frame = _ints(self.frame, n, "frame") if self.frame is not None else None
        track = _ints(self.track, n, "track") if self.track is not None else None
        if track is not None:
            _check_tracks(track, image, frame, "detections")
        for k_, v in (("image", image), ("boxes", boxes), ("logits", logits), ("confidence", conf),
                      ("n_images", n_images), ("num_classes", k), ("background", bg), ("classes", classes),
                      ("extra", extra), ("frame", frame), ("track", track)):
            object.__setattr__(self, k_, v)

    @staticmethod
    def _known_logits(logits: torch.Tensor, bg: int | None) -> torch.Tensor:
        if bg is None:
            return logits
        return torch.cat([logits[:, :bg], logits[:, bg + 1:]], 1)

    @property
    def n(self) -> int:
        return self.boxes.shape[0]

    @property
    def known_logits(self) -> torch.Tensor:
        """(N, num_classes): the logits without the background column."""
        return self._known_logits(self.logits, self.background)

    def to_features(self) -> Features:
        """``logits`` (known classes only, background dropped) plus every per-box feature in ``extra``."""
        return Features({"logits": self.known_logits, **self.extra})

    def subset(self, index: Any) -> "Detections":
        """Boxes selected by a boolean mask or indices (image numbering unchanged)."""
        idx = _index(index, self.n)
        pick = lambda t: None if t is None else t[idx]  # noqa: E731
        return replace(self, image=self.image[idx], boxes=self.boxes[idx], logits=self.logits[idx],
                       confidence=self.confidence[idx], classes=self.classes[idx],
                       extra={k: v[idx] for k, v in self.extra.items()}, frame=pick(self.frame), track=pick(self.track))

    def with_extra(self, **tensors: Any) -> "Detections":
        return replace(self, extra={**self.extra, **tensors})

    # -- persistence ----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """One safetensors file (tensors) with a JSON header (sizes, background column, feature names)."""
        t = {"image": self.image, "boxes": self.boxes, "logits": self.logits, "confidence": self.confidence,
             "classes": self.classes, **{f"extra/{k}": v for k, v in self.extra.items()}}
        if self.frame is not None:
            t["frame"] = self.frame
        if self.track is not None:
            t["track"] = self.track
        meta = {"oodlens": "detections", "info": json.dumps(
            {"n_images": self.n_images, "num_classes": self.num_classes, "background": self.background})}
        save_tensors(t, path, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Detections":
        t, info = _load(path, "detections", ("image", "boxes", "logits", "confidence", "classes"),
                        ("n_images", "num_classes", "background"))
        extra = {k[len("extra/"):]: v for k, v in t.items() if k.startswith("extra/")}
        return cls(t["image"], t["boxes"], t["logits"], t["confidence"], info["n_images"], info["num_classes"],
                   info["background"], t["classes"], extra, t.get("frame"), t.get("track"))


@dataclass(frozen=True)
class GroundTruth:
    """Annotated boxes over ``n_images`` images: ``labels`` 0..K−1 for known classes, :data:`UNKNOWN` (−1) for
    annotated OOD objects. ``kind`` (optional): 0 known, 1 near-OOD, 2 far-OOD (FindMeIfYouCan-style splits);
    ``track`` / ``frame`` for video."""

    image: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    n_images: int
    kind: torch.Tensor | None = None
    track: torch.Tensor | None = None
    frame: torch.Tensor | None = None

    def __post_init__(self) -> None:
        boxes = check_boxes(self.boxes, "ground-truth boxes")
        n = boxes.shape[0]
        image, n_images = _check_image(self.image, n, self.n_images, "ground-truth")
        labels = _ints(self.labels, n, "ground-truth labels")
        if n and int(labels.min()) < UNKNOWN:
            raise OODLensError(f"ground-truth labels must be ≥ 0 (known) or {UNKNOWN} (unknown), got {int(labels.min())}")
        kind = _ints(self.kind, n, "kind") if self.kind is not None else None
        track = _ints(self.track, n, "ground-truth track") if self.track is not None else None
        frame = _ints(self.frame, n, "ground-truth frame") if self.frame is not None else None
        if track is not None:
            _check_tracks(track, image, frame, "ground truth")
        for k, v in (("image", image), ("boxes", boxes), ("labels", labels), ("n_images", n_images),
                     ("kind", kind), ("track", track), ("frame", frame)):
            object.__setattr__(self, k, v)

    @property
    def n(self) -> int:
        return self.boxes.shape[0]

    def save(self, path: str | os.PathLike) -> None:
        """One safetensors file (tensors) with a JSON header (number of images)."""
        t = {"image": self.image, "boxes": self.boxes, "labels": self.labels}
        t.update({k: v for k in ("kind", "track", "frame") if (v := getattr(self, k)) is not None})
        save_tensors(t, path, {"oodlens": "ground_truth", "info": json.dumps({"n_images": self.n_images})})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "GroundTruth":
        t, info = _load(path, "ground_truth", ("image", "boxes", "labels"), ("n_images",))
        return cls(t["image"], t["boxes"], t["labels"], info["n_images"], t.get("kind"), t.get("track"), t.get("frame"))

    def subset(self, index: Any) -> "GroundTruth":
        idx = _index(index, self.n)
        pick = lambda t: None if t is None else t[idx]  # noqa: E731
        return replace(self, image=self.image[idx], boxes=self.boxes[idx], labels=self.labels[idx],
                       kind=pick(self.kind), track=pick(self.track), frame=pick(self.frame))
