"""PARTICUL (the common suite runs it in test_common_suite.py): the loss and the calibrated confidence against their formulas, ROI maps and vectors."""

import numpy as np
import pytest
import torch

from oodlens.detectors import create
from oodlens.detectors.particul import Particul, logistic_fit, particul_loss
from oodlens.features import Features
from oodlens.testing import make_toy_problem


def test_loss_against_formula():
    g = torch.Generator().manual_seed(0)
    a = torch.softmax(torch.randn(3, 2, 5, 5, generator=g).flatten(2), 2).view(3, 2, 5, 5)
    # naive: 3x3 all-ones window sums with zero padding, max over positions
    loc = np.zeros((3, 2))
    pad = np.pad(a.numpy(), ((0, 0), (0, 0), (1, 1), (1, 1)))
    for n in range(3):
        for p in range(2):
            loc[n, p] = max(pad[n, p, i:i + 3, j:j + 3].sum() for i in range(5) for j in range(5))
    uni = np.maximum(a.sum(1).flatten(1).amax(1).numpy() - 1.0, 0).mean()
    want = -loc.mean(0).mean() + 0.7 * uni
    assert float(particul_loss(a, 3, 0.7)) == pytest.approx(want, rel=1e-5)


def test_score_is_minus_mean_calibrated_confidence():
    toy = make_toy_problem()
    det = Particul(maps="block2_map", steps=50).fit(toy.train, toy.train_labels)
    x = toy.test_id
    c = x["logits"].argmax(1)
    vmax = torch.einsum("ndhw,npd->nphw", x["block2_map"], det.weight_[c]).flatten(2).amax(2)
    conf = 1 / (1 + torch.exp(-(vmax - det.mu_[c]) / det.sigma_[c]))
    torch.testing.assert_close(det.score(x), -conf.mean(1))
    # the calibration is scipy's logistic MLE of the training max activations of each (class, part)
    y = toy.train_labels
    v = torch.einsum("ndhw,npd->nphw", toy.train["block2_map"], det.weight_[y]).flatten(2).amax(2)
    from scipy.stats import logistic

    mu, s = logistic.fit(v[y == 1, 2].double().numpy())
    assert float(det.mu_[1, 2]) == pytest.approx(mu, rel=1e-5) and float(det.sigma_[1, 2]) == pytest.approx(s, rel=1e-5)


def test_no_class_mode_and_vectors():
    toy = make_toy_problem()
    det = create("particul", maps="features", class_wise=False, steps=20).fit(toy.train)
    assert det.required_features() == ("features",)
    s = det.score(Features({"features": toy.test_id["features"]}))
    assert s.shape == (toy.test_id.n,) and torch.all((s >= -1) & (s <= 0))


def test_logistic_fit_constant_data():
    mu, s = logistic_fit(np.full(5, 2.0))
    assert mu == 2.0 and s > 0


def test_labels_beyond_the_logits_classes_are_refused():
    """A part detector per label is picked at scoring by the logits' argmax: labels ≥ the logits' width would
    train detectors that are never used (before: accepted silently)."""
    from oodlens.errors import OODLensError

    g = torch.Generator().manual_seed(0)
    f = Features({"roi_map": torch.randn(12, 4, 3, 3, generator=g), "logits": torch.randn(12, 3, generator=g)})
    with pytest.raises(OODLensError, match="labels go up to 6 but 'logits' has 3 classes"):
        Particul(steps=1).fit(f, torch.arange(12) % 7)
