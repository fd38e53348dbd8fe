"""Image preprocessing, exactly as the bundle manifest describes it (Pillow and numpy only).

The same functions feed training, evaluation and the camera, so a model never sees pixels prepared
differently from how it was trained. Two modes:

* ``center_crop``: resize the short side to ``resize_short`` (bilinear), center-crop ``size``².
* ``whole``: the image as it is, padded on the right and at the bottom (edge pixels repeated) up to
  the next multiple of the latent stride. The frame's header keeps the captured size, which is how
  the cloud knows the padding and crops a reconstruction back (``shared.bitstream.padded_size``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from shared.bitstream import padded_size

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image file as RGB. Raises ``OSError`` (Pillow's) when it is not a readable image."""
    with Image.open(path) as im:
        im.draft("RGB", (im.width, im.height))  # no-op unless JPEG; keeps full size
        return im.convert("RGB")


def resize_short_side(im: Image.Image, short: int) -> Image.Image:
    w, h = im.size
    if min(w, h) == short:
        return im
    scale = short / min(w, h)
    size = (max(short, round(w * scale)), max(short, round(h * scale)))
    return im.resize(size, Image.Resampling.BILINEAR)


def resize_center_crop(im: Image.Image, short: int, size: int) -> Image.Image:
    """``center_crop(resize_short_side(im, short), size)`` in one resampling pass.

    Pillow resamples only the ``size``² window (``box``, in source coordinates, at the scale the
    whole resize would have), so no work goes into columns or rows the crop throws away
    (``bench/edge_latency.py``'s preprocess stage). The pixels are the two-step result's but for
    float rounding in the filter weights, at most 1 apart (``tests/test_preprocess.py``); an image
    whose short side is already ``short`` (every Imagenette image here) is only cropped, as before.
    """
    w, h = im.size
    if min(w, h) == short:  # no resampling at this size: a plain crop, as resize_short_side
        return center_crop(im, size)
    scale = short / min(w, h)
    rw, rh = max(short, round(w * scale)), max(short, round(h * scale))
    if rw < size or rh < size:
        raise ValueError(f"image {rw}x{rh} is smaller than the {size}x{size} crop")
    left, top = (rw - size) // 2, (rh - size) // 2
    sx, sy = w / rw, h / rh
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    return im.resize((size, size), Image.Resampling.BILINEAR, box=box)


def center_crop(im: Image.Image, size: int) -> Image.Image:
    w, h = im.size
    if w < size or h < size:
        raise ValueError(f"image {w}x{h} is smaller than the {size}x{size} crop")
    left, top = (w - size) // 2, (h - size) // 2
    return im.crop((left, top, left + size, top + size))


def to_array(im: Image.Image) -> np.ndarray:
    """RGB image -> float32 array (3, H, W) in [0, 1], the encoder's input layout."""
    return np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)


def batch_input(crops: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) crops -> float32 (N, 3, H, W) in [0, 1], the networks' input layout."""
    return np.stack(list(crops)).transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)


def to_uint8_image(x: np.ndarray) -> np.ndarray:
    """float (..., 3, H, W) in [0, 1] -> rounded uint8 (..., H, W, 3): ``batch_input``'s inverse,
    for reconstructions and the reference crops they are measured against."""
    out: np.ndarray = np.moveaxis((np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8), -3, -1)
    return out


def prepare(im: Image.Image, spec: dict[str, Any], stride: int) -> np.ndarray:
    """Apply a manifest preprocessing ``spec`` to an RGB image; returns (3, H, W) float32."""
    mode = spec.get("mode", "center_crop")
    if mode == "center_crop":
        im = resize_center_crop(im, spec["resize_short"], spec["size"])
    elif mode == "whole":
        w, h = im.size
        if w == 0 or h == 0:
            raise ValueError(f"whole-image mode needs a non-empty image, got {w}x{h}")
        pw, ph = padded_size(w, h, stride)
        if (pw, ph) != (w, h):
            # Repeated edge pixels, not black: a black band is an edge the encoder never saw in
            # training, and it would spend bits on it.
            return np.pad(to_array(im), ((0, 0), (0, ph - h), (0, pw - w)), mode="edge")
    else:
        raise ValueError(f"unknown preprocessing mode {mode!r}")
    return to_array(im)
