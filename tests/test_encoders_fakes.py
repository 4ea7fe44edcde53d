"""Encoder code paths whose packages are optional, on small stand-ins built here: a timm-style model (forward_features
/ forward_head / pretrained_cfg), an open_clip-style model (global + local patch tokens, text tower) feeding GL-MCM,
and a tiny randomly initialised transformers sequence classifier saved to a local folder (logits + pooling)."""

import pytest
import torch
from torch import nn

from oodlens import Features
from oodlens.detectors import create
from oodlens.encoders import clip_images, clip_texts, hf_text, prompt_texts, timm_model


class TimmLike(nn.Module):
    pretrained_cfg = {"input_size": (3, 32, 32), "crop_pct": 1.0, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3)
        self.fc = nn.Linear(6, 4)

    def forward_features(self, x):
        return self.conv(x)

    def forward_head(self, x, pre_logits=False):
        x = x.mean((2, 3))
        return x if pre_logits else self.fc(x)


def test_timm_style_model():
    net = TimmLike().eval()
    imgs = [torch.randint(0, 256, (40, 48, 3), dtype=torch.uint8).numpy() for _ in range(3)]
    f = timm_model(net, imgs, batch_size=2, progress=False)
    assert f["features"].shape == (3, 6) and torch.allclose(net.fc(f["features"]), f["logits"], atol=1e-5)
    # the model's own transform: short side to 32 (crop_pct 1), centre crop 32, its mean / std
    a = torch.tensor(imgs[0]).permute(2, 0, 1).float()[None] / 255
    a = nn.functional.interpolate(a, size=(32, 38), mode="bilinear", antialias=True, align_corners=False)[..., 3:35]
    with torch.no_grad():
        want = net.forward_head(net.forward_features((a - 0.5) / 0.25), pre_logits=True)
    assert torch.allclose(f["features"][:1], want, atol=1e-4)


class Visual(nn.Module):
    """open_clip VisionTransformer-like: returns (pooled @ proj, tokens) when output_tokens."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 5, 8, stride=8)
        self.proj = nn.Parameter(torch.randn(5, 4))
        self.output_tokens = False

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)  # (N, P, 5)
        pooled = tokens.mean(1) @ self.proj
        return (pooled, tokens) if self.output_tokens else pooled


class ClipLike(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.visual = Visual()
        self.text = nn.EmbeddingBag(100, 4)

    def encode_image(self, x):
        return self.visual(x)

    def encode_text(self, ids):
        return self.text(ids)


def tokenizer(texts):
    return torch.tensor([[sum(map(ord, w)) % 100 for w in (t.split() + ["pad"] * 6)[:6]] for t in texts])


def test_open_clip_style_global_local_and_gl_mcm():
    model = ClipLike().eval()
    x = torch.rand(3, 3, 32, 32)
    f = clip_images(model, x, local=True, progress=False)
    assert f["features"].shape == (3, 4) and f["local_features"].shape == (3, 16, 4)
    with torch.no_grad():
        tokens = model.visual.patch(x).flatten(2).transpose(1, 2)
    assert torch.allclose(f["local_features"], tokens @ model.visual.proj, atol=1e-5)  # projected patch tokens
    assert torch.allclose(clip_images(model, x, progress=False)["features"], f["features"], atol=1e-6)
    assert model.visual.output_tokens is False  # restored
    prompts = clip_texts(model, tokenizer, prompt_texts(["cat", "dog"]))
    assert prompts.shape == (2, 4)
    s = create("gl_mcm").fit(None, prompts=prompts).score(f)
    assert s.shape == (3,) and torch.isfinite(s).all()


def test_transformers_sequence_classifier_from_a_local_folder(tmp_path):
    tf = pytest.importorskip("transformers", reason="transformers is not installed")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "good", "bad", "day"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab))
    tok = tf.BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    cfg = tf.BertConfig(vocab_size=len(vocab), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, num_labels=3, architectures=["BertForSequenceClassification"])
    torch.manual_seed(0)
    tf.BertForSequenceClassification(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    texts = ["hello world", "good day", "bad bad bad day hello world good"]
    f = hf_text(str(tmp_path), texts, pooling="mean", batch_size=2, progress=False)
    assert f["features"].shape == (3, 8) and f["logits"].shape == (3, 3)
    net = tf.BertForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        one = tok(texts[:1], return_tensors="pt")
        out = net(**one, output_hidden_states=True)
    assert torch.allclose(f["features"][0], out.hidden_states[-1][0].mean(0), atol=1e-5)  # no padding in a batch of 1
    assert torch.allclose(f["logits"][0], out.logits[0], atol=1e-5)
    cls = hf_text(str(tmp_path), texts[:1], pooling="cls", progress=False)["features"]
    assert torch.allclose(cls[0], out.hidden_states[-1][0, 0], atol=1e-5)
