"""safetensors files written row by row and read memory-mapped.

The format is an 8-byte little-endian header length, a JSON header naming each tensor's dtype, shape and byte
range, then the raw bytes. Writing the header first (shapes known up front) lets a model's outputs go to disk one
batch at a time, and reading through ``numpy.memmap`` gives zero-copy tensors for files larger than memory.
Files are interchangeable with the ``safetensors`` package's own (``safetensors.torch.load_file`` reads them).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from safetensors.torch import load_file as _st_load_file
from safetensors.torch import save_file as _st_save_file

from .errors import OODLensError

_DTYPES: dict[torch.dtype, tuple[str, np.dtype | None]] = {
    torch.float64: ("F64", np.dtype("<f8")),
    torch.float32: ("F32", np.dtype("<f4")),
    torch.float16: ("F16", np.dtype("<f2")),
    torch.bfloat16: ("BF16", None),
    torch.int64: ("I64", np.dtype("<i8")),
    torch.int32: ("I32", np.dtype("<i4")),
    torch.int16: ("I16", np.dtype("<i2")),
    torch.int8: ("I8", np.dtype("i1")),
    torch.uint8: ("U8", np.dtype("u1")),
    torch.bool: ("BOOL", np.dtype("?")),
}
_BY_CODE = {code: (tdt, ndt) for tdt, (code, ndt) in _DTYPES.items()}


def save_tensors(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> None:
    """Save a dict of tensors (any device) with string metadata."""
    cpu: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, v in tensors.items():
        t = v.detach().to("cpu").contiguous()
        if t.numel() and t.untyped_storage().data_ptr() in seen:
            t = t.clone()  # safetensors refuses tensors that share memory
        seen.add(t.untyped_storage().data_ptr())
        cpu[k] = t
    _st_save_file(cpu, str(path), metadata=dict(metadata or {}))


_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
             "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}


def read_header(path: str | os.PathLike) -> tuple[dict, int]:
    """Return (header dict, byte offset where the data starts), validated: the JSON header parses, names known
    dtypes with non-negative integer shapes, and every tensor's byte range lies inside the file and matches its
    shape. A bad file raises :class:`OODLensError` naming the file and the field (never an internal error)."""
    path = Path(path)
    if not path.is_file():
        raise OODLensError(f"no such file: {path}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise OODLensError(f"{path} is not a safetensors file (too short: {size} bytes)")
        (hlen,) = struct.unpack("<Q", raw)
        if hlen > min(100_000_000, size - 8):
            raise OODLensError(f"{path} is not a safetensors file or is truncated (header length {hlen}, "
                               f"file size {size})")
        try:
            header = json.loads(f.read(hlen).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise OODLensError(f"{path}: the safetensors header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise OODLensError(f"{path}: the safetensors header must be a JSON object, got {type(header).__name__}")
    meta = header.get("__metadata__")
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise OODLensError(f"{path}: header field '__metadata__' must map names to strings")
    _check_entries(path, header, size - 8 - hlen)
    return header, 8 + hlen


def _check_entries(path: Path, header: dict, data_size: int) -> None:
    """Each tensor entry: known dtype, shape of non-negative ints, offsets inside the data and of the right size."""
    for name, h in header.items():
        if name == "__metadata__":
            continue
        where = f"{path}: tensor {name!r}"
        if not isinstance(h, dict):
            raise OODLensError(f"{where}: header entry must be an object with dtype, shape and data_offsets")
        code, shape, offsets = h.get("dtype"), h.get("shape"), h.get("data_offsets")
        if not isinstance(code, str) or code not in _ITEMSIZE:
            raise OODLensError(f"{where}: unsupported dtype {code!r} (supported: {', '.join(_ITEMSIZE)})")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in shape):
            raise OODLensError(f"{where}: field 'shape' must be a list of non-negative integers, got {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(
                isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise OODLensError(f"{where}: field 'data_offsets' must be [begin, end] integers, got {offsets!r}")
        begin, end = offsets
        if not 0 <= begin <= end <= data_size:
            raise OODLensError(f"{where}: data_offsets {offsets} point outside the {data_size} data bytes "
                               "(truncated or edited file)")
        want = int(np.prod(shape, dtype=np.int64)) * _ITEMSIZE[code] if shape else _ITEMSIZE[code]
        if end - begin != want:
            raise OODLensError(f"{where}: data_offsets {offsets} hold {end - begin} bytes but dtype {code} and "
                               f"shape {shape} need {want}")


def load_tensors(path: str | os.PathLike, mmap: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load every tensor and the metadata. With ``mmap`` tensors are copy-on-write views of the file.
    The header is validated first (:func:`read_header`), so offsets are never trusted beyond the file size."""
    path = Path(path)
    header, start = read_header(path)
    meta = header.pop("__metadata__", {}) or {}
    if not mmap or any(_BY_CODE.get(h["dtype"], (None, None))[1] is None for h in header.values()):
        try:
            return _st_load_file(str(path)), meta
        except Exception as e:  # noqa: BLE001  the safetensors library's own checks (overlaps, ...)
            raise OODLensError(f"{path}: not a valid safetensors file ({e})") from None
    out: dict[str, torch.Tensor] = {}
    for name, h in header.items():
        tdt, ndt = _BY_CODE[h["dtype"]]
        shape = tuple(h["shape"])
        begin, end = h["data_offsets"]
        count = int(np.prod(shape)) if shape else 1
        if end - begin == 0 or count == 0:
            out[name] = torch.empty(shape, dtype=tdt)
            continue
        arr = np.memmap(path, dtype=ndt, mode="c", offset=start + begin, shape=shape)
        out[name] = torch.from_numpy(arr)
    return out, meta


