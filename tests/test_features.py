"""Features container: validation, subsets, prefixes, safetensors round-trip (mmap and not), streaming writer."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from oodlens import Features
from oodlens.errors import MissingFeatureError, OODLensError
from oodlens.safetensors_io import StreamingWriter


def test_mismatched_n_and_bad_names():
    with pytest.raises(OODLensError, match="disagree on N"):
        Features(logits=torch.zeros(3, 2), features=torch.zeros(4, 5))
    with pytest.raises(OODLensError, match="scalar"):
        Features(x=torch.tensor(1.0))


def test_missing_name_suggests_close_match():
    f = Features(logits=torch.zeros(3, 2), features=torch.zeros(3, 5))
    with pytest.raises(MissingFeatureError, match="did you mean 'logits'"):
        f["logit"]
    with pytest.raises(MissingFeatureError, match="layer4"):
        f.require("features", "layer4")


def test_subset_prefix_modality_concat():
    f = Features(a=torch.arange(6).reshape(3, 2), b=np.ones((3, 4)))
    assert f.n == 3 and f.subset(torch.tensor([2, 0]))["a"].tolist() == [[4, 5], [0, 1]]
    assert f.subset(torch.tensor([True, False, True])).n == 2
    mm = f.with_prefix("video").merge(f.with_prefix("audio"))
    assert set(mm) == {"video/a", "video/b", "audio/a", "audio/b"}
    assert torch.equal(mm.modality("audio")["a"], f["a"])
    with pytest.raises(MissingFeatureError, match="prefixes present"):
        mm.modality("lidar")
    both = Features.concat([f, f])
    assert both.n == 6 and torch.equal(both["a"][3:], f["a"])


@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_roundtrip(tmp_path, mmap):
    f = Features(logits=torch.randn(5, 3), maps=torch.randn(5, 2, 4, 4).half(), idx=torch.arange(5))
    f.save(tmp_path / "f.safetensors", metadata={"model": "toy"})
    g = Features.load(tmp_path / "f.safetensors", mmap=mmap)
    for k in f:
        assert torch.equal(f[k], g[k]) and f[k].dtype == g[k].dtype
    assert Features.load_metadata(tmp_path / "f.safetensors") == {"model": "toy"}


def test_streaming_writer_matches_safetensors(tmp_path):
    path = tmp_path / "s.safetensors"
    full = torch.randn(10, 3)
    with StreamingWriter(path, {"x": ((10, 3), torch.float32), "y": ((10,), torch.int64)}) as w:
        for i in range(0, 10, 4):
            w.write_rows("x", i, full[i:i + 4])
            w.write_rows("y", i, torch.arange(i, min(i + 4, 10)))
    ref = load_file(str(path))  # the official reader accepts our file
    assert torch.equal(ref["x"], full) and ref["y"].tolist() == list(range(10))
    with pytest.raises(OODLensError, match="do not fit"):
        StreamingWriter(tmp_path / "t.safetensors", {"x": ((2, 3), torch.float32)}).write_rows("x", 1, torch.zeros(2, 3))


def test_load_errors(tmp_path):
    with pytest.raises(OODLensError, match="no such file"):
        Features.load(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"abc")
    with pytest.raises(OODLensError, match="not a safetensors"):
        Features.load(tmp_path / "junk.safetensors")
