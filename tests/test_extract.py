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


# -- issue 10: lists of batches, empty data, output objects, tokenised text ------------------------------------


def test_list_is_batches_and_tuple_is_inputs_labels(model):
    xs = [torch.randn(n, 1, 8, 8) for n in (3, 5, 2)]
    f, y = extract(model, xs, layers=["pool"], progress=False)
    assert y is None and f.n == 10
    g, _ = extract(model, torch.cat(xs), layers=["pool"], progress=False)
    assert torch.allclose(f["pool"], g["pool"], atol=1e-6)
    with pytest.raises(OODLensError, match="list of batches"):
        extract(model, tuple(xs), layers=["pool"], progress=False)
    with pytest.raises(OODLensError, match="use a tuple"):  # [inputs, labels] written as a list
        extract(model, [xs[0], torch.arange(3)], layers=["pool"], progress=False)


@pytest.mark.parametrize("data", [[], (), iter([]), torch.empty(0, 1, 8, 8)])
def test_empty_data_raises(model, data):
    with pytest.raises(OODLensError, match="empty"):
        extract(model, data, layers=["pool"], progress=False)


class Output:
    """A HuggingFace-style output object (attributes, not a dict)."""

    def __init__(self, logits, last_hidden_state):
        self.logits, self.last_hidden_state, self.loss = logits, last_hidden_state, None


class TokenModel(nn.Module):
    """Tokenised-text model: embeddings of input_ids; returns an output object or a dict that holds input_ids."""

    def __init__(self, as_dict: bool = False):
        super().__init__()
        self.emb = nn.Embedding(50, 6)
        self.fc = nn.Linear(6, 3)
        self.as_dict = as_dict

    def forward(self, input_ids, attention_mask):
        h = self.emb(input_ids)
        m = attention_mask.unsqueeze(-1).float()
        logits = self.fc((h * m).sum(1) / m.sum(1))
        if self.as_dict:
            return {"input_ids": input_ids, "token_embeddings": h, "logits": logits}
        return Output(logits, h)


def _token_batches(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for b, L in lengths:
        ids = torch.randint(1, 50, (b, L), generator=g)
        mask = torch.ones(b, L, dtype=torch.long)
        mask[0, L // 2:] = 0  # one padded row per batch
        ids[mask == 0] = 0
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def _masked_mean(h, mask):
    m = mask.unsqueeze(-1).float()
    return (h * m).sum(1) / m.sum(1)


@pytest.mark.parametrize("as_dict", [False, True])
def test_tokenised_batches_of_different_lengths(as_dict):
    torch.manual_seed(0)
    net = TokenModel(as_dict).eval()
    batches = _token_batches([(3, 7), (4, 12), (2, 5)])
    f, _ = extract(net, batches, layers={"emb": "emb"}, progress=False)
    assert f.n == 9 and "input_ids" not in f and "attention_mask" not in f
    with torch.no_grad():
        want = torch.cat([_masked_mean(net.emb(b["input_ids"]), b["attention_mask"]) for b in batches])
        logits = torch.cat([net(**b)["logits"] if as_dict else net(**b).logits for b in batches])
    token_name = "token_embeddings" if as_dict else "last_hidden_state"
    assert torch.allclose(f["emb"], want, atol=1e-6)  # hook output pooled over the real tokens only
    assert torch.allclose(f[token_name], want, atol=1e-6)  # model output pooled the same way
    assert torch.allclose(f["logits"], logits, atol=1e-6)
    mx, _ = extract(net, batches[:1], layers=["emb"], pool="max", progress=False)
    with torch.no_grad():
        h = net.emb(batches[0]["input_ids"]).masked_fill(batches[0]["attention_mask"].unsqueeze(-1) == 0, -1e9)
    assert torch.allclose(mx["emb"], h.amax(1), atol=1e-6)


def test_integer_outputs_only_when_named():
    net = TokenModel(as_dict=True).eval()
    batches = _token_batches([(3, 6), (2, 6)])
    f, _ = extract(net, batches, progress=False)
    assert set(f) == {"token_embeddings", "logits"}
    g, _ = extract(net, batches, outputs=["input_ids", "logits"], progress=False)
    assert g["input_ids"].dtype == torch.long and set(g) == {"input_ids", "logits"}
    with pytest.raises(OODLensError, match="no entry 'embeddings'"):
        extract(net, batches, outputs=["embeddings"], progress=False)


class DictLayer(nn.Module):
    """A sentence-transformers-style module: returns its input dict (input_ids first) plus float embeddings."""

    def forward(self, feats):
        return {**feats, "token_embeddings": feats["input_ids"].float().unsqueeze(-1).repeat(1, 1, 2)}


class DictNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = DictLayer()

    def forward(self, feats):
        return self.body(feats)["token_embeddings"].sum(1)


def test_hook_on_dict_output_takes_the_float_tensor():
    batches = _token_batches([(2, 4), (3, 8)])
    f, _ = extract(DictNet(), batches, layers={"body": "tokens"}, progress=False)
    want = torch.cat([_masked_mean(b["input_ids"].float().unsqueeze(-1).repeat(1, 1, 2), b["attention_mask"])
                      for b in batches])
    assert f["tokens"].dtype == torch.float32 and torch.allclose(f["tokens"], want)


def test_varying_unpooled_output_is_a_clear_error():
    batches = [torch.randn(2, 3, 4), torch.randn(2, 5, 4)]
    with pytest.raises(OODLensError, match="varying length"):
        extract(nn.Identity(), batches, pool="none", progress=False)
