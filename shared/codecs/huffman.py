"""Canonical, length-limited Huffman coding of a (C, H, W) symbol array, in vectorized numpy.

This is the paper's lossless stage. Each channel has its own code, derived deterministically from
the integer tables (see ``tables``); codes are canonical and at most ``MAX_CODE_LENGTH`` bits, so a
code is fully described by its code lengths and the decoder can use a 2**12-entry lookup table.

Body layout (after the escape section)::

    ┌────────────────────────────────┬───────────────────────────────────────────────┐
    │ C varints: bits of channel c   │ the channels' codewords, MSB-first, concat-   │
    │ (0 = every symbol is the mode) │ enated without padding, zero-padded to a byte │
    └────────────────────────────────┴───────────────────────────────────────────────┘

The per-channel bit counts make each channel's start known, so all channels decode at once; a
count of 0 marks a channel whose every symbol equals its table's most frequent symbol, which
costs nothing to send (Huffman cannot go below 1 bit per symbol, so a dead channel would
otherwise cost H·W bits).

Decoding (no Python loop over symbols): look up (symbol, length) at *every* bit position through
the channel's table; the codeword starts of a channel then form the chain p → p + len(p) from its
start; ``_chain`` enumerates H·W links of every chain with pointer doubling in O(log H·W) steps.
"""

from __future__ import annotations

import heapq

import numpy as np

from shared.codecs.tables import (
    begin_decode,
    check_shape,
    check_tables,
    join_escapes,
    model_weights,
    write_escapes,
)
from shared.errors import BitstreamError
from shared.varint import read_varint, write_varint

MAX_CODE_LENGTH = 12
# A codeword is handled left-aligned in a 24-bit window: it starts at any of a byte's 8 bit
# offsets and is at most 12 bits long, so it always fits in 3 bytes.
WINDOW_BITS = 24
# Decoder table entries pack (symbol << LENGTH_BITS) | codeword length; 4 bits hold 0..12.
LENGTH_BITS = 4
LENGTH_MASK = (1 << LENGTH_BITS) - 1


def optimal_lengths(weights: np.ndarray) -> np.ndarray:
    """Huffman code lengths for integer weights (0 = no code). Ties break by symbol index."""
    lengths = np.zeros(len(weights), dtype=np.int64)
    live = [int(i) for i in np.flatnonzero(weights)]
    if len(live) == 1:
        lengths[live[0]] = 1
        return lengths
    heap = [(int(weights[i]), i, [i]) for i in live]
    heapq.heapify(heap)
    tiebreak = len(weights)
    while len(heap) > 1:
        w1, _, s1 = heapq.heappop(heap)
        w2, _, s2 = heapq.heappop(heap)
        lengths[s1] += 1
        lengths[s2] += 1
        heapq.heappush(heap, (w1 + w2, tiebreak, s1 + s2))
        tiebreak += 1
    return lengths


