"""Consumers see changes, not repetitions (issue 32, item 4): a stream's skip frames are counted on
the row they repeat, a frame whose answer changed is marked and can be asked for alone (frames,
events, webhooks), and /v1/stats?measure=seconds says how long each camera held each answer.
Through a real uvicorn, and the store on real SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import httpx
import pytest
from PIL import Image
from skimage import data

from cloud_service.harness import running_cloud
from cloud_service.results import FrameRecord, open_store
from edge_client.encoder import EdgeEncoder
from edge_client.frame_queue import FrameQueue
from edge_client.stream import StreamSender, stream_key
from shared import bitstream
from shared.bundles import DEFAULT_BUNDLE
from shared.schemas import ClassScore, Prediction

T0 = 1_780_000_000  # seconds since the epoch: the capture time of the first frame


@pytest.fixture(scope="module")
def cloud():
    with running_cloud([DEFAULT_BUNDLE]) as url:
        yield url


def photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(data, name)()).convert("RGB")


def post(url: str, frame: bytes, device: str, at: int, key: str | None = None) -> dict:
    headers = {
        "X-Device-Id": device,
        "Idempotency-Key": key or stream_key(device, frame),
        "Content-Type": "application/octet-stream",
        "X-Captured-At": datetime.fromtimestamp(at, tz=UTC).isoformat(),
    }
    r = httpx.post(f"{url}/v1/classify", content=frame, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_skips_are_counted_and_changes_marked(cloud, tmp_path):
    encoder = EdgeEncoder(DEFAULT_BUNDLE, qf=4)
    coder = StreamSender(encoder, None, FrameQueue(tmp_path / "q"), "cam-r")
    coffee, rocket = photo("coffee"), photo("rocket")
    seen = [coffee, coffee, coffee, rocket, rocket, coffee]
    made = [coder.code(im) for im in seen]
    assert [m.kind for m in made] == ["key", "skip", "skip", "delta", "skip", "delta"]
    answers = [post(cloud, m.data, "cam-r", T0 + i) for i, m in enumerate(made[:3])]
    # A skip replayed once its idempotency entry is gone (here: another key) while the stream
    # still holds it: answered from the state, no row, not counted again.
    late = post(cloud, made[2].data, "cam-r", T0 + 2, key="forgotten")
    assert late["repeat"] and late["frame_id"] == answers[0]["frame_id"]
    answers += [post(cloud, m.data, "cam-r", T0 + 3 + i) for i, m in enumerate(made[3:])]
    assert answers[0]["label"] != answers[3]["label"]  # two scenes the head tells apart
    assert [a["repeat"] for a in answers] == [False, True, True, False, True, False]
    assert answers[1]["frame_id"] == answers[2]["frame_id"] == answers[0]["frame_id"]
    assert answers[4]["frame_id"] == answers[3]["frame_id"]
    assert answers[1]["label"] == answers[0]["label"]
    # A retried skip (same Idempotency-Key) is answered again and not counted again.
    again = post(cloud, made[2].data, "cam-r", T0 + 2)
    assert again["frame_id"] == answers[0]["frame_id"]

    def frames(**params: object) -> list[dict]:
        r = httpx.get(f"{cloud}/v1/frames", params={"device": "cam-r", **params})
        return r.json()["frames"]

    rows = frames()  # newest first
    assert [f["frame_id"] for f in rows] == [answers[i]["frame_id"] for i in (5, 3, 0)]
    assert [f["repeats"] for f in rows] == [0, 1, 2]
    assert rows[2]["last_repeat_at"].startswith("2026-05-28T")  # T0 + 2 s
    assert [f["change"] for f in rows] == ["label", "label", "label"]
    assert len(frames(changes="true")) == 3
    devices = httpx.get(f"{cloud}/v1/devices", params={"since": "2026-05-28T00:00:00Z"}).json()
    cam = next(d for d in devices["devices"] if d["device_id"] == "cam-r")
    assert cam["frames"] == 3 and cam["frames_since"] == 6  # rows; frames, the skips included
    # A stored delta is kept as the frame its symbols make alone: it re-renders, it re-reads.
    delta_id = answers[5]["frame_id"]
    png = httpx.get(f"{cloud}/v1/frames/{delta_id}/reconstruction", timeout=30)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    kept = bitstream.unpack(httpx.get(f"{cloud}/v1/frames/{delta_id}/bitstream").content)
    assert kept.version == 1 and kept.latent_shape == (32, 14, 14)
    again = post(cloud, encoder.encode(coffee), "cam-alone", T0, key="alone-coffee")
    assert again["top_k"] == answers[5]["top_k"]  # the same symbols as the frame coded alone

    stats = httpx.get(
        f"{cloud}/v1/stats",
        params={"device": "cam-r", "measure": "seconds", "bucket": "1d"},
    ).json()["rows"]
    held = {r["group"]: (r["count"], r["seconds"]) for r in stats}
    assert all(r["device"] == "cam-r" for r in stats)
    # coffee from T0 to the rocket at T0+3, and the last frame (no later sign): 3 s over 4
    # frames (2 repeats); rocket from T0+3 to T0+5: 2 s over 2 frames.
    assert held[answers[0]["label"]] == (4, pytest.approx(3.0))
    assert held[answers[3]["label"]] == (2, pytest.approx(2.0))


def test_events_with_changes_are_the_changes(cloud, tmp_path):
    encoder = EdgeEncoder(DEFAULT_BUNDLE, qf=4)
    a, b = photo("coffee"), photo("rocket")
    # frames coded alone (version 1): the same image twice is the same answer, no change
    ids = [
        post(cloud, encoder.encode(im), "cam-e", T0 + i, key=f"e-{i}")["frame_id"]
        for i, im in enumerate([a, a, b, b, a])
    ]
    with httpx.stream(
        "GET",
        f"{cloud}/v1/events",
        params={"device": "cam-e", "changes": "true"},
        headers={"Last-Event-ID": "0"},
        timeout=20,
    ) as r:
        got: list[tuple[str, int]] = []
        event = ""
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("id: "):
                got.append((event, int(line[4:])))
            if len(got) == 3:
                break
    # "event:" follows "id:" in each message; what matters: three change events, these ids
    assert [i for _, i in got] == [ids[0], ids[2], ids[4]]


def _prediction(label: str, conf: float, unknown: bool = False) -> Prediction:
    return Prediction(
        model_id="4257331cc53ce176",
        qf=4,
        bytes=100,
        bpp=0.016,
        class_id=0,
        label=None if unknown else label,
        confidence=conf,
        unknown=unknown,
        top_k=[ClassScore(class_id=0, label=label, confidence=conf)],
    )


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_a_confidence_across_a_bound_is_a_change(engine, request, tmp_path):
    url = "" if engine == "sqlite" else request.getfixturevalue("postgres_server")()
    store = open_store(url, tmp_path, confidence_bounds=[0.5, 0.8])
    try:
        seq = [("church", 0.6), ("church", 0.7), ("church", 0.85), ("church", 0.3)]
        seq += [("church", 0.3, True), ("church", 0.35, True), ("tench", 0.9)]
        changes = []
        for i, (label, conf, *unknown) in enumerate(seq):
            p = _prediction(label, conf, bool(unknown))
            changes.append(store.insert(FrameRecord("cam-b", i * 1_000_000, 0, p), b"f")[1])
        # first; same; across 0.8; across 0.5 (and 0.8); unknown now; still unknown; a label
        assert changes == [1, 0, 2, 2, 1, 0, 1]
        assert store.repeat(1, 5) and not store.repeat(999, 5)
    finally:
        store.close()


def test_webhooks_can_carry_the_changes_only(tmp_path):
    from tests.test_cloud import wait_for
    from tests.test_webhooks import SECRET, Receiver

    receiver = Receiver(fail_first=0)
    encoder = EdgeEncoder(DEFAULT_BUNDLE, qf=4)
    a, b = encoder.encode(photo("coffee")), encoder.encode(photo("rocket"))
    settings = dict(
        webhook_url=receiver.url, webhook_secret=SECRET, webhook_events="changes", data_dir=tmp_path
    )
    try:
        with running_cloud([DEFAULT_BUNDLE], **settings) as url:
            ids = [
                post(url, f, "cam-w", T0 + i, f"w-{i}")["frame_id"]
                for i, f in enumerate([a, a, b, b])
            ]
            wait_for(lambda: len(receiver.received) >= 2, timeout=30)
            time.sleep(1.0)  # a third delivery, if one were (wrongly) on its way
    finally:
        receiver.close()
    payloads = [json.loads(body) for body, _ in receiver.received]
    assert [(p["event"], p["frame_id"], p["change"]) for p in payloads] == [
        ("change", ids[0], "label"),
        ("change", ids[2], "label"),
    ]


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_seconds_held_per_camera_and_answer(engine, request, tmp_path):
    from cloud_service.held import held
    from cloud_service.results import FrameQuery

    url = "" if engine == "sqlite" else request.getfixturevalue("postgres_server")()
    store = open_store(url, tmp_path)
    s = 1_000_000
    try:
        for device, at, label in [
            ("cam-1", 0, "church"),
            ("cam-2", 1 * s, "tench"),
            ("cam-1", 10 * s, "tench"),
            ("cam-1", 12 * s, "church"),
            ("cam-1", 500 * s, "church"),  # after a silence longer than the gap
        ]:
            store.add(FrameRecord(device, at, at, _prediction(label, 0.9)), b"f")
        store.repeat(4, 100 * s)  # the church at 12 s was repeated until 100 s
        rows = held(store, 3600 * s, FrameQuery(), 100, gap_us=60 * s)
        got = {(d, a): (n, us / s) for d, a, _, n, us in rows}
        assert got == {
            ("cam-1", "church"): (4, 10.0 + 88.0 + 0.0),  # 0→10; 12→100, then quiet; the last
            ("cam-1", "tench"): (1, 2.0),
            ("cam-2", "tench"): (1, 0.0),
        }
        only = held(store, 3600 * s, FrameQuery(label="tench"), 100, gap_us=60 * s)
        assert {(d, us / s) for d, _, _, _, us in only} == {("cam-1", 2.0), ("cam-2", 0.0)}
    finally:
        store.close()


def test_withheld_skips_are_counted_from_the_next_frame(cloud, tmp_path):
    from edge_client.client import CloudClient
    from tests.test_stream_cloud import scene

    images = scene(6, seed=9)  # frames 2, 3 and 4 are one picture: two skips
    encoder = EdgeEncoder(DEFAULT_BUNDLE, qf=4)
    client = CloudClient(cloud, device_id="cam-h", max_retries=1, timeout=30)
    sender = StreamSender(encoder, client, FrameQueue(tmp_path / "q"), "cam-h", heartbeat=10)
    for im in images:
        sender.capture(im)
    assert sender.drain()
    summary = sender.summary()
    assert summary["withheld"] == 2 == summary["skip"] and summary["frames"] == len(images)
    assert len(sender.results) == len(images) - 2  # what went: the key frame and the deltas
    rows = httpx.get(f"{cloud}/v1/frames", params={"device": "cam-h"}).json()["frames"]
    assert len(rows) == len(images) - 2 and sum(r["repeats"] for r in rows) == 2
    assert rows[-3]["repeats"] == 2  # on frame 2's row, the answer the skips repeated
    alone = CloudClient(cloud, device_id="cam-h-alone", max_retries=1, timeout=30)
    sent = [im for i, im in enumerate(images) if i not in (3, 4)]
    want = [alone.classify(encoder.encode(im), f"h-{i}")["label"] for i, im in enumerate(sent)]
    assert [r["label"] for r in sender.results] == want
