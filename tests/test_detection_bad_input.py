"""Bad input to the detection package gives an OODLensError naming the problem (never an IndexError / KeyError /
ValueError from numpy or a silently wrong number); edge cases give the defined value."""

import json

import numpy as np
import pytest
import torch

from oodlens.detection import coco, openset, temporal, tracking
from oodlens.detection.ap import coco_ap
from oodlens.detection.bootstrap import auroc_fast, bootstrap
from oodlens.detection.boxes import Detections, GroundTruth
from oodlens.detection.vos import vos_evaluate, vos_fpr
from oodlens.errors import OODLensError
from oodlens.safetensors_io import save_tensors

B = [[0, 0, 10, 10], [20, 20, 30, 30.0]]


def dets(**kw):
    base = dict(image=[0, 0], boxes=B, logits=torch.tensor([[2.0, 0, 0, 0], [0, 2.0, 0, 0]]),
                confidence=[0.9, 0.8], n_images=1, num_classes=3, background=-1)
    return Detections(**{**base, **kw})


GT = GroundTruth([0, 0], B, [0, -1], 1)


@pytest.mark.parametrize("kw, msg", [
    (dict(background=5), "out of range"), (dict(background=-7), "out of range"),
    (dict(logits=torch.zeros(2, 0), num_classes=0, background=None), "num_classes must be"),
    (dict(n_images=-1), "non-negative integer"), (dict(n_images=1.5), "non-negative integer"),
    (dict(n_images="2"), "non-negative integer"), (dict(n_images=[2]), "non-negative integer"),
    (dict(num_classes=3.5), "num_classes must be a positive integer"),
])
def test_detections_bad_construction(kw, msg):
    with pytest.raises(OODLensError, match=msg):
        dets(**kw)


def test_subset_bad_index():
    with pytest.raises(OODLensError, match="out of range"):
        dets().subset([5])
    with pytest.raises(OODLensError, match="boolean index"):
        dets().subset(torch.tensor([True]))
    with pytest.raises(OODLensError, match="out of range"):
        GT.subset([2])


def test_ground_truth_round_trip(tmp_path):
    gt = GroundTruth([0, 1], B, [0, -1], 3, kind=[0, 2], track=[4, 4], frame=[0, 1])
    gt.save(tmp_path / "g.safetensors")
    back = GroundTruth.load(tmp_path / "g.safetensors")
    assert back.n_images == 3 and torch.equal(back.labels, gt.labels) and torch.equal(back.kind, gt.kind)
    assert torch.equal(back.boxes, gt.boxes) and torch.equal(back.frame, gt.frame)
    with pytest.raises(OODLensError, match="not a saved oodlens detections"):
        Detections.load(tmp_path / "g.safetensors")


@pytest.mark.parametrize("tensors, meta, msg", [
    ({"image": torch.zeros(1)}, {"info": json.dumps({"n_images": 1, "num_classes": 3, "background": None})},
     r"incomplete, missing \['boxes'"),
    ({"image": torch.zeros(1)}, {}, "no valid 'info'"),
    ({"image": torch.zeros(1)}, {"info": "{bad"}, "no valid 'info'"),
    ({"image": torch.zeros(1)}, {"info": json.dumps({"n_images": 1})}, r"missing \['num_classes'"),
])
def test_detections_load_edited_file(tmp_path, tensors, meta, msg):
    p = tmp_path / "d.safetensors"
    save_tensors(tensors, p, {"oodlens": "detections", **meta})
    with pytest.raises(OODLensError, match=msg):
        Detections.load(p)


ANN = {"images": [{"id": 1}, {"id": 2}], "annotations": [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5]}],
       "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}


