"""Every classified frame is stored and queryable: a real uvicorn over real SQLite and a real
PostgreSQL server, talking HTTP, with upload and read keys."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from cloud_service.harness import running_cloud
from edge_client.client import CloudClient
from edge_client.encoder import EdgeEncoder

UPLOAD, READ = "up-key", "read-key"
OCTET = {"Content-Type": "application/octet-stream"}


@pytest.fixture(params=["sqlite", "postgresql"])
def cloud(request, tiny_bundle, tmp_path):
    settings: dict[str, object] = dict(api_keys=UPLOAD, read_keys=READ, data_dir=tmp_path / "d")
    if request.param == "postgresql":
        settings["database_url"] = request.getfixturevalue("postgres_server")()
    with running_cloud([tiny_bundle], **settings) as url:
        yield url


@pytest.fixture(scope="module")
def frames(tiny_bundle) -> list[bytes]:
    rng = np.random.default_rng(0)
    encoder = EdgeEncoder(tiny_bundle, cache_dir=False)
    return [
        encoder.encode(Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)))
        for _ in range(6)
    ]


def upload(url: str, frame: bytes, device: str, key: str | None = None, **headers: str) -> dict:
    client = CloudClient(url, api_key=UPLOAD, device_id=device, max_retries=0)
    try:
        return client.classify(frame, key or f"{device}-{hash(frame)}", captured_at=1.7e9)
    finally:
        client.close()


def read(url: str, path: str, **params) -> httpx.Response:
    return httpx.get(url + path, params=params, headers={"Authorization": f"Bearer {READ}"})


def test_frames_are_stored_with_who_and_when_and_queried(cloud, frames):
    answers = [upload(cloud, f, "cam-a" if i % 2 else "cam-b") for i, f in enumerate(frames)]
    assert all(isinstance(a["frame_id"], int) for a in answers)
    page = read(cloud, "/v1/frames").json()
    assert [f["frame_id"] for f in page["frames"]] == [a["frame_id"] for a in answers][::-1]
    first = page["frames"][-1]
    assert first["device_id"] == "cam-b" and first["captured_at"] == "2023-11-14T22:13:20Z"
    assert first["label"] == answers[0]["label"] and first["bytes"] == len(frames[0])
    only_a = read(cloud, "/v1/frames", device="cam-a").json()["frames"]
    assert {f["device_id"] for f in only_a} == {"cam-a"} and len(only_a) == 3
    label = answers[0]["label"]
    by_label = read(cloud, "/v1/frames", label=label, min_confidence=0).json()["frames"]
    assert by_label and all(f["label"] == label for f in by_label)
    one = read(cloud, f"/v1/frames/{answers[2]['frame_id']}").json()
    assert one["frame_id"] == answers[2]["frame_id"] and one["top_k"] == answers[2]["top_k"]
    assert read(cloud, one["bitstream"]).content == frames[2]
    png = read(cloud, one["reconstruction"])
    assert png.headers["content-type"] == "image/png" and Image.open(io.BytesIO(png.content))


def test_pages_are_stable_while_frames_keep_arriving(cloud, frames):
    for i in range(8):
        upload(cloud, frames[i % len(frames)], "cam-p", key=f"p{i}")
    seen, cursor = [], None
    with ThreadPoolExecutor(1) as pool:
        late = pool.submit(
            lambda: [upload(cloud, frames[0], "cam-p", key=f"late{i}") for i in range(5)]
        )
        while True:
            params = {"device": "cam-p", "limit": 3} | ({"cursor": cursor} if cursor else {})
            page = read(cloud, "/v1/frames", **params).json()
            seen += [f["frame_id"] for f in page["frames"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        late.result()
    assert len(seen) == len(set(seen)) >= 8  # no frame twice, none of the first eight missing


def test_a_retried_frame_is_stored_once(cloud, frames):
    first = upload(cloud, frames[0], "cam-r", key="same-key")
    again = upload(cloud, frames[0], "cam-r", key="same-key")
    assert first["frame_id"] == again["frame_id"]
    assert len(read(cloud, "/v1/frames", device="cam-r").json()["frames"]) == 1


def test_keys_have_scopes(cloud, frames):
    def problem(r: httpx.Response, status: int) -> str:
        assert r.status_code == status and r.headers["content-type"].startswith(
            "application/problem+json"
        )
        return r.json()["type"]

    as_read = {**OCTET, "Authorization": f"Bearer {READ}"}
    r = httpx.post(cloud + "/v1/classify", content=frames[0], headers=as_read)
    assert problem(r, 403).endswith("wrong-key-scope")
    r = httpx.get(cloud + "/v1/frames", headers={"Authorization": f"Bearer {UPLOAD}"})
    assert problem(r, 403).endswith("wrong-key-scope")
    assert problem(httpx.get(cloud + "/v1/frames"), 401).endswith("missing-api-key")


@pytest.mark.parametrize(
    "params",
    [
        {"after": "yesterday"},
        {"limit": 0},
        {"cursor": "!!"},
        {"min_confidence": 2},
        {"device": "a b"},
    ],
)
def test_bad_query_parameters_get_422(cloud, params):
    r = read(cloud, "/v1/frames", **params)
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")


def test_bad_who_and_when_headers_get_422(cloud, frames):
    h = {**OCTET, "Authorization": f"Bearer {UPLOAD}"}
    assert (
        httpx.post(
            cloud + "/v1/classify", content=frames[0], headers={**h, "X-Device-Id": "a b"}
        ).status_code
        == 422
    )
    r = httpx.post(
        cloud + "/v1/classify", content=frames[0], headers={**h, "X-Captured-At": "noon"}
    )
    assert r.status_code == 422
    assert read(cloud, "/v1/frames/999999").status_code == 404
