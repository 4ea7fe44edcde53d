"""Pixel scores: the registered detectors applied per pixel (values against their formulas), SML against a
naive per-class computation and the common detector checks, feature maps in row blocks + upsampling, capture."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from oodlens.detectors import create
from oodlens.errors import OODLensError
from oodlens.segmentation import SML, PixelScorer, capture, logit_scores, upsample_scores
from oodlens.testing import check_detector, make_toy_problem


@pytest.fixture(scope="module")
def logits():
    g = torch.Generator().manual_seed(0)
    return 3 * torch.randn(3, 5, 7, 9, generator=g)


def test_logit_scores_match_formulas(logits):
    got = logit_scores(logits)
    p = logits.softmax(1)
    torch.testing.assert_close(got["msp"], -p.amax(1))
    torch.testing.assert_close(got["maxlogit"], -logits.amax(1))
    torch.testing.assert_close(got["energy"], -torch.logsumexp(logits, 1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["entropy"], -(p * p.log()).sum(1), rtol=1e-4, atol=1e-5)
    gen = (p ** 0.1 * (1 - p) ** 0.1).sum(1)  # GEN, γ = 0.1, M ≥ C: every class
    torch.testing.assert_close(got["gen"], gen, rtol=1e-4, atol=1e-5)
    for k in got:
        assert got[k].shape == (3, 7, 9)


def test_pixel_order_and_upsampling(logits):
    maps = PixelScorer("maxlogit").fit(logits).score(logits, size=(14, 18))
    want = F.interpolate(-logits.amax(1, keepdim=True), size=(14, 18), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(maps, want)


def test_sml_against_naive(logits):
    train = logits[:2]
    labels = torch.zeros(2, 7, 9, dtype=torch.long)
    labels[0, :2] = 255  # ignored pixels never enter the statistics
    sc = PixelScorer("sml").fit(train, labels=labels)
    rows = train.permute(0, 2, 3, 1).reshape(-1, 5)[(labels.reshape(-1) != 255)]
    mx, pred = rows.max(1)
    mean, std = torch.empty(5), torch.empty(5)
    for c in range(5):  # naive per-class statistics (population std); unseen class -> all rows
        sel = mx[pred == c] if (pred == c).any() else mx
        mean[c], std[c] = sel.double().mean(), sel.double().std(unbiased=False)
    test = logits[2:]
    tm, tp = test.max(1)
    torch.testing.assert_close(sc.score(test), -(tm - mean[tp]) / std[tp], rtol=1e-4, atol=1e-4)


def test_sml_passes_the_common_detector_checks():
    check_detector(SML(), make_toy_problem())


def test_feature_detector_per_pixel_equals_rows_then_upsample():
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(4, 6, 4, 5, generator=g)
    labels = torch.randint(0, 3, (4, 8, 10), generator=g)
    labels[:, 0] = 255
    sc = PixelScorer("mahalanobis").fit(feats, labels=labels)
    # independent path: nearest down-sampling of labels (pixel (2i, 2j)), rows, the detector, bilinear upsampling
    y = labels[:, ::2, ::2].reshape(-1)
    rows = feats.permute(0, 2, 3, 1).reshape(-1, 6)
    det = create("mahalanobis").fit({"features": rows[y != 255]}, labels=y[y != 255])
    want = det.score({"features": rows}).view(4, 4, 5)
    got = sc.score(feats)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(sc.score(feats, size=(8, 10)), upsample_scores(want, (8, 10)))


def test_blocks_and_subsampling(monkeypatch):
    import oodlens.segmentation.pixels as px

    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 4, 6, 6, generator=g)
    whole = PixelScorer("knn", k=3).fit(x).score(x)
    monkeypatch.setattr(px, "BLOCK_ROWS", 40)  # one image per block
    torch.testing.assert_close(PixelScorer("knn", k=3).fit(x).score(x), whole)
    sub = PixelScorer("knn", k=3, max_fit_pixels=50, seed=0).fit(x)
    assert sub.detector.score({"features": x[:1].permute(0, 2, 3, 1).reshape(-1, 4)}).shape == (36,)


def test_bad_inputs(logits):
    with pytest.raises(OODLensError, match="B, D, h, w"):
        PixelScorer("msp").fit(logits[0])
    with pytest.raises(OODLensError, match="labels"):
        PixelScorer("mahalanobis").fit(torch.randn(2, 3, 4, 4))
    with pytest.raises(OODLensError, match="SML needs"):
        logit_scores(logits, methods=("sml",))
    bad = logits.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(OODLensError, match="non-finite"):
        PixelScorer("msp").fit(logits).score(bad)
    with pytest.raises(OODLensError, match="ignore"):
        PixelScorer("sml").fit(logits, labels=torch.full((3, 7, 9), 255))


class _Seg(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.classifier = torch.nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return {"out": F.interpolate(self.classifier(self.backbone(x)), size=x.shape[-2:], mode="bilinear"),
                "aux": x[:, :1]}


def test_capture_logits_and_feature_map():
    torch.manual_seed(0)
    model = _Seg().eval()
    x = torch.rand(3, 3, 8, 10)
    out = capture(model, x, layer="backbone", batch_size=2)
    with torch.no_grad():
        torch.testing.assert_close(out.logits, model(x)["out"])
        torch.testing.assert_close(out.features, model.backbone(x))
    assert capture(model, x, size=(16, 20)).logits.shape == (3, 2, 16, 20)
    with pytest.raises(OODLensError, match="logits"):
        capture(model, x, output="missing")
