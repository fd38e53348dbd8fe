"""The adversarial suite for the cloud: oversized and misshapen frames, memory after a large
request, slow and vanishing clients, a dying batch worker, idempotency abuse, offline docs.

Service tests talk HTTP to a real uvicorn on 127.0.0.1; the store and batcher tests drive the
real classes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from cloud_service.batcher import Batcher, Overloaded
from cloud_service.database import SqliteDatabase
from cloud_service.harness import ROOT, running_cloud, start_cloud, stop
from cloud_service.idempotency import MAX_KEY_LENGTH, IdempotencyStore, Stored
from cloud_service.idempotency_sql import SqlIdempotencyStore
from cloud_service.metrics import Metrics
from cloud_service.problems import Problem
from edge_client.encoder import EdgeEncoder
from shared import bitstream
from shared.bundles import DEFAULT_BUNDLE
from tests.test_cloud import OCTET, _metric, is_problem, wait_for


@pytest.fixture(scope="module")
def frame(tiny_bundle) -> bytes:
    return EdgeEncoder(tiny_bundle, qf=48, cache_dir=False).encode(
        Image.new("RGB", (90, 70), (200, 40, 40))
    )


@pytest.fixture(scope="module")
def cloud(tiny_bundle):
    settings = dict(header_timeout_s=1.5, body_timeout_s=1.5, api_keys="alpha,beta")
    proc, url = start_cloud([tiny_bundle], **settings)
    try:
        yield url, proc
    finally:
        stop(proc)


AUTH = {**OCTET, "Authorization": "Bearer alpha"}


def _noise(h: int, w: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


# --- 1. work bounded by the model, before decoding -----------------------------------------------


def test_declared_giant_latent_is_refused_before_decoding(cloud, frame):
    url, _ = cloud
    parsed = bitstream.unpack(frame)
    giant = dataclasses.replace(parsed, latent_shape=(4, 256, 256), image_size=(4096, 4096))
    start = time.perf_counter()
    body = is_problem(
        httpx.post(url + "/v1/reconstruct", content=bitstream.pack(giant), headers=AUTH), 413
    )
    assert body["reason"] == "over_limit" and "4096x4096" in body["detail"]
    assert time.perf_counter() - start < 2  # refused from the header (it took 14 s when decoded)


def test_real_whole_image_frames_over_the_limit_are_refused(cloud, tiny_bundle):
    url, _ = cloud
    whole = EdgeEncoder(tiny_bundle, whole_image=True, cache_dir=False)
    at_limit = whole.encode(_noise(1024, 1024))  # 1 MiPx: the default limit, served
    assert (
        httpx.post(url + "/v1/classify", content=at_limit, headers=AUTH, timeout=30).status_code
        == 200
    )
    over = whole.encode(_noise(1024, 1040))
    assert (
        is_problem(httpx.post(url + "/v1/classify", content=over, headers=AUTH), 413)["reason"]
        == "over_limit"
    )
    strip = whole.encode(_noise(16, 4096))  # few pixels, but a side over max_input_side
    assert is_problem(httpx.post(url + "/v1/classify", content=strip, headers=AUTH), 413)


def test_a_lower_service_limit_wins(tiny_bundle):
    whole = EdgeEncoder(tiny_bundle, whole_image=True, cache_dir=False).encode(_noise(256, 256))
    with running_cloud([tiny_bundle], max_input_pixels=128 * 128) as url:
        assert is_problem(httpx.post(url + "/v1/classify", content=whole, headers=OCTET), 413)
        models = httpx.get(url + "/v1/models").json()["models"]
        assert models[0]["limits"] == {"max_input_pixels": 128 * 128, "max_input_side": 2048}


# --- 2. geometry --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        dict(latent_shape=(4, 2, 8)),  # same symbols as (4, 4, 4), another H x W
        dict(image_size=(0, 0)),
        dict(image_size=(65535, 65535)),
    ],
    ids=["reshaped", "zero-image", "huge-image"],
)
def test_inconsistent_geometry_is_refused(cloud, frame, change):
    url, _ = cloud
    parsed = bitstream.unpack(frame)
    assert parsed.latent_shape == (4, 4, 4)
    bad = bitstream.pack(dataclasses.replace(parsed, **change))
    body = is_problem(httpx.post(url + "/v1/classify", content=bad, headers=AUTH), 422)
    assert body["reason"] == "geometry"


# --- 1. memory returns after a large request ----------------------------------------------------


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_memory_returns_to_baseline_after_large_reconstructions():
    whole = EdgeEncoder(DEFAULT_BUNDLE, whole_image=True, cache_dir=False)
    big = whole.encode(_noise(1024, 1024))
    small = EdgeEncoder(DEFAULT_BUNDLE, cache_dir=False).encode(_noise(300, 400))
    proc, url = start_cloud([DEFAULT_BUNDLE])
    try:
        for _ in range(3):  # warm every path first: sessions, codecs, thread pools
            assert (
                httpx.post(url + "/v1/reconstruct", content=small, headers=OCTET).status_code == 200
            )
        baseline = _rss_mb(proc.pid)
        for _ in range(3):
            r = httpx.post(url + "/v1/reconstruct", content=big, headers=OCTET, timeout=60)
            assert r.status_code == 200
        after = _rss_mb(proc.pid)
    finally:
        stop(proc)
    # One 1 MiPx reconstruction peaks ~0.4 GB above the baseline; all of it must be given back.
    assert after - baseline < 100, (baseline, after)


# --- 5. a client that disconnects mid-body ------------------------------------------------------


def test_mid_body_disconnect_is_a_499_without_traceback(tiny_bundle):
    proc, url = start_cloud([tiny_bundle])
    try:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(
                b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Length: 1000\r\n\r\n" + b"x" * 10
            )
            time.sleep(0.2)  # let the server start reading the body before the client vanishes
        wait_for(lambda: 'route="/v1/classify",status="499"' in httpx.get(url + "/metrics").text)
        metrics = httpx.get(url + "/metrics").text
        assert 'status="500"' not in metrics
    finally:
        stop(proc)
    assert "Traceback" not in proc.log_text(), proc.log_text()


# --- 7. slow clients ----------------------------------------------------------------------------


def test_a_client_sending_its_head_one_byte_a_second_is_cut_off(cloud):
    url, _ = cloud
    port = int(url.rsplit(":", 1)[1])
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 30 + b"\r\n\r\n"
    start, closed_after = time.monotonic(), None
    with socket.create_connection(("127.0.0.1", port)) as s:
        for byte in head:  # 4 bytes a second: the head would take 12 s
            try:
                s.sendall(bytes([byte]))
            except OSError:
                closed_after = time.monotonic() - start
                break
            time.sleep(0.25)
            if _readable(s) and s.recv(1) == b"":  # the server closed the connection
                closed_after = time.monotonic() - start
                break
    assert closed_after is not None and closed_after < 6  # header_timeout_s=1.5
    assert httpx.get(url + "/healthz").status_code == 200  # everyone else is still served


def _readable(s: socket.socket) -> bool:
    import select

    return bool(select.select([s], [], [], 0)[0])


def test_a_body_sent_one_byte_a_second_gets_408(cloud, frame):
    url, _ = cloud
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(
            b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            b"Authorization: Bearer alpha\r\nContent-Length: %d\r\n\r\n" % len(frame)
        )
        s.settimeout(10)
        start = time.monotonic()
        answer = b""
        for byte in frame:
            if _readable(s):
                break
            s.sendall(bytes([byte]))
            time.sleep(0.5)
        while b"\r\n\r\n" not in answer:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert time.monotonic() - start < 5


# --- 4. a dying batch worker --------------------------------------------------------------------


def test_a_wrong_model_output_fails_its_batch_and_the_worker_goes_on():
    calls = []

    def run(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        rows = len(x) + 1 if len(calls) == 1 else len(x)  # the first answer has the wrong shape
        return np.zeros((rows, 3), np.float32)

    async def scenario() -> None:
        b = Batcher(run, max_batch=4, max_delay_s=0, queue_size=8, metrics=Metrics())
        with pytest.raises(RuntimeError, match="rows"):
            await b.submit(np.zeros((2, 2), np.float32))
        out = await b.submit(np.zeros((2, 2), np.float32))
        assert out.shape == (3,) and b.alive
        await b.close()

    asyncio.run(scenario())


def test_a_dead_batch_worker_is_restarted_and_counted():
    async def scenario() -> None:
        metrics = Metrics()
        b = Batcher(lambda x: np.zeros((len(x), 3)), 4, 0, 8, metrics)
        original = b._admit
        b._admit = lambda batch: (_ for _ in ()).throw(SystemError("injected"))  # kills the task
        with pytest.raises(RuntimeError, match="worker died"):  # its frame is answered, not lost
            await asyncio.wait_for(b.submit(np.zeros((2, 2), np.float32)), 5)
        assert b.restarts == 1 and b.alive
        b._admit = original
        out = await asyncio.wait_for(b.submit(np.zeros((2, 2), np.float32)), 5)
        assert out.shape == (3,)
        assert metrics.worker_restarts._value.get() == 1
        await b.close()

    asyncio.run(scenario())


def test_readiness_fails_while_a_batch_worker_is_down():
    from cloud_service.settings import Settings
    from cloud_service.state import ServiceState

    class Dead:
        alive = False

    state = ServiceState(Settings(), Metrics(), IdempotencyStore(), ready=True)
    state.batchers["abc"] = Dead()  # type: ignore[assignment]
    assert "batch worker down for abc" in (state.not_ready_reason() or "")


# --- 6. idempotency -----------------------------------------------------------------------------


def test_blank_and_overlong_keys_are_refused_and_the_limit_is_exact(cloud, frame):
    url, _ = cloud
    for bad in ("", "k" * (MAX_KEY_LENGTH + 1)):
        body = is_problem(
            httpx.post(
                url + "/v1/classify", content=frame, headers={**AUTH, "Idempotency-Key": bad}
            ),
            400,
        )
        assert str(MAX_KEY_LENGTH) in body["detail"]
    longest = {**AUTH, "Idempotency-Key": "k" * MAX_KEY_LENGTH}
    assert httpx.post(url + "/v1/classify", content=frame, headers=longest).status_code == 200


def test_keys_are_scoped_per_api_key(cloud, frame, tiny_bundle):
    url, _ = cloud
    other = EdgeEncoder(tiny_bundle, qf=16, cache_dir=False).encode(
        Image.new("RGB", (64, 64), "blue")
    )
    key = {"Idempotency-Key": "cam-0001"}
    a = httpx.post(url + "/v1/classify", content=frame, headers={**AUTH, **key})
    b = httpx.post(
        url + "/v1/classify",
        content=other,
        headers={**OCTET, "Authorization": "Bearer beta", **key},
    )
    assert a.status_code == b.status_code == 200  # not 422: beta's key space is its own
    assert "idempotent-replayed" not in b.headers


def test_reconstructions_keep_no_png_in_the_store(cloud, frame):
    url, _ = cloud
    h = {**AUTH, "Idempotency-Key": "png-1"}
    first = httpx.post(url + "/v1/reconstruct", content=frame, headers=h)
    again = httpx.post(url + "/v1/reconstruct", content=frame, headers=h)
    assert first.status_code == again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true" and again.content == first.content
    store = IdempotencyStore()
    store.begin("k", frame)
    store.complete("k", Stored(200, b"\x89PNG" + b"\0" * 70_000, "image/png", recompute=True))
    assert store.stored_bytes() == 0 and store.begin("k", frame).recompute


def test_memory_store_is_bounded_by_entries_and_bytes():
    store = IdempotencyStore(max_entries=10, max_bytes=10_000)
    for i in range(50):
        store.begin(f"k{i}", b"x")
        store.complete(f"k{i}", Stored(200, b"y" * 900, "application/json"))
    assert len(store) <= 10 and store.stored_bytes() <= 10_000
    assert store.begin("k49", b"x") is not None  # the newest are kept


def test_sqlite_store_is_bounded(tmp_path):
    store = SqlIdempotencyStore(
        SqliteDatabase(tmp_path / "i.db"), max_entries=100, max_bytes=50_000
    )
    for i in range(300):
        store.begin(f"k{i}", b"x")
        store.complete(f"k{i}", Stored(200, b"y" * 400, "application/json"))
    store.enforce_bounds()
    assert len(store) <= 100 and store.stored_bytes() <= 50_000
    assert store.begin("k299", b"x") is not None


def test_a_starting_worker_keeps_the_live_workers_claims(tmp_path):
    db = str(tmp_path / "i.db")
    first = SqlIdempotencyStore(SqliteDatabase(db))
    assert first.begin("frame-1", b"body") is None  # worker 1 is classifying it
    second = SqlIdempotencyStore(SqliteDatabase(db))  # worker 2 starts (uvicorn --workers 2)
    with pytest.raises(Problem) as err:
        second.begin("frame-1", b"body")
    assert err.value.status == 409  # not classified a second time


def test_claims_of_a_dead_process_are_released(tmp_path):
    db = str(tmp_path / "i.db")
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(gone.stdout)
    SqlIdempotencyStore(SqliteDatabase(db))  # creates the table
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO idempotency (key, body_hash, created, owner) VALUES (?, ?, ?, ?)",
            ("orphan", "h", time.time(), f"{socket.gethostname()}:{pid}:0badc0de"),
        )
    store = SqlIdempotencyStore(SqliteDatabase(db))
    assert store.begin("orphan", b"anything") is None  # released at start, claimable again


def test_an_expired_lease_releases_a_claim():
    store = IdempotencyStore(lease_s=5)
    store.begin("k", b"x", now=100.0)
    with pytest.raises(Problem):
        store.begin("k", b"x", now=103.0)
    assert store.begin("k", b"x", now=106.0) is None


# --- 8. docs, OpenAPI, metrics ------------------------------------------------------------------


def test_docs_render_from_local_assets(cloud):
    url, _ = cloud
    html = httpx.get(url + "/docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in html and "cdn" not in html.lower()
    assert httpx.get(url + "/docs-assets/swagger-ui-bundle.js").status_code == 200
    spec = httpx.get(url + "/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    classify = spec["paths"]["/v1/classify"]["post"]
    assert any(p["name"] == "Idempotency-Key" for p in classify["parameters"])
    assert {"401", "403", "413", "422", "503"} <= set(classify["responses"])
    metrics = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]


def test_metrics_can_require_a_key(tiny_bundle):
    with running_cloud([tiny_bundle], metrics_key="scrape-me") as url:
        is_problem(httpx.get(url + "/metrics"), 401)
        ok = httpx.get(url + "/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert ok.status_code == 200 and "spic_requests_total" in ok.text


# --- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variable",
    ["SPIC_CLOUD_HEAVY_CONCURRENCY=0", "SPIC_CLOUD_QUEUE_SIZE=-1", "SPIC_CLOUD_MAX_BATCH_SIZE=0"],
)
def test_zero_or_negative_settings_are_refused_at_start(variable):
    name, value = variable.split("=")
    env = {**os.environ, "PYTHONPATH": str(ROOT), name: value}
    out = subprocess.run(
        [sys.executable, "-m", "cloud_service.cli", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and name in out.stderr, out.stderr


def test_frames_are_still_served_while_heavy_frames_fill_their_lane(cloud, frame, tiny_bundle):
    """Heavy frames beyond the heavy lane's bound are shed with 503; ordinary frames are not."""
    url, _ = cloud
    big = EdgeEncoder(tiny_bundle, whole_image=True, cache_dir=False).encode(_noise(1024, 1024))
    from concurrent.futures import ThreadPoolExecutor

    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(12) as pool:
        heavy = [
            pool.submit(client.post, url + "/v1/reconstruct", content=big, headers=AUTH)
            for _ in range(12)
        ]
        wait_for(lambda: _metric(url, "spic_heavy_pending") >= 2)
        normal = client.post(url + "/v1/classify", content=frame, headers=AUTH)
        codes = [f.result().status_code for f in heavy]
    assert normal.status_code == 200
    assert set(codes) <= {200, 503} and 503 in codes, codes


