"""The dashboard in a real headless Chromium (Selenium), against a real uvicorn.

Chromium may reach 127.0.0.1 only (every other host resolves to nothing), so the page must load
entirely from the service. The test sends frames while the page is open and checks the feed, the
live stream, the per-camera lines, the camera filter on both feed and chart, a chart of one bucket
(axes, counts), the confidence filter and a frame's detail.
``SPIC_DASHBOARD_SCREENSHOT=shot.png`` keeps the screenshot it takes (a PNG): camera filter
applied, one-bucket chart, a frame's detail open; `scripts/dashboard_screenshot.py` writes the
README's docs/dashboard.webp.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cloud_service.harness import running_cloud
from edge_client.client import CloudClient
from edge_client.encoder import EdgeEncoder

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="make test installs chromium and chromium-driver"
)
UPLOAD, READ = "up-key", "read-key"


def send(url: str, frame: bytes, device: str, key: str, ago_s: float = 0) -> int:
    client = CloudClient(url, api_key=UPLOAD, device_id=device, max_retries=0)
    try:
        return int(client.classify(frame, key, captured_at=time.time() - ago_s)["frame_id"])
    finally:
        client.close()


@pytest.fixture()
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",  # offline but for us
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_dashboard_shows_frames_live_filters_and_details(browser, tiny_bundle, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    rng = np.random.default_rng(0)
    encoder = EdgeEncoder(tiny_bundle, cache_dir=False)
    frames = [
        encoder.encode(Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)))
        for _ in range(3)
    ]
    # A stream the page had open is given 1 s, not 5, to end when the service stops.
    settings = dict(api_keys=UPLOAD, read_keys=READ, data_dir=tmp_path, shutdown_timeout_s=1)
    with running_cloud([tiny_bundle], **settings) as url:
        first = send(url, frames[0], "cam-a", "k0")
        send(url, frames[2], "cam-a", "k2", ago_s=60)  # stored after, captured before

        browser.get(url + "/")
        wait = WebDriverWait(browser, 20)
        browser.find_element(By.ID, "key").send_keys(READ)
        browser.find_element(By.CSS_SELECTOR, "#key-form button").click()

        def card_ids() -> set[int]:  # read in one script: the feed may be redrawn meanwhile
            script = "return [...document.querySelectorAll('.card')].map(c => +c.dataset.frameId)"
            ids = browser.execute_script(script)
            assert len(ids) == len(set(ids)), ids  # no frame shown twice
            return set(ids)

        def texts(selector: str) -> list[str]:
            script = f"return [...document.querySelectorAll({selector!r})].map(e => e.textContent)"
            return list(browser.execute_script(script))

        wait.until(lambda _: first in card_ids())
        wait.until(lambda _: browser.find_element(By.ID, "status").text == "live")
        live = send(url, frames[1], "cam-b", "k1")  # sent while the page is open
        wait.until(lambda _: live in card_ids())

        # every resource came from the service itself, the favicon included
        urls = browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        assert urls and all(u.startswith(url) or u.startswith("blob:") for u in urls), urls
        icon = browser.execute_async_script(
            "fetch(document.querySelector('link[rel=icon]').href).then(r => arguments[0](r.status))"
        )
        assert icon == 200
        assert browser.find_elements(By.CSS_SELECTOR, "#chart rect")  # counts per label drawn

        # one line per camera, following the live feed: cam-b appears once its frame is in
        def cameras() -> dict[str, list[str]]:
            rows = browser.execute_script(
                "return [...document.querySelectorAll('#devices tbody tr')]"
                ".map(r => [...r.children].map(c => c.textContent))"
            )
            return {r[0]: r[1:] for r in rows}

        wait.until(lambda _: "cam-b" in cameras())
        a_line = cameras()["cam-a"]
        assert a_line[1:3] == ["2", "0"] and a_line[3] == f"{len(frames[0]) + len(frames[2])} B"

        # camera filter and one bucket of a day: feed and chart both show cam-b alone
        Select(browser.find_element(By.ID, "f-device")).select_by_value("cam-b")
        Select(browser.find_element(By.ID, "f-bucket")).select_by_visible_text("1d")
        browser.find_element(By.ID, "apply").click()
        wait.until(lambda _: card_ids() == {live})
        wait.until(lambda _: texts("#chart text.count") == ["1"])  # one bar, its total on top
        assert "cam-b" in browser.find_element(By.ID, "chart-note").text
        assert {"0", "1"} <= set(texts("#chart text.tick"))  # a count axis
        assert len(texts("#chart text.time")) == 1  # and the bucket's time
        widths = browser.execute_script(
            "return [...document.querySelectorAll('#chart rect')].map(r => +r.getAttribute('width'))"
        )
        assert widths and max(widths) <= 60  # a bar, not a full-width band

        browser.find_element(By.CSS_SELECTOR, f'.card[data-frame-id="{live}"]').click()
        wait.until(lambda _: "× the SPIC frame" in browser.find_element(By.ID, "d-table").text)
        detail = browser.find_element(By.ID, "detail").text
        assert f"Frame {live}" in detail and "cam-b" in detail and "bits/px" in detail
        assert browser.execute_script("return document.getElementById('d-image').naturalWidth") > 0
        shot = Path(os.environ.get("SPIC_DASHBOARD_SCREENSHOT", tmp_path / "dashboard.png"))
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000

        # a confidence no frame reaches: the feed empties and the chart says so
        browser.find_element(By.ID, "f-confidence").send_keys("100")
        browser.find_element(By.ID, "apply").click()
        wait.until(lambda _: card_ids() == set())
        wait.until(lambda _: texts("#chart text.empty") == ["no frames match"])
        # Leaving the page ends its live stream first: quitting took 6.7 s once with it open.
        browser.get("about:blank")


def test_dashboard_shows_unknown_frames(browser, tiny_bundle, tmp_path):
    """A frame the default head refuses reads "unknown" in the feed, the legend and the label
    filter (which asks for ?unknown=true)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from tests.test_heads_cloud import unknown_bundle

    bundle = unknown_bundle(tiny_bundle, tmp_path / "bundle")
    rng = np.random.default_rng(1)
    encoder = EdgeEncoder(bundle, cache_dir=False)
    frame = encoder.encode(Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)))
    settings = dict(api_keys=UPLOAD, read_keys=READ, data_dir=tmp_path / "d")
    with running_cloud([bundle], **settings) as url:
        sent = send(url, frame, "cam-u", "u0")
        browser.get(url + "/")
        wait = WebDriverWait(browser, 20)
        browser.find_element(By.ID, "key").send_keys(READ)
        browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
        card = f'.card[data-frame-id="{sent}"]'
        wait.until(lambda _: browser.find_elements(By.CSS_SELECTOR, card))
        shown = browser.find_element(By.CSS_SELECTOR, card)
        assert shown.get_attribute("data-label") == "unknown"
        assert "unknown" in shown.get_attribute("class").split()
        assert shown.text.startswith("unknown (")
        wait.until(lambda _: "unknown" in browser.find_element(By.ID, "legend").text)
        label_filter = Select(browser.find_element(By.ID, "f-label"))
        unknown = [o for o in label_filter.options if o.text.startswith("unknown")]
        assert len(unknown) == 1
        label_filter.select_by_visible_text(unknown[0].text)
        browser.find_element(By.ID, "apply").click()
        asked = "return performance.getEntriesByType('resource').map(e => e.name)"
        wait.until(lambda _: any("unknown=true" in u for u in browser.execute_script(asked)))
        wait.until(lambda _: browser.find_elements(By.CSS_SELECTOR, card))
        assert len(browser.find_elements(By.CSS_SELECTOR, ".card")) == 1