@pytest.mark.parametrize("change, msg", [
    ({"annotations": [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5]}] * 4}, "must be 4 numbers; record 0"),
    ({"annotations": [{"image_id": 1, "category_id": 1, "bbox": ["a", 0, 5, 5]}]}, "must be 4 numbers"),
    ({"categories": [{"name": "a"}]}, "no field 'id'"),
    ({"images": None}, "images must be a list"),
    ({"annotations": None}, "annotations must be a list"),
    ({"images": [{"id": "x"}]}, "images' id"),
    ({"images": [{"id": 1}, {"id": 1}]}, "image id 1 appears more than once"),
])
def test_read_ground_truth_malformed(change, msg):
    with pytest.raises(OODLensError, match=msg):
        coco.read_ground_truth({**ANN, **change})


R = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.9}


@pytest.mark.parametrize("res, msg", [
    ([{**R, "score": "x"}], "score"), ([{**R, "score": 3.0}], r"probabilities in \[0, 1\]"),
    ([{**R, "logits": [1, 2]}, {**R, "logits": [1, 2, 3]}], "logits.*one length"),
    ([{**R, "features": [1, 2]}, {**R, "features": [1]}], "features.*one length"),
])
def test_read_results_malformed(res, msg):
    _, idx = coco.read_ground_truth(ANN)
    with pytest.raises(OODLensError, match=msg):
        coco.read_results(res, idx)


def test_read_results_empty():
    _, idx = coco.read_ground_truth(ANN)
    assert coco.read_results([], idx).n == 0


def test_ap_scores_checked_and_no_ground_truth():
    d = dets()
    with pytest.raises(OODLensError, match="one value per detection"):
        coco_ap(d, GT, scores=[1.0])
    with pytest.raises(OODLensError, match="NaN"):
        coco_ap(d, GT, scores=[np.nan, 1.0])
    empty = GroundTruth(torch.zeros(0), torch.zeros(0, 4), torch.zeros(0), 1)
    assert np.isnan(coco_ap(d, empty).ap())  # no class has ground truth: undefined, as pycocotools (-1 → nan)


def test_open_set_bad_and_edge_inputs():
    d = dets()
    with pytest.raises(OODLensError, match="one value per detection"):
        openset.open_set_metrics(d, GT, [True, True], [0.1])
    with pytest.raises(OODLensError, match="NaN"):
        openset.open_set_metrics(d, GT, [True, True], [0.1, np.nan])
    with pytest.raises(OODLensError, match="boolean mask"):
        openset.open_set_metrics(d, GT, [0.2, 0.7], [0.1, 0.9])
    with pytest.raises(OODLensError, match="images"):
        openset.open_set_metrics(d, GroundTruth([1], [B[0]], [-1], 2), [True, True], [0.1, 0.9])
    with pytest.raises(OODLensError, match="recall level"):
        openset.wilderness_impact(d, GT, [False, False], recall=2.0)
    # no unknown ground truth: unknown recall / AP are undefined (nan), the rest still computed
    r = openset.open_set_metrics(d, GroundTruth([0], [B[0]], [0], 1), [False, True], [0.1, 0.9])
    assert np.isnan(r["unknown_recall"]) and np.isnan(r["unknown_ap50"]) and r["known_ap50"] == pytest.approx(1.0)
    # box 1 flagged and on the unknown object: found
    assert openset.unknown_recall(d, GT, [False, True], [0.1, 0.9])["unknown_recall"] == 1.0


def test_vos_bad_inputs():
    with pytest.raises(OODLensError, match="NaN"):
        vos_fpr([0.1, np.nan], [0.2, 0.3])
    with pytest.raises(OODLensError, match="recall level"):
        vos_fpr([0.1, 0.2], [0.2, 0.3], level=95)
    with pytest.raises(OODLensError, match="threshold must be finite"):
        vos_evaluate(dets(), dets(), [1, 2], [3, 4], float("nan"))
    with pytest.raises(OODLensError, match="both must be non-empty"):  # every box below the threshold
        vos_evaluate(dets(), dets(), [1, 2], [3, 4], 0.95)


