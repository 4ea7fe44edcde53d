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
import os
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import torch
from torch import nn

from .._checks import as_float, as_tensor, check_finite, check_labels
from ..errors import NotFittedError, OODLensError
from ..features import Features
from ..safetensors_io import load_tensors, save_tensors


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

    # -- registry ------------------------------------------------------------------------------------
    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
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
        return self

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

    def fit(self, train: Features | Mapping[str, Any], labels: Any = None, head: Any = None,
            model: nn.Module | None = None) -> "Detector":
        """Learn from in-distribution data only. Returns ``self``."""
        train = self._check_features(train, "training features")
        y = None
        if labels is not None:
            y = check_labels(labels, train.n)
        if self.needs_labels:
            if y is None:
                raise OODLensError(f"{type(self).__name__} needs class labels at fit (labels=...)")
            if int(torch.unique(y).numel()) < 2:
                raise OODLensError(f"{type(self).__name__} needs at least 2 classes in the labels, got one")
        h = None
        if head is not None:
            h = Head.coerce(head)
        if self.needs_head and h is None:
            raise OODLensError(f"{type(self).__name__} needs the classifier head at fit (head=nn.Linear or (W, b))")
        if self.needs_model and model is None:
            raise OODLensError(f"{type(self).__name__} needs the model itself at fit (model=...)")
        if train.n == 0:
            raise OODLensError("training features are empty (N=0)")
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
        x = self._check_shapes(self._check_features(x, "features to score"))
        self._move_state(x[self.required_features()[0]].device)
        if x.n == 0:
            return torch.empty(0, device=x[self.required_features()[0]].device)
        if batch_size is None or batch_size >= x.n:
            s = self._score(x)
        else:
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
            t = as_float(feats[k], f"feature {k!r}")  # half precision and integers are computed on in float32
            if not self.spatial_inputs and t.ndim != 2:
                raise OODLensError(f"feature {k!r} must be 2-D (N, D) for {type(self).__name__}, got shape {tuple(t.shape)}")
            check_finite(t, f"feature {k!r}")
            out[k] = t
        return Features(out)

    def _check_shapes(self, x: Features) -> Features:
        """Raise unless every required feature has the per-row shape seen at ``fit``."""
        for k in self.required_features():
            want = self.feature_shapes_[k]
            if list(x[k].shape[1:]) != list(want):
                raise OODLensError(f"feature {k!r} has shape {tuple(x[k].shape)} but the detector was fitted on "
                                   f"(N, {', '.join(map(str, want))})")
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
        """Write hyper-parameters and fitted state to one safetensors file (no pickle)."""
        tensors, values = self.state()
        meta = {
            "oodlens_detector": self.name,
            "params": json.dumps(self.get_params()),
            "state": json.dumps(values),
        }
        save_tensors(tensors, path, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Detector":
        """Load any saved detector; called on a subclass it checks the file holds that class."""
        tensors, meta = load_tensors(path, mmap=False)
        if "oodlens_detector" not in meta:
            raise OODLensError(f"{path} is not a saved oodlens detector")
        klass = get_detector(meta["oodlens_detector"])
        if cls is not Detector and not issubclass(klass, cls):
            raise OODLensError(f"{path} holds a {klass.__name__}, not a {cls.__name__}")
        det = klass(**json.loads(meta["params"]))
        det.restore_state(tensors, json.loads(meta["state"]))
        return det

    def restore_state(self, tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> "Detector":
        """Set the fitted state that :meth:`state` returned (``tensors``, JSON ``values``) on this instance."""
        tensors = dict(tensors)
        for k, v in values.items():
            if v == "__head__":
                setattr(self, k, Head(tensors.pop(k + "weight"), tensors.pop(k + "bias")))
            else:
                setattr(self, k, v)
        for k, t in tensors.items():
            setattr(self, k, t)
        return self
