"""Symbols ⇄ frame bytes for one model bundle: the step both the edge and the cloud take.

``Codebook`` builds each (codec, QF) entropy codec once from the manifest's tables and caches it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from shared import bitstream
from shared.codecs import CODECS, Codec, codec_name, make_codec
from shared.errors import BitstreamError
from shared.manifest import Manifest, ServingLimits

# Pillow refuses to open images over 2 x Image.MAX_IMAGE_PIXELS (a decompression-bomb guard), so no
# camera running the edge client can have captured a larger image.
MAX_CAPTURED_PIXELS = 2 * 89_478_485


class ModelMismatchError(ValueError):
    """A frame was made by another model bundle than the one asked to decode it."""

    def __init__(self, frame_id: str, served_ids: list[str]):
        self.frame_id, self.served_ids = frame_id, served_ids
        super().__init__(
            f"frame was made by model {frame_id}; this decoder has {', '.join(served_ids)}"
        )


def latent_shape(symbols: np.ndarray) -> tuple[int, int, int]:
    """The (C, H, W) of a latent, as plain ints for the frame header."""
    c, h, w = (int(d) for d in symbols.shape)
    return c, h, w


class Codebook:
    def __init__(self, manifest: Manifest):
        self.manifest = manifest
        self.model_id = manifest.model_id_bytes
        self._codec = lru_cache(maxsize=None)(self._build)

    def _build(self, name: str, qf: int) -> Codec:
        return make_codec(name, self.manifest.table(qf))

    def codec(self, name: str, qf: int) -> Codec:
        if name not in CODECS:
            raise ValueError(f"unknown codec {name!r}; known: {', '.join(CODECS)}")
        if qf not in self.manifest.qfs:
            raise ValueError(
                f"QF {qf} not supported by model {self.manifest.model_id}; supported: {self.manifest.qfs}"
            )
        return self._codec(name, qf)

    def encode(
        self, symbols: np.ndarray, qf: int, codec: str, image_size: tuple[int, int]
    ) -> bytes:
        """Entropy-code (C, H, W) symbols and pack them into a complete frame."""
        coder = self.codec(codec, qf)
        return self.pack(symbols, coder.encode(symbols), qf, coder.codec_id, image_size)

    def pack(
        self,
        symbols: np.ndarray,
        payload: bytes,
        qf: int,
        codec_id: int,
        image_size: tuple[int, int],
    ) -> bytes:
        """A complete frame of ``symbols`` already entropy-coded into ``payload``. The captured
        ``image_size`` (w, h) is only information, so a side past what the header holds is
        clamped rather than refused."""
        frame = bitstream.Frame(
            codec=codec_id,
            qf=qf,
            model_id=self.model_id,
            latent_shape=latent_shape(symbols),
            image_size=(
                min(image_size[0], bitstream.MAX_IMAGE_SIDE),
                min(image_size[1], bitstream.MAX_IMAGE_SIDE),
            ),
            payload=payload,
            stride=self.manifest.latent.stride,
        )
        return bitstream.pack(frame)

    def decode(self, data: bytes) -> tuple[bitstream.Frame, np.ndarray]:
        """Parse, verify and entropy-decode a frame into (frame, (C, H, W) uint16 symbols).

        Raises ``BitstreamError`` for a malformed frame and ``ModelMismatchError`` for a frame of
        another bundle.
        """
        frame = bitstream.unpack(data)
        return frame, self.decode_frame(frame)

    @property
    def native_shape(self) -> tuple[int, int, int]:
        """The base latent of a frame made with the manifest's own preprocessing (a center crop)."""
        side = self.manifest.preprocessing.size
        return self.manifest.latent.shape_for(side, side)

    def check_geometry(self, frame: bitstream.Frame, limits: ServingLimits | None = None) -> None:
        """Refuse a frame whose header is self-consistent but does not describe what this model
        makes, or is larger than ``limits`` allow. Reads the header only: call it before decoding.

        * the QF has a table; stride and channels are the model's at that QF (an enhancement
          layer's channels come on top of the base latent's from its QF up);
        * a frame of the manifest's preprocessing has exactly the crop's latent; any other latent
          is a whole-image frame, whose encoder input is its captured image padded up to the
          stride (so a (32, 7, 28) latent cannot pass for a (32, 14, 14) one);
        * the captured image is 1..``MAX_CAPTURED_PIXELS`` pixels;
        * the encoder's input is within ``limits`` (default: the manifest's, else the defaults).
        """
        m = self.manifest
        c, h, w = frame.latent_shape
        if frame.qf not in m.qfs:
            raise BitstreamError(
                "table_mismatch", f"QF {frame.qf} has no table in model {m.model_id}"
            )
        if c != m.channels_at(frame.qf) or frame.stride != m.latent.stride:
            raise BitstreamError(
                "table_mismatch",
                f"frame latent {frame.latent_shape} at QF {frame.qf} and stride {frame.stride} "
                f"does not fit model {m.model_id} ({m.channels_at(frame.qf)} channels at that QF, "
                f"stride {m.latent.stride})",
            )
        iw, ih = frame.image_size
        if iw < 1 or ih < 1 or iw * ih > MAX_CAPTURED_PIXELS:
            raise BitstreamError(
                "geometry",
                f"captured image {iw}x{ih} outside 1..{MAX_CAPTURED_PIXELS} pixels",
            )
        limits = limits or m.limits or ServingLimits()
        in_w, in_h = frame.input_size
        if in_w * in_h > limits.max_input_pixels or max(in_w, in_h) > limits.max_input_side:
            raise BitstreamError(
                "over_limit",
                f"encoder input {in_w}x{in_h} exceeds what model {m.model_id} serves here: "
                f"{limits.max_input_pixels} pixels, {limits.max_input_side} per side",
            )
        pw, ph = bitstream.padded_size(iw, ih, frame.stride)
        if (h, w) != self.native_shape[1:] and (pw, ph) != (in_w, in_h):
            raise BitstreamError(
                "geometry",
                f"latent {frame.latent_shape} is neither the model's {m.preprocessing.size}² crop "
                f"({h}x{w} is not {self.native_shape[1]}x{self.native_shape[2]}) nor a whole "
                f"image: encoder input {in_w}x{in_h}, captured {iw}x{ih} (padded: {pw}x{ph})",
            )

    def captured_region(self, frame: bitstream.Frame) -> tuple[int, int] | None:
        """(w, h) to crop a reconstruction to: a whole-image frame whose captured image was padded
        to the stride (``bitstream.padded_size``) is cut back to the captured size. None
        for a frame of the model's own crop (its latent is the crop's), whose reconstruction is
        the crop; a whole image within a stride of the crop's side is read as a crop too."""
        if frame.latent_shape[1:] == self.native_shape[1:]:
            return None
        iw, ih = frame.image_size
        padded = bitstream.padded_size(iw, ih, frame.stride)
        if (iw, ih) == frame.input_size or padded != frame.input_size:
            return None
        return iw, ih

    def decode_frame(
        self,
        frame: bitstream.Frame,
        limits: ServingLimits | None = None,
        accept: list[str] | None = None,
    ) -> np.ndarray:
        """Entropy-decode a parsed frame after ``check_geometry``; (C, H, W) uint16 symbols.
        ``accept``: the ids the frame may carry (default: the codec id and its aliases)."""
        if frame.frame_type != "key":  # its symbols need a reference: shared.stream decodes it
            raise BitstreamError(
                "needs_reference",
                f"{frame.frame_type} frame {frame.seq} needs frame {frame.ref_seq} of its stream",
            )
        if frame.model_id_hex not in (accept or self.manifest.ids):
            raise ModelMismatchError(frame.model_id_hex, self.manifest.ids)
        self.check_geometry(frame, limits)
        symbols = self.codec(codec_name(frame.codec), frame.qf).decode(
            frame.payload, frame.latent_shape
        )
        try:
            self.manifest.check_symbols(symbols, frame.qf)
        except ValueError as exc:
            raise BitstreamError("corrupt_payload", str(exc)) from None
        return symbols
