"""Every file oodlens reads is validated before use: a truncated or edited file gives one OODLensError naming the
file and the field (saved detectors, Features, Monitor folders, bench configs)."""

import json
import struct

import pytest
import torch

from oodlens import Features, OODLensError
from oodlens.detectors import Detector, create
from oodlens.monitor import Monitor
from oodlens.safetensors_io import load_tensors, save_tensors
from oodlens.testing import make_toy_problem, write_toy_benchmark


@pytest.fixture(scope="module")
def toy():
    return make_toy_problem()


def _split(raw: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _join(header: dict, body: bytes) -> bytes:
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    return struct.pack("<Q", len(blob)) + blob + body


@pytest.fixture(scope="module")
def saved(toy, tmp_path_factory):
    path = tmp_path_factory.mktemp("det") / "maha.safetensors"
    create("mahalanobis").fit(toy.train, toy.train_labels).save(path)
    return path


def _edit(saved, tmp_path, fn) -> str:
    header, body = _split(saved.read_bytes())
    fn(header)
    out = tmp_path / "edited.safetensors"
    out.write_bytes(_join(header, body))
    return out


def _params(h, **change):
    h["__metadata__"]["params"] = json.dumps({**json.loads(h["__metadata__"]["params"]), **change})


@pytest.mark.parametrize("label,edit,fragment", [
    ("other detector", lambda h: h["__metadata__"].update(oodlens_detector="rmds"), "'oodlens_detector'"),
    ("unknown parameter", lambda h: _params(h, bogus=1), "'params'"),
    ("wrong type", lambda h: _params(h, features=3), "'params'"),
    ("params not JSON", lambda h: h["__metadata__"].update(params="{oops"), "'params'"),
    ("state edited", lambda h: h["__metadata__"].update(state="{}"), "'state'"),
    ("digests removed", lambda h: h["__metadata__"].pop("digests"), "'digests'"),
    ("shape edited", lambda h: h["whiten_"].update(shape=[h["whiten_"]["shape"][0] * h["whiten_"]["shape"][1]]),
     "'whiten_'"),
    ("dtype edited", lambda h: h["center_"].update(dtype="I64"), "'center_'"),
    ("offsets past the end", lambda h: h["center_"].update(data_offsets=[0, 10 ** 6]), "data_offsets"),
    ("tensor removed", lambda h: h.pop("center_"), "safetensors"),
])
def test_edited_detector_file(saved, tmp_path, label, edit, fragment):
    path = _edit(saved, tmp_path, edit)
    with pytest.raises(OODLensError) as e:
        Detector.load(path)
    assert str(path) in str(e.value) and fragment in str(e.value), (label, str(e.value))


def test_truncated_and_non_finite_detector_files(saved, tmp_path, toy):
    raw = saved.read_bytes()
    for cut in (0, 5, 8, 40, len(raw) - 1):
        p = tmp_path / f"cut{cut}.safetensors"
        p.write_bytes(raw[:cut])
        with pytest.raises(OODLensError, match="cut"):
            Detector.load(p)
    tensors, meta = load_tensors(saved, mmap=False)
    tensors["center_"] = tensors["center_"].clone().fill_(float("nan"))
    p = tmp_path / "nan.safetensors"
    save_tensors(tensors, p, meta)
    with pytest.raises(OODLensError, match="'center_'"):  # the digest catches it first; finiteness is checked too
        Detector.load(p)
    assert torch.equal(Detector.load(saved).score(toy.test_id),
                       create("mahalanobis").fit(toy.train, toy.train_labels).score(toy.test_id))


@pytest.mark.parametrize("mmap", [True, False])
def test_features_file_validation(tmp_path, mmap):
    path = tmp_path / "f.safetensors"
    Features({"features": torch.randn(10, 3), "logits": torch.randn(10, 2)}).save(path)
    header, body = _split(path.read_bytes())
    bad = tmp_path / "bad.safetensors"
    cases = {
        "offsets past the end": lambda h: h["features"].update(data_offsets=[0, 10 ** 6]),
        "negative offsets": lambda h: h["features"].update(data_offsets=[-8, 112]),
        "shape and offsets disagree": lambda h: h["features"].update(shape=[20, 3]),
        "unknown dtype": lambda h: h["features"].update(dtype="Q9"),
        "shape not a list": lambda h: h["features"].update(shape="ten"),
        "entry not an object": lambda h: h.update(features=5),
    }
    for label, fn in cases.items():
        h = json.loads(json.dumps(header))
        fn(h)
        bad.write_bytes(_join(h, body))
        with pytest.raises(OODLensError, match="bad.safetensors: tensor 'features'"):
            Features.load(bad, mmap=mmap)
    for blob in (b"", b"1234", path.read_bytes()[:-7], struct.pack("<Q", 8) + b"[1,2,3] " + body,
                 path.read_bytes()[:8] + b"x" * (len(path.read_bytes()) - 8)):
        bad.write_bytes(blob)
        with pytest.raises(OODLensError, match="bad.safetensors"):
            Features.load(bad, mmap=mmap)


@pytest.fixture
def monitor_folder(toy, tmp_path):
    dets = [create("msp").fit(toy.train), create("energy").fit(toy.train)]
    Monitor(None, dets, toy.test_id.subset(slice(0, 100))).save(tmp_path / "mon")
    return tmp_path / "mon"


@pytest.mark.parametrize("field,value,fragment", [
    ("detectors", 5, "'detectors'"),
    ("layers", 3, "'layers'"),
    ("acceptance", "high", "'acceptance'"),
    ("delta", float("nan"), "'delta'"),
    ("batch_size", -1, "'batch_size'"),
    ("pvalues", "bogus", "'pvalues'"),
    ("version", 99, "'version'"),
    ("n_calibration", 7, "cal/0"),
])
def test_edited_monitor_manifest(monitor_folder, toy, field, value, fragment):
    m = json.loads((monitor_folder / "manifest.json").read_text())
    m[field] = value
    (monitor_folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(OODLensError, match=fragment):
        Monitor.load(monitor_folder)


def test_monitor_files_outside_or_broken(monitor_folder, toy):
    ok = Monitor.load(monitor_folder).assess(toy.test_id)
    assert len(ok) == toy.test_id.n
    m = json.loads((monitor_folder / "manifest.json").read_text())
    m["detectors"][0]["file"] = "../../outside.safetensors"
    (monitor_folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(OODLensError, match="outside"):
        Monitor.load(monitor_folder)
    (monitor_folder / "manifest.json").write_text("{oops")
    with pytest.raises(OODLensError, match="not valid JSON"):
        Monitor.load(monitor_folder)


def _bench_files(toy, root):
    return write_toy_benchmark(toy, root)


@pytest.mark.parametrize("label,change,code,fragment", [
    ("unknown hyper-parameter", {"detectors": ["msp", "knn"], "detector_params": {"knn": {"kk": 3}}}, 2, "kk"),
    ("wrong feature name", {"detectors": ["msp", "knn"], "detector_params": {"knn": {"features": "feats"}}}, 1,
     "'knn' could not run"),
    ("test_sets not a list", {"test_sets": 5}, 2, "'test_sets'"),
    ("detectors not a list", {"detectors": 5}, 2, "'detectors'"),
    ("detector_params not a table", {"detector_params": [1]}, 2, "'detector_params'"),
])
def test_bench_config_errors(toy, tmp_path, capsys, label, change, code, fragment):
    from oodlens.cli import main

    cfg = {**_bench_files(toy, tmp_path), **change}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    rc = main(["bench", str(tmp_path / "cfg.json"), "--no-progress"])  # the CLI in-process (no interpreter start-up)
    err = capsys.readouterr().err
    assert rc == code, (label, err[-500:])
    assert fragment in err and "Traceback" not in err, (label, err[-500:])


def test_multimodal_checkpoint_validation(tmp_path):
    from oodlens.multimodal.model import MultimodalClassifier

    model = MultimodalClassifier({"a": None, "b": None}, {"a": 6, "b": 4}, 3)
    path = tmp_path / "mm.safetensors"
    model.save(path)
    MultimodalClassifier({"a": None, "b": None}, {"a": 6, "b": 4}, 3).load_weights(path)
    tensors = load_tensors(path, mmap=False)
    header, body = _split(path.read_bytes())
    for label, fn, fragment in [
        ("config not JSON", lambda h: h["__metadata__"].update(config="{oops"), "'config'"),
        ("config a list", lambda h: h["__metadata__"].update(config="[1]"), "'config'"),
        ("other model", lambda h: h["__metadata__"].update(config=json.dumps({"modalities": ["a"]})), "holds a model"),
    ]:
        h = json.loads(json.dumps(header))
        fn(h)
        bad = tmp_path / "bad.safetensors"
        bad.write_bytes(_join(h, body))
        with pytest.raises(OODLensError, match=fragment):
            MultimodalClassifier({"a": None, "b": None}, {"a": 6, "b": 4}, 3).load_weights(bad)
    ts, meta = tensors
    name = next(k for k, v in ts.items() if v.is_floating_point() and v.ndim == 2)
    for bad_t, fragment in ((ts[name].T.contiguous(), "needs"), (ts[name].clone().fill_(float("nan")), "non-finite")):
        save_tensors({**ts, name: bad_t}, tmp_path / "bad2.safetensors", meta)
        with pytest.raises(OODLensError, match=fragment):
            MultimodalClassifier({"a": None, "b": None}, {"a": 6, "b": 4}, 3).load_weights(tmp_path / "bad2.safetensors")
