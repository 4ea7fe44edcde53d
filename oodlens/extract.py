"""Run a torch model over data once and capture named layers' outputs with forward hooks.

>>> feats, labels = extract(model, loader, layers={"layer4": "features"}, batch_size=256)
>>> feats["logits"].shape, feats["features"].shape      # (N, C), (N, D)

Outputs with spatial dimensions are pooled to (N, D) by default (``pool="avg"``: mean over every dimension after
the channels for 4-D/5-D maps, over the sequence for 3-D token outputs); ``pool="none"`` keeps them. Hooks are
always removed, also on error. Rows are written into preallocated tensors (or straight to a safetensors file
with ``out=``), so memory holds one batch plus the stored features.
"""

from __future__ import annotations

import difflib
import os
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .errors import OODLensError
from .features import Features
from .safetensors_io import StreamingWriter

Pool = str | Callable[[torch.Tensor], torch.Tensor]


class Extraction(NamedTuple):
    features: Features
    labels: torch.Tensor | None


def pool_output(t: torch.Tensor, pool: Pool) -> torch.Tensor:
    """Reduce a layer output to (N, D): 'avg' or 'max' over spatial / sequence dims, 'flatten', 'none', or a callable."""
    if callable(pool):
        return pool(t)
    if pool == "none" or t.ndim <= 2:
        return t
    if pool == "flatten":
        return t.flatten(1)
    dims = (1,) if t.ndim == 3 else tuple(range(2, t.ndim))
    if pool == "avg":
        return t.mean(dim=dims)
    if pool == "max":
        return t.amax(dim=dims)
    raise OODLensError(f"unknown pool {pool!r}; use 'avg', 'max', 'flatten', 'none' or a callable")


def _first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if isinstance(out, Mapping):
        for v in out.values():
            if isinstance(v, torch.Tensor):
                return v
    raise OODLensError(f"cannot find a tensor in a layer output of type {type(out).__name__}")


def _model_outputs(out: Any) -> dict[str, torch.Tensor]:
    """Name the model's return value: a tensor is 'logits'; a dict keeps its tensor entries; a tuple's first is logits."""
    if isinstance(out, torch.Tensor):
        return {"logits": out}
    if isinstance(out, Mapping):
        return {str(k): v for k, v in out.items() if isinstance(v, torch.Tensor)}
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return {"logits": out[0]}
    raise OODLensError(f"model returned {type(out).__name__}; expected a tensor, a dict of tensors or a tuple")


def _batches(data: Any, batch_size: int) -> tuple[Iterable, int | None]:
    """An iterable of batches and the number of rows if known."""
    if isinstance(data, torch.Tensor):
        data = TensorDataset(data)
    elif isinstance(data, (tuple, list)) and data and all(isinstance(d, torch.Tensor) for d in data):
        data = TensorDataset(*data)
    if isinstance(data, DataLoader):
        try:
            n = len(data.dataset)  # type: ignore[arg-type]
        except TypeError:
            n = None
        return data, n
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        return DataLoader(data, batch_size=batch_size, shuffle=False), len(data)  # type: ignore[arg-type]
    return data, None


def _split_batch(batch: Any) -> tuple[Any, torch.Tensor | None]:
    if isinstance(batch, (tuple, list)):
        if len(batch) == 1:
            return batch[0], None
        y = batch[1] if isinstance(batch[1], torch.Tensor) else None
        return batch[0], y
    if isinstance(batch, Mapping):
        batch = dict(batch)
        y = batch.pop("label", batch.pop("labels", None))
        return batch, y
    return batch, None