# --- 3. no blocking work on the event loop ------------------------------------------------------


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def test_decoding_png_and_the_store_run_off_the_event_loop(
    tiny_bundle, frame, tmp_path, monkeypatch
):
    from fastapi.testclient import TestClient

    from cloud_service.app import create_app
    from cloud_service.services import inference
    from cloud_service.settings import Settings

    seen: dict[str, list[bool]] = {}

    def spy(name, fn):
        def wrapped(*args, **kwargs):
            seen.setdefault(name, []).append(_on_event_loop())
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(inference, "decode_latent", spy("decode", inference.decode_latent))
    monkeypatch.setattr(inference, "reconstruct_png", spy("png", inference.reconstruct_png))
    settings = Settings(
        bundles=[tiny_bundle], idempotency_db=str(tmp_path / "i.db"), data_dir=str(tmp_path / "d")
    )
    app = create_app(settings)
    store = app.state.spic.idempotency
    monkeypatch.setattr(store, "begin", spy("store", store.begin))
    monkeypatch.setattr(store, "complete", spy("store", store.complete))
    with TestClient(app) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200)
        for route in ("/v1/classify", "/v1/reconstruct"):
            r = client.post(route, content=frame, headers={**OCTET, "Idempotency-Key": route})
            assert r.status_code == 200
    assert set(seen) == {"decode", "png", "store"}
    assert not any(any(calls) for calls in seen.values()), seen