def limited_lengths(weights: np.ndarray, max_len: int = MAX_CODE_LENGTH) -> np.ndarray:
    """Optimal lengths, then capped at ``max_len`` with the Kraft sum repaired.

    Over-long codes are cut to ``max_len``; the Kraft excess is paid by lengthening the longest
    codes still below the cap (the cheapest bits to give up), lightest first; any slack left is
    handed back to the heaviest symbols. Deterministic, and within a fraction of a percent of
    optimal for the alphabets SPIC uses.
    """
    lengths = optimal_lengths(weights)
    coded = lengths > 0
    if lengths.max(initial=0) <= max_len:
        return lengths
    lengths = np.minimum(lengths, max_len)
    full = 1 << max_len
    kraft = int(np.sum(np.left_shift(1, max_len - lengths[coded])))
    light_first = np.lexsort((np.arange(len(weights)), weights))
    light_first = light_first[coded[light_first]]
    while kraft > full:
        below = light_first[lengths[light_first] < max_len]
        longest = lengths[below].max()
        i = below[np.argmax(lengths[below] == longest)]
        lengths[i] += 1
        kraft -= 1 << (max_len - int(lengths[i]))
    for i in light_first[::-1]:
        while lengths[i] > 1 and kraft + (1 << (max_len - int(lengths[i]))) <= full:
            kraft += 1 << (max_len - int(lengths[i]))
            lengths[i] -= 1
    result: np.ndarray = lengths
    return result


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical codewords for given lengths (shorter first, then by symbol index)."""
    codes = np.zeros(len(lengths), dtype=np.int64)
    code, prev = 0, 0
    for i in np.lexsort((np.arange(len(lengths)), lengths)):
        n = int(lengths[i])
        if n == 0:
            continue
        code <<= n - prev
        codes[i] = code
        code += 1
        prev = n
    return codes


class HuffmanCodec:
    name = "huffman"
    codec_id = 1

    def __init__(self, tables: np.ndarray):
        self.tables = check_tables(tables)
        weights = model_weights(self.tables)
        c, k1 = weights.shape
        self.esc = k1 - 1  # the escape symbol's index: the last column of every table
        self.mode = np.argmax(self.tables, axis=1)
        self.lengths = np.zeros((c, k1), dtype=np.int64)
        # Encoder tables per (channel, symbol): the codeword left-aligned in 24 bits, and its
        # length. Zero-count symbols and column K carry the ESC code, so one gather both codes
        # and flags escapes (left-aligned codewords of a prefix code are all distinct).
        self.enc_aligned: np.ndarray = np.zeros((c, k1), dtype=np.int32)
        self.enc_len: np.ndarray = np.zeros((c, k1), dtype=np.int32)
        # Decoder table: (symbol << 4 | length) per (channel, 12-bit window); 0 = invalid.
        self.lut: np.ndarray = np.zeros((c, 1 << MAX_CODE_LENGTH), dtype=np.uint16)
        for ch in range(c):
            lengths = limited_lengths(weights[ch])
            codes = canonical_codes(lengths)
            self.lengths[ch] = lengths
            aligned = codes << (WINDOW_BITS - lengths)
            self.enc_aligned[ch] = np.where(lengths > 0, aligned, aligned[self.esc])
            self.enc_len[ch] = np.where(lengths > 0, lengths, lengths[self.esc])
            for sym in np.flatnonzero(lengths):
                shift = MAX_CODE_LENGTH - int(lengths[sym])
                lo, hi = int(codes[sym]) << shift, (int(codes[sym]) + 1) << shift
                self.lut[ch, lo:hi] = (int(sym) << LENGTH_BITS) | int(lengths[sym])
        self.esc_aligned = self.enc_aligned[:, self.esc]
        self.enc_aligned, self.enc_len = self.enc_aligned.ravel(), self.enc_len.ravel()
        self.lut = self.lut.ravel()

    def code_bits(self, symbols: np.ndarray) -> int:
        """Bits of the codewords alone: the optimum this code can reach for these symbols."""
        c = symbols.shape[0]
        flat = np.minimum(symbols.reshape(c, -1).astype(np.int64), self.esc)
        return int(np.take(self.enc_len, flat + (np.arange(c) * (self.esc + 1))[:, None]).sum())

    def encode(self, symbols: np.ndarray) -> bytes:
        check_shape(self.tables, symbols.shape)
        c = symbols.shape[0]
        flat = symbols.reshape(c, -1)
        active = ~(flat == self.mode[:, None]).all(axis=1)
        rows = np.flatnonzero(active)
        sub = flat[rows]
        flat_idx = (
            np.minimum(sub, self.esc).astype(np.int32)
            + (rows * (self.esc + 1)).astype(np.int32)[:, None]
        )
        aligned = np.take(self.enc_aligned, flat_idx)
        lens = np.take(self.enc_len, flat_idx)
        escapes = sub[aligned == self.esc_aligned[rows, None]]
        channel_bits = np.zeros(c, dtype=np.int64)
        channel_bits[rows] = lens.sum(axis=1)

        out = bytearray()
        write_escapes(escapes, out)
        for bits in channel_bits.tolist():
            write_varint(bits, out)
        out += _pack_bits(aligned.ravel(), lens.ravel())
        return bytes(out)

    def decode(self, payload: bytes, shape: tuple[int, int, int]) -> np.ndarray:
        c, n, escapes, pos = begin_decode(self.tables, payload, shape)
        channel_bits = np.empty(c, dtype=np.int64)
        for ch in range(c):
            bits, pos = read_varint(payload, pos)
            if bits > n * MAX_CODE_LENGTH or (0 < bits < n):
                raise BitstreamError(
                    "corrupt_payload", f"channel {ch} declares {bits} bits for {n} symbols"
                )
            channel_bits[ch] = bits
        total = int(channel_bits.sum())
        if len(payload) - pos != (total + 7) // 8:
            raise BitstreamError(
                "corrupt_payload",
                f"Huffman body is {len(payload) - pos} bytes, channel sizes say {(total + 7) // 8}",
            )
        out = np.repeat(self.mode[:, None], n, axis=1).astype(np.uint16)
        rows = np.flatnonzero(channel_bits)
        if len(rows):
            data = np.frombuffer(payload, dtype=np.uint8, offset=pos)
            starts = (np.cumsum(channel_bits) - channel_bits)[rows]
            table_of_bit = np.repeat(rows, channel_bits[rows])
            idx = self._decode_chains(data, total, table_of_bit, starts, channel_bits[rows], n)
            out[rows] = join_escapes(idx, escapes, self.esc)
        elif len(escapes):
            raise BitstreamError("corrupt_payload", "escaped values but no coded channel")
        return out.reshape(shape)

    def _decode_chains(
        self,
        data: np.ndarray,
        total: int,
        table_of_bit: np.ndarray,
        starts: np.ndarray,
        bits: np.ndarray,
        n: int,
    ) -> np.ndarray:
        # The 12 bits that follow every bit position: a 24-bit big-endian window per byte,
        # repeated for the byte's 8 bit offsets and shifted into place.
        padded = np.concatenate([data, np.zeros(2, dtype=np.uint8)]).astype(np.int32)
        per_byte = (padded[:-2] << 16) | (padded[1:-1] << 8) | padded[2:]
        shifts = np.tile(
            np.arange(
                WINDOW_BITS - MAX_CODE_LENGTH,
                WINDOW_BITS - MAX_CODE_LENGTH - 8,
                -1,
                dtype=np.int32,
            ),
            len(data),
        )
        window = (np.repeat(per_byte, 8) >> shifts)[:total] & ((1 << MAX_CODE_LENGTH) - 1)
        entry = np.zeros(total + 1, dtype=np.int32)  # position `total` is a sink: entry 0, invalid
        entry[:total] = np.take(
            self.lut, (table_of_bit.astype(np.int32) << MAX_CODE_LENGTH) | window
        )
        length = entry & LENGTH_MASK
        nxt = np.arange(total + 1, dtype=np.int32)
        np.minimum(nxt + length, total, out=nxt)
        code_starts = _chain(nxt, starts.astype(np.int32), n)
        if length[code_starts].min() == 0:
            raise BitstreamError("corrupt_payload", "invalid Huffman codeword")
        last = code_starts[:, -1]
        if not np.array_equal(last + length[last], starts + bits):
            raise BitstreamError("corrupt_payload", "Huffman channel does not end where declared")
        symbols: np.ndarray = entry[code_starts] >> LENGTH_BITS
        return symbols


def _chain(nxt: np.ndarray, starts: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` links of the chains start → nxt[start] → … for every start, by doubling."""
    pos = np.empty((len(starts), n), dtype=nxt.dtype)
    pos[:, 0] = starts
    jump, filled = nxt, 1  # invariant: jump = nxt applied `filled` times
    while filled < n:
        m = min(filled, n - filled)
        pos[:, filled : filled + m] = np.take(jump, pos[:, :m])
        filled += m
        if filled < n:
            jump = np.take(jump, jump)
    return pos


def _pack_bits(aligned: np.ndarray, lengths: np.ndarray) -> bytes:
    """Concatenate codewords (left-aligned in 24 bits) MSB-first into bytes, zero-padded."""
    end = np.cumsum(lengths, dtype=np.int32)
    total = int(end[-1]) if len(end) else 0
    if total == 0:
        return b""
    nbytes = (total + 7) // 8
    start = end - lengths
    # A codeword spans at most 3 bytes (offset <= 7, length <= 12): place it in a 24-bit window
    # at its first byte. Codewords never share a bit, so summing the windows of the codewords
    # that start in one byte equals OR-ing them, and one bincount does it for all bytes.
    window = np.bincount(start >> 3, weights=aligned >> (start & 7), minlength=nbytes)
    window = window.astype(np.int32)
    out = (window >> 16) & 0xFF
    out[1:] |= (window[:-1] >> 8) & 0xFF
    out[2:] |= window[:-2] & 0xFF
    return out.astype(np.uint8).tobytes()
