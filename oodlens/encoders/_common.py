"""Shared pieces of the encoders: lazy imports with an install hint, devices, input checks and the batched loop."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Iterable, Sequence

import torch

from ..errors import OODLensError
from ..features import Features

OFFLINE_HINT = ("offline: pass a local folder / file, and set HF_HUB_OFFLINE=1 so the hub is not retried "
                "(~40 s of retries otherwise)")


def require(module: str, pip_name: str | None = None) -> Any:
    """Import ``module`` or raise an OODLensError saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise OODLensError(f"this encoder needs the optional package {pip_name or module!r} "
                           f"(pip install {pip_name or module}); import failed: {e}") from None


def check_device(device: str | torch.device | None) -> torch.device | None:
    """``device`` as a ``torch.device`` (None stays None); an unparsable name or an accelerator this torch build or
    machine does not have raises an OODLensError naming it (torch would raise a bare RuntimeError/AssertionError)."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise OODLensError(f"device {device!r} is not a torch device name (e.g. 'cpu', 'cuda', 'cuda:1'): {e}") from None
    available = {"cuda": torch.cuda.is_available,
                 "mps": lambda: getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
    if dev.type in available and not available[dev.type]():
        raise OODLensError(f"device {device!r}: no {dev.type.upper()} device is available to this torch build "
                           f"({torch.__version__}); use device='cpu'")
    return dev


def device_of(device: str | torch.device | None, model: torch.nn.Module | None = None) -> torch.device:
    """The device to run on: the given one, else the model's, else CPU."""
    if device is not None:
        return check_device(device)
    p = next(iter(model.parameters()), None) if model is not None else None
    return p.device if p is not None else torch.device("cpu")


def check_texts(texts: Any) -> list[str]:
    """A non-empty list of strings (a single string is refused: it would be read as characters)."""
    if isinstance(texts, str):
        raise OODLensError("texts must be a list of strings, got one string (wrap it in a list)")
    try:
        texts = list(texts)
    except TypeError:
        raise OODLensError(f"texts must be a list of strings, got {type(texts).__name__}") from None
    if not texts:
        raise OODLensError("texts are empty: nothing to encode")
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise OODLensError(f"texts[{bad}] is {type(texts[bad]).__name__}, not a string")
    return texts


def check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise OODLensError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def run_batches(items: Sequence[Any], fn: Callable[[Sequence[Any]], dict[str, torch.Tensor]], batch_size: int,
                progress: bool, desc: str) -> Features:
    """``fn`` on consecutive slices of ``items`` (under inference mode, with a progress bar); rows gathered on CPU
    in float32 into one :class:`Features`."""
    from tqdm.auto import tqdm

    batch_size = check_batch_size(batch_size)
    parts: dict[str, list[torch.Tensor]] = {}
    starts: Iterable[int] = range(0, len(items), batch_size)
    with torch.inference_mode():
        for i in tqdm(starts, desc=desc, disable=not progress, leave=False, unit="batch",
                      total=-(-len(items) // batch_size)):
            for k, v in fn(items[i:i + batch_size]).items():
                v = v.detach().float().cpu()
                if not bool(torch.isfinite(v).all()):
                    raise OODLensError(f"{desc}: output {k!r} has NaN or inf in the batch of rows {i}.."
                                       f"{i + len(v) - 1} (NaN/inf in those inputs, or an overflow in the model)")
                parts.setdefault(k, []).append(v)
    return Features({k: torch.cat(v) for k, v in parts.items()})
