"""Bad inputs to the encoders give one OODLensError naming the problem (a review found bare torch errors and
silently wrong results): device names, NaN outputs, non-module models, failing forwards, prompt templates without a
placeholder, and similarity_logits' arguments."""

import pytest
import torch
from torch import nn

from oodlens import Features
from oodlens.encoders import classifier_features, prompt_texts, similarity_logits
from oodlens.encoders._common import check_device, run_batches
from oodlens.errors import OODLensError


def test_device_names_are_checked():
    assert check_device(None) is None and check_device("cpu") == torch.device("cpu")
    with pytest.raises(OODLensError, match="not a torch device name"):
        check_device("gpu0")  # was: RuntimeError from torch
    if not torch.cuda.is_available():
        with pytest.raises(OODLensError, match="no CUDA device"):
            check_device("cuda:0")  # was: AssertionError 'Torch not compiled with CUDA enabled'


def test_nan_outputs_are_named_with_their_rows():
    def fn(chunk):
        return {"features": torch.tensor([[float("nan") if v == 3 else float(v)] for v in chunk])}

    assert run_batches(list(range(3)), fn, 2, False, "enc")["features"].shape == (3, 1)
    with pytest.raises(OODLensError, match=r"rows 2\.\.3"):
        run_batches(list(range(5)), fn, 2, False, "enc")


def test_classifier_features_model_errors():
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    with pytest.raises(OODLensError, match="nn.Module"):
        classifier_features("resnet", torch.rand(2, 3, 2, 2), progress=False)
    with pytest.raises(OODLensError, match=r"failed on images of shape \(2, 3, 3, 3\)"):
        classifier_features(net, torch.rand(2, 3, 3, 3), progress=False)
    with pytest.raises(OODLensError, match="NaN or inf"):
        classifier_features(net, torch.full((2, 3, 2, 2), float("nan")), progress=False)


def test_prompt_template_needs_one_placeholder():
    assert prompt_texts(["cat", "dog"], "a {} photo") == ["a cat photo", "a dog photo"]
    for bad in ("no placeholder", "{} and {}", "{name}", "{1}"):
        with pytest.raises(OODLensError, match="template"):
            prompt_texts(["cat"], bad)


def test_similarity_logits_arguments():
    f, p = Features(features=torch.randn(3, 4)), torch.randn(2, 4)
    out = similarity_logits(f, p, temperature=0.5)["logits"]
    ref = torch.nn.functional.normalize(f["features"], dim=1) @ torch.nn.functional.normalize(p, dim=1).T / 0.5
    assert torch.allclose(out, ref, atol=1e-6)
    with pytest.raises(OODLensError, match="Features"):
        similarity_logits(torch.randn(3, 4), p)  # was: AttributeError 'merge'
    for tau in (float("inf"), float("nan"), "1", 0.0):
        with pytest.raises(OODLensError, match="temperature"):  # inf gave all-zero logits silently
            similarity_logits(f, p, temperature=tau)
    with pytest.raises(OODLensError, match="prompts"):
        similarity_logits(f, torch.full((2, 4), float("nan")))  # was: NaN logits
