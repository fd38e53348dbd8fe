"""``spic-edge stream`` on a video file and ``spic-edge watch --stream`` on a folder, against a
real uvicorn: every frame answered once, the JSON summary last."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cloud_service.harness import running_cloud
from shared.bundles import DEFAULT_BUNDLE

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")


@pytest.fixture(scope="module")
def cloud():
    with running_cloud([DEFAULT_BUNDLE]) as url:
        yield url


def edge(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "edge_client.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.mark.parametrize(("delta_type", "kind"), [("3", "cdelta"), ("1", "delta")])
def test_stream_a_video_file(cloud, tmp_path, delta_type, kind):
    clip = tmp_path / "clip.mp4"  # a fixed test card with a moving box: a fixed camera's video
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=10"]
        + ["-t", "3", "-pix_fmt", "yuv420p", str(clip)],
        check=True,
    )
    done = edge(
        "stream", str(clip), "--url", cloud, "--device-id", f"cam-v{delta_type}", "--fps", "4",
        "--key-interval", "5", "--queue-dir", str(tmp_path / "q"), "--json",
        "--delta-type", delta_type,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["frames"] == 12 == len(lines) - 1
    assert summary["key"] == 3 and summary["key"] + summary["delta"] + summary["skip"] == 12
    answers = [json.loads(line) for line in lines[:-1]]
    assert summary["bytes_sent"] == sum(a["bytes"] for a in answers)
    assert [a["image"].split()[3] for a in answers] == [str(i) for i in range(12)]
    assert {a["image"].split()[4] for a in answers} - {"key", "skip"} == {kind}
    assert not list((tmp_path / "q").glob("*.frame"))


def test_watch_a_folder_as_a_stream(cloud, tmp_path):
    folder = tmp_path / "cam"
    folder.mkdir()
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (240, 320, 3)).astype(np.uint8)
    for i in range(4):
        im = base.copy()
        im[100:140, 40 * i : 40 * i + 40] = 0
        path = folder / f"{i:03d}.png"
        Image.fromarray(im).save(path)
        os.utime(path, (1e9 + i, 1e9 + i))  # capture order, and long settled
    done = edge(
        "watch", str(folder), "--url", cloud, "--device-id", "cam-w", "--stream",
        "--exit-when-idle", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.strip().splitlines()]
    assert [a["image"] for a in answers] == [f"{i:03d}.png" for i in range(4)]
    sizes = [a["bytes"] for a in answers]  # a key frame, then deltas of the moved box only
    assert max(sizes[1:]) < sizes[0] / 2


def test_bad_stream_settings_exit_2():
    assert edge("stream", "x.mp4", "--url", "http://h:1", "--stream-id", "70000").returncode == 2
