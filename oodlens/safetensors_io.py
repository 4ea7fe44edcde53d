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


def read_header(path: str | os.PathLike) -> tuple[dict, int]:
    """Return (header dict, byte offset where the data starts)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise OODLensError(f"{path} is not a safetensors file (too short)")
        (hlen,) = struct.unpack("<Q", raw)
        if hlen > 100_000_000:
            raise OODLensError(f"{path} is not a safetensors file (header length {hlen})")
        header = json.loads(f.read(hlen))
    return header, 8 + hlen


def load_tensors(path: str | os.PathLike, mmap: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load every tensor and the metadata. With ``mmap`` tensors are copy-on-write views of the file."""
    path = Path(path)
    if not path.is_file():
        raise OODLensError(f"no such file: {path}")
    header, start = read_header(path)
    meta = header.pop("__metadata__", {}) or {}
    if not mmap or any(_BY_CODE.get(h["dtype"], (None, None))[1] is None for h in header.values()):
        return _st_load_file(str(path)), meta
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
