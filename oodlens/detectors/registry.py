"""Registry of detector classes by name. Classes register themselves by defining ``name``."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any, Iterable

from ..errors import OODLensError

if TYPE_CHECKING:
    from .base import Detector

_REGISTRY: dict[str, type["Detector"]] = {}


def register(cls: type["Detector"]) -> type["Detector"]:
    key = cls.name
    if key in _REGISTRY and _REGISTRY[key] is not cls:
        old = _REGISTRY[key]
        if (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise OODLensError(f"detector name {key!r} is taken by {old.__module__}.{old.__qualname__}")
    _REGISTRY[key] = cls
    return cls


def get_detector(name: str) -> type["Detector"]:
    """The class registered under ``name``."""
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise OODLensError(f"unknown detector {name!r}{hint} (known: {', '.join(sorted(_REGISTRY))})") from None


def create(name: str, **params: Any) -> "Detector":
    """An instance of the detector registered under ``name``."""
    return get_detector(name)(**params)


def available_detectors() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def detectors_for(feature_names: Iterable[str], labels: bool = True, head: bool = True, model: bool = False,
                  params: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """Names of detectors whose needs are met by these features / labels / head / model, each built with
    ``params[name]`` (default hyper-parameters otherwise)."""
    _load_builtin()
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


def _load_builtin() -> None:
    from . import _discover  # noqa: F401  (imports every method module once)
