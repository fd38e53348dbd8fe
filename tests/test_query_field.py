"""Issue 34 in the field: the query API files frames under the time they were captured, says what
it cannot answer, and never makes an upload wait behind a read. A real uvicorn over real SQLite
and a real PostgreSQL server, talking HTTP; the store-level checks open the stores directly."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import pytest

from cloud_service.harness import running_cloud
from cloud_service.results import FrameQuery, FrameRecord, ResultsStore, open_store
from edge_client.client import CloudClient
from shared.schemas import Prediction
from tests.conftest import on_engine

UPLOAD, READ, ADMIN = "up-key", "read-key", "admin-key"
HOUR, DAY = 3600.0, 86400.0


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def cloud(request, tiny_bundle, tmp_path_factory):
    """One service per engine for the module; each test uses cameras of its own."""
    data = tmp_path_factory.mktemp("d")
    settings = on_engine(
        request, dict(api_keys=UPLOAD, read_keys=READ, admin_keys=ADMIN, data_dir=data)
    )
    with running_cloud([tiny_bundle], **settings) as url:
        yield url


@pytest.fixture(scope="module")
def frames(noise_frames) -> list[bytes]:
    return noise_frames(3, seed=1)


def upload(url: str, frame: bytes, device: str, key: str, captured_at: float | None) -> dict:
    client = CloudClient(url, api_key=UPLOAD, device_id=device, max_retries=0)
    try:
        return client.classify(frame, key, captured_at=captured_at)
    finally:
        client.close()


def read(url: str, path: str, key: str = READ, **params) -> httpx.Response:
    return httpx.get(url + path, params=params, headers={"Authorization": f"Bearer {key}"})


def problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert {"type", "title", "status", "detail"} <= body.keys()
    return body


def day_start(seconds: float) -> float:
    return (
        datetime.fromtimestamp(seconds, UTC)
        .replace(hour=0, minute=0, second=0, microsecond=0)
        .timestamp()
    )


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


# --- 5. capture time, not arrival time --------------------------------------------------------


def test_frames_queued_through_an_outage_are_filed_when_they_were_captured(cloud, frames):
    """Two frames captured two days ago and yesterday, sent only now (the edge queued them through
    an outage), and one captured now: each lands in the bucket and window of its capture."""
    today = day_start(time.time())
    captured = [today - 2 * DAY + HOUR, today - DAY + HOUR, None]
    sent = [
        upload(cloud, f, "cam-outage", f"outage-{i}", c)
        for i, (f, c) in enumerate(zip(frames, captured, strict=True))
    ]
    rows = read(cloud, "/v1/stats", device="cam-outage", bucket="1d").json()["rows"]
    per_day: dict[str, int] = {}
    for r in rows:
        per_day[r["bucket_start"]] = per_day.get(r["bucket_start"], 0) + r["count"]
    assert per_day == {iso(today - 2 * DAY): 1, iso(today - DAY): 1, iso(today): 1}

    yesterday = read(
        cloud, "/v1/frames", device="cam-outage", after=iso(today - DAY), before=iso(today)
    ).json()["frames"]
    assert [f["frame_id"] for f in yesterday] == [sent[1]["frame_id"]]
    stored = yesterday[0]
    assert stored["captured_at"] == iso(today - DAY + HOUR)
    assert stored["received_at"] >= iso(today)  # the time it arrived, kept beside it
    newest_first = read(cloud, "/v1/frames", device="cam-outage").json()["frames"]
    assert [f["frame_id"] for f in newest_first] == [a["frame_id"] for a in sent][::-1]


# --- 6. what the query API says it cannot answer ------------------------------------------------


@pytest.mark.parametrize(
    "path, params",
    [
        ("/v1/frames", {"qf": "128"}),
        ("/v1/stats", {"bucket": "1d", "camera": "cam-a"}),
        ("/v1/devices", {"limt": "5"}),
        ("/v1/events", {"device": "cam-a", "min_conf": "0.5"}),
        ("/v1/models", {"model": "x"}),
    ],
)
def test_unknown_query_parameters_are_refused(cloud, path, params):
    body = problem(read(cloud, path, **params), 422)
    unknown = [k for k in params if k not in ("bucket", "device")]
    assert body["type"].endswith("unknown-query-parameter") and body["unknown"] == unknown
    assert repr(unknown[0]) in body["detail"] and "takes:" in body["detail"]


def test_labels_match_whatever_their_case(cloud, frames):
    label = upload(cloud, frames[0], "cam-case", "case-0", None)["label"]
    for asked in (label.upper(), label.lower(), label.swapcase(), label):
        found = read(cloud, "/v1/frames", device="cam-case", label=asked).json()["frames"]
        assert [f["label"] for f in found] == [label], asked


def test_stats_filter_by_camera_label_and_confidence(cloud, frames):
    sent = [upload(cloud, f, "cam-sa", f"sa-{i}", None) for i, f in enumerate(frames)]
    upload(cloud, frames[0], "cam-sb", "sb-0", None)
    rows = read(cloud, "/v1/stats", device="cam-sa", bucket="1d").json()["rows"]
    assert sum(r["count"] for r in rows) == len(frames)
    by_device = read(cloud, "/v1/stats", group_by="device", device="cam-sb").json()["rows"]
    assert [(r["group"], r["count"]) for r in by_device] == [("cam-sb", 1)]
    top = max(a["confidence"] for a in sent)
    confident = read(cloud, "/v1/stats", device="cam-sa", min_confidence=top).json()["rows"]
    assert sum(r["count"] for r in confident) == sum(a["confidence"] >= top for a in sent)
    label = sent[0]["label"]
    labelled = read(cloud, "/v1/stats", device="cam-sa", label=label.upper()).json()["rows"]
    assert {r["group"] for r in labelled} == {label}
    assert sum(r["count"] for r in labelled) == sum(a["label"] == label for a in sent)


def test_a_read_key_lists_the_models_and_their_classes(cloud):
    for key in (READ, ADMIN, UPLOAD):
        r = read(cloud, "/v1/models", key=key)
        assert r.status_code == 200, (key, r.text)
        assert r.json()["models"][0]["classes"]
    assert problem(read(cloud, "/v1/models", key="nobody"), 403)["type"].endswith("wrong-api-key")


def test_validation_errors_say_what_is_wrong_in_words(cloud):
    body = problem(read(cloud, "/v1/frames", limit=0, device="a b"), 422)
    assert not body["detail"].startswith("[") and "{'" not in body["detail"]
    assert "query limit: Input should be greater than or equal to 1" in body["detail"]
    assert [(e["in"], e["name"]) for e in body["errors"]] == [
        ("query", "device"),
        ("query", "limit"),
    ]
    assert all(e["reason"] for e in body["errors"])


# --- 7. the dashboard's data: per camera, favicon -----------------------------------------------


def test_devices_say_last_seen_frames_today_unknowns_and_bytes(cloud, frames):
    now = time.time()
    upload(cloud, frames[0], "cam-dv1", "dv-0", now - 3 * DAY)
    upload(cloud, frames[1], "cam-dv1", "dv-1", now - 60)
    upload(cloud, frames[2], "cam-dv2", "dv-2", now - 3 * DAY)
    body = read(cloud, "/v1/devices", since=iso(now - DAY)).json()
    rows = {d["device_id"]: d for d in body["devices"]}
    last_seen = rows["cam-dv1"].pop("last_seen")
    assert last_seen[:19] == iso(now - 60)[:19]  # the newest capture, to the second
    assert rows["cam-dv1"] == {
        "device_id": "cam-dv1",
        "frames": 2,
        "frames_since": 1,
        "unknowns_since": 0,  # every stored frame has a label (yet)
        "bytes_since": len(frames[1]),
    }
    assert rows["cam-dv2"]["frames_since"] == 0 and rows["cam-dv2"]["bytes_since"] == 0
    assert body["since"][:16] == iso(now - DAY)[:16] and body["more"] is False
    default = read(cloud, "/v1/devices").json()
    assert default["since"] == iso(day_start(now))  # today, by default
    for bad in ("yesterday", "9999-12-31T23:59:59-14:00"):  # the second is year 10000 in UTC
        assert problem(read(cloud, "/v1/devices", since=bad), 422)["type"].endswith("bad-query")
    assert problem(read(cloud, "/v1/devices", key=UPLOAD), 403)


def test_the_dashboard_has_a_favicon(cloud):
    r = httpx.get(cloud + "/favicon.ico")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in r.content


# --- 14. bounded reads, off the write path ------------------------------------------------------


def test_stats_refuse_more_buckets_than_the_limit_or_pick_one_that_fits(cloud, frames):
    now = time.time()
    upload(cloud, frames[0], "cam-span", "span-0", now - 5 * DAY)  # 7200 minutes apart
    upload(cloud, frames[1], "cam-span", "span-1", now - 60)
    body = problem(read(cloud, "/v1/stats", device="cam-span", bucket="1m"), 422)
    assert body["type"].endswith("too-many-buckets") and body["max_buckets"] == 1000
    assert "1000" in body["detail"] and "bucket=15m" in body["detail"]
    auto = read(cloud, "/v1/stats", device="cam-span", bucket="auto").json()
    assert auto["bucket"] == "15m" and sum(r["count"] for r in auto["rows"]) == 2
    assert len({r["bucket_start"] for r in auto["rows"]}) == 2
    # a window narrower than the frames' span is counted against the limit, not the span
    narrow = read(cloud, "/v1/stats", device="cam-span", bucket="1m", after=iso(now - HOUR))
    assert narrow.status_code == 200 and sum(r["count"] for r in narrow.json()["rows"]) == 1


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    url = request.getfixturevalue("postgres_server")() if request.param == "postgresql" else ""
    s = open_store(url, tmp_path)
    yield s
    s.close()


def record(device: str, at_us: int) -> FrameRecord:
    p = Prediction(
        model_id="m", qf=16, bytes=300, bpp=0.1, class_id=0, label="church", confidence=0.5,
        top_k=[],
    )  # fmt: skip
    return FrameRecord(device, at_us, at_us + 1000, p)


def test_an_upload_never_waits_behind_a_read(store: ResultsStore):
    """A read holds its connection (a long scan, a client reading slowly) while a frame is
    stored: the write goes through a connection of its own and is not kept waiting."""
    store.add(record("cam-w", 1_000_000), b"x" * 300)
    reading, release = threading.Event(), threading.Event()

    def long_read() -> None:
        with store.db.read_session() as run:
            run("SELECT id FROM frames").fetchone()  # a read transaction open on SQLite
            reading.set()
            release.wait(10)

    with ThreadPoolExecutor(2) as pool:
        held = pool.submit(long_read)
        assert reading.wait(10)
        start = time.perf_counter()
        stored = pool.submit(store.add, record("cam-w", 2_000_000), b"y" * 300)
        frame_id = stored.result(timeout=5)
        waited = time.perf_counter() - start
        release.set()
        held.result(timeout=10)
    assert waited < 1.0, waited
    assert store.get(frame_id) is not None  # and reads see it once committed


def test_a_store_of_the_previous_schema_is_upgraded_in_place(tmp_path):
    """Frames stored before capture-time filing are found by capture time after the upgrade."""
    from cloud_service.database import SqliteDatabase, migrate
    from cloud_service.results import MIGRATIONS

    old = ResultsStore.__new__(ResultsStore)
    old.db, old.engine = SqliteDatabase(tmp_path / "results.sqlite"), "sqlite"
    assert migrate(old.db, "spic_schema", MIGRATIONS[:1]) == 1
    with old.db.session() as run:  # a row as schema 1 wrote it: no unknown, no heads
        frame_id = run(
            "INSERT INTO frames (device, captured_us, received_us, model_id, qf, bytes, bpp, "
            "class_id, label, confidence, top_k, frame) VALUES "
            "('cam-old', 5000000, 5001000, 'm', 16, 300, 0.1, 0, 'church', 0.5, '[]', x'78') "
            "RETURNING id"
        ).fetchone()[0]
    old.close()
    store = open_store("", tmp_path)
    assert store.schema_version == MIGRATIONS[-1][0]
    found, _ = store.query(FrameQuery(label="CHURCH", after_us=5_000_000, before_us=5_000_001))
    assert [r.id for r in found] == [frame_id]
    # Migration 3: a frame stored before heads reads as known, with no per-head predictions.
    assert found[0].prediction.unknown is False and found[0].prediction.heads is None
    assert found[0].prediction.label == "church"
    store.close()


def test_every_filter_is_answered_from_an_index(tmp_path):
    """SQLite's plan for each query the API runs with a filter: no step reads the whole table
    row by row. (Counting every frame of all time has to read them all, bounded by its buckets.)"""
    store = open_store("", tmp_path)
    for i in range(200):
        store.add(record(f"cam-{i % 4}", 1_000_000 * i), b"z")
    reader = store.db.read_session
    with reader() as run:  # open the read connection, then watch what runs on it
        conn = run.keywords["conn"]
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    queries = [
        FrameQuery(),
        FrameQuery(device="cam-1"),
        FrameQuery(label="Church"),
        FrameQuery(after_us=10_000_000, before_us=90_000_000),
        FrameQuery(device="cam-2", label="church", after_us=5_000_000),
        FrameQuery(cursor=(100_000_000, 100)),
        FrameQuery(changes=True),
        FrameQuery(unknown=True),
        FrameQuery(device="cam-3", changes=True, cursor=(100_000_000, 100)),
    ]
    for q in queries:
        store.query(q)
        store.span(q)
        if q != FrameQuery() and q.cursor is None:  # stats take no cursor
            store.stats("label", 60_000_000, q, 1000)
    store.devices(50_000_000, 100)
    conn.set_trace_callback(None)
    for sql in statements:
        plan = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql)]
        assert "SCAN frames" not in plan, (sql, plan)
    assert len(statements) >= 2 * len(queries) + 4
    store.close()