def _to(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, Mapping):
        return {k: _to(v, device) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(_to(v, device) for v in x)
    return x


def _resolve_layers(model: nn.Module, layers: Sequence[str] | Mapping[str, str] | None) -> dict[str, str]:
    """module name -> feature name, checking every module exists."""
    if layers is None:
        return {}
    mapping = dict(layers) if isinstance(layers, Mapping) else {name: name for name in layers}
    modules = dict(model.named_modules())
    for name in mapping:
        if name not in modules:
            names = [m for m in modules if m]
            close = difflib.get_close_matches(name, names, n=5, cutoff=0.4)
            hint = f"; close matches: {', '.join(close)}" if close else f"; modules: {', '.join(names[:20])}"
            raise OODLensError(f"model has no module named {name!r}{hint}")
    return mapping


def extract(model: nn.Module, data: Any, layers: Sequence[str] | Mapping[str, str] | None = None,
            device: str | torch.device | None = None, batch_size: int = 256, pool: Pool | Mapping[str, Pool] = "avg",
            logits: bool = True, out: str | os.PathLike | None = None, dtype: torch.dtype = torch.float32,
            progress: bool = True, desc: str = "extract") -> Extraction:
    """Run ``model`` over ``data`` once; return the captured :class:`Features` and the labels (if the data has any).

    ``data``: a tensor of inputs, a tuple of tensors (inputs, labels), a Dataset, a DataLoader or any iterable of
    batches (a tensor, an ``(inputs, labels)`` pair, or a dict whose ``label`` entry is taken out).
    ``layers``: module names, or a dict ``module name -> feature name``. ``pool``: one rule or one per module.
    ``out``: also write the features to this safetensors file as they come (needs a known length).
    """
    from tqdm.auto import tqdm

    mapping = _resolve_layers(model, layers)
    if device is None:
        p = next(iter(model.parameters()), None)
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    batches, n_total = _batches(data, batch_size)
    if out is not None and n_total is None:
        raise OODLensError("out= needs data of known length (a tensor, Dataset or DataLoader over a sized dataset)")

    captured: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    handles = []

    def make_hook(feature_name: str, module_name: str):
        rule = pool.get(module_name, "avg") if isinstance(pool, Mapping) else pool

        def hook(_module: nn.Module, _inp: Any, output: Any) -> None:
            captured[feature_name] = pool_output(_first_tensor(output).detach(), rule)

        return hook

    store: dict[str, torch.Tensor] = {}
    parts: dict[str, list[torch.Tensor]] = {}
    label_parts: list[torch.Tensor] = []
    writer: StreamingWriter | None = None
    was_training = model.training
    row = 0
    try:
        for module_name, feature_name in mapping.items():
            handles.append(modules[module_name].register_forward_hook(make_hook(feature_name, module_name)))
        model.eval()
        bar = tqdm(batches, desc=desc, disable=not progress, leave=False, unit="batch")
        with torch.inference_mode():
            for batch in bar:
                x, y = _split_batch(batch)
                captured.clear()
                result = model(_to(x, device))
                outs = dict(captured)
                if logits:
                    for k, v in _model_outputs(result).items():
                        outs.setdefault(k, v)
                outs = {k: (v.to(dtype) if v.is_floating_point() else v).cpu() for k, v in outs.items()}
                b = next(iter(outs.values())).shape[0] if outs else 0
                if n_total is not None:
                    if row == 0:
                        specs = {k: ((n_total, *v.shape[1:]), v.dtype) for k, v in outs.items()}
                        if out is not None:
                            writer = StreamingWriter(out, specs, metadata={"oodlens": "features", "user": "{}"})
                        else:
                            store = {k: torch.empty(shape, dtype=dt) for k, (shape, dt) in specs.items()}
                    for k, v in outs.items():
                        if writer is not None:
                            writer.write_rows(k, row, v)
                        else:
                            store[k][row:row + b] = v
                else:
                    for k, v in outs.items():
                        parts.setdefault(k, []).append(v)
                if y is not None:
                    label_parts.append(torch.as_tensor(y).cpu())
                row += b
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
        if writer is not None:
            writer.close()
    if n_total is not None and row != n_total:
        raise OODLensError(f"data yielded {row} rows but reported length {n_total}")
    if writer is not None:
        feats = Features.load(out)  # type: ignore[arg-type]
    elif n_total is not None:
        feats = Features(store)
    else:
        feats = Features({k: torch.cat(v) for k, v in parts.items()})
    labels = torch.cat(label_parts) if label_parts else None
    if labels is not None and labels.shape[0] != feats.n:
        raise OODLensError(f"some batches had labels and some did not ({labels.shape[0]} labels for {feats.n} rows)")
    return Extraction(feats, labels)
