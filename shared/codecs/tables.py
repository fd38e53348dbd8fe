"""Integer frequency tables and the escape mechanism shared by every entropy codec.

A table is a (C, K) array of non-negative integer counts: channel c, symbol k in [0, K). Tables
are integers so that every platform derives the same code from them; they ship with the model,
never in a frame.

Each codec codes *indices* into an alphabet of K + 1 entries: the K table symbols and ``ESC = K``.
A symbol is escaped when it is ≥ K or its count is zero; its value then travels in the escape
section in front of the codec's body, in C, H, W order::

    ┌──────────────┬─────────────────────────────┬──────────────┐
    │ n_esc varint │ n_esc varints (the values)  │ codec body … │
    └──────────────┴─────────────────────────────┴──────────────┘

So an out-of-distribution image always codes, at a higher rate, and never fails.

Model weights: every count is scaled by 2**16 and ESC gets the channel's plain total (or 1 when
the channel is empty), i.e. an escape probability of about 2**-16: rare enough to cost nothing
when unused, cheap enough (~16 bits) when needed.
"""

from __future__ import annotations

import numpy as np

from shared.errors import BitstreamError
from shared.varint import read_varint, write_varint

ESC_SHIFT = 16
MAX_SYMBOL = 0xFFFF  # symbols are uint16: the largest QF is 255, but tables may be wider


def check_tables(tables: np.ndarray) -> np.ndarray:
    t = np.asarray(tables)
    if t.ndim != 2 or t.shape[0] < 1 or t.shape[1] < 1:
        raise ValueError(f"frequency tables must be (channels, symbols), got shape {t.shape}")
    if not np.issubdtype(t.dtype, np.integer) or (t < 0).any() or (t >= 1 << 32).any():
        raise ValueError("frequency tables must hold integers in [0, 2**32)")
    return t.astype(np.int64)


def model_weights(tables: np.ndarray) -> np.ndarray:
    """(C, K) counts -> (C, K + 1) integer weights, the last column being ESC."""
    t = check_tables(tables)
    esc = np.maximum(t.sum(axis=1, keepdims=True), 1)
    return np.concatenate([t << ESC_SHIFT, esc], axis=1)


def split_escapes(symbols: np.ndarray, tables: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C, N) symbols -> (C, N) int64 indices with ESC = K, and the escaped values in order."""
    c, k = tables.shape
    s = symbols.astype(np.int64)
    in_range = s < k
    codable = in_range & (tables[np.arange(c)[:, None], np.where(in_range, s, 0)] > 0)
    return np.where(codable, s, k), s[~codable]


def join_escapes(indices: np.ndarray, escapes: np.ndarray, k: int) -> np.ndarray:
    """Inverse of ``split_escapes``: fill the ESC positions with the escaped values, in order."""
    is_esc = indices == k
    if int(is_esc.sum()) != len(escapes):
        raise BitstreamError(
            "corrupt_payload", f"{int(is_esc.sum())} escape codes but {len(escapes)} escaped values"
        )
    out = indices.astype(np.uint16)
    out[is_esc] = escapes
    return out


def write_escapes(escapes: np.ndarray, out: bytearray) -> None:
    write_varint(len(escapes), out)
    for v in escapes.tolist():
        write_varint(v, out)


def read_escapes(buf: bytes, pos: int, max_count: int) -> tuple[np.ndarray, int]:
    n, pos = read_varint(buf, pos)
    if n > max_count:  # checked before allocating: a corrupt count cannot request a huge array
        raise BitstreamError("corrupt_payload", f"{n} escaped values for {max_count} symbols")
    values = np.empty(n, dtype=np.uint16)
    for i in range(n):
        v, pos = read_varint(buf, pos)
        if v > MAX_SYMBOL:
            raise BitstreamError("corrupt_payload", f"escaped value {v} exceeds {MAX_SYMBOL}")
        values[i] = v
    return values, pos


def check_shape(tables: np.ndarray, shape: tuple[int, ...]) -> None:
    """A frame's latent must have as many channels as the tables."""
    if len(shape) != 3 or shape[0] != tables.shape[0]:
        raise BitstreamError(
            "table_mismatch",
            f"latent shape {tuple(shape)} does not fit {tables.shape[0]}-channel tables",
        )


def begin_decode(
    tables: np.ndarray, payload: bytes, shape: tuple[int, int, int]
) -> tuple[int, int, np.ndarray, int]:
    """Every codec's first decoding step: check the shape against the tables, read the escape
    section. Returns (channels, symbols per channel, escaped values, offset of the codec body)."""
    check_shape(tables, shape)
    c, h, w = shape
    escapes, pos = read_escapes(payload, 0, c * h * w)
    return c, h * w, escapes, pos
