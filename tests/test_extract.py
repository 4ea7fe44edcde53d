"""extract(): hooks capture what a manual forward computes; pooling; tuple/dict outputs; hooks removed on error."""

import pytest
import torch
from torch import nn

from oodlens import Features, extract
from oodlens.errors import OODLensError
from oodlens.testing import ToyCNN


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return ToyCNN(3).eval()


def test_hook_outputs_equal_manual_forward(model):
    x = torch.randn(37, 1, 8, 8)
    y = torch.randint(0, 3, (37,))
    feats, labels = extract(model, (x, y), layers={"block2": "b2", "pool": "features"}, batch_size=10, progress=False)
    with torch.no_grad():
        b2 = model.block2(model.block1(x))
        pen = model.pool(b2)
        logits = model.fc(pen)
    assert torch.allclose(feats["b2"], b2.mean(dim=(2, 3)), atol=1e-6)
    assert torch.allclose(feats["features"], pen, atol=1e-6)
    assert torch.allclose(feats["logits"], logits, atol=1e-6)
    assert torch.equal(labels, y)
    maps, none = extract(model, x, layers=["block2"], pool="none", logits=False, progress=False)
    assert none is None and torch.allclose(maps["block2"], b2, atol=1e-6) and "logits" not in maps
    mx, _ = extract(model, x, layers=["block2"], pool="max", progress=False)
    assert torch.allclose(mx["block2"], b2.amax(dim=(2, 3)), atol=1e-6)


def test_streaming_to_disk_equals_memory(model, tmp_path):
    x = torch.randn(23, 1, 8, 8)
    mem, _ = extract(model, x, layers=["pool"], batch_size=8, progress=False)
    disk, _ = extract(model, x, layers=["pool"], batch_size=8, progress=False, out=tmp_path / "f.safetensors")
    assert all(torch.equal(mem[k], disk[k]) for k in mem)
    assert torch.equal(Features.load(tmp_path / "f.safetensors")["pool"], mem["pool"])


class DictModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(4, 3)

    def forward(self, batch):
        z = self.enc(batch["a"]) + batch["b"]
        return {"logits": z, "aux": z * 2, "meta": "ignored"}


class TupleModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.LSTM(4, 5, batch_first=True)  # returns a tuple: its output is taken
        self.fc = nn.Linear(5, 2)

    def forward(self, x):
        out, _ = self.enc(x)
        return self.fc(out[:, -1]), out


def test_dict_and_tuple_models():
    batches = [{"a": torch.randn(4, 4), "b": torch.randn(4, 3), "label": torch.arange(4)} for _ in range(3)]
    f, y = extract(DictModel(), batches, layers=["enc"], progress=False)
    assert set(f) == {"enc", "logits", "aux"} and f.n == 12 and y.tolist() == list(range(4)) * 3
    assert torch.allclose(f["aux"], 2 * f["logits"])
    seq = torch.randn(6, 7, 4)
    f, _ = extract(TupleModel(), seq, layers=["enc"], progress=False)
    assert f["enc"].shape == (6, 5) and f["logits"].shape == (6, 2)  # sequence mean-pooled


def test_unknown_layer_lists_close_matches(model):
    with pytest.raises(OODLensError, match="close matches: block2"):
        extract(model, torch.randn(2, 1, 8, 8), layers=["blok2"], progress=False)


def test_hooks_removed_and_mode_restored_on_error(model):
    model.train()

    def bad_batches():
        yield torch.randn(2, 1, 8, 8)
        raise RuntimeError("data loader broke")

    with pytest.raises(RuntimeError, match="broke"):
        extract(model, bad_batches(), layers=["block1", "pool"], progress=False)
    assert all(len(m._forward_hooks) == 0 for m in model.modules())
    assert model.training
