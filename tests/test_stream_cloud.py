"""Streams through a real uvicorn: a stream (key, deltas, skips) gets the answers of the same
frames coded alone; a missing reference gets 409 need-keyframe and the edge recovers; hostile
deltas get a 4xx, never a 5xx."""

from __future__ import annotations

import signal
from dataclasses import replace

import httpx
import numpy as np
import pytest
from PIL import Image

from cloud_service.harness import running_cloud, start_cloud, stop
from edge_client.client import CloudClient
from edge_client.encoder import EdgeEncoder
from edge_client.frame_queue import FrameQueue
from edge_client.stream import StreamSender, stream_key
from shared import bitstream
from shared.bundles import DEFAULT_BUNDLE
from tests.conftest import on_engine

QF = 4


def scene(n: int, seed: int = 0) -> list[Image.Image]:
    """A fixed camera: one background, a dark square crossing it, a little sensor noise, and two
    frames repeated exactly (nothing moved, nothing flickered)."""
    from skimage import data

    rng = np.random.default_rng(seed)
    base = data.astronaut()[:360, :480].astype(np.int16)
    frames = []
    for i in range(n):
        im = base + rng.integers(-2, 3, base.shape)
        x = 60 + 12 * i
        im[150:210, x : x + 60] = 20
        frames.append(Image.fromarray(np.clip(im, 0, 255).astype(np.uint8)))
    return frames[:3] + [frames[2], frames[2]] + frames[3:]


@pytest.fixture(scope="module")
def cloud():
    with running_cloud([DEFAULT_BUNDLE]) as url:
        yield url


@pytest.fixture(scope="module")
def encoder():
    return EdgeEncoder(DEFAULT_BUNDLE, qf=QF)


def client(url: str, device: str) -> CloudClient:
    return CloudClient(url, device_id=device, max_retries=1, timeout=30)


def test_a_stream_answers_as_the_frames_coded_alone(cloud, encoder, tmp_path):
    images = scene(8)
    sender = StreamSender(encoder, client(cloud, "cam-a"), FrameQueue(tmp_path / "q"), "cam-a")
    for im in images:
        sender.capture(im)
    assert sender.drain()
    kinds = [r["source"].split()[-1] for r in sender.results]
    assert kinds[0] == "key" and "cdelta" in kinds and "skip" in kinds
    alone = client(cloud, "cam-alone")
    answers = [alone.classify(encoder.encode(im), f"alone-{i}") for i, im in enumerate(images)]
    # Lossless deltas (--position-changes 1): the same symbols, so the same answer, every frame.
    assert [r["label"] for r in sender.results] == [a["label"] for a in answers]
    for got, want in zip(sender.results, answers, strict=True):
        assert got["confidence"] == pytest.approx(want["confidence"], abs=1e-5)
    summary = sender.summary()
    assert summary["bytes_sent"] < 0.5 * sum(len(encoder.encode(im)) for im in images)
    assert (summary["promoted"], summary["queued"], summary["rejected"]) == (0, 0, 0)


def test_a_missing_reference_gets_need_keyframe_and_the_edge_recovers(cloud, encoder, tmp_path):
    images = scene(4, seed=1)
    queue = FrameQueue(tmp_path / "q")
    sender = StreamSender(encoder, client(cloud, "cam-b"), queue, "cam-b", stream_id=3)
    lost = sender.capture(images[0])  # the key frame never reaches the cloud
    queue.set_aside(lost, tmp_path / "lost")
    for im in images[1:]:
        sender.capture(im)
    assert sender.drain()
    assert sender.counts["promoted"] == 1  # the first delta, re-sent as a key frame at once
    assert sender.counts["recoded"] == 1  # the next, coded again with no change known
    assert len(sender.results) == len(images) - 1
    assert not len(queue) and not sender.counts["rejected"]
    alone = client(cloud, "cam-b-alone")
    want = [alone.classify(encoder.encode(im), f"b-{i}")["label"] for i, im in enumerate(images)]
    assert [r["label"] for r in sender.results] == want[1:]


def post(url: str, frame: bytes, device: str, key: str) -> httpx.Response:
    headers = {"X-Device-Id": device, "Idempotency-Key": key}
    headers["Content-Type"] = "application/octet-stream"
    return httpx.post(f"{url}/v1/classify", content=frame, headers=headers, timeout=30)


