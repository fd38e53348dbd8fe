"""Baseline codecs through Pillow (JPEG, WebP, AVIF), whole-file bpp, matched to SPIC's rates.

``match_quality`` bisects the integer quality whose mean bpp over a calibration subset comes
closest to a target, as the paper matches JPEG to each SPIC QF. Quality is monotone in size for
all three codecs; where even the lowest quality is above the target (JPEG cannot go below about
0.28 bpp at 224²), the lowest quality is used and its real bpp is reported.

The ``-half`` variants are what a camera maker would do to reach a lower rate than the codec's
floor: downscale the crop 2x (Lanczos), encode that, and upscale the decoded image back
(bicubic) for the classifier. Their bpp is still the file's bits over the pixels of the full
crop, the image the camera had, so they sit on the same axis as SPIC.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# name -> (Pillow format, lowest quality, highest quality, downscale factor)
CODECS = {
    "jpeg": ("JPEG", 1, 95, 1),
    "webp": ("WEBP", 0, 100, 1),
    "avif": ("AVIF", 0, 100, 1),
    "jpeg-half": ("JPEG", 1, 95, 2),
    "webp-half": ("WEBP", 0, 100, 2),
    "avif-half": ("AVIF", 0, 100, 2),
}
# JPEG's ladder stops at 70, not 75: most Imagenette files are themselves 224-pixel JPEGs at
# quality 75, and re-encoding a grid-aligned crop at the same quality is nearly lossless (median
# PSNR 54.5 dB on 60 val crops), which would say nothing about JPEG at that rate.
LADDER = {
    "jpeg": (1, 5, 10, 25, 50, 70),
    "webp": (0, 10, 25, 50, 75),
    "avif": (0, 10, 25, 50, 75),
    # The half-size variants matter below the full-size codecs' floors; three points draw that.
    "jpeg-half": (1, 10, 50),
    "webp-half": (0, 10, 50),
    "avif-half": (0, 10, 50),
}


def encode(codec: str, crop: np.ndarray, quality: int) -> bytes:
    fmt, _, _, factor = CODECS[codec]
    im = Image.fromarray(crop)
    if factor > 1:
        im = im.resize((im.width // factor, im.height // factor), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format=fmt, quality=quality)
    return buf.getvalue()


def decode(data: bytes, size: tuple[int, int] | None = None) -> np.ndarray:
    """The decoded image as uint8 (H, W, 3); upscaled (bicubic) to ``size`` = (H, W) if given."""
    im = Image.open(io.BytesIO(data)).convert("RGB")
    if size is not None and (im.height, im.width) != tuple(size):
        im = im.resize((size[1], size[0]), Image.Resampling.BICUBIC)
    return np.asarray(im)


def round_trip(codec: str, crop: np.ndarray, quality: int) -> tuple[bytes, np.ndarray]:
    """The file and the image a classifier sees: decoded at the crop's own size."""
    data = encode(codec, crop, quality)
    return data, decode(data, crop.shape[:2])


def mean_bpp(codec: str, crops: list[np.ndarray], quality: int) -> float:
    return float(
        np.mean([8 * len(encode(codec, c, quality)) / (c.shape[0] * c.shape[1]) for c in crops])
    )


def match_quality(codec: str, crops: list[np.ndarray], target_bpp: float) -> int:
    _, lo, hi, _ = CODECS[codec]
    while lo < hi:
        mid = (lo + hi) // 2
        if mean_bpp(codec, crops, mid) < target_bpp:
            lo = mid + 1
        else:
            hi = mid
    candidates = {max(CODECS[codec][1], lo - 1), lo}
    return min(candidates, key=lambda q: abs(mean_bpp(codec, crops, q) - target_bpp))