def test_temporal_bad_inputs():
    with pytest.raises(OODLensError, match="two boxes in frame 0"):
        temporal.aggregate([1.0, 2.0], [0, 0], [0, 0], "ema")
    with pytest.raises(OODLensError, match="finite mu"):
        temporal.aggregate([1.0], [0], [0], "cusum", mu=float("nan"))
    with pytest.raises(OODLensError, match="NaN"):
        temporal.false_alarm_threshold([np.nan, 1.0])
    with pytest.raises(OODLensError, match="covers 2 objects"):
        temporal.time_to_detection([1.0], [0], [5], [0, 0], 0.5)
    with pytest.raises(OODLensError, match="one length"):
        temporal.time_to_detection([1.0, 2.0], [0], [0], [0], 0.5)


def test_tracker_empty_and_bad_inputs():
    assert tracking.track_boxes(np.zeros((0, 4)), np.zeros(0)).shape == (0,)
    e = Detections(torch.zeros(0), torch.zeros(0, 4), torch.zeros(0, 3), torch.zeros(0), 1, 3, frame=torch.zeros(0))
    assert tracking.track_detections(e).track.shape == (0,)
    one = np.array([[0, 0, 1, 1.0], [0, 0, 1, 1]])
    with pytest.raises(OODLensError, match="NaN"):
        tracking.track_boxes(np.array([[0, 0, 1, 1], [np.nan, 0, 1, 1]]), [0, 1])
    with pytest.raises(OODLensError, match="max_age"):
        tracking.track_boxes(one, [0, 1], max_age=-1)
    with pytest.raises(OODLensError, match="integers"):
        tracking.track_boxes(one, [0.5, 1.7])


def test_bootstrap_bad_inputs():
    s = {"a": ([1.0, 2.0], [3.0])}
    with pytest.raises(OODLensError, match="one value per detection"):
        bootstrap(auroc_fast, s, [0, 1, 2], [0])
    with pytest.raises(OODLensError, match="reps"):
        bootstrap(auroc_fast, s, [0, 1], [0], reps=0)
    with pytest.raises(OODLensError, match="level"):
        bootstrap(auroc_fast, s, [0, 1], [0], level=95)
    with pytest.raises(OODLensError, match="non-negative integer"):
        bootstrap(auroc_fast, s, [0, -1], [0])
    with pytest.raises(OODLensError, match="NaN"):
        bootstrap(auroc_fast, {"a": ([1.0, np.nan], [3.0])}, [0, 1], [0])


