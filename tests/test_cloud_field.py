"""Faults met in the field (issue 34): a timestamp that poisons the store, retention that stalls
uploads, a damaged database served as healthy, a key reused across a restart, out-of-range
cursors and symbols. Each test talks HTTP to a real uvicorn with a real SQLite file.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from bench.store_rows import prediction
from cloud_service.database import SqliteDatabase, StoreUnavailable
from cloud_service.harness import running_cloud, spawn_cloud, start_cloud, stop, wait_ready
from cloud_service.idempotency import IdempotencyStore
from cloud_service.metrics import Metrics
from cloud_service.results import FrameRecord, open_store
from cloud_service.settings import Settings
from cloud_service.state import ServiceState
from cloud_service.timeutil import now_us
from edge_client.encoder import EdgeEncoder
from shared.bundles import DEFAULT_BUNDLE
from shared.codebook import Codebook
from shared.codecs import codec_name
from shared.manifest import load_manifest
from tests.test_cloud import OCTET, _metric, is_problem, wait_for

FIELD = Path(__file__).parent / "golden" / "field"


def _frame(bundle: Path, color: tuple[int, int, int]) -> bytes:
    return EdgeEncoder(bundle, qf=48, cache_dir=False).encode(Image.new("RGB", (90, 70), color))


@pytest.fixture(scope="module")
def frames(tiny_bundle) -> tuple[bytes, bytes]:
    return _frame(tiny_bundle, (200, 40, 40)), _frame(tiny_bundle, (30, 60, 220))


def _old_rows(db_path: Path, n: int, received_us: int, size: int = 600) -> None:
    """``n`` stored frames received at ``received_us``, written straight into the SQLite file."""
    prediction = dict(model_id="0" * 16, qf=16, bytes=size, bpp=0.1, class_id=0, label="tench")
    top_k = json.dumps([{"class_id": 0, "label": "tench", "confidence": 0.9}])
    rows = [("old", None, received_us, *prediction.values(), 0.9, top_k, bytes(size))] * n
    with sqlite3.connect(db_path, timeout=30) as conn:
        conn.executemany(
            "INSERT INTO frames (device, captured_us, received_us, model_id, qf, bytes, bpp, "
            "class_id, label, confidence, top_k, frame) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )


# --- 12. an instant that exists only outside years 1..9999 in UTC -------------------------------


def test_a_capture_time_outside_utc_years_is_refused_and_not_stored(tiny_bundle, frames):
    with running_cloud([tiny_bundle]) as url:
        for when in ("0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59"):
            sent = httpx.post(
                url + "/v1/classify", content=frames[0], headers={**OCTET, "X-Captured-At": when}
            )
            assert is_problem(sent, 422)["type"].endswith("bad-captured-at")
        assert httpx.get(url + "/v1/frames").json()["frames"] == []


def test_a_row_stored_by_an_older_release_with_such_a_time_is_still_served(
    tiny_bundle, frames, tmp_path
):
    with running_cloud([tiny_bundle], data_dir=tmp_path, events_poll_s=0.05) as url:
        sent = httpx.post(url + "/v1/classify", content=frames[0], headers=OCTET).json()
        year_zero = -62135683140 * 1_000_000  # what 0001-01-01T00:00:00+23:59 was stored as
        with sqlite3.connect(tmp_path / "results.sqlite") as conn:
            conn.execute("UPDATE frames SET captured_us = ?", (year_zero,))
        page = httpx.get(url + "/v1/frames")
        assert page.status_code == 200, page.text
        assert [f["captured_at"] for f in page.json()["frames"]] == [None]
        one = httpx.get(url + f"/v1/frames/{sent['frame_id']}")
        assert one.status_code == 200 and one.json()["label"] == sent["label"]
        devices = httpx.get(url + "/v1/devices")
        assert devices.status_code == 200, devices.text
        assert devices.json()["devices"][0]["last_seen"] is None
        stats = httpx.get(url + "/v1/stats", params={"bucket": "auto"})
        assert stats.status_code == 200, stats.text
        with httpx.stream(
            "GET", url + "/v1/events", headers={"Last-Event-ID": "0"}, timeout=5
        ) as stream:
            lines = stream.iter_lines()
            assert next(lines).startswith("retry:")
            assert next(lines) == ""
            assert next(lines) == f"id: {sent['frame_id']}"


# --- 19. numbers past what the store or the model can hold --------------------------------------


def test_a_cursor_or_event_id_over_64_bits_is_refused(tiny_bundle):
    with running_cloud([tiny_bundle]) as url:
        for text in ("1" + "0" * 25 + ":1", "1:" + "9" * 25, "-" + "9" * 20 + ":1"):
            cursor = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
            is_problem(httpx.get(url + "/v1/frames", params={"cursor": cursor}), 422)
        for event_id in (b"9" * 20, b"9" * 5000, "²".encode("latin-1")):
            got = httpx.get(url + "/v1/events", headers={"Last-Event-ID": event_id})
            is_problem(got, 422)


def test_base_symbols_above_the_base_qf_are_refused():
    """A QF-128 frame's base channels are quantized at the manifest's base_qf (16); a base symbol
    between 17 and 128 is no frame an encoder makes and would dequantize above 1."""
    bundle = DEFAULT_BUNDLE
    manifest = load_manifest(bundle)
    assert manifest.enhancement is not None and manifest.enhancement.base_qf == 16
    good = next(
        p for i in manifest.ids for p in FIELD.glob(f"*-{i}-*-qf128.spic")
    ).read_bytes()  # the field frames carry the id the codec was sealed with (an alias)
    codebook = Codebook(manifest)
    frame, symbols = codebook.decode(good)
    for channel in (0, manifest.latent.channels):  # a base channel; the layer's first channel
        bad = symbols.copy()
        bad[channel, 0, 0] = 100
        data = codebook.encode(bad, 128, codec_name(frame.codec), frame.image_size)
        if channel:  # the layer's symbols go up to the frame's QF: a real frame
            assert codebook.decode(data)[1][channel, 0, 0] == 100
        else:
            forged = data
    with running_cloud([bundle]) as url:
        assert httpx.post(url + "/v1/classify", content=good, headers=OCTET).status_code == 200
        for route in ("/v1/classify", "/v1/reconstruct"):
            body = is_problem(httpx.post(url + route, content=forged, headers=OCTET), 400)
            assert body["reason"] == "corrupt_payload" and "exceeds QF 16" in body["detail"]


# --- 18. the same key with another frame after a restart ----------------------------------------


def test_a_key_reused_with_another_frame_after_a_restart_is_refused(tiny_bundle, frames, tmp_path):
    first, other = frames
    keyed = {**OCTET, "Idempotency-Key": "frame-1"}
    proc, url = start_cloud([tiny_bundle], data_dir=tmp_path)  # idempotency in memory
    try:
        answer = httpx.post(url + "/v1/classify", content=first, headers=keyed).json()
    finally:
        stop(proc)
    proc, url = start_cloud([tiny_bundle], data_dir=tmp_path)  # the keys in memory are gone
    try:
        reused = httpx.post(url + "/v1/classify", content=other, headers=keyed)
        assert is_problem(reused, 422)["type"].endswith("idempotency-key-reused")
        again = httpx.post(url + "/v1/classify", content=first, headers=keyed)  # the key's own
        assert again.status_code == 200 and again.json()["frame_id"] == answer["frame_id"]
        assert is_problem(httpx.post(url + "/v1/classify", content=other, headers=keyed), 422)
        stored = httpx.get(url + "/v1/frames").json()["frames"]
        assert [f["frame_id"] for f in stored] == [answer["frame_id"]]
    finally:
        stop(proc)


# --- 17. a damaged SQLite file ------------------------------------------------------------------


def _damage(path: Path) -> None:
    """Overwrite the file's pages from 40 % to 90 % with garbage: frame rows and their indexes
    (the schema and the migration table sit in the first pages, written first)."""
    page = 4096
    pages = path.stat().st_size // page
    with path.open("r+b") as f:
        for n in range(int(pages * 0.4), int(pages * 0.9)):
            f.seek(n * page)
            f.write(np.random.default_rng(n).integers(0, 256, page, dtype=np.uint8).tobytes())


def test_a_damaged_results_file_is_not_ready_and_answers_503(tiny_bundle, frames, tmp_path):
    open_store("", tmp_path).close()
    _old_rows(tmp_path / "results.sqlite", 3000, now_us(), size=900)
    with sqlite3.connect(tmp_path / "results.sqlite") as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _damage(tmp_path / "results.sqlite")
    proc, url = spawn_cloud([tiny_bundle], data_dir=tmp_path)
    try:
        wait_ready(proc, url + "/healthz")  # it answers, but never becomes ready
        wait_for(lambda: "store" in httpx.get(url + "/readyz").text, timeout=30)
        probe = httpx.get(url + "/readyz")
        assert "results store damaged" in is_problem(probe, 503)["detail"]
        assert probe.headers["Retry-After"]
        upload = httpx.post(url + "/v1/classify", content=frames[0], headers=OCTET)
        assert is_problem(upload, 503) and upload.headers["Retry-After"]
        for path in ("/v1/frames", "/v1/frames/1", "/v1/stats"):
            body = is_problem(httpx.get(url + path), 503)
            assert body["type"].endswith("store-unavailable"), path
    finally:
        stop(proc)


def test_damage_found_by_a_statement_is_a_store_error_and_remembered(tmp_path):
    path = tmp_path / "r.sqlite"
    open_store("", tmp_path).close()
    (tmp_path / "results.sqlite").rename(path)
    _old_rows(path, 3000, now_us(), size=900)
    _damage(path)
    db = SqliteDatabase(path)
    with pytest.raises(StoreUnavailable), db.session() as run:
        run("SELECT SUM(LENGTH(frame)) FROM frames").fetchall()  # reads every row
    assert db.damaged and "malformed" in db.damaged
    with pytest.raises(StoreUnavailable):
        db.check()
    db.close()


# --- 15. retention in batches, off the request path ---------------------------------------------


def test_retention_deletes_in_batches_counted_as_it_goes_while_uploads_go_on(
    tiny_bundle, frames, tmp_path
):
    n = 10_000
    settings = dict(
        data_dir=tmp_path,
        retention_days=1,
        retention_mb=0,
        retention_interval_s=0.5,
        retention_batch=200,
        retention_pause_ms=40,  # 50 batches: a pass of 2 s at least
    )
    with running_cloud([tiny_bundle], **settings) as url:
        _old_rows(tmp_path / "results.sqlite", n, now_us() - 2 * 86400 * 1_000_000)

        def removed() -> float:
            return _metric(url, 'spic_frames_removed_total{reason="age"}')

        wait_for(lambda: removed() > 0, timeout=10)
        seen = {removed()}
        start = time.perf_counter()
        sent = httpx.post(url + "/v1/classify", content=frames[0], headers=OCTET, timeout=10)
        took = time.perf_counter() - start
        after = removed()
        assert sent.status_code == 200 and after < n, (took, after)  # answered mid-pass
        deadline = time.monotonic() + 20
        while (value := removed()) < n and time.monotonic() < deadline:
            seen.add(value)
        assert value == n
        assert len({v for v in seen if 0 < v < n}) >= 3  # counted batch by batch
        assert all(v % 200 == 0 for v in seen)
        wait_for(lambda: _metric(url, "spic_frames_stored") == 1)


def test_size_retention_deletes_in_batches(tmp_path):
    from cloud_service.retention import apply_retention  # here: the module is new (issue 34)

    store = open_store("", tmp_path)
    _old_rows(tmp_path / "results.sqlite", 2000, now_us(), size=1024)
    kept = FrameRecord("new", None, now_us() + 1, prediction(1024, 0.1), None)
    newest = store.add(kept, bytes(1024))
    settings = Settings(
        retention_days=0, retention_mb=100 / 1024, retention_batch=300, retention_pause_ms=10
    )
    state = ServiceState(settings, Metrics(), IdempotencyStore(), results=store)
    steps: list[float] = []

    async def watch(task: asyncio.Task[None]) -> None:
        while not task.done():
            steps.append(_sample(state, "spic_frames_removed_total", reason="size"))
            # 1 ms, not 0: a loop that never sleeps holds the GIL the deleting thread needs for
            # each row it steps (20 s in the full suite). Retention pauses 10 ms between batches,
            # and this timer always fires first, so every batch is still seen.
            await asyncio.sleep(0.001)

    async def run() -> None:
        task = asyncio.create_task(apply_retention(state))
        await asyncio.gather(task, watch(task))

    asyncio.run(run())
    assert store.count() == 100 and store.get(newest) is not None  # the newest 100 kB stay
    assert _sample(state, "spic_frames_stored") == 100
    increments = sorted({b - a for a, b in zip(steps, steps[1:], strict=False) if b > a})
    assert increments and max(increments) <= 300 and len(set(steps)) >= 6
    store.close()


def _sample(state: ServiceState, name: str, **labels: str) -> float:
    return state.metrics.registry.get_sample_value(name, labels) or 0.0
