"""Real medical files that ship offline (pydicom's and nibabel's test data): read, extract features with a small
CNN, score with a label-free detector and assess per vendor group (the unseen vendor named). Optional: skipped
without pydicom / nibabel."""

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("pydicom")
pytest.importorskip("nibabel")

from oodlens.bench.datasets.medical import packaged_files, read_slices, read_volume, to_inputs  # noqa: E402
from oodlens.detectors import create  # noqa: E402
from oodlens.errors import OODLensError  # noqa: E402
from oodlens.extract import extract  # noqa: E402
from oodlens.monitor import Monitor  # noqa: E402


def test_reader_and_scaling():
    files = packaged_files()
    assert {"CT_small.dcm", "MR_small.dcm", "example4d.nii.gz"} <= set(files)
    arr, meta = read_volume(files["CT_small.dcm"])
    assert arr.shape == (1, 128, 128) and meta == {"modality": "CT", "group": "GE MEDICAL SYSTEMS"}
    vol, meta = read_volume(files["example4d.nii.gz"])
    assert vol.shape == (24, 128, 96) and meta["modality"] == "MR"
    x = to_inputs(arr, size=16)
    lo, hi = np.percentile(arr[0], [1, 99])
    want = torch.nn.functional.interpolate(torch.from_numpy(np.clip((arr[0] - lo) / (hi - lo), 0, 1))[None, None],
                                           size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.allclose(x, want.float(), atol=1e-4)
    with pytest.raises(OODLensError, match="unsupported"):
        read_volume(__file__)


def test_extraction_and_scoring_on_packaged_scans():
    files = packaged_files()
    train = read_slices([files["example4d.nii.gz"]], size=32)            # 24 MR slices (NIfTI)
    cal = read_slices([files["anatomical.nii"], files["0.dcm"], files["1.dcm"]], size=32)
    test = read_slices([files["MR_small.dcm"], files["CT_small.dcm"], files["functional.nii"]], size=32)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                        nn.Linear(128, 16)).eval()
    feats = {k: extract(net, v.inputs, layers={"3": "features"}, logits=False, progress=False)[0]
             for k, v in (("train", train), ("cal", cal), ("test", test))}
    assert feats["train"]["features"].shape == (24, 128) and torch.isfinite(feats["test"]["features"]).all()
    det = create("knn", k=3).fit(feats["train"])
    s = det.score(feats["test"])
    assert s.shape == (5,) and torch.isfinite(s).all()
    with pytest.warns(UserWarning, match="small calibration groups"):
        mon = Monitor(None, det, feats["cal"], groups=cal.groups, acceptance=0.9, bank=feats["train"])
    df = mon.assess(feats["test"], groups=test.groups)
    assert df.attrs["unseen_groups"] == sorted({"GE MEDICAL SYSTEMS", "TOSHIBA_MEC", "functional.nii"})
    assert list(df["group"][:2]) == ["pooled", "pooled"] and "nearest training examples" in df["reading"][1]


def test_bad_inputs_found_by_review(tmp_path):
    import numpy as np

    with pytest.raises(OODLensError, match="is a folder"):  # was: "... does not exist"
        read_volume(tmp_path)
    for bad, msg in ((dict(size=0), "size"), (dict(slices=np.full((2, 8, 8), np.nan)), "NaN"),
                     (dict(slices=np.ones((8, 8))), r"\(S, H, W\)")):
        args = {"slices": np.ones((2, 8, 8)), "size": 16, **bad}
        with pytest.raises(OODLensError, match=msg):  # were: RuntimeError, NaN inputs, a silent 2-D reshape
            to_inputs(args["slices"], args["size"])


def test_photo_patches_arguments():
    import numpy as np

    from oodlens.bench.datasets.digits import photo_patches

    assert photo_patches(0, 3, np.random.default_rng(0)).shape == (3, 1, 8, 8)
    for index, n in ((5, 3), (0, 0), (0, -1)):
        with pytest.raises(OODLensError):  # were IndexError / ValueError
            photo_patches(index, n, np.random.default_rng(0))
