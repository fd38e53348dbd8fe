"""Regenerate tests/golden/*.spic. Run only when the format version changes on purpose:

    .venv/bin/python tests/golden/make_golden.py

The frames are made from fixed tables and symbols (``golden_cases``), so the test can check both
directions: decoding gives the symbols, encoding gives the bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shared import bitstream
from shared.codecs import make_codec

HERE = Path(__file__).parent
MODEL_ID = bytes.fromhex("53504943676f6c64")  # "SPICgold"


def golden_cases():
    rng = np.random.default_rng(2020)
    c, h, w, qf = 4, 3, 5, 16
    tables = rng.integers(0, 50, size=(c, qf + 1))
    tables[1] = 0
    tables[1, 7] = 100  # a one-symbol channel
    tables[2, :8] = 0  # symbols 0..7 must escape in channel 2
    symbols = rng.integers(0, qf + 1, size=(c, h, w)).astype(np.uint16)
    symbols[1] = 7  # all mode: costs nothing in Huffman
    for codec in ("huffman", "rans"):
        yield codec, qf, tables, symbols


def frame_for(codec: str, qf: int, tables: np.ndarray, symbols: np.ndarray) -> bytes:
    coder = make_codec(codec, tables)
    frame = bitstream.Frame(
        codec=coder.codec_id,
        qf=qf,
        model_id=MODEL_ID,
        latent_shape=symbols.shape,
        image_size=(80, 48),
        payload=coder.encode(symbols),
        stride=16,
    )
    return bitstream.pack(frame)


if __name__ == "__main__":
    for codec, qf, tables, symbols in golden_cases():
        (HERE / f"{codec}-v{bitstream.VERSION}.spic").write_bytes(
            frame_for(codec, qf, tables, symbols)
        )
