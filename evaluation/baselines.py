"""Baseline codecs through Pillow (JPEG, WebP, AVIF), whole-file bpp, matched to SPIC's rates.

``match_quality`` bisects the integer quality whose mean bpp over a calibration subset comes
closest to a target, as the paper matches JPEG to each SPIC QF. Quality is monotone in size for
all three codecs; where even the lowest quality is above the target (JPEG cannot go below about
0.28 bpp at 224²), the lowest quality is used and its real bpp is reported.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

CODECS = {"jpeg": ("JPEG", 1, 95), "webp": ("WEBP", 0, 100), "avif": ("AVIF", 0, 100)}
LADDER = {"jpeg": (1, 5, 10, 25, 50, 75), "webp": (0, 10, 25, 50, 75), "avif": (0, 10, 25, 50, 75)}


def encode(codec: str, crop: np.ndarray, quality: int) -> bytes:
    fmt = CODECS[codec][0]
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, format=fmt, quality=quality)
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def mean_bpp(codec: str, crops: list[np.ndarray], quality: int) -> float:
    return float(
        np.mean([8 * len(encode(codec, c, quality)) / (c.shape[0] * c.shape[1]) for c in crops])
    )


def match_quality(codec: str, crops: list[np.ndarray], target_bpp: float) -> int:
    _, lo, hi = CODECS[codec]
    while lo < hi:
        mid = (lo + hi) // 2
        if mean_bpp(codec, crops, mid) < target_bpp:
            lo = mid + 1
        else:
            hi = mid
    candidates = {max(CODECS[codec][1], lo - 1), lo}
    return min(candidates, key=lambda q: abs(mean_bpp(codec, crops, q) - target_bpp))