# --- 9. shedding instead of queueing for seconds ------------------------------------------------


def test_frames_that_waited_too_long_are_shed_not_classified_late():
    import threading

    release = threading.Event()

    def slow_run(x: np.ndarray) -> np.ndarray:
        release.wait(5)  # the classifier is stuck on the first batch
        return np.zeros((len(x), 3), np.float32)

    async def scenario() -> None:
        b = Batcher(slow_run, 1, 0, 8, Metrics(), max_wait_s=0.05)
        first = asyncio.ensure_future(b.submit(np.zeros(2, np.float32)))
        await asyncio.sleep(0.01)
        late = asyncio.ensure_future(b.submit(np.zeros(2, np.float32)))
        await asyncio.sleep(0.2)  # ``late`` has now waited four times its budget
        release.set()
        assert (await first).shape == (3,)
        with pytest.raises(Overloaded):
            await late
        await b.close()

    asyncio.run(scenario())


def test_a_retry_while_the_answer_is_being_written_is_still_in_flight(tmp_path):
    """The claim counts as held until complete() has written the answer: a retry arriving in
    that window must get 409, not release the claim as stale and run the frame a second time."""
    from contextlib import contextmanager

    store = SqlIdempotencyStore(SqliteDatabase(tmp_path / "i.db"))
    assert store.begin("k", b"x") is None
    session, seen = store.db.session, []

    @contextmanager
    def session_with_a_retry():
        if not seen:  # the first session of complete(): the retry lands before the UPDATE
            seen.append(True)
            with pytest.raises(Problem) as err:
                store.begin("k", b"x")
            seen.append(err.value.status)
        with session() as run:
            yield run

    store.db.session = session_with_a_retry  # type: ignore[method-assign]
    store.complete("k", Stored(200, b"{}", "application/json"))
    store.db.session = session  # type: ignore[method-assign]
    assert seen == [True, 409]
    assert store.begin("k", b"x") is not None  # and the answer is stored for the next retry
