"""Component metrics (SegmentMeIfYouCan): a hand-made frame with answers worked out by hand, and a naive
per-instance implementation of the reference's definitions on random frames."""

import numpy as np
import pytest

from oodlens.errors import OODLensError
from oodlens.segmentation import TAUS, component_metrics, frame_components


def hand_frame():
    lab = np.zeros((10, 12), np.uint8)
    lab[1:3, 1:4] = 1            # ground-truth instance A: 6 px
    lab[6:9, 8:11] = 1           # B: 9 px
    lab[9, 1] = 1                # C: 1 px, below min_instance = 2 -> ignored
    lab[4, 0:4] = 255            # an ignore strip
    s = np.zeros((10, 12), np.float32)
    s[1, 2:6] = 1; s[2, 2:5] = 1  # P1: 7 px, 4 on A
    s[6:8, 7:10] = 1             # P2: 6 px, 4 on B
    s[4, 10] = 1                 # P3: 1 px, below min_segment = 2 -> removed
    s[9, 0:3] = 1                # P4: 3 px, its middle pixel is C (ignored) -> 2 normal px in the ROI
    s[4, 0:4] = 1                # high scores on ignore pixels never form a component
    return s, lab


def test_hand_made_frame():
    s, lab = hand_frame()
    f = frame_components(s, lab, 0.5, min_segment=2, min_instance=2)
    # sIoU(A) = |A∩P1| / (|A| + |P1 ∩ normal|) = 4 / (6 + 3); sIoU(B) = 4 / (9 + 2)
    np.testing.assert_allclose(sorted(f.siou_gt), sorted([4 / 9, 4 / 11]))
    # PPV(P1) = 4/7, PPV(P2) = 4/6, PPV(P4) = 0/2; sIoU(P1) = 4 / (7 + 2), sIoU(P2) = 4 / (6 + 5), sIoU(P4) = 0
    np.testing.assert_allclose(sorted(f.ppv), [0, 4 / 7, 4 / 6])
    np.testing.assert_allclose(sorted(f.siou_pred), [0, 4 / 11, 4 / 9])
    assert sorted(f.size_pred.tolist()) == [2, 6, 7] and sorted(f.size_gt.tolist()) == [6, 9]
    m = component_metrics(s, lab, 0.5, min_segment=2, min_instance=2)
    # τ = .25 .30 .35 .40 .45 ... .75: TP = 2 2 2 1 0 ...; FN = 2 − TP; FP = #{PPV < τ} = 1 ×7, 2, 2, 3, 3
    tp = np.array([2, 2, 2, 1, 0, 0, 0, 0, 0, 0, 0])
    fp = np.array([1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 3])
    f1 = 2 * tp / (2 * tp + (2 - tp) + fp)
    np.testing.assert_allclose(f1[:4], [0.8, 0.8, 0.8, 0.5])
    assert m["f1_mean"] == pytest.approx(2.9 / 11)
    assert m["f1_25"] == pytest.approx(0.8) and m["f1_50"] == 0 and m["f1_75"] == 0
    assert m["siou"] == pytest.approx((4 / 9 + 4 / 11) / 2)
    assert m["ppv"] == pytest.approx((4 / 7 + 4 / 6) / 3)
    assert m["n_instances"] == 2 and m["n_predicted"] == 3


def test_threshold_is_strict_and_sizes_default():
    s, lab = hand_frame()
    f = frame_components(s, lab, 1.0, min_segment=2, min_instance=2)  # score > 1 nowhere
    assert f.ppv.size == 0 and np.allclose(f.siou_gt, 0)
    m = component_metrics(s, lab, 0.5)  # defaults 500 / 100: every instance too small -> nothing left
    assert m["n_instances"] == 0 and np.isnan(m["siou"]) and np.isnan(m["f1_mean"])


def _naive(s, lab, t, min_segment, min_instance):
    """The reference's definitions, one instance at a time (np.isin on flattened ROI pixels)."""
    from scipy.ndimage import label

    st = np.ones((3, 3), int)
    gt, n_gt = label(lab == 1, st)
    pred, n_pred = label((s > t) & (lab != 255), st)
    for c in range(1, n_pred + 1):
        if (pred == c).sum() < min_segment:
            pred[pred == c] = 0
    lab = lab.copy()
    for c in range(1, n_gt + 1):
        if (gt == c).sum() < min_instance:
            lab[gt == c] = 255
    roi = lab < 255
    g, p = gt[roi], pred[roi]
    siou_gt, siou_pred, ppv = [], [], []
    for i in np.unique(g[g > 0]):
        loc = p[g == i]
        seg = np.unique(loc[loc != 0])
        inter = np.isin(loc, seg).sum()
        adj = (~np.isin(g, [0, i]) & np.isin(p, seg)).sum()
        siou_gt.append(inter / (np.isin(p, seg).sum() + (g == i).sum() - inter - adj))
    for i in np.unique(p[p > 0]):
        loc = g[p == i]
        seg = np.unique(loc[loc != 0])
        inter = np.isin(loc, seg).sum()
        adj = (~np.isin(p, [0, i]) & np.isin(g, seg)).sum()
        siou_pred.append(inter / (np.isin(g, seg).sum() + (p == i).sum() - inter - adj))
        ppv.append(inter / (p == i).sum())
    return np.array(siou_gt), np.array(siou_pred), np.array(ppv)


@pytest.mark.parametrize("seed", range(4))
def test_equals_naive_reference_definitions(seed):
    rng = np.random.default_rng(seed)
    from scipy.ndimage import uniform_filter

    lab = (uniform_filter(rng.random((48, 64)), 5) > 0.56).astype(np.uint8)
    lab[rng.random((48, 64)) < 0.03] = 255
    s = uniform_filter(rng.random((48, 64)), 4) + 0.3 * lab
    f = frame_components(s, lab, 0.62, min_segment=4, min_instance=6)
    g, pr, pp = _naive(s, lab, 0.62, 4, 6)
    assert g.size > 1 and pp.size > 1
    np.testing.assert_allclose(np.sort(f.siou_gt), np.sort(g))
    np.testing.assert_allclose(np.sort(f.siou_pred), np.sort(pr))
    np.testing.assert_allclose(np.sort(f.ppv), np.sort(pp))


def test_taus_and_bad_input():
    np.testing.assert_allclose(TAUS, np.linspace(0.25, 0.75, 11))
    s, lab = hand_frame()
    with pytest.raises(OODLensError, match="shape"):
        frame_components(s[:, :5], lab, 0.5)
    bad = lab.copy(); bad[0, 0] = 7
    with pytest.raises(OODLensError, match="labels"):
        frame_components(s, bad, 0.5)
    s2 = s.copy(); s2[0, 0] = np.nan
    with pytest.raises(OODLensError, match="NaN"):
        frame_components(s2, lab, 0.5)
