"""Looking up detector classes by name. Classes register themselves (``base.register``) by defining ``name``;
this module adds the built-in methods' discovery and the queries over the table."""

from __future__ import annotations

from typing import Any, Iterable

from . import _discover  # noqa: F401  (imports every built-in method module once, which registers it)
from ..errors import OODLensError
from .base import _REGISTRY, Detector, get_detector, register

__all__ = ["available_detectors", "create", "detectors_for", "get_detector", "register"]


def create(name: str, **params: Any) -> Detector:
    """An instance of the detector registered under ``name``; an unknown hyper-parameter raises, naming the valid
    ones."""
    cls = get_detector(name)
    valid = cls._param_names()
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise OODLensError(f"detector {name!r} has no hyper-parameter(s) {unknown}; it has {valid}")
    return cls(**params)


def available_detectors() -> list[str]:
    return sorted(_REGISTRY)


def detectors_for(feature_names: Iterable[str], labels: bool = True, head: bool = True, model: bool = False,
                  params: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """Names of detectors whose needs are met by these features / labels / head / model, each built with
    ``params[name]`` (default hyper-parameters otherwise)."""
    names = set(feature_names)
    params = params or {}
    out = []
    for key, cls in sorted(_REGISTRY.items()):
        if (cls.needs_labels and not labels) or (cls.needs_head and not head) or (cls.needs_model and not model):
            continue
        try:
            req = cls(**params.get(key, {})).required_features()
        except Exception:
            continue
        if set(req) <= names:
            out.append(key)
    return out
