"""Regenerate docs/dashboard.webp: the shipped model, scikit-image's photos from three cameras, the
dashboard in headless Chromium filtered to one camera, counts per hour, a frame's detail open.
Saved with a 256-colour palette, as lossless WebP, so the picture stays small in the repository.

    .venv/bin/python scripts/dashboard_screenshot.py [--out docs/dashboard.webp]
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from cloud_service.harness import running_cloud  # noqa: E402
from edge_client.client import CloudClient  # noqa: E402
from edge_client.encoder import EdgeEncoder  # noqa: E402
from evaluation.samples import sample_images  # noqa: E402
from shared.bundles import DEFAULT_BUNDLE  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.webp")
    args = ap.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    encoder = EdgeEncoder(DEFAULT_BUNDLE, cache_dir=False)
    images = sample_images(None)
    with (
        tempfile.TemporaryDirectory() as data,
        running_cloud([DEFAULT_BUNDLE], api_keys="up", read_keys="read", data_dir=data) as url,
    ):
        now = time.time()
        for i, im in enumerate(images * 2):
            cam = ("gate", "loading-dock", "parking")[i % 3]
            client = CloudClient(url, api_key="up", device_id=cam, max_retries=0)
            mirrored = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            flipped = mirrored if i >= len(images) else im  # a second, mirrored pass
            client.classify(encoder.encode(flipped), f"shot-{i}", captured_at=now - 600 * i)
            client.close()
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or "chromium"
        for arg in ("--headless=new", "--no-sandbox", "--window-size=1400,1100"):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
        try:
            driver.get(url + "/")
            driver.find_element(By.ID, "key").send_keys("read")
            driver.find_element(By.CSS_SELECTOR, "#key-form button").click()
            wait = WebDriverWait(driver, 30)
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".card img[src]")) >= 12)
            Select(driver.find_element(By.ID, "f-device")).select_by_value("gate")
            Select(driver.find_element(By.ID, "f-bucket")).select_by_visible_text("1h")
            driver.find_element(By.ID, "apply").click()
            only_gate = "return [...document.querySelectorAll('.card')].every(c => c.dataset.device == 'gate')"
            wait.until(lambda d: d.execute_script(only_gate))
            wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, ".card img:not([src])"))
            wait.until(lambda d: "gate" in d.find_element(By.ID, "chart-note").text)
            driver.find_elements(By.CSS_SELECTOR, ".card")[0].click()
            wait.until(lambda d: "× the SPIC frame" in d.find_element(By.ID, "d-table").text)
            png = driver.get_screenshot_as_png()
        finally:
            driver.quit()
    shot = Image.open(io.BytesIO(png)).convert("RGB")
    # lossless and method are WebP's (a quarter smaller than the PNG); PNG ignores them
    palette = shot.quantize(256, method=Image.Quantize.MEDIANCUT)
    palette.save(args.out, optimize=True, lossless=True, method=6)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
