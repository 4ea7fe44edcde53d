"""NP-Mix queues and synthesis against a naive re-implementation of the reference's bookkeeping; Feature Mixing."""

import math

import pytest
import torch

from oodlens.errors import OODLensError
from oodlens.multimodal.feature_mixing import feature_mixing
from oodlens.multimodal.npmix import NPMix


class NaiveQueues:
    """The reference's per-sample loop: fill while any queue has room, then shift-and-append per sample."""

    def __init__(self, c, s, d):
        self.c, self.s = c, s
        self.data = torch.zeros(c, s, d)
        self.count = [0] * c

    def step(self, emb, labels):
        if sum(self.count) == self.c * self.s:
            for i in range(len(labels)):
                k = int(labels[i])
                self.data[k] = torch.cat([self.data[k][1:], emb[i:i + 1]], 0)
        else:
            for i in range(len(labels)):
                k = int(labels[i])
                if self.count[k] < self.s:
                    self.data[k][self.count[k]] = emb[i]
                    self.count[k] += 1


def as_rows(t):
    return sorted(tuple(round(v, 6) for v in r.tolist()) for r in t)


def test_queues_match_reference_bookkeeping():
    c, s, d = 3, 4, 2
    mix, ref = NPMix(c, d, sample_number=s), NaiveQueues(c, s, d)
    g = torch.Generator().manual_seed(0)
    for step in range(12):
        n = 7 if step != 5 else 11  # one batch with more than S samples of a class
        y = torch.randint(0, c, (n,), generator=g)
        if step == 5:
            y[:6] = 1
        emb = torch.randn(n, d, generator=g)
        mix.push(emb, y) if not mix.full else mix.step(emb, y, synthesize=False)
        ref.step(emb, y)
        assert mix.count.tolist() == ref.count
        for k in range(c):  # same rows (the ring buffer stores them rotated)
            assert as_rows(mix.queue[k][:mix.count[k]]) == as_rows(ref.data[k][:ref.count[k]])
    assert mix.full


def filled(c=5, s=6, d=3, seed=0):
    mix = NPMix(c, d, sample_number=s, nn_k=3, alpha=10.0, seed=seed)
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(c, d, generator=g) * 5
    while not mix.full:
        y = torch.randint(0, c, (8,), generator=g)
        mix.push(centres[y] + torch.randn(8, d, generator=g) * 0.3, y)
    return mix


def test_neighbours_are_nearest_prototypes_excluding_self():
    mix = filled()
    proto = mix.queue.mean(1)
    cand = mix.neighbour_classes()
    for i in range(mix.num_classes):
        d = sorted((float(((proto[i] - proto[j]) ** 2).sum()), j) for j in range(mix.num_classes) if j != i)
        assert cand[i].tolist() == [j for _, j in d[:2]]


def test_outliers_lie_on_segments_between_neighbour_classes():
    mix = filled()
    draw = mix.sample()
    assert draw.outliers.shape == (mix.num_classes, mix.dim)
    for r in range(mix.num_classes):
        i, j = int(draw.classes[r]), int(draw.neighbours[r])
        assert j != i and j in draw.candidates[i].tolist()
        a, b = mix.queue[i, draw.rows_i[r]], mix.queue[j, draw.rows_j[r]]
        lam = float(draw.lam[r])
        assert 0.0 < lam < 1.0
        assert torch.allclose(draw.outliers[r], lam * a + (1 - lam) * b, atol=1e-5)
        # the point is on the segment: distances add up
        assert float((a - draw.outliers[r]).norm() + (draw.outliers[r] - b).norm()) == pytest.approx(float((a - b).norm()), rel=1e-4)


def test_beta_mixing_weights_concentrate_like_beta_10_10():
    mix = filled(c=4)
    lams = torch.cat([mix.sample().lam for _ in range(400)])
    assert float(lams.mean()) == pytest.approx(0.5, abs=0.02)
    assert float(lams.std()) == pytest.approx(math.sqrt(0.25 / 21), abs=0.01)  # Var Beta(a, a) = 1 / (4 (2a + 1))


def test_step_semantics_and_determinism():
    mix = NPMix(2, 2, sample_number=2, seed=1)
    y, e = torch.tensor([0, 1, 0, 1]), torch.randn(4, 2)
    assert mix.step(e, y) is None and mix.full  # filled this step: nothing yet, as in the reference
    assert mix.step(e, y, synthesize=False) is None
    assert mix.step(e, y).outliers.shape == (2, 2)
    a, b = filled(seed=3), filled(seed=3)
    assert torch.equal(a.sample().outliers, b.sample().outliers)


def test_npmix_errors():
    with pytest.raises(OODLensError, match="at least 2 classes"):
        NPMix(1, 3)
    mix = NPMix(3, 4)
    with pytest.raises(OODLensError, match="not full"):
        mix.sample()
    with pytest.raises(OODLensError, match=r"\(N, 4\)"):
        mix.push(torch.randn(2, 3), torch.tensor([0, 1]))
    with pytest.raises(OODLensError, match="labels"):
        mix.push(torch.randn(2, 4), torch.tensor([0, 5]))


def test_feature_mixing_swaps_dimensions():
    g = torch.Generator().manual_seed(0)
    zv, zf = torch.randn(5, 6, generator=g), torch.randn(5, 4, generator=g)
    dims = torch.tensor([0, 2])
    mv, mf = feature_mixing([zv, zf], dims=dims)
    for i in range(5):
        for d in range(6):
            want_v = zf[i, d] if d in (0, 2) else zv[i, d]
            assert mv[i, d] == want_v
        for d in range(4):
            want_f = zv[i, d] if d in (0, 2) else zf[i, d]
            assert mf[i, d] == want_f
    # random draw: reproducible, round(0.5 * min dim) dimensions
    a = feature_mixing([zv, zf], 0.5, torch.Generator().manual_seed(1))
    b = feature_mixing([zv, zf], 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and int((a[1] != zf).any(0).sum()) == 2
    # three modalities: a cyclic shift
    z3 = [torch.full((2, 3), float(k)) for k in range(3)]
    out = feature_mixing(z3, dims=torch.tensor([1]))
    assert [float(o[0, 1]) for o in out] == [1.0, 2.0, 0.0] and [float(o[0, 0]) for o in out] == [0.0, 1.0, 2.0]
    with pytest.raises(OODLensError, match="swap_fraction"):
        feature_mixing([zv, zf], 0.0)