def test_hostile_deltas_get_4xx_never_5xx(cloud, encoder, tmp_path):
    coder = StreamSender(encoder, None, FrameQueue(tmp_path / "q"), "cam-c", stream_id=9)
    key, delta1, delta2 = (coder.code(im).data for im in scene(3, seed=2)[:3])
    assert post(cloud, key, "cam-c", stream_key("cam-c", key)).status_code == 200

    def problem(frame: bytes, device: str = "cam-c") -> tuple[int, str]:
        r = post(cloud, frame, device, stream_key(device, frame) + "x")
        return r.status_code, r.json().get("type", "")

    # a reference from another device: that device holds nothing of stream 9
    assert problem(delta1, device="cam-d") == (409, "urn:spic:problem:need-keyframe")
    # a sequence far ahead: the reference is not the frame held
    far = bitstream.unpack(delta2)
    far = bitstream.pack(replace(far, seq=5000, ref_seq=4999))
    assert problem(far) == (409, "urn:spic:problem:need-keyframe")
    # a payload that decodes past the latent, or is not a delta at all
    parsed = bitstream.unpack(delta1)
    for payload in (parsed.payload + bytes(64), parsed.payload + bytes([1, 0, 0, 0]), b"\x00"):
        forged = bitstream.pack(replace(parsed, payload=payload))
        status, kind = problem(forged)
        assert 400 <= status < 500 and "corrupt_payload" in kind, (status, kind)
    for cut in (10, 21, len(delta1) - 1):
        assert 400 <= problem(delta1[:cut])[0] < 500
    # after all that, the stream still takes its next delta
    assert post(cloud, delta1, "cam-c", stream_key("cam-c", delta1)).status_code == 200
    assert post(cloud, delta2, "cam-c", stream_key("cam-c", delta2)).status_code == 200


def test_a_replayed_delta_does_not_move_the_state(cloud, encoder, tmp_path):
    images = scene(3, seed=4)
    sender = StreamSender(encoder, client(cloud, "cam-e"), FrameQueue(tmp_path / "q"), "cam-e")
    frames = [sender.code(im).data for im in images]
    answers = [post(cloud, f, "cam-e", stream_key("cam-e", f)).json() for f in frames[:2]]
    again = post(cloud, frames[1], "cam-e", "another-key").json()  # idempotency entry gone
    assert again["label"] == answers[1]["label"]
    assert post(cloud, frames[2], "cam-e", stream_key("cam-e", frames[2])).status_code == 200


@pytest.fixture(params=["sqlite", "postgresql"])
def engine_settings(request, tmp_path) -> dict[str, object]:
    return on_engine(request, {"data_dir": tmp_path / "data"})


def test_the_stream_state_survives_a_sigkilled_cloud(engine_settings, encoder, tmp_path):
    """Killed mid-stream and restarted on the same store: the deltas queued meanwhile decode
    against the state kept in the database (no key frame needed), no frame lost or doubled."""
    proc, url = start_cloud([DEFAULT_BUNDLE], **engine_settings)
    port = int(url.rsplit(":", 1)[1])
    queue = FrameQueue(tmp_path / "q")
    sender = StreamSender(encoder, CloudClient(url, device_id="cam-k", max_retries=0), queue)
    sender.device_id = "cam-k"
    images = scene(6, seed=5)
    try:
        for im in images[:4]:
            sender.capture(im)
        assert sender.drain()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for im in images[4:]:
            sender.capture(im)
        assert not sender.drain() and len(queue) == len(images) - 4
        proc, _ = start_cloud([DEFAULT_BUNDLE], port, **engine_settings)
        assert sender.drain()
        assert len(sender.results) == len(images) and not len(queue)
        assert sender.counts["promoted"] == 0  # the state was there after the restart
        stored = httpx.get(f"{url}/v1/frames", params={"device": "cam-k", "limit": 100}).json()
        assert len(stored["frames"]) == len(images)
    finally:
        stop(proc)


def test_mutated_deltas_never_get_a_5xx(cloud, encoder, tmp_path):
    coder = StreamSender(encoder, None, FrameQueue(tmp_path / "q"), "cam-f", stream_id=1)
    key, delta = (coder.code(im).data for im in scene(3, seed=6)[:2])
    assert post(cloud, key, "cam-f", stream_key("cam-f", key)).status_code == 200
    parsed = bitstream.unpack(delta)
    rng = np.random.default_rng(7)
    statuses = set()
    for i in range(40):  # well-formed frames (valid CRC) around a payload damaged at random
        payload = bytearray(parsed.payload)
        for _ in range(1 + i % 4):
            payload[rng.integers(len(payload))] = rng.integers(256)
        cut = len(payload) if i % 3 else 2 + 4 * rng.integers((len(payload) - 2) // 4 + 1)
        forged = bitstream.pack(replace(parsed, payload=bytes(payload[:cut])))
        statuses.add(post(cloud, forged, "cam-f", f"mutant-{i}").status_code)
    # 200 only for a damage that still decodes to exactly the latent (a legal, other delta)
    assert max(statuses) < 500 and 400 in statuses, statuses
