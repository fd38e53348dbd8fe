"""Symbols ⇄ frame bytes for one model bundle: the step both the edge and the cloud take.

``Codebook`` builds each (codec, QF) entropy codec once from the manifest's tables and caches it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from shared import bitstream
from shared.codecs import CODECS, Codec, codec_name, make_codec
from shared.errors import BitstreamError
from shared.manifest import Manifest


class ModelMismatchError(ValueError):
    """A frame was made by another model bundle than the one asked to decode it."""

    def __init__(self, frame_id: str, served_ids: list[str]):
        self.frame_id, self.served_ids = frame_id, served_ids
        super().__init__(
            f"frame was made by model {frame_id}; this decoder has {', '.join(served_ids)}"
        )


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
        frame = bitstream.Frame(
            codec=coder.codec_id,
            qf=qf,
            model_id=self.model_id,
            latent_shape=tuple(int(d) for d in symbols.shape),
            image_size=image_size,
            payload=coder.encode(symbols),
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

    def decode_frame(self, frame: bitstream.Frame) -> np.ndarray:
        if frame.model_id != self.model_id:
            raise ModelMismatchError(frame.model_id_hex, [self.manifest.model_id])
        if (
            frame.latent_shape[0] != self.manifest.latent.channels
            or frame.stride != self.manifest.latent.stride
        ):
            raise BitstreamError(
                "table_mismatch",
                f"frame latent {frame.latent_shape} at stride {frame.stride} does not fit model "
                f"{self.manifest.model_id} ({self.manifest.latent.channels} channels, stride {self.manifest.latent.stride})",
            )
        if frame.qf not in self.manifest.qfs:
            raise BitstreamError(
                "table_mismatch", f"QF {frame.qf} has no table in model {self.manifest.model_id}"
            )
        symbols = self.codec(codec_name(frame.codec), frame.qf).decode(
            frame.payload, frame.latent_shape
        )
        if symbols.max(initial=0) > frame.qf:
            raise BitstreamError(
                "corrupt_payload", f"symbol {int(symbols.max())} exceeds QF {frame.qf}"
            )
        return symbols
