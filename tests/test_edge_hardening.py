"""The adversarial suite for the edge: bomb and half-written images, garbage in the queue folder,
frames that never fit, a folder that cannot be written, in-flight retries, flags that must work."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_client import watch as watch_module
from edge_client.client import CloudClient, frame_key
from edge_client.encoder import EdgeEncoder
from edge_client.frame_queue import FrameQueue
from edge_client.uploader import Uploader
from edge_client.watch import Watcher
from shared.bundles import DEFAULT_BUNDLE
from tests.stub_cloud import StubCloud

ROOT = Path(__file__).resolve().parent.parent


def _noise(h: int, w: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def _jpeg(h: int = 80, w: int = 96, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    _noise(h, w, seed).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class Clock:
    def __init__(self, t: float = 1_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def _write(path: Path, data: bytes, mtime: float) -> None:
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))


def watcher(folder: Path, encoder, queue: FrameQueue, clock: Clock, **kw) -> Watcher:
    return Watcher(
        folder,
        queue,
        encoder,
        done=folder / ".spic-done",
        failed=folder / ".spic-failed",
        settle_s=0.5,
        give_up_s=30,
        now=clock,
        **kw,
    )


def _cycle(w: Watcher, clock: Clock, seconds: float = 1.0) -> list[Path]:
    """Two scans ``seconds`` apart (a file settles on the second); capture what settled."""
    w.scan()
    clock.t += seconds
    images = w.scan()
    for path in images:
        if not w.capture(path):
            break
    return images


@pytest.fixture()
def encoder(tiny_bundle):
    return EdgeEncoder(tiny_bundle, cache_dir=False)


# --- 13. watch mode and ordinary bad files ------------------------------------------------------


def test_a_decompression_bomb_is_set_aside_and_the_stream_goes_on(tmp_path, encoder, caplog):
    folder, clock = tmp_path / "cam", Clock()
    folder.mkdir()
    Image.new("1", (20_000, 20_000)).save(folder / "bomb.png")  # 400 Mpx in ~50 kB
    os.utime(folder / "bomb.png", (clock.t - 100, clock.t - 100))
    _write(folder / "ok.jpg", _jpeg(), clock.t - 50)
    queue = FrameQueue(tmp_path / "q")
    w = watcher(folder, encoder, queue, clock)
    with caplog.at_level(logging.WARNING, "spic.edge.watch"):
        _cycle(w, clock)
    assert len(queue) == 1 and (folder / ".spic-failed" / "bomb.png").exists()
    assert [r for r in caplog.records if "bomb.png" in r.getMessage()]


def test_a_half_written_jpeg_waits_and_is_sent_once_complete(tmp_path, encoder, caplog):
    folder, clock = tmp_path / "cam", Clock()
    folder.mkdir()
    data = _jpeg(seed=3)
    _write(folder / "late.jpg", data[: len(data) // 2], clock.t)  # still being written
    queue = FrameQueue(tmp_path / "q")
    w = watcher(folder, encoder, queue, clock)
    with caplog.at_level(logging.WARNING):
        _cycle(w, clock)  # settled, but truncated: retried later, not failed
    assert len(queue) == 0 and (folder / "late.jpg").exists()
    assert not (folder / ".spic-failed").exists()
    _write(folder / "late.jpg", data, clock.t)  # the camera finishes the file
    _cycle(w, clock)
    assert len(queue) == 1 and (folder / ".spic-done" / "late.jpg").exists()


def test_a_file_that_stays_corrupt_is_failed_after_give_up(tmp_path, encoder):
    folder, clock = tmp_path / "cam", Clock()
    folder.mkdir()
    _write(folder / "junk.jpg", b"\xff\xd8 not really a jpeg", clock.t)
    w = watcher(folder, encoder, FrameQueue(tmp_path / "q"), clock)
    _cycle(w, clock)
    assert (folder / "junk.jpg").exists()
    _cycle(w, clock, seconds=31)
    assert (folder / ".spic-failed" / "junk.jpg").exists()


def test_a_file_still_growing_is_not_read(tmp_path, encoder, monkeypatch):
    folder, clock = tmp_path / "cam", Clock()
    folder.mkdir()
    data = _jpeg()
    w = watcher(folder, encoder, FrameQueue(tmp_path / "q"), clock)
    _write(folder / "a.jpg", data[:100], clock.t)
    w.scan()
    _write(folder / "a.jpg", data[:200], clock.t + 1)  # grew between scans: not settled
    clock.t += 1
    assert w.scan() == []


def test_an_oversized_frame_no_longer_blocks_newer_images(tmp_path, tiny_bundle):
    folder, clock = tmp_path / "cam", Clock()
    folder.mkdir()
    encoder = EdgeEncoder(tiny_bundle, whole_image=True, cache_dir=False)
    _noise(1024, 1024).save(folder / "huge.png")
    os.utime(folder / "huge.png", (clock.t - 20, clock.t - 20))
    _noise(64, 64, 1).save(folder / "small.png")
    os.utime(folder / "small.png", (clock.t - 10, clock.t - 10))
    small = len(encoder.encode(folder / "small.png"))
    assert len(encoder.encode(folder / "huge.png")) > small + 1000
    queue = FrameQueue(tmp_path / "q", max_bytes=small + 500)  # room for the small one only
    w = watcher(folder, encoder, queue, clock)
    _cycle(w, clock)
    assert [f.source for f in queue] == ["small.png"]
    assert (folder / ".spic-failed" / "huge.png").exists()


def test_a_read_only_folder_does_not_stop_the_stream(tmp_path, encoder, monkeypatch, caplog):
    folder, clock = tmp_path / "cam", Clock()
    folder.mkdir()
    _write(folder / "a.jpg", _jpeg(seed=1), clock.t - 10)
    _write(folder / "b.jpg", _jpeg(seed=2), clock.t - 5)

    real_replace = os.replace

    def read_only(src, dst):  # the watch folder is a read-only mount; the queue is elsewhere
        if Path(src).parent == folder:
            raise PermissionError(30, "Read-only file system", str(src))
        return real_replace(src, dst)

    monkeypatch.setattr(watch_module.os, "replace", read_only)
    queue = FrameQueue(tmp_path / "q")
    w = watcher(folder, encoder, queue, clock)
    with caplog.at_level(logging.WARNING, "spic.edge.watch"):
        _cycle(w, clock)
        _cycle(w, clock)  # the same files again: remembered, not queued twice
    assert sorted(f.source for f in queue) == ["a.jpg", "b.jpg"]
    assert len([r for r in caplog.records if "cannot move" in r.getMessage()]) == 1
    assert not w.pending_images()


def test_garbage_in_the_queue_folder_is_quarantined(tmp_path, caplog):
    root = tmp_path / "q"
    good = FrameQueue(root).put(b"SPIC-frame-bytes", key="k1", source="a.jpg")
    (root / "000000000007.frame").write_bytes(b"\x00\x01garbage")
    (root / "000000000008.frame").write_bytes(b"")
    (root / "other-program.frame").write_text("hello")
    with caplog.at_level(logging.WARNING, "spic.edge.queue"):
        queue = FrameQueue(root)
    assert [f.seq for f in queue] == [good.seq] and queue.oldest().read() == b"SPIC-frame-bytes"
    assert len(list((root / "quarantine").iterdir())) == 3
    assert len([r for r in caplog.records if "QUARANTINED" in r.getMessage()]) == 3
    assert queue.put(b"next", key="k2").seq == 9  # after the highest sequence seen (8)


def test_rejected_frames_are_never_overwritten_after_a_restart(tmp_path):
    root = tmp_path / "q"
    first = FrameQueue(root)
    first.set_aside(first.put(b"one", key="a"), root / "rejected")
    second = FrameQueue(root)  # empty again: its sequence restarts at 1
    item = second.put(b"two", key="b")
    assert item.seq == 1
    second.set_aside(item, root / "rejected")
    kept = sorted(p.read_bytes().split(b"\n", 1)[1] for p in (root / "rejected").iterdir())
    assert kept == [b"one", b"two"]


# --- 11, 12. in-flight retries and keys ---------------------------------------------------------


def test_an_in_flight_409_is_retried_not_rejected(tmp_path):
    stub = StubCloud(
        fail_first=2, status=409, retry_after="0", problem_type="urn:spic:problem:request-in-flight"
    )
    try:
        queue = FrameQueue(tmp_path / "q")
        queue.put(b"frame", key="k")
        report = Uploader(queue, CloudClient(stub.url, sleep=lambda s: None)).drain()
    finally:
        stub.close()
    assert report.sent == 1 and report.rejected == 0 and stub.posts["k"] == 3
    assert not (tmp_path / "q" / "rejected").exists()


def test_the_key_follows_the_frame_not_the_photo(tiny_bundle):
    photo = _noise(80, 96)
    at16 = EdgeEncoder(tiny_bundle, qf=16, cache_dir=False).encode(photo)
    at48 = EdgeEncoder(tiny_bundle, qf=48, cache_dir=False).encode(photo)
    again = EdgeEncoder(tiny_bundle, qf=16, cache_dir=False).encode(photo)
    assert frame_key("cam", "p.jpg", at16) != frame_key("cam", "p.jpg", at48)
    assert frame_key("cam", "p.jpg", at16) == frame_key("cam", "p.jpg", again)  # after a crash
    assert frame_key("cam", "p.jpg", at16) != frame_key("cam-2", "p.jpg", at16)  # two cameras


# --- 10. --int8 and settings --------------------------------------------------------------------


def edge(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """``spic-edge ARGS`` in a child process, this checkout first on its path."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "edge_client.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


