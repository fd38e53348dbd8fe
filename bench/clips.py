"""The six fixed-camera clips of the stream benches (``bench/streams.py``, ``bench/delta_cpu.py``)
and how a crop becomes the encoder's input there."""

from __future__ import annotations

import numpy as np

CLIPS = {  # file -> what the camera is (SOURCE.md beside the clips says where they come from)
    "bgslibrary_video.avi": "fixed, road from above",
    "bgslibrary_video02.avi": "fixed, highway CCTV",
    "bgslibrary_video03.avi": "fixed, road from an overpass",
    "intel_one-by-one-person-detection.mp4": "fixed, indoor",
    "intel_car-detection.mp4": "drifts up to ~12 px, parking lot",
    "intel_bottle-detection.mp4": "nearly fixed, tabletop",
}


def to_array_uint8(crop: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(crop.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)
