"""Readers of anomaly-segmentation folder layouts, on small PNG fixtures written here."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oodlens.errors import OODLensError
from oodlens.segmentation import read_pairs, read_streethazards, stack_frames


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _image(seed, h=6, w=8):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_fishyscapes_layout(tmp_path):
    raw = np.zeros((6, 8), np.uint8)
    raw[1:3, 2:4] = 1
    raw[5] = 255
    for i in range(2):
        _png(tmp_path / "images" / f"f{i}.png", _image(i))
        _png(tmp_path / "labels" / f"f{i}.png", raw)
    frames = list(read_pairs(tmp_path, "fishyscapes"))
    assert [f.name for f in frames] == ["f0", "f1"]
    np.testing.assert_array_equal(frames[0].labels.numpy(), raw)
    np.testing.assert_allclose(frames[1].image.permute(1, 2, 0).numpy() * 255, _image(1), atol=1e-4)
    images, labels, names = stack_frames(frames)
    assert images.shape == (2, 3, 6, 8) and labels.shape == (2, 6, 8)


def test_road_anomaly_layout(tmp_path):
    raw = np.zeros((6, 8), np.uint8)
    raw[2:4, 1:5] = 2  # RoadAnomaly: 2 = anomaly
    raw[0, 0] = 9      # an id of neither kind: ignore
    _png(tmp_path / "frames" / "animal.png", _image(3))
    _png(tmp_path / "frames" / "animal.labels" / "labels_semantic.png", raw)
    (f,) = read_pairs(tmp_path, "roadanomaly")
    assert (f.labels == 1).sum().item() == 8 and f.labels[0, 0] == 255 and set(np.unique(f.labels.numpy())) == {0, 1, 255}


def test_smiyc_layout(tmp_path):
    raw = np.full((6, 8), 255, np.uint8)  # outside the road: void
    raw[3:] = 0
    raw[4, 4] = 1
    _png(tmp_path / "images" / "validation_0001.png", _image(4))
    _png(tmp_path / "labels_masks" / "validation_0001_labels_semantic.png", raw)
    (f,) = read_pairs(tmp_path, "smiyc")
    np.testing.assert_array_equal(f.labels.numpy(), raw)


def test_lost_and_found_layout(tmp_path):
    raw = np.zeros((6, 8), np.uint8)  # 0: ignore (off the road)
    raw[3:] = 1                        # road
    raw[4, 4:6] = 7                    # an obstacle (2..200)
    raw[5, 0] = 201                    # outside both ranges: ignore
    scene = Path("test") / "04_Maurener_Weg_8"
    _png(tmp_path / "leftImg8bit" / scene / "04_Maurener_Weg_8_000000_000030_leftImg8bit.png", _image(6))
    _png(tmp_path / "gtCoarse" / scene / "04_Maurener_Weg_8_000000_000030_gtCoarse_labelIds.png", raw)
    (f,) = read_pairs(tmp_path, "lostandfound")
    want = np.full((6, 8), 255, np.uint8)
    want[3:] = 0
    want[4, 4:6] = 1
    want[5, 0] = 255
    np.testing.assert_array_equal(f.labels.numpy(), want)
    assert f.name == str(scene / "04_Maurener_Weg_8_000000_000030")


def test_streethazards_anomaly_class(tmp_path):
    raw = np.full((6, 8), 3, np.uint8)
    raw[0, 0] = 0     # unlabeled -> ignore
    raw[2:4, 2:4] = 14  # the anomaly class
    raw[5, 5] = 1
    _png(tmp_path / "images" / "test" / "t5" / "300.png", _image(5))
    _png(tmp_path / "annotations" / "test" / "t5" / "300.png", raw)
    (f,) = read_streethazards(tmp_path)
    lab = f.labels.numpy()
    assert lab[0, 0] == 255 and (lab[2:4, 2:4] == 1).all() and lab[5, 5] == 0 and lab.sum() == 255 + 4
    assert f.name == "t5/300"


def test_reader_errors(tmp_path):
    with pytest.raises(OODLensError, match="not a folder"):
        list(read_pairs(tmp_path, "fishyscapes"))
    _png(tmp_path / "images" / "a.png", _image(0))
    with pytest.raises(OODLensError, match="no label file"):
        list(read_pairs(tmp_path, "fishyscapes"))
    _png(tmp_path / "labels" / "a.png", np.zeros((3, 3), np.uint8))
    with pytest.raises(OODLensError, match="label .* is \\(3, 3\\)"):
        list(read_pairs(tmp_path, "fishyscapes"))
    with pytest.raises(OODLensError, match="unknown layout"):
        list(read_pairs(tmp_path, "cityscapes-ood"))
    (tmp_path / "labels" / "a.png").write_bytes(b"not a png")
    with pytest.raises(OODLensError, match="cannot read"):
        list(read_pairs(tmp_path, "fishyscapes"))
