"""Entropy codecs behind one interface, looked up by name or by the id a frame carries.

Every codec is built from integer frequency tables (C, K) and offers::

    encode(symbols: (C, H, W) integer array) -> bytes
    decode(payload: bytes, shape: (C, H, W)) -> (C, H, W) uint16 array

``decode`` raises ``shared.errors.BitstreamError`` for any payload it cannot decode exactly.
"""

from __future__ import annotations

import numpy as np

from shared.codecs.huffman import HuffmanCodec
from shared.codecs.rans import RansCodec
from shared.errors import BitstreamError

CODECS = {cls.name: cls for cls in (HuffmanCodec, RansCodec)}
CODEC_IDS = {cls.codec_id: cls.name for cls in (HuffmanCodec, RansCodec)}
Codec = HuffmanCodec | RansCodec


def codec_name(codec_id: int) -> str:
    try:
        return CODEC_IDS[codec_id]
    except KeyError:
        raise BitstreamError(
            "unknown_codec", f"unknown codec id {codec_id}; known: {CODEC_IDS}"
        ) from None


def make_codec(name: str, tables: np.ndarray) -> Codec:
    try:
        cls = CODECS[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; known: {', '.join(CODECS)}") from None
    return cls(tables)


__all__ = ["CODECS", "CODEC_IDS", "Codec", "HuffmanCodec", "RansCodec", "codec_name", "make_codec"]
