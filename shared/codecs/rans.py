"""rANS coding of a (C, H, W) symbol array with constriction's ANS coder.

Below one bit per symbol where Huffman cannot go, and the paper's own "future work" (arithmetic
coding). Each channel is coded with a categorical model built from the integer tables (see
``tables``), quantized by constriction to its fixed-point precision; constriction keeps its
bitstreams stable across platforms and within a version, and the version is pinned.

Body layout (after the escape section)::

    ┌────────────────────────────────────────────────────────────┐
    │ the ANS stack as little-endian u32 words (channel 0 first) │
    └────────────────────────────────────────────────────────────┘

Channels are pushed in reverse so that they pop in order 0 … C-1; after the last symbol a valid
stream leaves the coder empty, which is checked.
"""

from __future__ import annotations

import constriction
import numpy as np

from shared.codecs.tables import (
    begin_decode,
    check_shape,
    check_tables,
    join_escapes,
    model_weights,
    split_escapes,
    write_escapes,
)
from shared.errors import BitstreamError


class RansCodec:
    name = "rans"
    codec_id = 2

    def __init__(self, tables: np.ndarray):
        self.tables = check_tables(tables)
        weights = model_weights(self.tables).astype(np.float64)
        self.esc = weights.shape[1] - 1  # the escape symbol's index: the last column
        # perfect=False is passed explicitly: constriction's default is changing, and encoder and
        # decoder must quantize the probabilities identically.
        self.models = [
            constriction.stream.model.Categorical(w / w.sum(), perfect=False) for w in weights
        ]

    def encode(self, symbols: np.ndarray) -> bytes:
        check_shape(self.tables, symbols.shape)
        c = symbols.shape[0]
        idx, escapes = split_escapes(symbols.reshape(c, -1), self.tables)
        idx = idx.astype(np.int32)
        coder = constriction.stream.stack.AnsCoder()
        for ch in range(c - 1, -1, -1):
            coder.encode_reverse(idx[ch], self.models[ch])
        out = bytearray()
        write_escapes(escapes, out)
        out += coder.get_compressed().astype("<u4").tobytes()
        return bytes(out)

    def decode(self, payload: bytes, shape: tuple[int, int, int]) -> np.ndarray:
        c, n, escapes, pos = begin_decode(self.tables, payload, shape)
        if (len(payload) - pos) % 4:
            raise BitstreamError(
                "corrupt_payload", "rANS body is not a whole number of 32-bit words"
            )
        words = np.frombuffer(payload, dtype="<u4", offset=pos).astype(np.uint32)
        idx = np.empty((c, n), dtype=np.int64)
        try:
            coder = constriction.stream.stack.AnsCoder(words)
            for ch in range(c):
                idx[ch] = coder.decode(self.models[ch], n)
            leftover = not coder.is_empty()
        except Exception as exc:  # constriction reports bad data in its own exception types
            raise BitstreamError("corrupt_payload", f"rANS body does not decode: {exc}") from None
        if leftover:
            raise BitstreamError("corrupt_payload", "rANS body has data left after the last symbol")
        return join_escapes(idx, escapes, self.esc).reshape(shape)
