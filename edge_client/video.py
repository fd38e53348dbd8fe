"""Frames of a video source (file, RTSP/HTTP URL, V4L2 device) through the ffmpeg program.

ffmpeg decodes, samples at ``fps`` (its ``fps`` filter: one frame per 1/fps of the source's
clock, dropping or repeating as needed) and writes raw RGB24 frames to a pipe; this module only
reads fixed-size records from that pipe. Why ffmpeg and not PyAV: the same demuxers and decoders
(PyAV wraps libav*), no Python wheel of ~60 MB on the camera, and a device or a URL is one
ffmpeg argument (``-f v4l2 /dev/video0``, ``rtsp://…``). Decoding cost per 224² frame is in
``bench/streams.py``'s ``read_ms``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import suppress

import numpy as np
from PIL import Image

MAX_SIDE = 8192  # a probe claiming more is not a camera


class VideoError(RuntimeError):
    """The source cannot be opened or read by ffmpeg."""


def _ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise VideoError("ffmpeg is not installed (apt-get install ffmpeg)")
    return exe


def _input_args(source: str) -> list[str]:
    # A V4L2 device is named by its path; ffmpeg needs the demuxer spelt out for it.
    if source.startswith("/dev/video"):
        return ["-f", "v4l2", "-i", source]
    if source.startswith("rtsp://"):
        return ["-rtsp_transport", "tcp", "-i", source]
    return ["-i", source]


def probe_size(source: str) -> tuple[int, int]:
    """(width, height) of the first video stream, from ffprobe."""
    exe = shutil.which("ffprobe")
    if exe is None:
        raise VideoError("ffprobe is not installed (it comes with ffmpeg)")
    args = [exe, "-v", "error", "-select_streams", "v:0"]
    args += ["-show_entries", "stream=width,height", "-of", "json"]
    if source.startswith("/dev/video"):
        args += ["-f", "v4l2"]
    done = subprocess.run([*args, source], capture_output=True, timeout=30, check=False)
    try:
        stream = json.loads(done.stdout)["streams"][0]
        w, h = int(stream["width"]), int(stream["height"])
    except (ValueError, KeyError, IndexError, TypeError):
        err = done.stderr.decode(errors="replace").strip().splitlines()
        why = err[-1] if err else "no video stream"
        raise VideoError(f"cannot open video {source}: {why}") from None
    if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE):
        raise VideoError(f"video {source} is {w}x{h}")
    return w, h


def frames(
    source: str, fps: float | None = None, max_seconds: float | None = None
) -> Iterator[Image.Image]:
    """RGB frames of ``source``, sampled at ``fps`` (every frame when None), for at most
    ``max_seconds`` of the source's time. The ffmpeg process ends with the iterator."""
    w, h = probe_size(source)
    args = [_ffmpeg(), "-nostdin", "-v", "error", *_input_args(source)]
    if max_seconds is not None:
        args += ["-t", f"{max_seconds:g}"]
    if fps is not None:
        args += ["-vf", f"fps={fps:g}"]
    args += ["-an", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    size = w * h * 3
    try:
        while True:
            buf = proc.stdout.read(size)
            if len(buf) < size:
                break
            yield Image.fromarray(np.frombuffer(buf, np.uint8).reshape(h, w, 3), "RGB")
    finally:
        with suppress(ProcessLookupError):
            proc.kill()
        _, err = proc.communicate()
    if proc.returncode not in (0, -9) and err:
        raise VideoError(f"ffmpeg: {err.decode(errors='replace').strip().splitlines()[-1]}")
