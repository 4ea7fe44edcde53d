"""The shared synthetic scene generator: masks ⇄ boxes ⇄ instance map consistency, determinism, splits."""

import numpy as np
import pytest
import torch

from oodlens.bench.datasets import scene_objects
from oodlens.bench.datasets import scenes as sc
from oodlens.errors import OODLensError


@pytest.fixture(scope="module")
def mixed():
    return sc.make_scenes(60, seed=3, unknown_rate=0.4, split="test")


def test_shapes_and_ranges(mixed):
    n = len(mixed)
    assert mixed.images.shape == (n, 3, 64, 64) and mixed.images.dtype == torch.float32
    assert float(mixed.images.min()) >= 0 and float(mixed.images.max()) <= 1
    assert mixed.semantic.dtype == torch.uint8 and mixed.instances.dtype == torch.int32
    ids = set(mixed.semantic.unique().tolist())
    assert ids <= {0, 1, 2, 3, 4, 5, 6, 254} and 254 in ids and 0 in ids
    m = len(mixed.objects)
    counts = torch.bincount(mixed.objects.image, minlength=n)
    assert int(counts.min()) >= 1 and int(counts.max()) <= 3
    assert bool((mixed.objects.image[1:] >= mixed.objects.image[:-1]).all())  # rows sorted by image
    assert mixed.objects.boxes.shape == (m, 4) and bool((mixed.objects.track == -1).all())


def test_instances_semantic_boxes_agree(mixed):
    objs = mixed.objects
    inst = mixed.instances.long()
    # every object is visible, and its pixels lie in its own image
    vis = torch.bincount(inst.flatten(), minlength=len(objs) + 1)[1:]
    assert int(vis.min()) >= 10
    for r in range(len(objs)):  # naive loop over a few dozen objects: the independent check
        ys, xs = np.nonzero(inst[objs.image[r]].numpy() == r + 1)
        assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == objs.boxes[r].tolist()
        other = [i for i in range(len(mixed)) if i != int(objs.image[r])]
        assert not bool((inst[other] == r + 1).any())
        want = 254 if objs.kind[r] != sc.KNOWN else int(objs.label[r]) + 1
        assert set(mixed.semantic[objs.image[r]][inst[objs.image[r]] == r + 1].tolist()) == {want}
        assert (objs.label[r] == -1) == (objs.kind[r] != sc.KNOWN)
    assert bool(((mixed.semantic == 0) == (inst == 0)).all())


def test_deterministic_and_seed_dependent():
    a = sc.make_scenes(8, seed=1, unknown_rate=0.5)
    b = sc.make_scenes(8, seed=1, unknown_rate=0.5)
    c = sc.make_scenes(8, seed=2, unknown_rate=0.5)
    assert torch.equal(a.images, b.images) and torch.equal(a.instances, b.instances)
    assert torch.equal(a.objects.boxes, b.objects.boxes)
    assert not torch.equal(a.images, c.images)


def test_splits_use_disjoint_digit_instances():
    idx = {s: np.concatenate(list(scene_objects._split_indices(s).values())) for s in sc.SPLITS}
    assert sum(len(v) for v in idx.values()) == 1797
    assert not set(idx["train"]) & set(idx["test"]) and not set(idx["val"]) & set(idx["test"])


def test_kinds_and_unknown_rate():
    s = sc.make_scenes(40, seed=0, unknown_rate=1.0, unknown_kinds=("far",), split="val")
    assert bool((s.objects.kind == sc.FAR).all()) and set(s.semantic.unique().tolist()) == {0, 254}
    s = sc.make_scenes(40, seed=0)
    assert bool((s.objects.kind == sc.KNOWN).all()) and 254 not in s.semantic.unique().tolist()


def test_ignore_border_marks_outlines():
    s = sc.make_scenes(6, seed=0, ignore_border=1)
    sem, inst = s.semantic, s.instances
    assert 255 in sem.unique().tolist()
    # an ignore pixel has a neighbour (3×3) with another instance id, and no interior pixel is ignored
    pad = torch.nn.functional.pad(inst.float()[:, None], (1, 1, 1, 1), mode="replicate")  # image edge: no border
    win = torch.nn.functional.unfold(pad, 3).view(len(s), 9, 64, 64)
    border = (win != inst.float()[:, None]).any(1)
    assert bool((sem[border] == 255).all()) and bool((sem[~border] != 255).all())


def test_render_and_sample_patches():
    ps = sc.sample_patches(2, kinds=["known", "far"], size=16, seed=0)
    assert ps[0].patch.shape == (3, 16, 16) and ps[0].alpha.shape == (16, 16) and ps[1].label == -1
    ps[0].x, ps[0].y, ps[1].x, ps[1].y = 2, 3, 50, 56  # the second one is clipped by the image edge
    bg = sc.textured_backgrounds(1, 64, seed=0)[0]
    img, sem, inst = sc.render(bg, ps)
    a0 = ps[0].alpha > 0.5
    assert torch.equal(inst[3:19, 2:18] == 1, a0)
    assert torch.allclose(img[:, 3:19, 2:18][:, a0], ps[0].patch[:, a0])
    assert torch.equal(sem[inst == 2], torch.full_like(sem[inst == 2], 254))
    assert torch.equal(inst[56:, 50:] == 2, ps[1].alpha[:8, :14] > 0.5)
    assert torch.equal(img[:, inst == 0], bg[:, inst == 0])


def test_bad_arguments():
    with pytest.raises(OODLensError, match="split"):
        sc.make_scenes(2, split="holdout")
    with pytest.raises(OODLensError, match="unknown_kinds"):
        sc.make_scenes(2, unknown_rate=0.5, unknown_kinds=("weird",))
    with pytest.raises(OODLensError, match="object_size"):
        sc.make_scenes(2, object_size=(30, 80))
