"""Run a torch model over data once and capture named layers' outputs with forward hooks.

>>> feats, labels = extract(model, loader, layers={"layer4": "features"}, batch_size=256)
>>> feats["logits"].shape, feats["features"].shape      # (N, C), (N, D)

Outputs with spatial dimensions are pooled to (N, D) by default (``pool="avg"``: mean over every dimension after
the channels for 4-D/5-D maps, over the sequence for 3-D token outputs — over the real tokens only when the batch
is a dict with an ``attention_mask``); ``pool="none"`` keeps them. Hooks are always removed, also on error. Rows
are written into preallocated tensors (or straight to a safetensors file with ``out=``), so memory holds one batch
plus the stored features.

What the model returns is named: a tensor is ``logits``; a dict, or a HuggingFace-style output object
(``ModelOutput``, or any object with ``logits`` / ``last_hidden_state`` / ``pooler_output`` / ``embeddings``
attributes) keeps its floating-point tensor entries under their own names (token-level entries ``(B, L, D)`` of
tokenised text are pooled over the attention mask, so batches of different lengths work). Integer or boolean
tensors (``input_ids``, ``attention_mask``) are never stored unless named in ``outputs=``.

Data: a tensor, a **tuple** of tensors ``(inputs, labels)``, a Dataset, a DataLoader, or any iterable of batches
(a **list** is a list of batches, never read as ``(inputs, labels)``). Empty data raises.
"""

from __future__ import annotations

import difflib
import inspect
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


_POOLS = ("avg", "max", "flatten", "none")
#: attribute names read from output objects that are not dicts (HuggingFace-style dataclasses)
_OUTPUT_ATTRS = ("logits", "embeddings", "sentence_embedding", "pooler_output", "last_hidden_state",
                 "image_embeds", "text_embeds")


