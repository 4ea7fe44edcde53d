"""Features: the named tensors one pass of a model produces, with a common first dimension N.

Conventional names: ``logits`` (N, C), ``features`` (N, D) (penultimate, pooled), any layer by its module name,
and for multimodal models a prefix per modality (``video/logits``). Labels travel beside, not inside.
"""

from __future__ import annotations

import difflib
import json
import os
from typing import Any, Iterable, Iterator, Mapping

import torch

from ._checks import as_tensor
from .errors import MissingFeatureError, OODLensError
from .safetensors_io import load_tensors, save_tensors


class Features(Mapping[str, torch.Tensor]):
    """An immutable mapping ``name -> tensor`` whose tensors all have the same first dimension N."""

    def __init__(self, tensors: Mapping[str, Any] | None = None, **kwargs: Any):
        data: dict[str, torch.Tensor] = {}
        for name, value in {**(dict(tensors) if tensors is not None else {}), **kwargs}.items():
            if not isinstance(name, str) or not name:
                raise OODLensError(f"feature names must be non-empty strings, got {name!r}")
            t = as_tensor(value, f"feature {name!r}")
            if t.ndim == 0:
                raise OODLensError(f"feature {name!r} is a scalar; features need a first dimension N")
            data[name] = t
        sizes = {name: t.shape[0] for name, t in data.items()}
        if len(set(sizes.values())) > 1:
            listing = ", ".join(f"{k}: {v}" for k, v in sizes.items())
            raise OODLensError(f"features disagree on N (the first dimension): {listing}")
        self._data = data

    # -- mapping -------------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self._data[name]
        except KeyError:
            raise MissingFeatureError(missing_message(name, self._data.keys())) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}: {tuple(v.shape)} {str(v.dtype).removeprefix('torch.')}" for k, v in self._data.items())
        return f"Features(n={self.n}, {inner})"

    @property
    def n(self) -> int:
        """Number of rows (0 for an empty container)."""
        return next(iter(self._data.values())).shape[0] if self._data else 0

    def require(self, *names: str) -> None:
        """Raise one clear error naming every requested feature that is missing."""
        missing = [n for n in names if n not in self._data]
        if missing:
            raise MissingFeatureError("; ".join(missing_message(m, self._data.keys()) for m in missing))

    # -- derived containers ------------------------------------------------------------------------
    def subset(self, index: Any) -> "Features":
        """Rows selected by an index (slice, boolean mask or integer indices), same names."""
        if isinstance(index, slice):
            return Features({k: v[index] for k, v in self._data.items()})
        if isinstance(index, int) and not isinstance(index, bool):
            index = [index]
        index = as_tensor(index, "index")
        if index.ndim != 1:
            raise OODLensError(f"index must be 1-D (a mask or row indices), got shape {tuple(index.shape)}")
        if index.dtype == torch.bool:
            if index.shape[0] != self.n:
                raise OODLensError(f"boolean index has {index.shape[0]} entries but N={self.n}")
        elif index.is_floating_point() or index.is_complex():
            raise OODLensError(f"index must hold integers or booleans, got dtype {index.dtype}")
        elif index.numel() and (int(index.min()) < -self.n or int(index.max()) >= self.n):
            raise OODLensError(f"row index out of range for N={self.n}: {int(index.min())}..{int(index.max())}")
        return Features({k: v[index.to(v.device)] for k, v in self._data.items()})

    def select(self, names: Iterable[str]) -> "Features":
        names = list(names)
        self.require(*names)
        return Features({k: self._data[k] for k in names})

    def with_prefix(self, prefix: str) -> "Features":
        """Names prefixed with ``prefix/`` (for multimodal containers)."""
        return Features({f"{prefix}/{k}": v for k, v in self._data.items()})

    def modality(self, prefix: str) -> "Features":
        """The tensors named ``prefix/...`` with the prefix removed."""
        p = prefix.rstrip("/") + "/"
        sub = {k[len(p):]: v for k, v in self._data.items() if k.startswith(p)}
        if not sub:
            prefixes = sorted({k.split("/", 1)[0] for k in self._data if "/" in k})
            raise MissingFeatureError(f"no features with prefix {p!r}; prefixes present: {prefixes or 'none'}")
        return Features(sub)

    def merge(self, other: Mapping[str, Any]) -> "Features":
        """A new container with ``other``'s tensors added (same N required, later names win)."""
        return Features({**self._data, **dict(other)})

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> "Features":
        out = {}
        try:
            for k, v in self._data.items():
                out[k] = v.to(device=device, dtype=dtype) if (dtype is not None and v.is_floating_point()) else v.to(device)
        except (RuntimeError, TypeError) as e:
            raise OODLensError(f"Features.to(device={device!r}, dtype={dtype!r}): {e}") from None
        return Features(out)

    @staticmethod
    def concat(parts: Iterable["Features"]) -> "Features":
        """Row-wise concatenation of containers with the same names."""
        parts = list(parts)
        if not parts:
            raise OODLensError("Features.concat needs at least one container")
        names = list(parts[0].keys())
        for i, p in enumerate(parts[1:], 1):
            if set(p.keys()) != set(names):
                raise OODLensError(f"Features.concat: part {i} has names {sorted(p.keys())}, part 0 has {sorted(names)}")
        for k in names:
            shapes = {tuple(p[k].shape[1:]) for p in parts}
            if len(shapes) > 1:
                raise OODLensError(f"Features.concat: feature {k!r} has different per-row shapes {sorted(shapes)}")
        return Features({k: torch.cat([p[k] for p in parts]) for k in names})

    # -- persistence -----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None) -> None:
        """Write to a safetensors file; ``metadata`` (JSON-serialisable) is stored in its header."""
        meta = {"oodlens": "features", "user": json.dumps(dict(metadata or {}))}
        save_tensors(self._data, path, meta)

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True) -> "Features":
        """Read a safetensors file; with ``mmap`` the tensors are memory-mapped (copy-on-write)."""
        tensors, _ = load_tensors(path, mmap=mmap)
        try:
            return cls(tensors)
        except OODLensError as e:
            raise OODLensError(f"{path}: {e}") from None

    @staticmethod
    def load_metadata(path: str | os.PathLike) -> dict:
        from .safetensors_io import read_header

        header, _ = read_header(path)
        meta = header.get("__metadata__", {}) or {}
        try:
            user = json.loads(meta.get("user", "{}"))
        except json.JSONDecodeError as e:
            raise OODLensError(f"{path}: header field 'user' (the metadata) is not valid JSON ({e})") from None
        if not isinstance(user, dict):
            raise OODLensError(f"{path}: header field 'user' must be a JSON object, got {type(user).__name__}")
        return user


def missing_message(name: str, available: Iterable[str]) -> str:
    """'no feature named X; close matches: ...; available: ...'."""
    available = list(available)
    close = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
    msg = f"no feature named {name!r}"
    if close:
        msg += f"; did you mean {', '.join(repr(c) for c in close)}?"
    shown = available[:12]
    msg += f" (available: {', '.join(shown) if shown else 'none'}{', ...' if len(available) > 12 else ''})"
    return msg
