"""The dashboard's "Fetch the full picture" (issue 35), in a real headless Chromium against a real
uvicorn and a real ``spic-edge watch``: the frame's detail shows its QF-4 reconstruction, the
button asks the camera (an admin key, kept in the browser), and the detail then shows the
original the camera sent.

``SPIC_REFINE_SCREENSHOT=docs/refinement.webp`` keeps the picture it takes: the detail before and
after, side by side.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from cloud_service.harness import running_cloud
from shared.bundles import DEFAULT_BUNDLE
from tests.test_dashboard import CHROMIUM, DRIVER, browser  # noqa: F401 - the fixture

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="make test installs chromium and chromium-driver"
)
ROOT = Path(__file__).resolve().parent.parent
UPLOAD, READ, ADMIN = "up-key", "read-key", "admin-key"


def _detail_png(browser) -> Image.Image:  # noqa: F811 - the fixture's name
    from selenium.webdriver.common.by import By

    return Image.open(io.BytesIO(browser.find_element(By.ID, "detail").screenshot_as_png))


def test_fetch_the_full_picture_from_the_dashboard(browser, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from skimage import data

    folder = tmp_path / "cam"
    folder.mkdir()
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")
    settings = dict(api_keys=UPLOAD, read_keys=READ, admin_keys=ADMIN, data_dir=tmp_path / "d")
    with running_cloud([DEFAULT_BUNDLE], **settings) as url:
        edge = subprocess.Popen(
            [sys.executable, "-m", "edge_client.cli", "watch", str(folder), "--url", url]
            + ["--api-key", UPLOAD, "--device-id", "cam-d", "--bundle", str(DEFAULT_BUNDLE)]
            + ["--interval", "0.2", "--settle-s", "0"],
            env={**os.environ, "PYTHONPATH": str(ROOT), "SPIC_CACHE_DIR": str(tmp_path / "c")},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            read = {"Authorization": f"Bearer {READ}"}
            deadline = time.time() + 60
            while not httpx.get(f"{url}/v1/frames", headers=read).json()["frames"]:
                assert time.time() < deadline, "the edge's frame never arrived"
                time.sleep(0.2)
            browser.get(url + "/")
            wait = WebDriverWait(browser, 30)
            browser.find_element(By.ID, "key").send_keys(READ)
            browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
            wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, ".card"))
            browser.find_element(By.CSS_SELECTOR, ".card").click()
            width = "return document.getElementById('d-image').naturalWidth"
            wait.until(lambda b: b.execute_script(width) == 224)  # the frame's own 224² crop
            before = _detail_png(browser)
            browser.execute_script("localStorage.setItem('spic-operator-key', arguments[0])", ADMIN)
            browser.find_element(By.ID, "d-fetch").click()
            wait.until(lambda b: b.execute_script(width) == 512)  # the camera's original
            status = browser.find_element(By.ID, "d-refine-status").text
            assert status == "the camera's original", status
            after = _detail_png(browser)
        finally:
            edge.terminate()
            edge.wait(10)
    shot = Path(os.environ.get("SPIC_REFINE_SCREENSHOT", tmp_path / "refinement.png"))
    side = Image.new("RGB", (before.width + after.width + 16, max(before.height, after.height)))
    side.paste(before, (0, 0))
    side.paste(after, (before.width + 16, 0))
    # a palette: a third of the bytes; lossless WebP where the name says so (PNG ignores it)
    side.quantize(256).save(shot, optimize=True, lossless=True, method=6)
    assert shot.stat().st_size > 0
