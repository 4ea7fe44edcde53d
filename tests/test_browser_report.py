"""The HTML benchmark report rendered in a real browser (headless Chromium): every section and figure is in the
DOM the browser built, no image is broken, nothing is fetched from the network, and a screenshot is saved.

Chromium is the Debian package ``chromium`` (``.ci/run`` installs it); without a browser the test is skipped and
says why. ``OODLENS_SCREENSHOT_DIR=folder`` keeps the screenshot and the report for a person to look at.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from oodlens.bench.report import build_report
from test_html_report_bench import small_result

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
         "--disable-dev-shm-usage", "--hide-scrollbars",
         "--host-resolver-rules=MAP * ~NOTFOUND"]  # no name resolves: a fetch would fail
CHECK_IMAGES = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0 && i.naturalHeight > 0));
  document.body.setAttribute('data-images', String(imgs.length));
  document.body.setAttribute('data-broken', String(broken.length));
  document.body.setAttribute('data-width', String(document.documentElement.scrollWidth));
});
</script>"""


def _browser():
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(browser, args, user_dir, timeout=120):
    cmd = [browser, *FLAGS, f"--user-data-dir={user_dir}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(_browser() is None, reason="no Chromium/Chrome on PATH: install the Debian package 'chromium' "
                                               "(.ci/run does) to render the report in a real browser")
def test_report_renders_in_headless_chromium(tmp_path):
    browser = _browser()
    result = small_result()
    rep = build_report(result, settings={"seed": 0}, calibration=True)
    page = tmp_path / "report.html"
    rep.write(page)
    html = page.read_text()
    assert not re.search(r"(src|href)=['\"](?!data:|#)", html), "the report must not reference other files"
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", CHECK_IMAGES + "</body>"))

    done = _run(browser, ["--window-size=1280,2400", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()], tmp_path / "profile-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    # the browser parsed every section and figure
    for sid in ("overview", "main-results", "roc-curves-and-score-histograms", "covariate-shift",
                "calibration-screening-and-failure-prediction", "run-settings"):
        assert f'<section id="{sid}">' in dom, f"section {sid} missing from the rendered DOM"
    n_img = len(re.findall(r"<img ", dom))
    assert n_img >= 6  # ROC per set (3), histograms (2+), severity, p-values, risk-coverage
    assert f'data-images="{n_img}"' in dom and 'data-broken="0"' in dom, "an image failed to decode"
    assert "Below chance" in dom and re.search(r"\d of 4 detectors below chance", dom)  # read out in words
    assert "OOD accepted while 95% ID kept" in dom and "versions" in dom
    assert re.search(r'class="best"', dom)
    width = int(re.search(r'data-width="(\d+)"', dom).group(1))
    assert width <= 1300, f"the page scrolls sideways at 1280 px ({width} px wide)"

    shot = tmp_path / "report.png"
    done = _run(browser, ["--window-size=1280,2400", f"--screenshot={shot}", page.as_uri()], tmp_path / "profile-shot")
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape == (2400, 1280) and img.std() > 10  # something was drawn, not a blank page
    keep = os.environ.get("OODLENS_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "report.png")
        shutil.copy(page, Path(keep) / "report.html")