@pytest.mark.parametrize("how", ["flag", "env"])
def test_int8_is_honoured_and_reported(tmp_path, how):
    _noise(240, 320).save(tmp_path / "p.png")
    args = ["encode", str(tmp_path / "p.png"), "--out", str(tmp_path / "o"), "--json"]
    args += ["--bundle", str(DEFAULT_BUNDLE)]
    out = edge(*args, "--int8") if how == "flag" else edge(*args, env={"SPIC_EDGE_INT8": "1"})
    assert out.returncode == 0, out.stderr
    assert "INT8 encoder" in out.stderr and json.loads(out.stdout)["encoder"] == "int8"
    fp32 = edge(*args)
    assert "FP32 encoder" in fp32.stderr and json.loads(fp32.stdout)["encoder"] == "fp32"


@pytest.mark.parametrize(
    "env", [{"SPIC_EDGE_THREADS": "abc"}, {"SPIC_EDGE_INTERVAL": "-1"}, {"SPIC_EDGE_QF": "0"}]
)
def test_a_bad_environment_value_is_one_line(tmp_path, env):
    out = edge("watch", str(tmp_path), "--url", "http://127.0.0.1:9", env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and next(iter(env)) in out.stderr, out.stderr


def test_one_bad_file_does_not_stop_encode(tmp_path):
    _noise(240, 320).save(tmp_path / "good.png")
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    out = edge(
        "encode",
        str(tmp_path / "bad.jpg"),
        str(tmp_path / "good.png"),
        "--out",
        str(tmp_path / "o"),
    )
    assert out.returncode == 1 and "bad.jpg" in out.stderr
    assert (tmp_path / "o" / "good.spic").exists()
