"""The cloud service, as a real uvicorn process on 127.0.0.1, over real HTTP."""

from __future__ import annotations

import io
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cloud_service.app import create_app
from cloud_service.harness import running_cloud
from cloud_service.settings import Settings
from cloud_service.state import require_ready
from edge_client.encoder import EdgeEncoder
from shared import bitstream
from shared.manifest import load_manifest

OCTET = {"Content-Type": "application/octet-stream"}


@pytest.fixture(scope="module")
def cloud(tiny_bundle):
    with running_cloud([tiny_bundle]) as url:
        yield url


@pytest.fixture(scope="module")
def frame(tiny_bundle) -> bytes:
    return EdgeEncoder(tiny_bundle, qf=48, cache_dir=False).encode(
        Image.new("RGB", (90, 70), (200, 40, 40))
    )


def is_problem(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert (
        body["status"] == status and body["type"].startswith("urn:spic:problem:") and body["title"]
    )
    return body


def test_health_models_and_docs(cloud, tiny_bundle):
    assert httpx.get(cloud + "/healthz").json() == {"status": "live"}
    model_id = load_manifest(tiny_bundle).model_id
    assert httpx.get(cloud + "/readyz").json()["models"] == [model_id]
    models = httpx.get(cloud + "/v1/models").json()["models"]
    assert models[0]["model_id"] == model_id and models[0]["qfs"] == [16, 48, 128]
    assert httpx.get(cloud + "/docs").status_code == 200
    assert "/v1/classify" in httpx.get(cloud + "/openapi.json").json()["paths"]


def test_classify_answers_from_the_latent(cloud, frame, tiny_bundle):
    resp = httpx.post(cloud + "/v1/classify", content=frame, headers=OCTET)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["label"] in ("tench", "English springer") and 0 <= body["confidence"] <= 1
    assert body["bytes"] == len(frame) and body["bits"] == 8 * len(frame) and body["qf"] == 48
    assert body["bpp"] == pytest.approx(8 * len(frame) / 64**2) and body["image_size"] == [90, 70]
    assert len(body["top_k"]) == 2 and abs(sum(t["confidence"] for t in body["top_k"]) - 1) < 1e-5
    assert body["request_id"] == resp.headers["x-request-id"]


def test_reconstruct_returns_a_png(cloud, frame):
    resp = httpx.post(cloud + "/v1/reconstruct", content=frame, headers=OCTET)
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(resp.content)).size == (64, 64)


def test_frame_of_another_model_names_both_ids(cloud, frame, tiny_bundle):
    data = bytearray(frame)
    data[8:16] = bytes.fromhex("0123456789abcdef")
    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
    body = is_problem(httpx.post(cloud + "/v1/classify", content=bytes(data), headers=OCTET), 409)
    served = load_manifest(tiny_bundle).model_id
    assert "0123456789abcdef" in body["detail"] and served in body["detail"]
    assert body["served_model_ids"] == [served]


def test_bad_requests(cloud, frame):
    assert (
        is_problem(httpx.post(cloud + "/v1/classify", content=frame[:-3], headers=OCTET), 400)[
            "reason"
        ]
        == "truncated"
    )
    is_problem(
        httpx.post(cloud + "/v1/classify", content=frame, headers={"Content-Type": "image/jpeg"}),
        415,
    )
    is_problem(httpx.post(cloud + "/v1/classify", content=b""), 415)
    is_problem(httpx.post(cloud + "/v1/classify", content=b"", headers=OCTET), 400)
    is_problem(httpx.get(cloud + "/v1/classify"), 405)
    is_problem(httpx.get(cloud + "/nope"), 404)


def test_body_limit_is_enforced_while_reading(tiny_bundle):
    with running_cloud([tiny_bundle], max_body_bytes=1000) as url:
        is_problem(httpx.post(url + "/v1/classify", content=b"\0" * 1001, headers=OCTET), 413)

        def chunks():  # no Content-Length: the limit must trip while streaming
            for _ in range(100):
                yield b"\0" * 100

        is_problem(httpx.post(url + "/v1/classify", content=chunks(), headers=OCTET), 413)


def test_api_keys(tiny_bundle, frame):
    with running_cloud([tiny_bundle], api_keys="alpha,beta") as url:
        is_problem(httpx.post(url + "/v1/classify", content=frame, headers=OCTET), 401)
        is_problem(
            httpx.post(
                url + "/v1/classify", content=frame, headers={**OCTET, "Authorization": "Basic x"}
            ),
            401,
        )
        is_problem(
            httpx.post(
                url + "/v1/classify",
                content=frame,
                headers={**OCTET, "Authorization": "Bearer gamma"},
            ),
            403,
        )
        ok = httpx.post(
            url + "/v1/classify", content=frame, headers={**OCTET, "Authorization": "Bearer beta"}
        )
        assert ok.status_code == 200
        assert httpx.get(url + "/healthz").status_code == 200  # probes need no key


def test_idempotency(cloud, frame, tiny_bundle):
    other = EdgeEncoder(tiny_bundle, qf=16, cache_dir=False).encode(
        Image.new("RGB", (64, 64), "blue")
    )
    h = {**OCTET, "Idempotency-Key": "frame-0001"}
    first = httpx.post(cloud + "/v1/classify", content=frame, headers=h)
    again = httpx.post(cloud + "/v1/classify", content=frame, headers=h)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    is_problem(httpx.post(cloud + "/v1/classify", content=other, headers=h), 422)
    fresh = httpx.post(
        cloud + "/v1/classify", content=frame, headers={**OCTET, "Idempotency-Key": "frame-0002"}
    )
    assert fresh.json()["request_id"] != first.json()["request_id"]


