"""The edge on a real host (issue 34): a bad file must not spin the loop, ordinary camera sizes
encode whole, spic-edge send takes .spic frames and says what went wrong, the originals folder is
bounded, every flag names its variable, and a full disk pauses capture without stopping delivery.

Modules new with these fixes are imported inside their tests, so that each test fails on its own
account on a tree without them.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from cloud_service.harness import running_cloud
from edge_client import frame_queue as frame_queue_module
from edge_client.encoder import EdgeEncoder
from edge_client.frame_queue import FrameQueue
from edge_client.settings import EdgeSettings
from edge_client.watch import Watcher
from shared import bitstream
from shared.codebook import Codebook
from shared.manifest import ServingLimits
from tests.stub_cloud import StubCloud
from tests.test_edge_hardening import Clock, edge, watcher

ROOT = Path(__file__).resolve().parent.parent


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def _watch(
    folder: Path, bundle: Path, tmp_path: Path, *flags: str
) -> tuple[subprocess.CompletedProcess, StubCloud]:
    """``spic-edge watch FOLDER`` against a stub cloud (closed once the edge exits)."""
    stub = StubCloud()
    try:
        out = edge(
            *("watch", str(folder), "--url", stub.url, "--bundle", str(bundle), *flags),
            env={"SPIC_CACHE_DIR": str(tmp_path / "cache")},
        )
    finally:
        stub.close()
    return out, stub


def _cycle(w: Watcher, clock: Clock) -> None:
    """Two scans a second apart (a file settles on the second); capture what settled."""
    w.scan()
    clock.t += 1
    for path in w.scan():
        if not w.capture(path):
            break


@pytest.fixture()
def encoder(tiny_bundle):
    return EdgeEncoder(tiny_bundle, cache_dir=False)


# --- 1. an unreadable file: backed off, then set aside; a bomb set aside at once ----------------


def test_one_garbage_file_is_retried_once_per_interval_then_failed(tiny_bundle, tmp_path):
    folder = tmp_path / "cam"
    folder.mkdir()
    (folder / "junk.jpg").write_bytes(b"\xff\xd8" + os.urandom(5000))  # 5 kB of garbage
    out, _ = _watch(
        folder,
        tiny_bundle,
        tmp_path,
        *("--settle-s", "0", "--give-up-s", "1.5", "--interval", "0.2", "--max-seconds", "3"),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    warnings = [line for line in out.stderr.splitlines() if "WARNING" in line]
    # One line when first seen, one when moved (the parent printed ~6,000 lines a second).
    assert len(warnings) <= 3, out.stderr[-2000:]
    assert (folder / ".spic-failed" / "junk.jpg").exists()


def test_a_bomb_goes_to_failed_at_once(tmp_path, encoder, caplog):
    folder, clock = tmp_path / "cam", Clock()
    folder.mkdir()
    Image.new("1", (20_000, 20_000)).save(folder / "bomb.png")  # 400 Mpx declared in ~50 kB
    os.utime(folder / "bomb.png", (clock.t - 1, clock.t - 1))  # fresh: well within give-up
    w = watcher(folder, encoder, FrameQueue(tmp_path / "q"), clock)
    with caplog.at_level(logging.WARNING, "spic.edge.watch"):
        _cycle(w, clock)
    assert (folder / ".spic-failed" / "bomb.png").exists()
    assert [r for r in caplog.records if "bomb.png" in r.getMessage()]


def test_an_unreadable_file_warns_once_and_does_not_count_as_progress(tmp_path, encoder, caplog):
    folder, clock = tmp_path / "cam", Clock()
    folder.mkdir()
    (folder / "junk.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    os.utime(folder / "junk.jpg", (clock.t, clock.t))
    w = watcher(folder, encoder, FrameQueue(tmp_path / "q"), clock)
    with caplog.at_level(logging.INFO, "spic.edge.watch"):
        for _ in range(5):
            _cycle(w, clock)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    assert w.moved == 0  # no progress: the loop sleeps after such a round instead of spinning


# --- 2. whole images of ordinary camera sizes; the cloud's limits known before encoding ---------


@pytest.mark.parametrize("size", [(500, 375), (1920, 1080)])
def test_whole_images_of_camera_sizes_are_padded_and_say_so(tiny_bundle, size):
    enc = EdgeEncoder(tiny_bundle, whole_image=True, cache_dir=False)
    frame = bitstream.unpack(enc.encode(_noise(*size)))
    # 1920x1088 is over the default 1 MiPx: a cloud serving it raises SPIC_CLOUD_MAX_INPUT_PIXELS.
    Codebook(enc.manifest).decode_frame(frame, ServingLimits(max_input_pixels=1 << 22))
    assert frame.image_size == size
    assert (
        frame.input_size
        == bitstream.padded_size(*size, 16)
        == tuple(-(-s // 16) * 16 for s in size)
    )


def test_the_cloud_classifies_a_padded_frame_and_crops_its_reconstruction(tiny_bundle):
    enc = EdgeEncoder(tiny_bundle, whole_image=True, cache_dir=False)
    data = enc.encode(_noise(500, 375))
    with running_cloud([tiny_bundle]) as url:
        octet = {"Content-Type": "application/octet-stream"}
        assert httpx.post(url + "/v1/classify", content=data, headers=octet).status_code == 200
        png = httpx.post(url + "/v1/reconstruct", content=data, headers=octet, timeout=60)
        assert png.status_code == 200, png.text
        assert Image.open(io.BytesIO(png.content)).size == (500, 375)  # not 512x384


def test_an_image_over_the_limits_is_refused_before_it_is_encoded(tiny_bundle):
    from edge_client.errors import ImageRefusedError

    enc = EdgeEncoder(tiny_bundle, whole_image=True, cache_dir=False)
    enc.limits = enc.bundle_limits  # 1 MiPx unless the manifest says less
    enc.session = None  # the network must not run
    with pytest.raises(ImageRefusedError, match="2048x1536"):
        enc.encode(_noise(2048, 1536))


# --- 3. spic-edge send: .spic files, X-Captured-At, URLs, 404s; and the cloud's limits ---------


@pytest.fixture(scope="module")
def small_cloud(tiny_bundle):
    # Lower than the bundle's own 1 MiPx: the edge only refuses 640x480 if it asked the cloud.
    with running_cloud([tiny_bundle], max_input_pixels=256 * 256) as url:
        yield url


def test_send_uploads_spic_files_with_captured_at_and_learns_the_limits(
    tiny_bundle, tmp_path, small_cloud
):
    _noise(250, 200).save(tmp_path / "small.png")
    _noise(640, 480, 1).save(tmp_path / "large.png")
    env = {"SPIC_CACHE_DIR": str(tmp_path / "cache")}
    made = edge(
        *("encode", str(tmp_path / "small.png"), "--out", str(tmp_path / "f")),
        *("--bundle", str(tiny_bundle), "--whole-image"),
        env=env,
    )
    assert made.returncode == 0, made.stderr
    spic = tmp_path / "f" / "small.spic"
    taken = 1_700_000_000.0
    os.utime(tmp_path / "small.png", (taken, taken))
    os.utime(spic, (taken + 60, taken + 60))
    out = edge(
        *("send", str(spic), str(tmp_path / "small.png"), str(tmp_path / "large.png")),
        *("--url", small_cloud, "--bundle", str(tiny_bundle), "--whole-image", "--json"),
        *("--device-id", "field-test"),
        env=env,
    )
    assert out.returncode == 1, out.stderr  # large.png refused
    sent = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["image"] for r in sent] == [str(spic), str(tmp_path / "small.png")]
    assert "large.png" in out.stderr and "65536 pixels" in out.stderr, out.stderr
    assert "413" not in out.stderr  # refused on the edge, not by the cloud
    frames = httpx.get(small_cloud + "/v1/frames", params={"device": "field-test"}).json()
    captured = sorted(f["captured_at"] for f in frames["frames"])
    assert captured == ["2023-11-14T22:13:20Z", "2023-11-14T22:14:20Z"]


def test_a_url_without_a_scheme_is_refused_at_start(tmp_path):
    _noise(64, 64).save(tmp_path / "p.png")
    start = time.monotonic()
    out = edge("send", str(tmp_path / "p.png"), "--url", "127.0.0.1:9")
    assert out.returncode == 2 and time.monotonic() - start < 8
    assert "SPIC_EDGE_URL" in out.stderr and "http://127.0.0.1:9" in out.stderr
    assert out.stderr.count("\n") == 1, out.stderr


def test_a_404_names_the_url_and_status(tiny_bundle, tmp_path, small_cloud):
    _noise(64, 64).save(tmp_path / "p.png")
    out = edge(
        *("send", str(tmp_path / "p.png"), "--url", small_cloud + "/wrong"),
        *("--bundle", str(tiny_bundle)),
        env={"SPIC_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert out.returncode == 1
    line = next(x for x in out.stderr.splitlines() if "p.png" in x)
    assert "404 Not Found from " + small_cloud + "/wrong/v1/classify: " in line
    assert not line.rstrip().endswith(":"), line  # the parent printed an empty detail


# --- 4. the ring of originals -------------------------------------------------------------------


def test_originals_are_a_ring_bounded_by_size_and_age(tmp_path, caplog):
    from edge_client.originals import OriginalsRing

    clock = Clock(time.time())
    ring = OriginalsRing(tmp_path / "done", max_bytes=2500, max_age_s=3600, now=clock)
    with caplog.at_level(logging.WARNING, "spic.edge.originals"):
        for name in ("a.jpg", "b.jpg", "c.jpg"):
            (tmp_path / name).write_bytes(b"x" * 1000)
            ring.keep(tmp_path / name)
            time.sleep(0.01)  # distinct ctimes: a before b before c
        assert sorted(p.name for p in (tmp_path / "done").iterdir()) == ["b.jpg", "c.jpg"]
        clock.t += 7200  # both past --keep-hours
        ring.trim()
    assert not list((tmp_path / "done").iterdir()) and ring.total_bytes() == 0
    dropped = [r.getMessage() for r in caplog.records if "DROPPED" in r.getMessage()]
    assert len(dropped) == 2 and "a.jpg" in dropped[0] and "b.jpg, c.jpg" in dropped[1]


def test_watch_keeps_originals_within_keep_mb_and_reads_the_flags(tmp_path, encoder):
    from edge_client.cli import build_parser

    folder, clock = tmp_path / "cam", Clock()
    folder.mkdir()
    for i in range(4):
        _noise(96, 80, i).save(folder / f"{i}.png")
        os.utime(folder / f"{i}.png", (clock.t - 10 + i, clock.t - 10 + i))
    one = (folder / "0.png").stat().st_size
    w = watcher(folder, encoder, FrameQueue(tmp_path / "q"), clock, keep_bytes=2 * one + 100)
    _cycle(w, clock)
    assert w.moved == 4
    assert sorted(p.name for p in (folder / ".spic-done").iterdir()) == ["2.png", "3.png"]
    args = build_parser().parse_args(["watch", "x", "--keep-hours", "6", "--keep-mb", "0"])
    assert (args.keep_hours, args.keep_mb) == (6, 0)
    assert EdgeSettings().keep_hours > 0 and EdgeSettings().keep_mb > 0  # bounded by default


# --- 11. --help and --version -------------------------------------------------------------------


def test_every_flag_has_help_and_each_setting_names_its_variable():
    from edge_client.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in commands.items():
        assert "examples:" in (sub.epilog or ""), name
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
            if action.dest in EdgeSettings.model_fields:
                assert f"SPIC_EDGE_{action.dest.upper()}" in action.help, action.dest
    out = edge("--version")
    assert out.returncode == 0 and out.stdout.startswith("spic-edge ") and out.stdout.split()[1]


def test_spic_inspect_has_version_and_examples():
    run = [sys.executable, "-m", "shared.inspect_cli"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    version = subprocess.run([*run, "--version"], capture_output=True, text=True, env=env)
    assert version.returncode == 0 and version.stdout.startswith("spic-inspect ")
    helped = subprocess.run([*run, "--help"], capture_output=True, text=True, env=env)
    assert "examples:" in helped.stdout and ".spic frames" in helped.stdout


# --- 13. a full disk pauses capture; delivery goes on; capture resumes --------------------------


def test_a_full_queue_disk_pauses_capture_and_resumes(tmp_path, encoder, monkeypatch, caplog):
    """Fault injection at the write call (always runs); the tmpfs test below is the real thing."""
    folder, clock = tmp_path / "cam", Clock()
    folder.mkdir()
    _noise(96, 80).save(folder / "a.png")
    os.utime(folder / "a.png", (clock.t - 10, clock.t - 10))
    queue = FrameQueue(tmp_path / "q")
    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(frame_queue_module.os, "fsync", full)
    w = watcher(folder, encoder, queue, clock)
    with caplog.at_level(logging.WARNING, "spic.edge.watch"):
        _cycle(w, clock)
        _cycle(w, clock)
        assert w.moved == 0 and len(queue) == 0
        paused = [r.getMessage() for r in caplog.records if "capture paused" in r.getMessage()]
        assert len(paused) == 1 and "000000000001.tmp" in paused[0] and "B free" in paused[0]
        assert not list((tmp_path / "q").glob("*.tmp"))  # the partial write was given back
        monkeypatch.setattr(frame_queue_module.os, "fsync", real_fsync)
        _cycle(w, clock)
        assert w.moved == 1 and len(queue) == 1
    assert any("capture resumed" in r.getMessage() for r in caplog.records)


@pytest.fixture()
def full_disk(tmp_path):
    """A 64 kB tmpfs (needs root); yields its mount point and a function that fills it."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.decode().strip()}")

    def fill() -> None:
        with (mnt / "filler").open("wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 1024)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC

    try:
        yield mnt, fill
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_filesystem_keeps_draining_and_resumes_capture(tiny_bundle, tmp_path, full_disk):
    mnt, fill = full_disk
    folder = tmp_path / "cam"
    folder.mkdir()
    queue = FrameQueue(mnt / "q")
    enc = EdgeEncoder(tiny_bundle, cache_dir=False)
    queued = [queue.put(enc.encode(_noise(96, 80, i)), key=f"old{i}") for i in range(3)]
    fill()  # the queue's filesystem is now full, with three frames waiting in it
    for i in range(2):
        _noise(96, 80, 10 + i).save(folder / f"new{i}.png")
    out, stub = _watch(
        folder,
        tiny_bundle,
        tmp_path,
        *("--queue-dir", str(mnt / "q"), "--interval", "0.1", "--settle-s", "0"),
        *("--exit-when-idle", "--max-seconds", "30"),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    # The queued frames went out (their files freed the space), then the new images did.
    assert stub.accepted[:3] == [q.key for q in queued] and len(stub.accepted) == 5
    paused = next(x for x in out.stderr.splitlines() if "capture paused" in x)
    assert "No space left on device writing " + str(mnt / "q") in paused and "B free" in paused
    assert "capture resumed" in out.stderr
    assert sorted(p.name for p in (folder / ".spic-done").iterdir()) == ["new0.png", "new1.png"]
