"""The edge client: no torch/fastapi, a durable queue, retries, and no frame lost across SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from edge_client.client import CloudClient, retry_after_seconds
from edge_client.errors import AuthError, CloudRejectedError, CloudUnavailableError, QueueFullError
from edge_client.frame_queue import FrameQueue
from edge_client.uploader import Uploader
from tests.stub_cloud import StubCloud

ROOT = Path(__file__).resolve().parent.parent


def test_edge_imports_without_torch_or_fastapi():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'fastapi', 'uvicorn', 'starlette'):\n"
        "            raise ImportError(f'{name} is blocked on the edge')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import edge_client.cli, edge_client.encoder, edge_client.client, edge_client.uploader\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_queue_is_ordered_durable_and_bounded(tmp_path, caplog):
    q = FrameQueue(tmp_path, max_bytes=2000)
    for i in range(3):
        q.put(bytes([i]) * 300, key=f"k{i}", source=f"img{i}.jpg")
    q2 = FrameQueue(tmp_path, max_bytes=2000)  # a restart: same frames, same order
    assert [f.key for f in q2] == ["k0", "k1", "k2"]
    assert [f.read() for f in q2] == [bytes([i]) * 300 for i in range(3)]
    q2.put(b"x" * 300, key="k3")
    assert [f.key for f in FrameQueue(tmp_path)] == ["k0", "k1", "k2", "k3"]  # numbering continues
    with pytest.raises(QueueFullError):
        q2.put(b"y" * 900, key="big", source="big.jpg")
    assert "REFUSED frame big" in caplog.text
    first = next(iter(q2))
    q2.ack(first)
    assert [f.key for f in q2] == ["k1", "k2", "k3"]


def test_queue_drop_oldest_and_ttl(tmp_path, caplog):
    q = FrameQueue(tmp_path, max_bytes=1200, policy="drop_oldest", ttl_s=60)  # ~360 B per item
    for i in range(5):
        q.put(b"z" * 300, key=f"k{i}", source=f"s{i}")
    assert [f.key for f in q] == ["k2", "k3", "k4"]
    assert "DROPPED oldest frame k0" in caplog.text
    on_disk = sum(f.stat().st_size for f in tmp_path.glob("*.frame"))
    assert (
        q.total_bytes() == on_disk == FrameQueue(tmp_path).total_bytes()
    )  # the index matches the folder
    assert q.expire(now=time.time() + 61) == 3 and len(q) == 0
    assert "EXPIRED frame k4" in caplog.text


def test_leftover_temp_files_are_discarded(tmp_path):
    (tmp_path / "000000000007.tmp").write_bytes(b"half a frame")
    assert len(FrameQueue(tmp_path)) == 0 and not list(tmp_path.glob("*.tmp"))


def test_retries_honour_retry_after_then_succeed():
    stub = StubCloud(fail_first=2, retry_after="0.2")
    sleeps = []
    try:
        client = CloudClient(stub.url, sleep=lambda s: (sleeps.append(s), time.sleep(s)))
        result = client.classify(b"SPIC-frame", "key-1")
    finally:
        stub.close()
    assert result["label"] == "tench"
    assert sleeps == [0.2, 0.2] and stub.posts["key-1"] == 3 and stub.accepted == ["key-1"]


def test_gives_up_with_unavailable_and_full_jitter_backoff():
    stub = StubCloud(fail_first=100, retry_after="")
    sleeps = []
    try:
        client = CloudClient(stub.url, max_retries=3, backoff_base=0.01, sleep=sleeps.append)
        with pytest.raises(CloudUnavailableError, match="4 attempts"):
            client.classify(b"x", "k")
    finally:
        stub.close()
    assert len(sleeps) == 3 and all(0 <= s <= 0.01 * 2**i for i, s in enumerate(sleeps))


def test_connection_refused_is_unavailable():
    client = CloudClient("http://127.0.0.1:9", max_retries=1, sleep=lambda s: None, timeout=1)
    with pytest.raises(CloudUnavailableError):
        client.classify(b"x", "k")


def test_4xx_is_final_and_auth_is_its_own_error():
    def handler(request: httpx.Request) -> httpx.Response:
        status = 401 if "Authorization" not in request.headers else 400
        return httpx.Response(
            status, json={"title": "bad", "status": status, "detail": f"because {status}"}
        )

    http = httpx.Client(transport=httpx.MockTransport(handler))
    with pytest.raises(AuthError) as err:
        CloudClient("http://cloud", client=http).classify(b"x", "k")
    assert err.value.status == 401
    with pytest.raises(CloudRejectedError, match="because 400") as err:
        CloudClient("http://cloud", api_key="k", client=http).classify(b"x", "k")
    assert not isinstance(err.value, AuthError) and err.value.problem["status"] == 400


def test_retry_after_parsing():
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_uploader_keeps_frames_while_down_and_sets_rejects_aside(tmp_path):
    q = FrameQueue(tmp_path / "q")
    for i in range(3):
        q.put(b"f%d" % i, key=f"k{i}")

    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers["Idempotency-Key"])
        if len(calls) == 1:
            return httpx.Response(503)
        if request.headers["Idempotency-Key"] == "k1":
            return httpx.Response(400, json={"detail": "corrupt"})
        return httpx.Response(200, json={"ok": True})

    client = CloudClient(
        "http://c", client=httpx.Client(transport=httpx.MockTransport(handler)), max_retries=0
    )
    up = Uploader(q, client)
    assert up.drain().cloud_down and len(q) == 3
    report = up.drain()
    assert (report.sent, report.rejected, len(q)) == (2, 1, 0)
    assert q.total_bytes() == 0 and len(FrameQueue(tmp_path / "q")) == 0
    assert (tmp_path / "q" / "rejected").is_dir() and len(
        list((tmp_path / "q" / "rejected").iterdir())
    ) == 1


def _write_images(folder: Path, n: int) -> None:
    for i in range(n):
        Image.new("RGB", (80, 72), (10 * i % 255, 90, 160)).save(folder / f"frame{i:03d}.png")


def _watch(folder: Path, url: str, bundle: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "edge_client.cli",
        "watch",
        str(folder),
        "--url",
        url,
        "--bundle",
        str(bundle),
        "--interval",
        "0.05",
        "--retries",
        "1",
        "--json",
        *extra,
    ]


def _watch_until_idle(folder, stub, bundle, env) -> subprocess.CompletedProcess:
    """Run camera mode against ``stub`` until the folder and the queue are empty."""
    return subprocess.run(
        _watch(folder, stub.url, bundle, "--exit-when-idle", "--max-seconds", "120"),
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_sigkill_mid_batch_loses_and_doubles_nothing(tiny_bundle, tmp_path):
    """The cloud is down while 30 frames are captured; the edge is SIGKILLed with a full queue and
    restarted after the cloud returns: every frame arrives, each accepted exactly once."""
    folder = tmp_path / "frames"
    folder.mkdir()
    _write_images(folder, 30)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPIC_CACHE_DIR": str(tmp_path / "cache")}
    dead = "http://127.0.0.1:9"  # nothing listens: the cloud is down
    proc = subprocess.Popen(
        _watch(folder, dead, tiny_bundle), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    queue_dir = folder / ".spic-queue"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(queue_dir.glob("*.frame"))) < 12:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # mid-batch: some images encoded and queued, others not yet
    proc.wait()
    queued_at_kill = len(list(queue_dir.glob("*.frame")))
    assert 12 <= queued_at_kill <= 30

    stub = StubCloud()
    try:
        out = _watch_until_idle(folder, stub, tiny_bundle, env)
    finally:
        stub.close()
    assert out.returncode == 0, out.stderr
    printed = [json.loads(line)["image"] for line in out.stdout.splitlines()]
    names = [f"frame{i:03d}.png" for i in range(30)]
    assert sorted(printed) == names and len(stub.accepted) == 30
    assert max(stub.posts.values()) == 1  # no frame was even sent twice
    assert (
        not list(queue_dir.glob("*.frame"))
        and sorted(p.name for p in (folder / ".spic-done").iterdir()) == names
    )


def test_sigkill_mid_upload_is_recognised_by_its_key(tiny_bundle, tmp_path):
    """Killed while uploading to a live cloud: a frame the cloud accepted but the edge had not yet
    acknowledged is sent again after the restart, and the cloud sees its key a second time."""
    folder = tmp_path / "frames"
    folder.mkdir()
    _write_images(folder, 20)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPIC_CACHE_DIR": str(tmp_path / "cache")}
    stub = StubCloud(delay=0.05)
    try:
        proc = subprocess.Popen(
            _watch(folder, stub.url, tiny_bundle),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.time() + 60
        while time.time() < deadline and len(stub.accepted) < 8:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert 8 <= len(stub.accepted) < 20
        out = _watch_until_idle(folder, stub, tiny_bundle, env)
    finally:
        stub.close()
    assert out.returncode == 0, out.stderr
    # The frame in flight at the kill was sent again under the same key, so the cloud saw exactly
    # 20 distinct keys: a new key on the retry (or a frame lost) would make it 21 (or 19).
    assert len(stub.posts) == 20 and sorted(stub.posts) == sorted(stub.accepted)
    assert sum(stub.posts.values()) - 20 <= 1  # at most the one in flight at the kill was re-sent
    assert not list((folder / ".spic-queue").glob("*.frame"))


def test_encode_latent_gives_the_bytes_of_encode(tiny_bundle):
    from edge_client.encoder import EdgeEncoder
    from shared.preprocess import prepare

    image = Image.fromarray(np.random.default_rng(3).integers(0, 255, (200, 260, 3), np.uint8))
    for codec in ("rans", "huffman"):
        enc = EdgeEncoder(tiny_bundle, qf=48, codec=codec, cache_dir=False)
        x = prepare(image, enc.spec, enc.stride)
        y = enc.latent(x)
        assert enc.encode_latent(y, image.size) == enc.encode(image)
    # One encoder at QF 16 and rANS gives every other QF's and codec's bytes from the same pass.
    one = EdgeEncoder(tiny_bundle, qf=16, codec="rans", cache_dir=False)
    for qf in (48, 128):
        for codec in ("rans", "huffman"):
            other = EdgeEncoder(tiny_bundle, qf=qf, codec=codec, cache_dir=False)
            assert one.encode_latent(y, image.size, qf, codec) == other.encode(image)


def test_an_unknown_answer_is_printed_as_unknown():
    from edge_client.report import prediction_line

    answer = {"bytes": 500, "bpp": 0.08, "qf": 16, "request_id": "r", "confidence": 0.4}
    known = prediction_line("a.jpg", {**answer, "label": "tench", "unknown": False}, False)
    assert known.startswith("a.jpg: tench (40.0%)")
    top = [{"class_id": 0, "label": "tench", "confidence": 0.4}]
    refused = {**answer, "label": None, "unknown": True, "top_k": top}
    assert prediction_line("b.jpg", refused, False).startswith("b.jpg: unknown (closest: tench)")
