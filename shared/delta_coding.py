"""The type-1 delta payload of a stream (``DeltaCoder``) and what the cdelta's shares with it.

Layouts and pop orders are specified in ``shared.stream``'s docstring (and docs/bitstream.md);
the cdelta payload (frame type 3) is ``shared.context_delta``. Both read the bundle's per-QF
table of the frame's QF and nothing else; a cdelta also reads the change of the frame before
(``change_between``), which the edge and the cloud each hold for the stream. Every probability
either side hands to constriction is an integer over 2**16 or a ratio of exact integers, so an
ARM camera and an x86 cloud build the same models bit for bit.
"""

from __future__ import annotations

from functools import cached_property, lru_cache
from typing import Any

import constriction
import numpy as np

from shared.codebook import Codebook
from shared.errors import BitstreamError

SCALE = 1 << 16
P_MIN, P_MAX = 16, 32768
_CATEGORICAL = constriction.stream.model.Categorical(perfect=False)


@lru_cache(maxsize=4096)
def _bernoulli(p: int) -> Any:
    """constriction's Bernoulli model of P(1) = p / 2**16, built once: a model per call, not
    per symbol, is what keeps a delta's coding cheaper than the frame's own."""
    return constriction.stream.model.Bernoulli(p / SCALE, perfect=False)


def change_between(prev: np.ndarray, cur: np.ndarray, qf: int = 255) -> np.ndarray:
    """cur − prev per symbol, clipped to ±127, as int8: what a cdelta's contexts read."""
    if qf <= 127:  # symbols ≤ 127: their difference fits int8, nothing to clip
        small: np.ndarray = np.subtract(cur, prev, dtype=np.int8, casting="unsafe")
        return small
    d = np.subtract(cur, prev, dtype=np.int16, casting="unsafe")  # symbols ≤ 255: exact
    np.minimum(np.maximum(d, -127, out=d), 127, out=d)  # not np.clip: its wrapper is slow
    out: np.ndarray = d.astype(np.int8)
    return out


def _byte_p(b: np.ndarray | int) -> np.ndarray:
    """A probability byte b -> P(1) = (256·b + 128) / 2**16, as float64 (exact)."""
    return (256 * np.asarray(b, dtype=np.int64) + 128) / SCALE


