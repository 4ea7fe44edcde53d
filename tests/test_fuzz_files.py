"""Property-based fuzzing of every file oodlens reads (issue 10, items 2 and 5): saved detectors, Features files
(memory-mapped and copied) and Monitor manifests, truncated, byte-flipped or with edited JSON values. Each gives
one OODLensError naming the file, or — where the change is immaterial (JSON whitespace) — the same result."""

from __future__ import annotations

import functools
import json
import struct
import tempfile
from pathlib import Path

import pytest
import torch
from fuzz_strategies import FUZZ, outcome, scaled, toy
from hypothesis import given
from hypothesis import strategies as st

from oodlens import Features
from oodlens.detectors import Detector, create
from oodlens.monitor import Monitor
from oodlens.testing import toy_detector

_TMP = Path(tempfile.mkdtemp(prefix="oodlens-fuzz-files-"))
DETECTORS = ["mahalanobis", "knn", "vim", "fused", "ash_b", "gram"]


@functools.lru_cache(maxsize=None)
def saved_detector(name: str) -> tuple[bytes, torch.Tensor]:
    t = toy()
    det = toy_detector(create(name))
    det.fit(t.train, t.train_labels, head=t.head, model=t.model)
    if det.validation_needs:
        det.fit_validation(t.test_id.subset(slice(0, 30)), t.test_id_labels[:30],
                           t.test_ood.subset(slice(0, 30)) if det.validation_needs == "id+ood" else None)
    path = _TMP / f"{name}.safetensors"
    det.save(path)
    return path.read_bytes(), det.score(t.test_id)


def _write(blob: bytes, name: str = "case.safetensors") -> Path:
    p = _TMP / name
    p.write_bytes(blob)
    return p


def _load_and_score(path: Path) -> torch.Tensor:
    det = Detector.load(path)
    if det.needs_model:
        det.attach_model(toy().model)
    return det.score(toy().test_id)


@pytest.mark.parametrize("name", DETECTORS)
@scaled(ci=6, long=150)
@given(data=st.data())
def test_corrupted_detector_file(name, data):
    raw, ref = saved_detector(name)
    how = data.draw(st.sampled_from(["truncate", "flip", "append"]))
    if how == "truncate":
        blob = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif how == "flip":
        i = data.draw(st.integers(0, len(raw) - 1))
        blob = raw[:i] + bytes([raw[i] ^ data.draw(st.integers(1, 255))]) + raw[i + 1:]
    else:
        blob = raw + data.draw(st.binary(min_size=1, max_size=64))
    path = _write(blob)
    status, s = outcome(lambda: _load_and_score(path))
    if status == "error":
        assert str(path) in s, s
    else:  # an immaterial change (JSON whitespace in the header padding, bytes after the data)
        assert torch.equal(s, ref)


json_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True, allow_infinity=True),
                        st.text(max_size=5), st.lists(st.integers(0, 3), max_size=3), st.just({"a": 1}))


@pytest.mark.parametrize("name", DETECTORS)
@scaled(ci=6, long=150)
@given(data=st.data())
def test_edited_detector_header(name, data):
    raw, ref = saved_detector(name)
    n = struct.unpack("<Q", raw[:8])[0]
    header, body = json.loads(raw[8:8 + n]), raw[8 + n:]
    meta = header["__metadata__"]
    field = data.draw(st.sampled_from(["oodlens_detector", "params", "state", "digests", "tensor"]))
    if field == "tensor":
        key = data.draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
        attr = data.draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        header[key][attr] = data.draw(json_values)
    elif field in ("params", "state"):
        value = json.loads(meta[field])
        if isinstance(value, dict) and value and data.draw(st.booleans()):
            value[data.draw(st.sampled_from(sorted(value)))] = data.draw(json_values)
        else:
            value = data.draw(json_values)
        meta[field] = json.dumps(value)
    else:
        meta[field] = data.draw(st.sampled_from(["msp", "", "{}", "not json", "energy"]))
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path = _write(struct.pack("<Q", len(blob)) + blob + body)
    status, s = outcome(lambda: _load_and_score(path))
    if status == "error":
        assert str(path) in s, s
    else:
        assert torch.equal(s, ref)  # the edit wrote back an equal value


@functools.lru_cache(maxsize=1)
def features_file() -> bytes:
    path = _TMP / "feats.safetensors"
    Features({"features": torch.randn(12, 5), "logits": torch.randn(12, 3), "labels": torch.arange(12)}).save(path)
    return path.read_bytes()


@scaled(ci=15, long=300)
@given(data=st.data(), mmap=st.booleans())
def test_corrupted_features_header(data, mmap):
    raw = features_file()
    n = struct.unpack("<Q", raw[:8])[0]
    how = data.draw(st.sampled_from(["truncate", "flip_header", "edit"]))
    if how == "truncate":
        blob = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif how == "flip_header":  # the data bytes of a Features file carry no checksum (files from other tools)
        i = data.draw(st.integers(0, 8 + n - 1))
        blob = raw[:i] + bytes([raw[i] ^ data.draw(st.integers(1, 255))]) + raw[i + 1:]
    else:
        header = json.loads(raw[8:8 + n])
        key = data.draw(st.sampled_from(["features", "logits", "labels"]))
        header[key][data.draw(st.sampled_from(["dtype", "shape", "data_offsets"]))] = data.draw(json_values)
        h = json.dumps(header).encode()
        h += b" " * (-len(h) % 8)
        blob = struct.pack("<Q", len(h)) + h + raw[8 + n:]
    path = _write(blob, "feats-case.safetensors")
    status, f = outcome(lambda: Features.load(path, mmap=mmap))
    if status == "error":
        assert str(path) in f, f
    else:
        assert isinstance(f, Features)
        for v in f.values():  # whatever loaded is readable in full (no offset beyond the file)
            v.float().sum()


@functools.lru_cache(maxsize=1)
def monitor_manifest() -> dict:
    t = toy()
    folder = _TMP / "monitor"
    Monitor(None, [create("msp").fit(t.train), create("energy").fit(t.train)], t.test_id.subset(slice(0, 40))).save(folder)
    return json.loads((folder / "manifest.json").read_text())


@FUZZ
@given(data=st.data())
def test_edited_monitor_manifest(data):
    manifest = json.loads(json.dumps(monitor_manifest()))
    field = data.draw(st.sampled_from(sorted(manifest)))
    manifest[field] = data.draw(json_values)
    folder = _TMP / "monitor"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    status, mon = outcome(lambda: Monitor.load(folder))
    if status == "ok":
        assert len(mon.assess(toy().test_id)) == toy().test_id.n