class StreamingWriter:
    """Write tensors whose shapes are known up front into one safetensors file, rows at a time.

    >>> w = StreamingWriter(path, {"logits": ((1000, 10), torch.float32)})
    >>> w.write_rows("logits", 0, batch_logits)   # rows 0..len(batch)-1
    >>> w.close()
    """

    def __init__(self, path: str | os.PathLike, specs: Mapping[str, tuple[tuple[int, ...], torch.dtype]],
                 metadata: Mapping[str, str] | None = None):
        self.path = Path(path)
        self._layout: dict[str, tuple[int, int, tuple[int, ...], torch.dtype]] = {}
        header: dict = {}
        if metadata:
            header["__metadata__"] = dict(metadata)
        offset = 0
        for name, (shape, dtype) in specs.items():
            if dtype not in _DTYPES or _DTYPES[dtype][1] is None:
                raise OODLensError(f"cannot stream dtype {dtype} for {name!r}")
            itemsize = _DTYPES[dtype][1].itemsize
            nbytes = int(np.prod(shape)) * itemsize if shape else itemsize
            row_bytes = (int(np.prod(shape[1:])) if len(shape) > 1 else 1) * itemsize
            header[name] = {"dtype": _DTYPES[dtype][0], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            self._layout[name] = (offset, row_bytes, tuple(shape), dtype)
            offset += nbytes
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        self._data_start = 8 + len(blob)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "wb")
        self._f.write(struct.pack("<Q", len(blob)))
        self._f.write(blob)
        self._f.truncate(self._data_start + offset)

    def write_rows(self, name: str, row_start: int, rows: torch.Tensor) -> None:
        offset, row_bytes, shape, dtype = self._layout[name]
        rows = rows.detach().to("cpu", dtype).contiguous()
        if tuple(rows.shape[1:]) != shape[1:] or row_start + rows.shape[0] > shape[0]:
            raise OODLensError(f"{name}: rows of shape {tuple(rows.shape)} at {row_start} do not fit {shape}")
        self._f.seek(self._data_start + offset + row_start * row_bytes)
        self._f.write(rows.numpy().tobytes())

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> "StreamingWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