def _metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_for(condition, timeout: float = 10.0) -> None:
    """Poll ``condition`` until true (a state the test can see, never a blind sleep)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_idempotency_in_flight_gets_409(tiny_bundle, frame):
    # The first request waits 3 s for batch company: it is claimed and in flight until then.
    settings = dict(max_batch_delay_ms=3000, max_queue_wait_ms=10000, max_batch_size=8)
    with running_cloud([tiny_bundle], **settings) as url:
        h = {**OCTET, "Idempotency-Key": "slow"}
        with ThreadPoolExecutor(2) as pool:
            slow = pool.submit(
                httpx.post, url + "/v1/classify", content=frame, headers=h, timeout=20
            )
            wait_for(lambda: _metric(url, "spic_queue_depth") >= 1)  # claimed, now batching
            second = httpx.post(url + "/v1/classify", content=frame, headers=h)
            assert slow.result().status_code == 200
        assert is_problem(second, 409) and "retry-after" in second.headers
        third = httpx.post(url + "/v1/classify", content=frame, headers=h)
        assert third.headers["idempotent-replayed"] == "true"


def test_backpressure_answers_503_with_retry_after(tiny_bundle):
    big = EdgeEncoder(tiny_bundle, whole_image=True, cache_dir=False).encode(
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (1024, 1024, 3), dtype=np.uint8))
    )
    with (
        running_cloud([tiny_bundle], queue_size=1, max_batch_size=1, max_body_bytes=1 << 22) as url,
        httpx.Client(timeout=30) as client,
        ThreadPoolExecutor(32) as pool,
    ):
        answers = list(
            pool.map(
                lambda _: client.post(url + "/v1/classify", content=big, headers=OCTET),
                range(64),
            )
        )
    codes = [a.status_code for a in answers]
    assert set(codes) <= {200, 503} and codes.count(503) >= 1 and codes.count(200) >= 1, codes
    shed = next(a for a in answers if a.status_code == 503)
    assert shed.headers["retry-after"] == "1" and is_problem(shed, 503)["type"].endswith(
        "overloaded"
    )


def _mutations(frame: bytes, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    head = bytes(frame[: bitstream.HEADER_SIZE])
    for i in range(n):
        kind = i % 6
        data = bytearray(frame)
        if kind == 0:  # bit flips
            for _ in range(int(rng.integers(1, 4))):
                pos = int(rng.integers(0, len(data) * 8))
                data[pos // 8] ^= 1 << (pos % 8)
        elif kind == 1:  # truncation
            data = data[: int(rng.integers(0, len(data)))]
        elif kind == 2:  # random bytes
            data = bytearray(
                rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8).tobytes()
            )
        elif kind in (3, 4):  # a valid header and CRC around garbage: reaches the entropy decoders
            payload = rng.integers(0, 256, int(rng.integers(0, 120)), dtype=np.uint8).tobytes()
            h = bytearray(head)
            h[5] = 1 + int(rng.integers(0, 2))  # either codec
            h[26:30] = struct.pack("<I", len(payload))
            body = bytes(h) + payload
            data = bytearray(body + struct.pack("<I", zlib.crc32(body)))
        else:  # huge or odd declared shapes, with a valid CRC
            h = bytearray(head)
            struct.pack_into("<HHH", h, 16, *(int(v) for v in rng.integers(0, 65536, 3)))
            h[6] = int(rng.integers(0, 256))
            body = bytes(h) + bytes(frame[bitstream.HEADER_SIZE : -4])
            data = bytearray(body + struct.pack("<I", zlib.crc32(body)))
        yield bytes(data)


def test_fuzz_ten_thousand_mutated_frames_get_no_5xx(cloud, frame):
    statuses: dict[int, int] = {}
    with httpx.Client(timeout=30) as client:
        for data in _mutations(frame, 10_000):
            code = client.post(cloud + "/v1/classify", content=data, headers=OCTET).status_code
            statuses[code] = statuses.get(code, 0) + 1
    assert all(code < 500 for code in statuses), statuses
    assert statuses.get(400, 0) > 5000, statuses


def test_not_ready_and_dependency_override(tmp_path):
    app = create_app(
        Settings(bundles=[tmp_path / "missing"], api_keys=[], data_dir=str(tmp_path / "data"))
    )
    with TestClient(app) as client:
        for _ in range(50):
            if app.state.spic.load_error:
                break
            time.sleep(0.05)
        body = client.get("/readyz").json()
        assert body["status"] == 503 and "missing" in body["detail"]
        assert client.post("/v1/classify", content=b"x", headers=OCTET).status_code == 503
        app.dependency_overrides[require_ready] = lambda: None
        resp = client.post(
            "/v1/classify",
            content=bitstream.pack(
                bitstream.Frame(
                    codec=2,
                    qf=16,
                    model_id=b"\x01" * 8,
                    latent_shape=(4, 1, 1),
                    image_size=(16, 16),
                    payload=b"",
                )
            ),
            headers=OCTET,
        )
        assert resp.status_code == 409 and resp.json()["served_model_ids"] == []


def test_sqlite_idempotency_survives_a_restart(tiny_bundle, frame, tmp_path):
    db = tmp_path / "idem.sqlite"
    h = {**OCTET, "Idempotency-Key": "persisted-1"}
    with running_cloud([tiny_bundle], idempotency_db=db) as url:
        first = httpx.post(url + "/v1/classify", content=frame, headers=h)
    with running_cloud([tiny_bundle], idempotency_db=db) as url:  # a new process, the same file
        again = httpx.post(url + "/v1/classify", content=frame, headers=h)
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
