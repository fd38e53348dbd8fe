"""WebP and AVIF at the bytes a SPIC frame costs, per image (bench/decoder.py's baselines).

For each image and byte budget (the image's own rANS frame size at a QF, header included), every
format tries the crop at 224², 112² and 56² (box-downscaled; decoded back up with bicubic) and, at
each size, the highest quality whose file fits the budget (a bisection over Pillow's quality
0-100, as CompressAI's ``find_closest`` searches a codec's quality for a target rate). Of the
sizes that fit, the one with the best PSNR is kept: an encoder holds the original, so it may pick.
At a few hundred bytes the full-size file does not fit at any quality (AVIF's container alone is
~300 bytes), so downscaling is what lets these formats meet SPIC's budget at all. A budget no
setting meets is recorded as ``fits: false`` with the smallest file (56², quality 0).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

FORMATS = ("WEBP", "AVIF")
SCALES = (1, 2, 4)  # 224², 112², 56²
# AVIF's speed 6 is Pillow's default; WebP's method 6 is its slowest, smallest files.
OPTIONS: dict[str, dict[str, int]] = {"WEBP": {"method": 6}, "AVIF": {"speed": 6}}


@dataclass
class Fitted:
    psnr: float
    ssim: float
    bytes: int
    scale: int
    quality: int
    fits: bool
    picture: np.ndarray


class Encoder:
    """One image in one format: files per (scale, quality), each encoded once."""

    def __init__(self, image: np.ndarray, fmt: str):
        self.image, self.fmt = image, fmt
        side = image.shape[0]
        self.sources = {
            s: Image.fromarray(image).reduce(s) if s > 1 else Image.fromarray(image) for s in SCALES
        }
        self.side = side
        self.encode = lru_cache(maxsize=None)(self._encode)

    def _encode(self, scale: int, quality: int) -> bytes:
        buf = io.BytesIO()
        self.sources[scale].save(buf, format=self.fmt, quality=quality, **OPTIONS[self.fmt])
        return buf.getvalue()

    def decoded(self, scale: int, quality: int) -> np.ndarray:
        with Image.open(io.BytesIO(self.encode(scale, quality))) as f:
            im = f.convert("RGB")
        if scale > 1:
            im = im.resize((self.side, self.side), Image.Resampling.BICUBIC)
        return np.asarray(im)

    def best_quality(self, scale: int, budget: int) -> int | None:
        """The highest quality whose file fits ``budget`` bytes at ``scale``; None if none."""
        if len(self.encode(scale, 0)) > budget:
            return None
        lo, hi = 0, 100  # lo fits; find the largest that fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if len(self.encode(scale, mid)) <= budget:
                lo = mid
            else:
                hi = mid - 1
        return lo


def fit(
    enc: Encoder,
    budget: int,
    psnr: Callable[[np.ndarray, np.ndarray], float],
    ssim: Callable[[np.ndarray, np.ndarray], float],
) -> Fitted:
    """The best-PSNR setting of ``enc``'s format within ``budget`` bytes."""
    best: Fitted | None = None
    for scale in SCALES:
        q = enc.best_quality(scale, budget)
        if q is None:
            continue
        pic = enc.decoded(scale, q)
        p = psnr(pic, enc.image)
        if best is None or p > best.psnr:
            size = len(enc.encode(scale, q))
            best = Fitted(p, 0.0, size, scale, q, True, pic)
    if best is None:  # nothing fits: the smallest file there is, marked as over the budget
        scale = SCALES[-1]
        pic = enc.decoded(scale, 0)
        best = Fitted(psnr(pic, enc.image), 0.0, len(enc.encode(scale, 0)), scale, 0, False, pic)
    best.ssim = ssim(best.picture, enc.image)
    return best