def test_bootstrap_does_not_depend_on_image_numbering():
    """Images are the units: gaps in the numbering (images without a kept box) must not change the intervals
    (before, images below the largest index counted as empty units, those above it did not)."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=12), rng.normal(1, 1, 8)
    compact = bootstrap(auroc_fast, {"x": (a, b)}, np.arange(12) // 2, np.arange(8) // 2, reps=50)
    gaps = bootstrap(auroc_fast, {"x": (a, b)}, (np.arange(12) // 2) * 7 + 3, (np.arange(8) // 2) * 5, reps=50)
    assert compact["x"]["value"] == gaps["x"]["value"]


def _img(n, c=3, **extra):
    return {"boxes": torch.tensor([[0, 0, 1, 1.0]] * n).reshape(n, 4), "logits": torch.randn(n, c), **extra}


@pytest.mark.parametrize("outputs, msg", [
    ([_img(2, 3), _img(1, 4)], "'logits' has per-box shape"),
    ([_img(1, features=torch.zeros(1, 5)), _img(1, features=torch.zeros(1, 6))], "'features' has per-box shape"),
    # rows that would realign after concatenation: 2 boxes with 1 logit row, then 1 box with 2 rows
    ([{"boxes": torch.zeros(2, 4), "logits": torch.randn(1, 3)}, {"boxes": torch.zeros(1, 4), "logits": torch.randn(2, 3)}],
     r"image 0's 'logits' has shape \(1, 3\), expected one row per box \(2 boxes\)"),
    ([{"boxes": torch.zeros(4), "logits": torch.randn(1, 3)}], "'boxes' must have shape"),
    (_img(2), "must return a list with one dict per image"),
    (None, "must return a list"),
])
def test_capture_bad_outputs(outputs, msg):
    from oodlens.detection.capture import capture

    with pytest.raises(OODLensError, match=msg):
        capture(lambda batch: outputs, [0], 3)


def test_capture_images_without_boxes():
    from oodlens.detection.capture import capture

    d = capture(lambda batch: [_img(2), {"boxes": torch.zeros(0), "logits": torch.zeros(0)}, _img(1)], [0], 3)
    assert d.n == 3 and d.n_images == 3 and d.image.tolist() == [0, 0, 2]
    e = capture(lambda batch: [{"boxes": torch.zeros(0), "logits": torch.zeros(0)}], [0], 3, background=0)
    assert e.n == 0 and e.logits.shape == (0, 4)


def test_ground_truth_label_beyond_the_detector_classes():
    gt = GroundTruth([0, 0], B, [0, 7], 1)  # label 7 with a 3-class detector: its objects would be dropped
    with pytest.raises(OODLensError, match="label 7 but the detections have num_classes=3"):
        coco_ap(dets(), gt)
    with pytest.raises(OODLensError, match="label 7"):
        openset.open_set_metrics(dets(), gt, [False, True], [0.1, 0.9])


def test_enhancements_bad_inputs():
    from oodlens.detection.enhance import ClassConditionalConformal, SizeNormalised

    with pytest.raises(OODLensError, match="integers in 0..2"):
        ClassConditionalConformal().fit([1.0, 2.0], [0, -1], 3)
    with pytest.raises(OODLensError, match="NaN"):
        ClassConditionalConformal().fit([1.0, np.nan], [0, 1], 3)
    c = ClassConditionalConformal().fit([1.0, 2.0, 3.0], [0, 1, 1], 3)
    with pytest.raises(OODLensError, match="integers in 0..2"):
        c.score([1.0], [7])
    with pytest.raises(OODLensError, match="one entry per box"):
        c.score([1.0, 2.0], [1])
    # p = (1 + #{cal of class 1 ≥ 2.5}) / (2 + 1) = 2/3; class 2 has no calibration: pooled, p = 4/4
    assert c.score([2.5, 0.0], [1, 2]).tolist() == pytest.approx([-np.log(2 / 3), 0.0])
    with pytest.raises(OODLensError, match="bins"):
        SizeNormalised(0)
    with pytest.raises(OODLensError, match="2 scores but 1 boxes"):
        SizeNormalised().fit([1.0, 2.0], [[0, 0, 1, 1]])
    s = SizeNormalised(2).fit([1.0, 2.0, 3.0, 4.0], [[0, 0, 1, 1], [0, 0, 2, 2], [0, 0, 3, 3], [0, 0, 4, 4]])
    with pytest.raises(OODLensError, match="x2 < x1"):
        s.score([1.0], [[0, 0, -1, 1]])


def test_coco_writers_check_inputs():
    with pytest.raises(OODLensError, match="one value per detection"):  # zip used to drop the unscored boxes
        coco.detections_to_coco(dets(), scores=[0.5])
    with pytest.raises(OODLensError, match="label 3 but num_classes=3"):  # would be written as 'unknown'
        coco.ground_truth_to_coco(GroundTruth([0], [B[0]], [3], 1), 3)
    out = coco.detections_to_coco(dets(), scores=[0.5, 0.25])
    assert [r["score"] for r in out] == [0.5, 0.25] and out[1]["bbox"] == [20.0, 20.0, 10.0, 10.0]


def test_unknown_category_names_must_exist():
    gt, idx = coco.read_ground_truth(ANN, unknown=["b"])
    assert idx.num_classes == 1 and idx.unknown_ids == {2}
    with pytest.raises(OODLensError, match=r"unknown categories \['bb'\]"):  # a typo used to mark nothing unknown
        coco.read_ground_truth(ANN, unknown=["bb"])
    with pytest.raises(OODLensError, match="every category is marked unknown"):
        coco.read_ground_truth(ANN, unknown=["a", 2])
