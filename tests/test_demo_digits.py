"""The built-in digits benchmark end to end (cold cache, then warm): plausible numbers, every applicable detector."""

import warnings

import oodlens.fusion  # noqa: F401
from oodlens.bench.calibration_table import calibration_table
from oodlens.bench.demos.digits import run_digits
from oodlens.bench.report import render_markdown
from oodlens.detectors import available_detectors


def test_digits_demo_is_plausible(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result, info = run_digits(tmp_path, seed=0, progress=False)
    assert not info["cached"] and not result.skipped
    # NegLabel's stand-in candidates are stated in the report's settings, not leaked as a warning mid-table
    assert not [w for w in caught if "NegLabel got no candidates" in str(w.message)]
    assert "random unit vectors" in info["zero_shot_note"]
    assert result.id_accuracy > 0.95
    auroc = result.metric("auroc")
    far = ["photo patches", "uniform noise"]
    assert (auroc.loc["mahalanobis", far] > 0.9).all()
    assert auroc.loc["msp", "digits 6-9"] > 0.8
    # every registered detector whose needs the demo meets is in the table
    # every registered detector whose needs the demo meets is in the table (GL-MCM needs a vision-language
    # model's local patch embeddings, which a CNN classifier does not have)
    want = set(available_detectors()) - {"gl_mcm"}
    assert set(result.detectors) == want, want - set(result.detectors)
    # severity: the classifier degrades with rotation, and Mahalanobis flags stronger rotations more
    assert result.set_accuracy["rotate-5"] < result.set_accuracy["rotate-1"]
    assert auroc.loc["mahalanobis", "rotate-5"] > auroc.loc["mahalanobis", "rotate-1"]
    cal = calibration_table(result)
    assert (cal["false alarms p≤0.05"] < 0.12).all()  # ≤ 5 % in expectation; n = 220 test, 216 calibration
    assert (cal["BH FDR (α=0.1)"] <= 0.1).all()
    assert cal.loc["mahalanobis", "ρ rotate"] > 0.5
    text = render_markdown(result)
    assert "digits 6-9" in text and "OOD accepted while 95% ID kept" in text
    again, info2 = run_digits(tmp_path, seed=0, progress=False)  # warm: loads the cache, same numbers
    assert info2["cached"]
    assert again.metric("auroc").equals(auroc)
