"""The synthetic videos: boxes follow the instance maps, tracks are consistent, unknown objects enter later."""

import torch

from oodlens.bench.datasets.scene_video import make_videos
from oodlens.detection import GroundTruth


def test_videos_consistent_and_deterministic():
    v = make_videos(6, 8, seed=1, unknown_rate=0.5)
    o = v.objects
    assert v.images.shape == (48, 3, 64, 64) and v.frame.tolist()[:8] == list(range(8))
    # every box is tight around its object's visible pixels in the instance map
    for img in range(0, 48, 5):
        rows = torch.nonzero(o.image == img)[:, 0]
        ids = [int(i) for i in torch.unique(v.instances[img]) if i > 0]  # visible placements, in drawing order
        assert len(ids) == rows.numel()
        for r, i in zip(rows, ids):
            ys, xs = torch.nonzero(v.instances[img] == i, as_tuple=True)
            want = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert o.boxes[r].tolist() == [float(w) for w in want]
    # a track lives in one video, once per frame; unknown objects never appear at frame 0
    GroundTruth(o.image, o.boxes, o.label, len(v), track=o.track, frame=v.frame[o.image])
    assert bool((v.video[o.image][o.track == o.track[0]] == v.video[o.image[0]]).all())
    assert not bool(((o.label == -1) & (v.frame[o.image] == 0)).any())
    w = make_videos(6, 8, seed=1, unknown_rate=0.5)
    assert torch.equal(w.images, v.images) and torch.equal(w.objects.boxes, o.boxes)
