"""EdgeEncoder: an image in, a complete SPIC frame out. onnxruntime, numpy and Pillow only.

    preprocess (manifest) -> encoder.onnx -> shared.quantize -> entropy code -> pack (bitstream)

The camera's side of the codec runtime (``shared.runtime.SpicCodec``): it picks the QF, reads
images, refuses what the cloud will not serve, and times each stage; the networks, the tables and
the bitstream are the codec's.

Each stage is timed, so ``spic-edge encode`` and ``bench/edge_latency.py`` can report where the
milliseconds go.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from edge_client.errors import BundleError, ImageError, ImageRefusedError
from shared.bitstream import padded_size
from shared.codecs import CODECS
from shared.manifest import ServingLimits
from shared.preprocess import load_rgb, prepare
from shared.runtime import SpicCodec

STAGES = ("preprocess", "encoder", "quantize", "entropy", "pack")


@dataclass
class EncodedFrame:
    data: bytes
    symbols: np.ndarray
    qf: int
    input_size: tuple[int, int]
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def bpp(self) -> float:
        w, h = self.input_size
        return 8 * len(self.data) / (w * h)


class EdgeEncoder:
    def __init__(
        self,
        bundle_path: str | Path,
        qf: int | None = None,
        codec: str = "rans",
        threads: int = 1,
        cache_dir: str | Path | Literal[False] | None = None,
        whole_image: bool = False,
        int8: bool = False,
        target_bpp: float | None = None,
        limits: ServingLimits | None = None,
    ):
        """``target_bpp`` picks the QF instead of ``qf``: the one whose rate, as measured on the
        bundle (``manifest.measured``, for this codec and encoder), is the highest within it.

        ``limits``: the largest encoder input the cloud serves (``serving_limits``); a whole image
        past them is refused before the network runs (``ImageRefusedError``) instead of being
        encoded for a 413. None checks nothing (to make such frames on purpose)."""
        bundle_path = Path(bundle_path)
        try:
            self.core = SpicCodec(bundle_path, threads=threads, cache_dir=cache_dir)
        except (OSError, ValueError) as exc:
            raise BundleError(f"cannot load model bundle {bundle_path}: {exc}") from exc
        self.manifest = self.core.manifest
        if target_bpp is not None:
            if qf is not None:
                raise BundleError("give a QF or a target bpp, not both")
            try:
                qf = self.manifest.qf_for_bpp(target_bpp, codec, int8)
            except ValueError as exc:
                raise BundleError(str(exc)) from exc
        self.target_bpp = target_bpp
        self.qf = self.manifest.default_qf if qf is None else int(qf)
        if self.qf not in self.manifest.qfs:
            raise BundleError(
                f"QF {self.qf} is not supported by this bundle; supported: {self.manifest.qfs}"
            )
        if codec not in CODECS:
            raise BundleError(f"unknown codec {codec!r}; choose from {', '.join(CODECS)}")
        self.codec_name = codec
        self.codebook = self.core.codebook
        self.codec = self.codebook.codec(codec, self.qf)
        self.spec = self.manifest.preprocessing.model_dump()
        if whole_image:
            self.spec["mode"] = "whole"
        self.stride = self.manifest.latent.stride
        self.limits = limits
        self.precision = "int8" if int8 else "fp32"
        self.int8 = int8
        if int8 and "encoder_int8" not in self.manifest.files:
            raise BundleError(f"bundle {bundle_path} has no INT8 encoder (make one with spic-int8)")
        # Open the graphs now, not on the first frame: a broken bundle fails at start.
        self.session = self.core.session("encoder_int8" if int8 else "encoder")
        # An enhancement layer's graph (shared.manifest.Enhancement) runs only for a QF that
        # sends the layer; it stays in float under --int8 (one convolution).
        layer = self.manifest.enhancement
        if layer is not None:
            self.core.session(layer.encoder)

    @property
    def model_id(self) -> str:
        return self.manifest.model_id

    @property
    def bundle_limits(self) -> ServingLimits:
        """What the bundle says it serves (the manifest's ``limits``, else the defaults): the
        cloud serves no more than this, and less when its settings say so."""
        return self.manifest.limits or ServingLimits()

    def check_limits(self, size: tuple[int, int]) -> None:
        """Refuse a whole image whose padded input is over ``limits``; a crop always fits."""
        if self.limits is None or self.spec.get("mode") != "whole":
            return
        w, h = padded_size(*size, self.stride)
        lim = self.limits
        if w * h > lim.max_input_pixels or max(w, h) > lim.max_input_side:
            raise ImageRefusedError(
                f"whole image {size[0]}x{size[1]} (encoder input {w}x{h}) is over what the cloud "
                f"serves for model {self.model_id}: {lim.max_input_pixels} pixels, "
                f"{lim.max_input_side} per side; send it without --whole-image (a center crop)"
            )

    def load(self, source: str | Path | Image.Image) -> Image.Image:
        if isinstance(source, Image.Image):  # a camera's buffer: no copy when it is RGB already
            return source if source.mode == "RGB" else source.convert("RGB")
        try:
            return load_rgb(source)
        except Image.DecompressionBombError as exc:
            # Pillow's guard against images that claim billions of pixels: the size is in the
            # header, so the file is refused for good, not retried.
            raise ImageRefusedError(f"cannot read image {source}: {exc}") from exc
        except (OSError, ValueError) as exc:
            raise ImageError(f"cannot read image {source}: {exc}") from exc

    def encode(self, image: str | Path | Image.Image) -> bytes:
        return self.encode_timed(image).data

    def latent(self, x: np.ndarray, enhancement: bool = True) -> np.ndarray:
        """The encoder network on one prepared (3, H, W) crop: the latent y (C, h, w), with an
        enhancement layer's channels after the base latent's unless ``enhancement`` is false."""
        return self.core.analyse(x, self.int8, enhancement)

    def encode_latent(
        self,
        y: np.ndarray,
        image_size: tuple[int, int],
        qf: int | None = None,
        codec: str | None = None,
    ) -> bytes:
        """The frame of an encoder output ``y`` (C, h, w) of an image of ``image_size`` (w, h):
        what ``encode`` does after the network, at this encoder's QF and codec unless others of
        the bundle are named. One network pass can then feed every QF and codec (the evaluation
        does that); the bytes are the same as ``encode``'s at that QF and codec."""
        qf = self.qf if qf is None else qf
        return self.core.compress(y, qf, codec or self.codec_name, image_size)[1]

    def encode_timed(self, image: str | Path | Image.Image) -> EncodedFrame:
        t0 = time.perf_counter()
        im = self.load(image)
        self.check_limits(im.size)
        try:
            x = prepare(im, self.spec, self.stride)
        except ValueError as exc:
            raise ImageError(str(exc)) from exc
        t1 = time.perf_counter()
        y = self.latent(x, self.manifest.channels_at(self.qf) > self.manifest.latent.channels)
        t2 = time.perf_counter()
        symbols = self.manifest.quantize_latent(y, self.qf)
        t3 = time.perf_counter()
        payload = self.codec.encode(symbols)
        t4 = time.perf_counter()
        data = self.codebook.pack(symbols, payload, self.qf, self.codec.codec_id, im.size)
        t5 = time.perf_counter()
        timings = dict(zip(STAGES, np.diff([t0, t1, t2, t3, t4, t5]) * 1e3, strict=True))
        return EncodedFrame(
            data,
            symbols,
            self.qf,
            (x.shape[2], x.shape[1]),
            {k: float(v) for k, v in timings.items()},
        )
