"""The Detector contract: hyper-parameters in the constructor, ``fit`` on in-distribution data, ``score`` where
**higher means more OOD**, ``get_params``/``set_params``, declared needs, a tuning grid, and ``save``/``load``
through safetensors + JSON (never pickle).

Writing a method is one file::

    class MyScore(Detector):
        name = "my_score"                       # registry key
        param_grid = {"k": [1, 5, 10]}          # validation-tuning grid
        def __init__(self, k: int = 5, features: str = "features"):
            self.k, self.features = k, features
        def required_features(self): return (self.features,)
        def _fit(self, train, labels, head, model): self.bank_ = train[self.features]
        def _score(self, x): return ...         # (N,), higher = more OOD

Fitted state lives in attributes ending in ``_``; tensors are saved as safetensors, everything else as JSON.
"""

from __future__ import annotations

import difflib
import inspect
import json
import numbers
import os
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import torch
from torch import nn

from .._checks import as_float, check_finite, check_labels
from ..errors import NotFittedError, OODLensError
from ..features import Features
from ._params import checked_init, param_problem
from ._saved_file import read_detector_file, write_detector_file


@dataclass(frozen=True)
class Head:
    """The classifier's last linear layer: ``logits = features @ weight.T + bias``."""

    weight: torch.Tensor  # (C, D)
    bias: torch.Tensor  # (C,)

    @classmethod
    def coerce(cls, head: Any) -> "Head":
        """Accept a Head, an ``nn.Linear``, a ``(weight, bias)`` pair or a dict with those keys."""
        if isinstance(head, Head):
            w, b = head.weight, head.bias
        elif isinstance(head, nn.Linear):
            w = head.weight.detach()
            b = head.bias.detach() if head.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
        elif isinstance(head, Mapping):
            w, b = head["weight"], head.get("bias")
        elif isinstance(head, (tuple, list)) and len(head) == 2:
            w, b = head
        else:
            raise OODLensError(f"head must be a Head, nn.Linear or (weight, bias), got {type(head).__name__}")
        w = as_float(w, "head weight").detach()
        if w.ndim != 2:
            raise OODLensError(f"head weight must be (C, D), got shape {tuple(w.shape)}")
        b = torch.zeros(w.shape[0], dtype=w.dtype, device=w.device) if b is None else as_float(b, "head bias").detach()
        if b.shape != (w.shape[0],):
            raise OODLensError(f"head bias must be ({w.shape[0]},), got shape {tuple(b.shape)}")
        check_finite(w, "head weight")
        check_finite(b, "head bias")
        return cls(w, b.to(w.dtype))

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(features.device, features.dtype)
        return torch.addmm(self.bias.to(features.device, features.dtype), features, w.T)



#: every detector class by its ``name``; filled by ``Detector.__init_subclass__`` (``registry.py`` reads it)
_REGISTRY: dict[str, type["Detector"]] = {}


def check_prompts(prompts: Any) -> torch.Tensor:
    """(K, D) finite float prompt embeddings, K ≥ 1 (for zero-shot detectors)."""
    t = as_float(prompts, "prompts").detach()
    if t.ndim != 2 or t.shape[0] < 1 or t.shape[1] < 1:
        raise OODLensError(f"prompts must be (K, D) embeddings with K ≥ 1, got shape {tuple(t.shape)}")
    check_finite(t, "prompts")
    return t


def register(cls: type["Detector"]) -> type["Detector"]:
    """Add ``cls`` under ``cls.name``; a second class under a taken name is an error."""
    key = cls.name
    old = _REGISTRY.get(key)
    if old is not None and old is not cls and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise OODLensError(f"detector name {key!r} is taken by {old.__module__}.{old.__qualname__}")
    _REGISTRY[key] = cls
    return cls


