"""Every classified frame is stored and queryable: a real uvicorn over real SQLite and a real
PostgreSQL server, talking HTTP, with upload and read keys."""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

from cloud_service.harness import running_cloud
from edge_client.client import CloudClient
from tests.conftest import on_engine
from tests.test_cloud import _metric

UPLOAD, READ = "up-key", "read-key"
OCTET = {"Content-Type": "application/octet-stream"}


@pytest.fixture(params=["sqlite", "postgresql"])
def cloud(request, tiny_bundle, tmp_path):
    settings = on_engine(request, dict(api_keys=UPLOAD, read_keys=READ, data_dir=tmp_path / "d"))
    with running_cloud([tiny_bundle], **settings) as url:
        yield url


@pytest.fixture(scope="module")
def frames(noise_frames) -> list[bytes]:
    return noise_frames(6, seed=0)


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
    assert read(cloud, one["reconstruction"]).content == png.content  # from the cache
    cache = "spic_reconstruction_cache_total"
    counted = {o: _metric(cloud, f'{cache}{{outcome="{o}"}}') for o in ("hit", "miss")}
    assert counted == {"hit": 1.0, "miss": 1.0}


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


def test_stats_count_per_label_and_bucket(cloud, frames):
    answers = [upload(cloud, f, "cam-s", key=f"s{i}") for i, f in enumerate(frames)]
    body = read(cloud, "/v1/stats", group_by="label", bucket="1d").json()
    counted = {r["group"]: r["count"] for r in body["rows"]}
    expected: dict[str, int] = {}
    for a in answers:
        expected[a["label"]] = expected.get(a["label"], 0) + 1
    assert counted == expected and body["bucket"] == "1d"
    assert all(r["bucket_start"].endswith("T00:00:00Z") for r in body["rows"])
    by_device = read(cloud, "/v1/stats", group_by="device").json()["rows"]
    assert sum(r["count"] for r in by_device if r["group"] == "cam-s") == len(frames)
    assert read(cloud, "/v1/stats", group_by="colour").status_code == 422


def _events(
    url: str, n: int, last_event_id: str | None = None, started=None, **params
) -> list[tuple[str, dict]]:
    """Read ``n`` frame events from /v1/events (a real streaming HTTP response); ``started`` is
    set once the server has opened the stream (its first line)."""
    import json

    headers = {"Authorization": f"Bearer {READ}"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    got: list[tuple[str, dict]] = []
    with httpx.stream("GET", url + "/v1/events", params=params, headers=headers, timeout=20) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        event_id = None
        for line in r.iter_lines():
            if line.startswith("retry:") and started is not None:
                started.set()
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: ") and event_id is not None:
                got.append((event_id, json.loads(line[6:])))
                if len(got) == n:
                    break
    return got


def test_live_events_arrive_in_order_and_resume_with_last_event_id(cloud, frames):
    upload(cloud, frames[0], "cam-e", key="before")  # stored before anyone listens: not sent
    with ThreadPoolExecutor(1) as pool:
        started = threading.Event()
        listening = pool.submit(_events, cloud, 3, None, started, device="cam-e")
        assert started.wait(20)  # the stream starts at the newest frame; what follows is live
        sent = [upload(cloud, frames[i], "cam-e", key=f"live{i}")["frame_id"] for i in (1, 2)]
        upload(cloud, frames[3], "cam-other", key="other")  # filtered out
        sent.append(upload(cloud, frames[4], "cam-e", key="live4")["frame_id"])
        got = listening.result(timeout=30)
    assert [int(i) for i, _ in got] == sent and [d["frame_id"] for _, d in got] == sent
    # The consumer was away while two more arrived; it reconnects with the last id it saw.
    missed = [upload(cloud, frames[5], "cam-e", key=f"missed{i}")["frame_id"] for i in (0, 1)]
    resumed = _events(cloud, 2, got[-1][0], device="cam-e")
    assert [d["frame_id"] for _, d in resumed] == missed


def test_delete_needs_an_admin_key(tiny_bundle, tmp_path, frames):
    settings = dict(api_keys=UPLOAD, read_keys=READ, admin_keys="admin-key", data_dir=tmp_path)
    with running_cloud([tiny_bundle], **settings) as url:
        frame_id = upload(url, frames[0], "cam-d")["frame_id"]
        as_read = {"Authorization": f"Bearer {READ}"}
        as_admin = {"Authorization": "Bearer admin-key"}
        r = httpx.delete(f"{url}/v1/frames/{frame_id}", headers=as_read)
        assert r.status_code == 403 and r.json()["type"].endswith("wrong-key-scope")
        assert httpx.delete(f"{url}/v1/frames/{frame_id}", headers=as_admin).status_code == 204
        assert httpx.delete(f"{url}/v1/frames/{frame_id}", headers=as_admin).status_code == 404
        assert read(url, f"/v1/frames/{frame_id}").status_code == 404
        assert 'spic_frames_removed_total{reason="deleted"} 1.0' in httpx.get(url + "/metrics").text


@pytest.mark.parametrize(
    "rule, reason",
    [(dict(retention_days=1e-6), "age"), ({}, "size")],  # 1e-6 days: 0.09 s
)
def test_retention_runs_in_the_background_and_is_counted(
    tiny_bundle, tmp_path, frames, rule, reason
):
    from tests.test_cloud import wait_for

    if reason == "size":  # room for exactly the two newest frames
        rule = dict(retention_mb=(len(frames[-1]) + len(frames[-2])) / (1 << 20))
    settings = dict(data_dir=tmp_path, retention_interval_s=0.2, **rule)
    with running_cloud([tiny_bundle], **settings) as url:
        for i, f in enumerate(frames):
            upload(url, f, "cam-t", key=f"t{i}")

        def removed() -> float:
            for line in httpx.get(url + "/metrics").text.splitlines():
                if line.startswith(f'spic_frames_removed_total{{reason="{reason}"}}'):
                    return float(line.rsplit(" ", 1)[1])
            return 0.0

        wait_for(lambda: removed() >= (len(frames) if reason == "age" else len(frames) - 2))
        left = httpx.get(url + "/v1/frames").json()["frames"]
        expected = [] if reason == "age" else [len(frames[-1]), len(frames[-2])]
        assert [f["bytes"] for f in left] == expected


def test_a_frame_deleted_elsewhere_is_not_rendered_from_the_cache(tiny_bundle, tmp_path, frames):
    """Retention and other replicas delete rows without this worker's cache hearing of it: the
    store says whether the frame is still there, the cache only saves the decode."""
    import sqlite3

    with running_cloud([tiny_bundle], data_dir=tmp_path) as url:
        frame_id = upload(url, frames[0], "cam-r")["frame_id"]
        path = f"/v1/frames/{frame_id}/reconstruction"
        assert httpx.get(url + path).status_code == 200  # rendered and cached
        with sqlite3.connect(tmp_path / "results.sqlite") as db:  # as retention would
            db.execute("DELETE FROM frames WHERE id = ?", (frame_id,))
        assert httpx.get(url + path).status_code == 404
