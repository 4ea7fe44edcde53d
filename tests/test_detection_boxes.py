"""Box data model: validation (issue item 9), Features with the background column dropped, every registered
detector scoring boxes unchanged, safetensors round trip, COCO reader, capture helpers."""

import json

import numpy as np
import pytest
import torch

import oodlens.fusion  # noqa: F401  registers "fused"
from oodlens.detection import Detections, GroundTruth
from oodlens.detection.capture import capture, capture_two_stage
from oodlens.detection.coco import read_coco
from oodlens.detectors import available_detectors, create
from oodlens.errors import OODLensError
from oodlens.testing import make_toy_problem, toy_detector


def _dets(n=4, k=3, bg=-1, **kw):
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(n, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + 5 + torch.rand(n, 2, generator=g) * 10], 1)
    logits = torch.randn(n, k + (bg is not None), generator=g)
    args = dict(image=torch.arange(n) % 2, boxes=boxes, logits=logits, confidence=torch.rand(n, generator=g),
                n_images=2, num_classes=k, background=bg)
    args.update(kw)
    return Detections(**args)


@pytest.mark.parametrize("change, fragment", [
    (dict(boxes=torch.tensor([[0, 0, 5, 5], [6, 0, 5, 5.], [0, 0, 1, 1], [0, 0, 1, 1]])), "x2 < x1"),
    (dict(boxes=torch.tensor([[0, 0, 5, float("nan")]] + [[0, 0, 1, 1.]] * 3)), "NaN"),
    (dict(image=torch.tensor([0, 1, 2, 0])), "image index out of range"),
    (dict(logits=torch.zeros(4, 3)), "background column is declared"),
    (dict(track=torch.tensor([1, 1, 1, 2])), "jumps between images"),
])
def test_bad_input_is_named(change, fragment):
    with pytest.raises(OODLensError, match=fragment):
        _dets(**change)


def test_features_drop_background_and_keep_extra():
    d = _dets(bg=-1).with_extra(features=torch.ones(4, 5))
    f = d.to_features()
    torch.testing.assert_close(f["logits"], d.logits[:, :-1])
    assert f["features"].shape == (4, 5)
    d0 = _dets(bg=0)
    torch.testing.assert_close(d0.to_features()["logits"], d0.logits[:, 1:])
    torch.testing.assert_close(d0.classes, d0.logits[:, 1:].argmax(1))


def test_save_load_round_trip(tmp_path):
    d = _dets(frame=torch.tensor([0, 1, 0, 1]), track=torch.tensor([3, 3, 4, 4])).with_extra(roi_map=torch.rand(4, 2, 3, 3))
    d.save(tmp_path / "d.safetensors")
    e = Detections.load(tmp_path / "d.safetensors")
    for k in ("image", "boxes", "logits", "confidence", "classes", "frame", "track"):
        assert torch.equal(getattr(d, k), getattr(e, k))
    assert torch.equal(d.extra["roi_map"], e.extra["roi_map"]) and e.background == d.background == 3


@pytest.mark.parametrize("name", available_detectors())
def test_every_registered_detector_scores_boxes_unchanged(name):
    """Boxes built from the toy problem's rows (logits plus a background column, per-box features and maps)
    score exactly as the rows themselves."""
    toy = make_toy_problem()
    det = toy_detector(create(name))
    if det.needs_model:
        pytest.skip("model-based detectors score inputs, not boxes")
    from oodlens.testing import fit_on_toy

    fit_on_toy(det, toy)
    x = toy.test_id
    n = x.n
    logits = torch.cat([x["logits"], torch.full((n, 1), 3.0)], 1)  # background column last
    extra = {k: v for k, v in x.items() if k != "logits"}
    boxes = torch.tensor([[0, 0, 4, 4.]]).expand(n, 4)
    d = Detections(torch.arange(n) % 7, boxes, logits, torch.ones(n), 7, logits.shape[1] - 1, -1, extra=extra)
    torch.testing.assert_close(det.score(d.to_features()), det.score(x))


def _coco_files(tmp_path):
    ann = {"images": [{"id": 7}, {"id": 3}],
           "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 9, "name": "ufo"}],
           "annotations": [{"image_id": 7, "category_id": 2, "bbox": [1, 2, 3, 4]},
                           {"image_id": 3, "category_id": 9, "bbox": [0, 0, 5, 5]}]}
    res = [{"image_id": 3, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.9, "cls_prob": [0.9, 0.05, 0.05]},
           {"image_id": 7, "category_id": 2, "bbox": [1, 2, 3, 4], "score": 0.6, "cls_prob": [0.2, 0.6, 0.2],
            "features": [1.0, 2.0]}]
    (tmp_path / "a.json").write_text(json.dumps(ann))
    return tmp_path / "a.json", res