def get_detector(name: str) -> type["Detector"]:
    """The class registered under ``name`` (built-in methods register when ``oodlens.detectors`` is imported)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise OODLensError(f"unknown detector {name!r}{hint} (known: {', '.join(sorted(_REGISTRY))})") from None


class Detector:
    """Base class of every OOD detector. Subclasses set ``name`` and implement ``_fit`` and ``_score``."""

    name: ClassVar[str] = ""
    needs_labels: ClassVar[bool] = False
    needs_head: ClassVar[bool] = False
    needs_model: ClassVar[bool] = False
    #: zero-shot detectors: ``fit(prompts=...)`` takes (K, D) text embeddings of the class-name prompts (kept as
    #: ``prompts_``), and the training features may then be left out (None)
    needs_prompts: ClassVar[bool] = False
    #: values tried for each hyper-parameter when tuning on validation data
    param_grid: ClassVar[dict[str, list]] = {}
    #: hyper-parameters that only change scoring, so tuning can refit less often
    score_only_params: ClassVar[frozenset[str]] = frozenset()
    #: feature names that may have ndim > 2 (e.g. spatial maps); others must be (N, D)
    spatial_inputs: ClassVar[bool] = False
    #: validation data the detector learns from after ``fit`` (see :meth:`fit_validation`):
    #: None, "id" (ID validation features + labels) or "id+ood" (also validation OOD, falling back when absent)
    validation_needs: ClassVar[str | None] = None
    #: hyper-parameters the common test suite uses on ``oodlens.testing``'s toy problem (e.g. its layer names)
    test_params: ClassVar[dict[str, Any]] = {}

    #: float hyper-parameters for which +inf is a meaningful value (NaN never is)
    infinite_params: ClassVar[frozenset[str]] = frozenset()

    # -- registry ------------------------------------------------------------------------------------
    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_checks_params", False):
            cls.__init__ = checked_init(init)  # type: ignore[method-assign]
        if cls.__dict__.get("name"):
            register(cls)

    # -- to implement ----------------------------------------------------------------------------------
    def required_features(self) -> tuple[str, ...]:
        """Names this detector reads from a :class:`Features`."""
        raise NotImplementedError

    def _fit(self, train: Features, labels: torch.Tensor | None, head: Head | None, model: nn.Module | None) -> None:
        raise NotImplementedError

    def _score(self, x: Features) -> torch.Tensor:
        raise NotImplementedError

    # -- parameters ------------------------------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params: Any) -> "Detector":
        valid = set(self._param_names())
        for k, v in params.items():
            if k not in valid:
                raise OODLensError(f"{type(self).__name__} has no hyper-parameter {k!r}; it has {sorted(valid)}")
            setattr(self, k, v)
        self.check_params()
        return self

    def check_params(self) -> None:
        """Raise :class:`OODLensError` naming the first hyper-parameter whose value does not fit its annotated type
        (``int``, ``float``, ``str``, ``bool``, ``None``) or that is NaN (or ±inf, unless in ``infinite_params``).
        Run when a detector is built, by ``set_params`` and at ``fit``; range checks stay with each method."""
        sig = inspect.signature(type(self).__init__)
        for p in sig.parameters.values():
            if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or not hasattr(self, p.name):
                continue
            problem = param_problem(getattr(self, p.name), p.annotation, p.name in self.infinite_params)
            if problem:
                raise OODLensError(f"{type(self).__name__}: hyper-parameter {p.name}={getattr(self, p.name)!r} "
                                   f"{problem}")

    def clone(self, **overrides: Any) -> "Detector":
        """A new, unfitted detector with the same hyper-parameters (and ``overrides``)."""
        return type(self)(**{**self.get_params(), **overrides})

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- fit / score -----------------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return getattr(self, "fitted_", False)

    def fit(self, train: Features | Mapping[str, Any] | None, labels: Any = None, head: Any = None,
            model: nn.Module | None = None, prompts: Any = None) -> "Detector":
        """Learn from in-distribution data only. Returns ``self``. ``prompts``: (K, D) embeddings of the ID class
        prompts, for zero-shot detectors (``needs_prompts``), which may be fitted with ``train=None``."""
        self.check_params()
        vars(self).pop("prompts_", None)
        if prompts is not None:
            self.prompts_ = check_prompts(prompts)
        if train is None:
            if not (self.needs_prompts and prompts is not None):
                raise OODLensError(f"{type(self).__name__} needs training features (train=None is only for zero-shot "
                                   "detectors given prompts=...)")
            train = self._features_from_prompts()
        train = self._check_features(train, "training features")
        if train.n == 0:
            raise OODLensError("training features are empty (N=0)")
        y = None
        if labels is not None:
            y = check_labels(labels, train.n)
        if self.needs_labels:
            if y is None:
                raise OODLensError(f"{type(self).__name__} needs class labels at fit (labels=...)")
            if int(torch.unique(y).numel()) < 2:
                raise OODLensError(f"{type(self).__name__} needs at least 2 classes in the labels, got one")
            top = int(y.max())
            if top >= train.n:  # every class needs a sample, so C ≤ N: a larger index cannot be a class 0..C-1
                raise OODLensError(f"{type(self).__name__}: labels must be class indices 0..C-1, but the largest is "
                                   f"{top} with only N={train.n} training rows; remap them, e.g. "
                                   "torch.unique(labels, return_inverse=True)[1]")
        h = None
        if head is not None:
            h = Head.coerce(head)
        if self.needs_head and h is None:
            raise OODLensError(f"{type(self).__name__} needs the classifier head at fit (head=nn.Linear or (W, b))")
        if self.needs_model and model is None:
            raise OODLensError(f"{type(self).__name__} needs the model itself at fit (model=...)")
        self.feature_shapes_ = {k: list(train[k].shape[1:]) for k in self.required_features()}
        if self.needs_model:
            self.attach_model(model)  # type: ignore[arg-type]
        self._fit(train, y, h, model)
        self.fitted_ = True
        return self

    def fit_validation(self, id_val: Features | Mapping[str, Any], id_labels: Any = None,
                       ood_val: Features | Mapping[str, Any] | None = None) -> "Detector":
        """Second fitting stage on held-out validation data (never test data), for detectors whose
        ``validation_needs`` is set: e.g. a temperature fitted on ID-validation NLL, or layer weights learned
        from ID vs OOD validation. The benchmark runner calls it after ``fit``. Returns ``self``."""
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(...) before fit_validation(...)")
        id_val = self._check_shapes(self._check_features(id_val, "ID validation features"))
        y = check_labels(id_labels, id_val.n, "ID validation labels") if id_labels is not None else None
        ood = self._check_shapes(self._check_features(ood_val, "OOD validation features")) if ood_val is not None else None
        self._fit_validation(id_val, y, ood)
        return self

    def _features_from_prompts(self) -> Features:
        """Stand-in training features for a zero-shot fit without ID rows: the prompts (fixes the width D)."""
        return Features({k: self.prompts_ for k in self.required_features()})

    def _fit_validation(self, id_val: Features, id_labels: torch.Tensor | None, ood_val: Features | None) -> None:
        """Override in detectors with ``validation_needs``; the default learns nothing."""

    def attach_model(self, model: nn.Module) -> "Detector":
        """Give a model-based detector its model (done by ``fit``; needed again after ``load``, as models are
        never saved with the detector). Available as ``self.model``."""
        if not isinstance(model, nn.Module):
            raise OODLensError(f"model must be an nn.Module, got {type(model).__name__}")
        self._model = model
        return self

    @property
    def model(self) -> nn.Module:
        m = getattr(self, "_model", None)
        if m is None:
            raise OODLensError(f"{type(self).__name__} needs its model: call attach_model(model) after load")
        return m

    def score(self, x: Features | Mapping[str, Any], batch_size: int | None = None) -> torch.Tensor:
        """OOD score per row, shape (N,): higher means more OOD. ``batch_size`` scores in chunks."""
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(...) first")
        if self.needs_model:
            _ = self.model  # clear error when a loaded detector has no model attached
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral)
                                       or batch_size < 1):
            raise OODLensError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        x = self._check_shapes(self._check_features(x, "features to score"))
        self._move_state(x[self.required_features()[0]].device)
        if x.n == 0:
            return torch.empty(0, device=x[self.required_features()[0]].device)
        if batch_size is None or batch_size >= x.n:
            s = self._score(x)
        else:
            batch_size = int(batch_size)
            s = torch.cat([self._score(x.subset(slice(i, i + batch_size))) for i in range(0, x.n, batch_size)])
        if s.shape != (x.n,):
            raise RuntimeError(f"{type(self).__name__}._score returned shape {tuple(s.shape)}, expected ({x.n},)")
        if not bool(torch.isfinite(s).all()):
            bad = int((~torch.isfinite(s)).sum())
            raise OODLensError(f"{type(self).__name__} produced {bad} non-finite score(s); check the inputs' scale")
        return s

    def _check_features(self, feats: Features | Mapping[str, Any], what: str) -> Features:
        if not isinstance(feats, Features):
            if isinstance(feats, Mapping):
                feats = Features(feats)
            else:
                raise OODLensError(f"{what} must be a Features (or a dict of tensors), got {type(feats).__name__}")
        names = self.required_features()
        feats.require(*names)
        out = {}
        for k in names:
            t = as_float(feats[k], f"feature {k!r}").detach()  # half precision and integers are computed on in float32
            if (t.ndim != 2) if not self.spatial_inputs else (t.ndim < 2):
                want = "2-D (N, D)" if not self.spatial_inputs else "at least 2-D (N, ...)"
                raise OODLensError(f"feature {k!r} must be {want} for {type(self).__name__}, got shape {tuple(t.shape)}")
            check_finite(t, f"feature {k!r}")
            out[k] = t
        return Features(out)

    def _check_shapes(self, x: Features) -> Features:
        """Raise unless every required feature has the per-row shape seen at ``fit``."""
        for k in self.required_features():
            want = self.feature_shapes_[k]
            if list(x[k].shape[1:]) != list(want):
                raise OODLensError(f"feature {k!r} has shape {tuple(x[k].shape)} but the detector expects "
                                   f"(N, {', '.join(map(str, want))}) (the width of what it was fitted on: "
                                   f"training features, or the prompts of a zero-shot detector)")
        return x

    def _move_state(self, device: torch.device) -> None:
        for k, v in list(vars(self).items()):
            if k.endswith("_") and isinstance(v, torch.Tensor) and v.device != device:
                setattr(self, k, v.to(device))

    # -- persistence -----------------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Fitted state split into tensors and JSON-serialisable values."""
        tensors, values = {}, {}
        for k, v in vars(self).items():
            if not k.endswith("_") or k.startswith("_"):
                continue
            if isinstance(v, torch.Tensor):
                tensors[k] = v
            elif isinstance(v, Head):
                tensors[k + "weight"], tensors[k + "bias"] = v.weight, v.bias
                values[k] = "__head__"
            elif isinstance(v, nn.Module):
                continue  # models are attached, never saved
            else:
                try:
                    json.dumps(v)
                except TypeError as e:
                    raise OODLensError(f"{type(self).__name__}.{k} cannot be saved as JSON or a tensor: {e}") from e
                values[k] = v
        return tensors, values

    def save(self, path: str | os.PathLike) -> None:
        """Write hyper-parameters and fitted state to one safetensors file (no pickle), with a SHA-256 digest of
        every header field and state tensor so that ``load`` refuses an edited or corrupted file."""
        tensors, values = self.state()
        write_detector_file(path, self.name, self.get_params(), values, tensors)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Detector":
        """Load any saved detector; called on a subclass it checks the file holds that class.

        Validated before use: the safetensors layout (offsets within the file), every header field and state
        tensor against the digests written by :meth:`save`, the hyper-parameters (names and types), the state's
        structure and the finiteness of every state tensor. Any problem raises one :class:`OODLensError` naming
        the file and the field."""
        name, params, values, tensors = read_detector_file(path)
        klass = get_detector(name)
        if cls is not Detector and not issubclass(klass, cls):
            raise OODLensError(f"{path} holds a {klass.__name__}, not a {cls.__name__}")
        names = set(klass._param_names())
        unknown, missing = sorted(set(params) - names), sorted(names - set(params))
        if unknown or missing:
            raise OODLensError(f"{path}: field 'params' does not match {klass.__name__}'s hyper-parameters "
                               f"(unknown: {unknown or 'none'}, missing: {missing or 'none'})")
        try:
            det = klass(**params)
        except (OODLensError, TypeError) as e:
            raise OODLensError(f"{path}: field 'params': {e}") from None
        det.restore_state(tensors, values, where=str(path))
        return det

    def restore_state(self, tensors: dict[str, torch.Tensor], values: dict[str, Any],
                      where: str = "saved state") -> "Detector":
        """Set the fitted state that :meth:`state` returned (``tensors``, JSON ``values``) on this instance, after
        checking its structure: fitted attribute names, complete heads, finite tensors, ``fitted_`` and
        ``feature_shapes_`` for the required features. ``where`` names the source in errors (the file)."""
        tensors = dict(tensors)
        if not isinstance(values, Mapping):
            raise OODLensError(f"{where}: field 'state' must be a mapping, got {type(values).__name__}")
        for k, v in values.items():
            if not isinstance(k, str) or not k.endswith("_") or k.startswith("_"):
                raise OODLensError(f"{where}: field 'state' has {k!r}, not a fitted attribute (name_)")
            if v == "__head__":
                if k + "weight" not in tensors or k + "bias" not in tensors:
                    raise OODLensError(f"{where}: state {k!r} is a head but tensors {k}weight / {k}bias are missing")
                try:
                    setattr(self, k, Head.coerce((tensors.pop(k + "weight"), tensors.pop(k + "bias"))))
                except OODLensError as e:
                    raise OODLensError(f"{where}: state {k!r}: {e}") from None
            else:
                setattr(self, k, v)
        for k, t in tensors.items():
            if not isinstance(t, torch.Tensor):
                raise OODLensError(f"{where}: state {k!r} is not a tensor")
            check_finite(t, f"{where}: state tensor {k!r}")
            setattr(self, k, t)
        if getattr(self, "fitted_", None) is not True:
            raise OODLensError(f"{where}: field 'state' does not mark the detector as fitted (fitted_)")
        shapes = getattr(self, "feature_shapes_", None)
        if not isinstance(shapes, dict) or not set(self.required_features()) <= set(shapes) or not all(
                isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v)
                for v in shapes.values()):
            raise OODLensError(f"{where}: field 'state' has no valid feature_shapes_ for the features "
                               f"{list(self.required_features())}")
        return self