class DeltaCoder:
    """The delta payload (frame type 1) of one (codebook, QF): the tables it reads, both ways."""

    def __init__(self, codebook: Codebook, qf: int):
        m = codebook.manifest
        table = m.table(qf)
        c, k = table.shape
        counts = table.astype(np.float64)
        probs = counts / np.maximum(counts.sum(1, keepdims=True), 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ent = -np.nansum(np.where(probs > 0, probs * np.log2(probs), 0.0), axis=1)
        self.w = np.maximum(1, np.round(256 * ent)).astype(np.int64)
        ceiling = np.full(c, qf)
        ceiling[: m.latent.channels] = m.base_qf_at(qf)
        weights = table.astype(np.int64) + 1
        weights[np.arange(k)[None, :] > ceiling[:, None]] = 0
        self.w_sum = int(self.w.sum())
        self.weights, self.channels, self.k, self.qf = weights.astype(np.float64), c, k, qf

    def channel_p(self, gain: int) -> list[int]:
        """P(a channel changes | its position changes) of each channel, in 1/2**16."""
        return [int(p) for p in np.clip((gain * self.w) >> 2, P_MIN, P_MAX)]

    @lru_cache(maxsize=256)  # noqa: B019 (one coder per codec and QF, kept for the process)
    def channel_models(self, gain: int) -> list[Any]:
        return [_bernoulli(p) for p in self.channel_p(gain)]

    @cached_property
    def _changes(self) -> np.ndarray:
        """(C, K, K) P(new value | channel, previous value, it changed)."""
        k = self.k
        w = np.repeat(self.weights[:, None, :], k, axis=1)
        w[:, np.arange(k), np.arange(k)] = 0
        with np.errstate(invalid="ignore"):
            p = w / w.sum(2, keepdims=True)
        out: np.ndarray = np.nan_to_num(p)
        return out  # a previous value above the ceiling: never held

    def _value_probs(self, chans: np.ndarray, prev: np.ndarray) -> np.ndarray:
        out: np.ndarray = self._changes[chans, prev]
        return out

    @cached_property
    def _gain_bits(self) -> tuple[np.ndarray, np.ndarray]:
        """Bits of a 1 and of a 0 for every (gain, channel): the encoder's search table."""
        p = np.clip((np.arange(256)[:, None] * self.w[None]) >> 2, P_MIN, P_MAX) / SCALE
        return -np.log2(p), -np.log2(1 - p)

    def _best_gain(self, ones: np.ndarray, total: np.ndarray) -> int:
        """The gain whose channel probabilities code ``ones`` of ``total`` flags per channel in
        the fewest bits."""
        one_bits, zero_bits = self._gain_bits
        return int((one_bits @ ones + zero_bits @ (total - ones)).argmin())

    def encode(self, prev: np.ndarray, cur: np.ndarray) -> bytes:
        changed = prev != cur
        pos = changed.any(0).ravel()
        pos_code = min(255, np.count_nonzero(pos) * 256 // pos.size)
        flags = changed.reshape(self.channels, -1)[:, pos]
        ones = np.count_nonzero(flags, axis=1).astype(np.float64)
        gain = self._best_gain(ones, np.full_like(ones, flags.shape[1])) if flags.size else 0
        chans, where = np.nonzero(flags)
        at = np.flatnonzero(pos)[where]
        p_prev = prev.reshape(self.channels, -1)[chans, at].astype(np.int64)
        p_new = cur.reshape(self.channels, -1)[chans, at].astype(np.int32)
        coder = constriction.stream.stack.AnsCoder()
        if len(p_new):  # pushed in reverse: the decoder pops positions, flags, values
            coder.encode_reverse(p_new, _CATEGORICAL, self._value_probs(chans, p_prev))
        if flags.size:
            bits = flags.astype(np.int32)
            for ch, model in reversed(list(enumerate(self.channel_models(gain)))):
                coder.encode_reverse(bits[ch], model)
        coder.encode_reverse(pos.astype(np.int32), _bernoulli(256 * pos_code + 128))
        words: bytes = coder.get_compressed().astype("<u4").tobytes()
        return bytes([pos_code, gain]) + words

    def decode(self, payload: bytes, prev: np.ndarray) -> np.ndarray:
        """The frame's symbols from its payload and its reference's symbols ``prev``."""
        if len(payload) < 2 or (len(payload) - 2) % 4:
            raise BitstreamError("corrupt_payload", "delta payload is not 2 bytes + u32 words")
        c, h, w = prev.shape
        pos_code, gain = payload[0], payload[1]
        words = np.frombuffer(payload, dtype="<u4", offset=2).astype(np.uint32)
        try:
            coder = constriction.stream.stack.AnsCoder(words)
            pos = coder.decode(_bernoulli(256 * pos_code + 128), h * w).astype(bool)
            n = int(pos.sum())
            flags = np.zeros((c, n), dtype=bool)
            if n:
                for ch, model in enumerate(self.channel_models(gain)):
                    flags[ch] = coder.decode(model, n)
            chans, where = np.nonzero(flags)
            at = np.flatnonzero(pos)[where]
            flat = prev.reshape(c, -1).copy()
            if len(chans):
                probs = self._value_probs(chans, flat[chans, at].astype(np.int64))
                flat[chans, at] = coder.decode(_CATEGORICAL, probs)
            leftover = not coder.is_empty()
        except BitstreamError:
            raise
        except Exception as exc:  # constriction reports bad data in its own exception types
            raise BitstreamError("corrupt_payload", f"delta does not decode: {exc}") from None
        if leftover:
            raise BitstreamError("corrupt_payload", "delta has data left after the last symbol")
        out: np.ndarray = flat.reshape(c, h, w)
        return out