def pool_output(t: torch.Tensor, pool: Pool, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Reduce a layer output to (N, D): 'avg' or 'max' over spatial / sequence dims, 'flatten', 'none', or a callable.

    ``mask`` (N, L), for 3-D token outputs (N, L, D): 'avg' and 'max' use only the tokens where it is non-zero."""
    if callable(pool):
        return pool(t)
    if pool not in _POOLS:
        raise OODLensError(f"unknown pool {pool!r}; use 'avg', 'max', 'flatten', 'none' or a callable")
    if pool == "none" or t.ndim <= 2:
        return t
    if pool == "flatten":
        return t.flatten(1)
    if t.ndim == 3 and mask is not None and mask.shape == t.shape[:2]:
        m = mask.to(device=t.device, dtype=torch.bool).unsqueeze(-1)
        if pool == "avg":
            return (t * m).sum(1) / m.sum(1).clamp_min(1)
        return t.masked_fill(~m, float("-inf")).amax(1).nan_to_num(neginf=0.0)
    dims = (1,) if t.ndim == 3 else tuple(range(2, t.ndim))
    return t.mean(dim=dims) if pool == "avg" else t.amax(dim=dims)


def _first_tensor(out: Any) -> torch.Tensor:
    """The tensor a hook stores: the output itself, a tuple's first, or a dict's / output object's first
    floating-point entry (never ``input_ids`` when a float tensor is there)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    named = _named_tensors(out)
    floats = [v for v in named.values() if v.is_floating_point()]
    if floats or named:
        return (floats or list(named.values()))[0]
    raise OODLensError(f"cannot find a tensor in a layer output of type {type(out).__name__}")


def _named_tensors(out: Any) -> dict[str, torch.Tensor]:
    """Tensor entries of a dict / ModelOutput, or the known attributes of an output object."""
    if isinstance(out, Mapping):
        return {str(k): v for k, v in out.items() if isinstance(v, torch.Tensor)}
    return {k: v for k in _OUTPUT_ATTRS if isinstance(v := getattr(out, k, None), torch.Tensor)}


def _model_outputs(out: Any, names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Name the model's return value: a tensor is 'logits'; a dict / output object keeps its floating-point tensor
    entries (integer ones such as input_ids only when listed in ``names``); a tuple's first is logits."""
    if isinstance(out, torch.Tensor):
        found = {"logits": out}
    elif isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        found = {"logits": out[0]}
    else:
        found = _named_tensors(out)
        if not found:
            raise OODLensError(f"model returned {type(out).__name__}; expected a tensor, a dict of tensors, a tuple "
                               "or an output object with logits / last_hidden_state / embeddings")
    if names is not None:
        missing = [n for n in names if n not in found]
        if missing:
            raise OODLensError(f"model output has no entry {missing[0]!r} (it has: {', '.join(found)})")
        return {n: found[n] for n in names}
    return {k: v for k, v in found.items() if v.is_floating_point()}


def _batches(data: Any, batch_size: int) -> tuple[Iterable, int | None]:
    """An iterable of batches and the number of rows if known. A tuple of tensors is (inputs, labels, ...); a list
    is a list of batches."""
    if isinstance(data, torch.Tensor):
        data = TensorDataset(data)
    elif isinstance(data, tuple) and data and all(isinstance(d, torch.Tensor) for d in data):
        if len({d.shape[0] for d in data}) > 1:
            raise OODLensError("a tuple of tensors is read as (inputs, labels, ...) and needs one first dimension, got "
                               f"{[tuple(d.shape) for d in data]}; pass a list to mean a list of batches")
        data = TensorDataset(*data)
    elif isinstance(data, (list, tuple)) and not data:
        raise OODLensError("data is empty: no batches to extract from")
    elif isinstance(data, list) and all(isinstance(d, torch.Tensor) for d in data):
        if len({d.ndim for d in data}) > 1:  # batches may differ in length, not in rank
            raise OODLensError(f"a list is read as a list of batches, but these batches differ in rank "
                               f"{[tuple(d.shape) for d in data]}; to pass (inputs, labels), use a tuple")
    if isinstance(data, DataLoader):
        try:
            n = len(data.dataset)  # type: ignore[arg-type]
        except TypeError:
            n = None
        return data, n
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        return DataLoader(data, batch_size=batch_size, shuffle=False), len(data)  # type: ignore[arg-type]
    return data, None


def _attention_mask(x: Any) -> torch.Tensor | None:
    m = x.get("attention_mask") if isinstance(x, Mapping) else None
    return m if isinstance(m, torch.Tensor) and m.ndim == 2 else None


def _call(model: nn.Module, x: Any) -> Any:
    """``model(**x)`` when ``x`` is a dict whose keys are ``forward``'s parameters (HuggingFace models), else ``model(x)``."""
    if isinstance(x, Mapping) and x:
        try:
            params = inspect.signature(model.forward).parameters
        except (TypeError, ValueError):
            params = {}
        if all(k in params for k in x):
            return model(**x)
    return model(x)


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


def _to(x: Any, device: torch.device, float_dtype: torch.dtype | None = None) -> Any:
    """Move a batch to ``device``; floating tensors take the model's floating dtype (a float64 or float16 batch
    meets a float32 model), integer tensors (token ids, masks) keep theirs."""
    if isinstance(x, torch.Tensor):
        if float_dtype is not None and x.is_floating_point():
            return x.to(device, float_dtype)
        return x.to(device)
    if isinstance(x, Mapping):
        return {k: _to(v, device, float_dtype) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(_to(v, device, float_dtype) for v in x)
    return x


def _model_float_dtype(model: nn.Module) -> torch.dtype | None:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


def _run_model(model: nn.Module, x: Any, device: torch.device, float_dtype: torch.dtype | None, row: int) -> Any:
    """The model on one batch; its own failure (a wrong input dtype or shape) becomes one clear error."""
    try:
        return _call(model, _to(x, device, float_dtype))
    except (RuntimeError, TypeError, ValueError) as e:
        kinds = {str(t.dtype): tuple(t.shape) for t in ([x] if isinstance(x, torch.Tensor) else
                 (x.values() if isinstance(x, Mapping) else x if isinstance(x, (list, tuple)) else []))
                 if isinstance(t, torch.Tensor)}
        raise OODLensError(f"the model failed on the batch starting at row {row} (inputs: {kinds or type(x).__name__}): "
                           f"{type(e).__name__}: {e}") from e


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


def _check_rows(name: str, v: torch.Tensor, want: tuple, b: int) -> None:
    """Every batch must give ``name`` the same per-row shape and ``b`` rows."""
    if tuple(v.shape[1:]) != tuple(want) or v.shape[0] != b:
        raise OODLensError(f"output {name!r} has shape {tuple(v.shape)} in this batch but (B, {', '.join(map(str, want))}) "
                           f"before: outputs of varying length must be pooled (pool='avg'), or padded to one length")


def extract(model: nn.Module, data: Any, layers: Sequence[str] | Mapping[str, str] | None = None,
            device: str | torch.device | None = None, batch_size: int = 256, pool: Pool | Mapping[str, Pool] = "avg",
            logits: bool = True, out: str | os.PathLike | None = None, dtype: torch.dtype = torch.float32,
            progress: bool = True, desc: str = "extract", outputs: Sequence[str] | None = None) -> Extraction:
    """Run ``model`` over ``data`` once; return the captured :class:`Features` and the labels (if the data has any).

    ``data``: a tensor of inputs, a tuple of tensors (inputs, labels), a Dataset, a DataLoader or any iterable of
    batches — a list is a list of batches (each a tensor, an ``(inputs, labels)`` pair, or a dict whose ``label``
    entry is taken out; a dict whose keys are ``forward``'s parameters, like a tokenizer's, is passed as keywords).
    ``layers``: module names, or a dict ``module name -> feature name``. ``pool``: one rule or one per module.
    ``logits``: also store what the model returns; ``outputs``: which of its named entries (default: every
    floating-point one). ``out``: also write the features to this safetensors file as they come (needs a known
    length).
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

    mask: list[torch.Tensor | None] = [None]

    def make_hook(feature_name: str, module_name: str):
        rule = pool.get(module_name, "avg") if isinstance(pool, Mapping) else pool

        def hook(_module: nn.Module, _inp: Any, output: Any) -> None:
            captured[feature_name] = pool_output(_first_tensor(output).detach(), rule, mask[0])

        return hook

    out_rule = "avg" if isinstance(pool, Mapping) else pool

    store: dict[str, torch.Tensor] = {}
    parts: dict[str, list[torch.Tensor]] = {}
    label_parts: list[torch.Tensor] = []
    writer: StreamingWriter | None = None
    was_training = model.training
    float_dtype = _model_float_dtype(model)
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
                mask[0] = _attention_mask(x)
                result = _run_model(model, x, device, float_dtype, row)
                outs = dict(captured)
                if logits or outputs is not None:
                    for k, v in _model_outputs(result, outputs).items():
                        if mask[0] is not None and v.ndim == 3 and v.shape[:2] == mask[0].shape:
                            v = pool_output(v, out_rule, mask[0])  # token-level output of tokenised text
                        outs.setdefault(k, v)
                outs = {k: (v.to(dtype) if v.is_floating_point() else v).cpu() for k, v in outs.items()}
                if not outs:
                    raise OODLensError("nothing to store: the model returned no floating-point tensor and no layer "
                                       "was captured; name layers=... or outputs=...")
                b = next(iter(outs.values())).shape[0]
                if n_total is not None:
                    if row == 0:
                        specs = {k: ((n_total, *v.shape[1:]), v.dtype) for k, v in outs.items()}
                        if out is not None:
                            writer = StreamingWriter(out, specs, metadata={"oodlens": "features", "user": "{}"})
                        else:
                            store = {k: torch.empty(shape, dtype=dt) for k, (shape, dt) in specs.items()}
                    for k, v in outs.items():
                        if k not in specs:
                            raise OODLensError(f"output {k!r} appears in a later batch but not in the first")
                        _check_rows(k, v, specs[k][0][1:], b)
                        if writer is not None:
                            writer.write_rows(k, row, v)
                        else:
                            store[k][row:row + b] = v
                else:
                    for k, v in outs.items():
                        first = parts.setdefault(k, [v])[0]
                        if v is not first:
                            _check_rows(k, v, tuple(first.shape[1:]), b)
                            parts[k].append(v)
                if y is not None:
                    label_parts.append(torch.as_tensor(y).cpu())
                row += b
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
        if writer is not None:
            writer.close()
    if row == 0:
        raise OODLensError("data is empty: it yielded no rows")
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