def test_read_coco(tmp_path):
    ann, res = _coco_files(tmp_path)
    res[0]["features"] = [0.0, 1.0]
    d, gt, idx = read_coco(ann, res, unknown=["ufo"])
    assert idx.class_names == ["cat", "dog"] and d.num_classes == 2 and d.background == 2
    assert gt.image.tolist() == [1, 0] and gt.labels.tolist() == [1, -1]  # image ids sorted: 3 -> 0, 7 -> 1
    assert gt.boxes[0].tolist() == [1, 2, 4, 6]
    assert d.image.tolist() == [0, 1] and d.classes.tolist() == [0, 1]
    torch.testing.assert_close(d.to_features()["logits"], torch.log(torch.tensor([[0.9, 0.05], [0.2, 0.6]])))
    with pytest.raises(OODLensError, match="image_id 5"):
        read_coco(ann, [{**res[0], "image_id": 5}])
    with pytest.raises(OODLensError, match="no field 'score'"):
        read_coco(ann, [{k: v for k, v in res[0].items() if k != "score"}])


def test_generic_capture():
    def fn(batch):
        for img in batch:
            n = int(img.sum())
            yield {"boxes": torch.tensor([[0, 0, 2, 2.]] * n), "logits": torch.zeros(n, 4), "features": torch.ones(n, 3)}

    d = capture(fn, [[torch.ones(1), torch.zeros(1)], [torch.full((1,), 2.0)]], num_classes=3, background=-1)
    assert d.n_images == 3 and d.image.tolist() == [0, 2, 2]
    torch.testing.assert_close(d.confidence, torch.full((3,), 0.25))


class _FakeRoIHeads(torch.nn.Module):
    """torchvision RoIHeads' shape: box_head (ROI features) and box_predictor (logits, deltas); keeps, per
    proposal, its best non-background class when its probability exceeds 0.1 (like postprocess_detections)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.box_head = torch.nn.Linear(4, 6)
        self.box_predictor = torch.nn.ModuleDict({"cls": torch.nn.Linear(6, 4)})
        self.box_predictor.forward = lambda x: (self.box_predictor["cls"](x), None)

    def forward(self, features, proposals, image_shapes, targets=None):
        f = self.box_head(torch.cat(proposals))
        logits, _ = self.box_predictor(f)
        p = torch.softmax(logits, 1)
        out, s = [], 0
        for prop in proposals:
            q = p[s:s + prop.shape[0], 1:]
            sc, lab = q.max(1)
            keep = torch.nonzero(sc > 0.1)[:, 0].flip(0)  # reordered, as a score sort would
            out.append({"boxes": prop[keep], "scores": sc[keep], "labels": lab[keep] + 1})
            s += prop.shape[0]
        return out


class _FakeTwoStage(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.roi_heads = _FakeRoIHeads()

    def forward(self, images):
        props = [torch.tensor([[0, 0, 4, 4.], [1, 1, 6, 9], [2, 0, 3, 8], [5, 5, 9, 9]]) * (i + 1)
                 for i in range(len(images))]
        return self.roi_heads(None, props, None)


def test_capture_two_stage_traces_each_box_to_its_proposal():
    model = _FakeTwoStage()
    d = capture_two_stage(model, [[torch.zeros(1), torch.zeros(1)]])
    props = torch.cat([torch.tensor([[0, 0, 4, 4.], [1, 1, 6, 9], [2, 0, 3, 8], [5, 5, 9, 9]]) * (i + 1) for i in range(2)])
    feats = model.roi_heads.box_head(props).detach()
    logits = model.roi_heads.box_predictor["cls"](feats).detach()
    # every kept box carries the features/logits of the proposal it came from (boxes = proposals here)
    assert d.n > 2
    rows = torch.stack([(props == b).all(1).nonzero()[0, 0] for b in d.boxes])
    rows = torch.where(d.image == 0, rows % 4, rows % 4 + 4)
    torch.testing.assert_close(d.extra["features"], feats[rows])
    torch.testing.assert_close(d.logits, logits[rows])
    assert d.background == 0 and d.num_classes == 3
    torch.testing.assert_close(d.classes, logits[rows][:, 1:].argmax(1))
    with pytest.raises(OODLensError, match="torchvision"):
        capture_two_stage(torch.nn.Linear(2, 2), [])
