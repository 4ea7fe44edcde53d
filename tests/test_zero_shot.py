"""Zero-shot detectors (MCM, GL-MCM, NegLabel) against naive float64 implementations of their formulas, the
prompt-embedding fit input, the shipped WordNet vocabulary, and Energy / MaxLogit on similarity logits."""

import math

import numpy as np
import pytest
import torch

from oodlens import Features
from oodlens.data import wordnet_nouns
from oodlens.detectors import Detector, create
from oodlens.detectors.neglabel import vocabulary_words
from oodlens.encoders import similarity_logits
from oodlens.errors import OODLensError


def _cos(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _softmax(v):
    e = np.exp(np.asarray(v) - max(v))
    return e / e.sum()


@pytest.fixture()
def emb():
    g = torch.Generator().manual_seed(0)
    prompts = torch.randn(5, 8, generator=g)
    x = torch.randn(12, 8, generator=g) + 2 * prompts[torch.arange(12) % 5]
    local = torch.randn(12, 6, 8, generator=g)
    return prompts, x, local


@pytest.mark.parametrize("tau", [1.0, 0.05])
def test_mcm_matches_formula(emb, tau):
    prompts, x, _ = emb
    det = create("mcm", temperature=tau).fit(None, prompts=prompts)
    s = det.score(Features(features=x))
    xs, ps = x.double().numpy(), prompts.double().numpy()
    want = [-max(_softmax([_cos(r, p) / tau for p in ps])) for r in xs]
    assert np.allclose(s.numpy(), want, atol=1e-6)


def test_gl_mcm_matches_formula(emb):
    prompts, x, local = emb
    det = create("gl_mcm", temperature=1.0, local_temperature=0.1, lambda_local=0.5).fit(None, prompts=prompts)
    s = det.score(Features(features=x, local_features=local))
    ps = prompts.double().numpy()
    want = []
    for r, patches in zip(x.double().numpy(), local.double().numpy()):
        g = max(_softmax([_cos(r, p) for p in ps]))
        loc = max(max(_softmax([_cos(q, p) / 0.1 for p in ps])) for q in patches)
        want.append(-(g + 0.5 * loc))
    assert np.allclose(s.numpy(), want, atol=1e-6)
    # channel-first maps (N, D, H, W) are read as H·W patches
    maps = local.transpose(1, 2).reshape(12, 8, 2, 3)
    assert torch.allclose(det.score(Features(features=x, local_features=maps)), s, atol=1e-6)


def _naive_neglabel(x, prompts, cands, n, eta, groups, tau, seed):
    ps, cs = prompts.double().numpy(), cands.double().numpy()
    q = [np.quantile([_cos(c, p) for p in ps], eta) for c in cs]
    chosen = sorted(range(len(cs)), key=lambda i: (q[i], i))[:n]
    neg = cs[chosen]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()  # the documented shuffle
    per = n // groups
    neg = neg[order][:per * groups]
    out = []
    for r in x.double().numpy():
        pos = sum(math.exp(_cos(r, p) / tau) for p in ps)
        s = [pos / (pos + sum(math.exp(_cos(r, m) / tau) for m in neg[g * per:(g + 1) * per])) for g in range(groups)]
        out.append(-float(np.mean(s)))
    return np.array(out), chosen


@pytest.mark.parametrize("groups,tau", [(1, 0.01), (4, 0.01), (3, 0.2)])
def test_neglabel_matches_formula(emb, groups, tau):
    prompts, x, _ = emb
    cands = torch.randn(40, 8, generator=torch.Generator().manual_seed(3))
    det = create("neglabel", n_negatives=13, percentile=0.95, groups=groups, temperature=tau)
    det.fit(None, prompts=prompts, candidates=cands)
    want, chosen = _naive_neglabel(x, prompts, cands, 13, 0.95, groups, tau, 0)
    assert torch.allclose(det.negatives_, cands[chosen] / cands[chosen].norm(dim=1, keepdim=True), atol=1e-6)
    assert np.allclose(det.score(Features(features=x)).numpy(), want, atol=1e-6)


def test_neglabel_mines_far_words_from_a_text_function(emb, tmp_path):
    prompts, x, _ = emb
    words = [f"w{i}" for i in range(30)]
    table = {f"a photo of a {w}.": torch.randn(8, generator=torch.Generator().manual_seed(i)) for i, w in enumerate(words)}
    table["a photo of a w7."] = -prompts.mean(0)  # the farthest candidate from every ID prompt
    det = create("neglabel", n_negatives=5, groups=1, vocabulary=words).fit(
        None, prompts=prompts, candidates=lambda texts: torch.stack([table[t] for t in texts]))
    assert len(det.negative_words_) == 5 and "w7" in det.negative_words_
    det.save(tmp_path / "n.safetensors")
    back = Detector.load(tmp_path / "n.safetensors")
    assert back.negative_words_ == det.negative_words_
    assert torch.equal(back.score(Features(features=x)), det.score(Features(features=x)))


def test_wordnet_vocabulary_ships():
    nouns = wordnet_nouns()
    assert len(nouns) == 117798 and {"dog", "coffee", "computer", "hot dog"} <= set(nouns)
    sub = vocabulary_words("wordnet", 500, seed=1)
    assert len(sub) == 500 and sub == vocabulary_words("wordnet", 500, seed=1) and set(sub) <= set(nouns)
    from importlib import resources

    assert "WordNet 3.0 Copyright 2006" in resources.files("oodlens.data").joinpath("WORDNET-LICENSE").read_text()


def test_prompt_fit_input_errors(emb):
    prompts, x, _ = emb
    with pytest.raises(OODLensError, match="prompts must be"):
        create("mcm").fit(None, prompts=prompts[0])
    with pytest.raises(OODLensError, match="non-finite|NaN"):
        create("mcm").fit(None, prompts=prompts.clone().fill_(float("nan")))
    with pytest.raises(OODLensError, match="width"):
        create("mcm").fit(Features(features=x[:, :4]), prompts=prompts)
    with pytest.raises(OODLensError, match="train=None"):
        create("energy").fit(None, prompts=prompts)
    with pytest.raises(OODLensError, match="prompts"):
        create("mcm").fit(Features(features=x))  # no prompts, head or labels
    with pytest.raises(OODLensError, match="candidate labels"):
        create("neglabel", n_negatives=50, groups=5).fit(None, prompts=prompts, candidates=torch.randn(20, 8))
    with pytest.raises(OODLensError, match="temperature"):
        create("mcm", temperature=0.0).fit(None, prompts=prompts)
    # a later fit without prompts does not reuse the earlier ones
    det = create("mcm").fit(None, prompts=prompts)
    det.fit(Features(features=x), labels=torch.arange(12) % 3)
    assert det.concepts_.shape == (3, 8)


def test_energy_and_maxlogit_on_similarity_logits(emb):
    prompts, x, _ = emb
    f = similarity_logits(Features(features=x), prompts, temperature=0.5)
    cos = np.array([[_cos(r, p) for p in prompts.double().numpy()] for r in x.double().numpy()]) / 0.5
    energy = create("energy").fit(f).score(f).numpy()
    assert np.allclose(energy, [-math.log(np.exp(r).sum()) for r in cos], atol=1e-5)
    assert np.allclose(create("maxlogit").fit(f).score(f).numpy(), -cos.max(1), atol=1e-6)


def test_neglabel_template_without_placeholder_is_refused(emb):
    prompts, _, _ = emb
    words = [f"w{i}" for i in range(30)]
    det = create("neglabel", n_negatives=5, groups=1, vocabulary=words, template="a photo")
    with pytest.raises(OODLensError, match="template"):  # was: every word embedded as the same text "a photo"
        det.fit(None, prompts=prompts, candidates=lambda texts: torch.randn(len(texts), prompts.shape[1]))
