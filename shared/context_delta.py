"""The cdelta payload of a stream (frame type 3): ``ContextDeltaCoder``.

The layout and pop order are specified in ``shared.stream``'s docstring (and docs/bitstream.md).
It is the type-1 model (``shared.delta_coding``) with the change the frame before made as
context, which the edge and the cloud each hold for the stream.
"""

from __future__ import annotations

import math
from functools import cached_property, lru_cache
from typing import NamedTuple

import constriction
import numpy as np

from shared.delta_coding import (
    _CATEGORICAL,
    P_MAX,
    P_MIN,
    SCALE,
    DeltaCoder,
    _byte_p,
    change_between,
)
from shared.errors import BitstreamError


class Contexts(NamedTuple):
    """What a cdelta reads of the change D its reference made (all per position: H·W)."""

    pos: np.ndarray  # position context: 2 D ≠ 0 here, 1 at a 3×3 neighbour only, 0 none
    change: np.ndarray  # (C, H·W) int8: D
    moved: np.ndarray  # (C/4, H·W) float32: bit j of row g set where D ≠ 0 in channel 4g + j
    counts: np.ndarray  # (H·W,) float32: channels with D ≠ 0
    check: int  # the check byte of a cdelta coded with these contexts


CDELTA_HEAD = 8  # check, 3 position bytes, gain, again, step, back
SMALL_K = 9  # up to QF 8 a cdelta's value probabilities come from cached tables


def check_byte(change: np.ndarray | None) -> int:
    """A cdelta's first byte: 0 when coded with no change known, else 1 + (number of symbols
    that changed, mod 255), so a decoder holding another change refuses the frame instead of
    decoding it wrong."""
    return 0 if change is None else 1 + int(np.count_nonzero(change)) % 255


@lru_cache(maxsize=16)
def _neighbours(h: int, w: int) -> np.ndarray:
    """(H·W, H·W) float: 9 on the diagonal, 1 between 3×3 neighbours: one product gives each
    position's context (a matrix product is cheaper than shifting masks at this size)."""
    y, x = np.divmod(np.arange(h * w), w)
    near = (np.abs(y[:, None] - y[None]) <= 1) & (np.abs(x[:, None] - x[None]) <= 1)
    out: np.ndarray = (near + 8.0 * np.eye(h * w)).astype(np.float32)  # scores ≤ 17: exact
    return out


class ContextDeltaCoder(DeltaCoder):
    """The cdelta payload (frame type 3): the type-1 model with the previous frame's change as
    context (positions, channel flags) and as a prior of the new value (a step of one, a return
    to the value of two frames ago). Each group is one constriction call over a probability
    matrix gathered (np.take: several times faster than [] at these sizes) from small tables,
    so a frame costs a few dozen numpy operations whatever its size."""

    @cached_property
    def _tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """(256, 2) rows (1 − p, p) of a probability byte; (256, C, 2) of each gain's channel
        probabilities; the context of a neighbourhood score; the table's odds against a step
        of one (the encoder's step estimate)."""
        byte = _byte_p(np.arange(256))
        rows = np.stack([1 - byte, byte], -1)
        pc = np.clip((np.arange(256)[:, None] * self.w[None]) >> 2, P_MIN, P_MAX) / SCALE
        gains = np.stack([1 - pc, pc], -1)
        score_ctx = np.array([0] + [1] * 8 + [2] * 10, dtype=np.intp)  # 9 per own change
        b = self.weights
        one = np.abs(np.arange(self.k)[:, None] - np.arange(self.k)[None]) == 1  # (v, k)
        m1 = b @ one.T
        rest = b.sum(1, keepdims=True) - b - m1
        p = b / b.sum(1, keepdims=True)  # how often each (c, v) is the previous value
        odds = float((p * rest).sum() / max((p * m1).sum(), 1.0))
        return rows, gains, score_ctx, odds

    def contexts(self, change: np.ndarray | None, h: int, w: int) -> Contexts | None:
        """What a cdelta coded after a frame that made ``change`` reads (None: no change)."""
        if change is None:
            return None
        d = change.reshape(self.channels, -1)
        return self._contexts(d, self._packer @ (d != 0).astype(np.float32), h, w)

    @lru_cache(maxsize=8)  # noqa: B019 (one coder per codec and QF, kept for the process)
    def still(self, h: int, w: int) -> Contexts:
        """The contexts after a skip: nothing changed (shared, never written to)."""
        out = self.contexts(np.zeros((self.channels, h * w), dtype=np.int8), h, w)
        assert out is not None
        return out

    def _contexts(self, d: np.ndarray, packed: np.ndarray, h: int, w: int) -> Contexts:
        count = packed[-1]
        score = _neighbours(h, w) @ np.minimum(count, 1)  # 9 if its own change, 1 a neighbour's
        ctx = np.take(self._tables[2], score.astype(np.intp))
        return Contexts(ctx, d, packed[:-1], count, 1 + int(count.sum()) % 255)

    @cached_property
    def _packer(self) -> np.ndarray:
        """(C/4 + 1, C) float32: rows 2**j at channel 4g + j, then a row of ones (a count). A
        float32 product (exact below 2**24) is the cheapest packing at this size."""
        g = np.arange(self.channels)
        out = np.zeros((self.channels // 4 + 1, self.channels), dtype=np.float32)
        out[g // 4, g] = 1 << (g % 4)
        out[-1] = 1
        return out

    def _value_probs_ctx(
        self,
        chans: np.ndarray,
        prev: np.ndarray,
        back: np.ndarray | None,
        step: int,
        ret: int,
        check: bool = True,
    ) -> np.ndarray:
        """(n, K) P(new value) of each changed symbol (the spec's step 3); BitstreamError for
        a row with nothing to change to (a forged change of a channel capped at 0). Integer
        weights held in float64: below 2**53 every product and sum is exact, whatever their
        order, so a cached table and a per-symbol product give the same bits."""
        r = np.zeros_like(prev) if back is None else np.minimum(np.maximum(back, -1), self.k) + 1
        if self.k <= SMALL_K:
            table, ok = self._value_table(step, ret)
            at = (chans * self.k + prev) * (self.k + 2) + r
            if check and not np.take(ok, at).all():  # the encoder's symbols are legal
                raise BitstreamError("corrupt_payload", "cdelta changes a symbol that cannot")
            out: np.ndarray = np.take(table, at, axis=0)
            return out
        wts = np.take(self.weights, chans, axis=0) * np.take(self._steps(step), prev, axis=0)
        wts *= np.take(self._backs(ret), r, axis=0)
        total = wts.sum(1)
        if not total.all():
            raise BitstreamError("corrupt_payload", "cdelta changes a symbol that cannot")
        out = wts / total[:, None]
        return out

    @lru_cache(maxsize=96)  # noqa: B019 (one coder per codec and QF, kept for the process)
    def _value_table(self, step: int, ret: int) -> tuple[np.ndarray, np.ndarray]:
        """(C·K·(K + 2), K) P(new value | c, v, r + 1) and whether the row has any weight."""
        k = self.k
        wts = self.weights[:, None, None, :] * self._steps(step)[None, :, None, :]
        wts = wts * self._backs(ret)[None, None]
        total = wts.sum(-1, keepdims=True)
        with np.errstate(invalid="ignore"):
            probs = np.nan_to_num(wts / total)
        return probs.reshape(-1, k), total.reshape(-1) > 0

    @lru_cache(maxsize=64)  # noqa: B019 (one coder per codec and QF, kept for the process)
    def _steps(self, step: int) -> np.ndarray:
        """(K, K) factor of value k given the previous value v: 1 + step at |k − v| = 1, 0 at v."""
        d = np.abs(np.arange(self.k)[:, None] - np.arange(self.k)[None])
        out: np.ndarray = np.where(d == 1, 1.0 + step, np.where(d == 0, 0.0, 1.0))
        return out

    @lru_cache(maxsize=64)  # noqa: B019 (one coder per codec and QF, kept for the process)
    def _backs(self, ret: int) -> np.ndarray:
        """(K + 2, K) factor of value k given r + 1 (r clipped to −1..K: out of range, none;
        r = v, no change last frame, meets the zero at v: none either)."""
        out = np.ones((self.k + 2, self.k))
        out[np.arange(1, self.k + 1), np.arange(self.k)] = 1.0 + ret
        return out

    def _flag_probs(self, gain: int, again: int, moved: np.ndarray) -> np.ndarray:
        """(C/4·n, 16) P(pattern of 4 channel flags) per group of 4 channels and flagged
        position (group-major), from the group's moved pattern (C/4, n) (its D ≠ 0)."""
        idx = self._group_base + moved.astype(np.intp)  # row 16g + moved pattern
        out: np.ndarray = np.take(self._flag_lut(gain, again), idx.ravel(), axis=0)
        return out

    @cached_property
    def _group_base(self) -> np.ndarray:
        return 16 * np.arange(self.channels // 4)[:, None]

    @lru_cache(maxsize=256)  # noqa: B019 (one coder per codec and QF, kept for the process)
    def _flag_lut(self, gain: int, again: int) -> np.ndarray:
        """(C/4·16, 16): row 16g + m, column f: ((q0·q1)·q2)·q3, q_j = p_j if bit j of f is set
        else 1 − p_j, p_j = ``again``'s p if bit j of m is set, else channel 4g + j's prior
        (multiplied in that order, each product rounded by IEEE: the same bits everywhere)."""
        rows, gains, _, _ = self._tables
        bits = (np.arange(16)[:, None] >> np.arange(4)) & 1  # (pattern, j)
        p0 = gains[gain][:, 1].reshape(-1, 1, 4)  # (group, 1, j)
        p = np.where(bits[None].astype(bool), rows[again][1], p0)  # (group, m, j)
        q = np.where(bits[None, None].astype(bool), p[:, :, None], 1 - p[:, :, None])
        out: np.ndarray = ((q[..., 0] * q[..., 1]) * q[..., 2]) * q[..., 3]  # (group, m, f)
        return out.reshape(-1, 16)

    def encode_ctx(self, prev: np.ndarray, cur: np.ndarray, change: np.ndarray | None) -> bytes:
        """The cdelta payload of ``cur`` against ``prev``, whose own change is ``change``."""
        return self.encode_next(prev, cur, self.contexts(change, *prev.shape[1:]))[0]

    def encode_next(
        self, prev: np.ndarray, cur: np.ndarray, ctx: Contexts | None
    ) -> tuple[bytes, Contexts]:
        """The cdelta payload of ``cur`` against ``prev`` (coded with ``ctx``, the contexts
        of ``prev``'s own change) and the contexts of the next frame: the edge keeps them, and
        the packing of this frame's change serves both its flags and those contexts."""
        c, h, w = prev.shape
        d = change_between(prev, cur, self.qf).reshape(c, -1)
        changed = d != 0
        packed = self._packer @ changed.astype(np.float32)
        pos = packed[-1] > 0
        at = np.flatnonzero(changed)  # channel-major, then position: the values' order
        chans = at // (h * w)
        n = int(np.count_nonzero(pos))
        if ctx is None:
            pos_codes = [min(255, n * 256 // pos.size), 0, 0]
            moved, again_ones, n1 = np.zeros((c // 4, n), dtype=np.float32), 0, 0
        else:
            seen = np.bincount(ctx.pos, minlength=3).tolist()
            hits = np.bincount(ctx.pos[pos], minlength=3).tolist()
            pos_codes = [
                min(255, a * 256 // b) if b else 0 for a, b in zip(hits, seen, strict=True)
            ]
            moved = ctx.moved[:, pos]
            again_ones = int(np.count_nonzero(np.take(ctx.change, at)))
            n1 = int(ctx.counts @ pos)
        again = SNAP[min(255, again_ones * 256 // n1)] if n1 else 0
        # gain: the moment estimate (as many ones expected as seen; the moved symbols' weight
        # taken as average), which on the six clips of docs/streams.md picks what type 1's
        # search over the 256 gains picks, give or take one
        mass = n * self.w_sum - n1 * self.w_sum / self.channels
        ones = len(at) - again_ones
        gain = SNAP[min(255, round(ones * 4 * SCALE / mass))] if mass else 0
        p_prev = np.take(prev, at).astype(np.intp)
        p_new = np.take(cur, at).astype(np.intp)  # not p_prev + D: D is clipped above QF 127
        back = None if ctx is None else p_prev - np.take(ctx.change, at)
        step, ret = self._factors(p_prev, p_new, back)
        coder = constriction.stream.stack.AnsCoder()
        # pushed in reverse: the decoder pops positions, flags, values
        if n:  # nothing changed: positions only (the edge sends a skip instead)
            probs = self._value_probs_ctx(chans, p_prev, back, step, ret, check=False)
            coder.encode_reverse(p_new.astype(np.int32), _CATEGORICAL, probs)
            groups = packed[:-1, pos].astype(np.int32).ravel()
            coder.encode_reverse(groups, _CATEGORICAL, self._flag_probs(gain, again, moved))
        three = self._tables[0][pos_codes]
        p_pos = np.take(three, ctx.pos, axis=0) if ctx else np.tile(three[0], (h * w, 1))
        coder.encode_reverse(pos.astype(np.int32), _CATEGORICAL, p_pos)
        head = bytes([ctx.check if ctx else 0, *pos_codes, gain, again, step, ret])
        words: bytes = coder.get_compressed().astype("<u4").tobytes()
        return head + words, self._contexts(d, packed, h, w)

    def _factors(
        self, prev: np.ndarray, new: np.ndarray, back: np.ndarray | None
    ) -> tuple[int, int]:
        """The encoder's step and back bytes from counts (moment estimates, not a search), each
        rounded to 2**j − 1 so that a stream reuses a few cached value tables: the odds of a
        step of one against the table's own odds of it; the odds of a return to the value of
        two frames ago (which the step model already gives about even odds)."""
        hit = int(np.count_nonzero(np.abs(new - prev) == 1))
        step = _pow2(self._tables[3] * (hit + 0.5) / (len(new) - hit + 0.5))
        if back is None:
            return step, 0
        tried = int(np.count_nonzero(back != prev))
        came = int(np.count_nonzero(new == back))  # never where back = v: no change is to v
        return step, (_pow2((came + 0.5) / (tried - came + 0.5)) if tried else 0)

    def decode_ctx(self, payload: bytes, prev: np.ndarray, change: np.ndarray | None) -> np.ndarray:
        """The frame's symbols from a cdelta payload, its reference's symbols ``prev`` and the
        change held with them (None after a key frame)."""
        if len(payload) < CDELTA_HEAD or (len(payload) - CDELTA_HEAD) % 4:
            raise BitstreamError("corrupt_payload", "cdelta payload is not 8 bytes + u32 words")
        c, h, w = prev.shape
        if c % 4 or c != self.channels or (change is not None and change.shape != prev.shape):
            raise BitstreamError("corrupt_payload", f"no cdelta of {c} channels at this QF")
        check, pos0, pos1, pos2, gain, again, step, ret = payload[:CDELTA_HEAD]
        if check == 0:
            change = None  # coded with no change known: the one held is not read
        elif change is None or check != check_byte(change):
            raise BitstreamError(
                "needs_reference",
                "cdelta coded against a change of its reference other than the one held "
                "(the reference reached the cloud as a key frame): send a key frame",
            )
        ctx = self.contexts(change, h, w)
        three = self._tables[0][[pos0, pos1, pos2]]
        words = np.frombuffer(payload, dtype="<u4", offset=CDELTA_HEAD).astype(np.uint32)
        try:
            coder = constriction.stream.stack.AnsCoder(words)
            p_pos = np.take(three, ctx.pos, axis=0) if ctx else np.tile(three[0], (h * w, 1))
            pos = coder.decode(_CATEGORICAL, p_pos).astype(bool)
            n = int(pos.sum())
            flat = prev.reshape(c, -1).copy()
            if n:
                moved = ctx.moved[:, pos] if ctx else np.zeros((c // 4, n), dtype=np.float32)
                groups = coder.decode(_CATEGORICAL, self._flag_probs(gain, again, moved))
                groups = groups.astype(np.uint8).reshape(-1, 1, n)
                flags = np.unpackbits(groups, axis=1, count=4, bitorder="little")
                chans, where = np.nonzero(flags.reshape(c, n))
                at = chans * (h * w) + np.flatnonzero(pos)[where]
                if len(chans):
                    p_prev = np.take(flat, at).astype(np.intp)
                    back = None if ctx is None else p_prev - np.take(ctx.change, at)
                    probs = self._value_probs_ctx(chans, p_prev, back, step, ret)
                    flat.flat[at] = coder.decode(_CATEGORICAL, probs)
            leftover = not coder.is_empty()
        except BitstreamError:
            raise
        except Exception as exc:  # constriction reports bad data in its own exception types
            raise BitstreamError("corrupt_payload", f"cdelta does not decode: {exc}") from None
        if leftover:
            raise BitstreamError("corrupt_payload", "cdelta has data left after the last symbol")
        out: np.ndarray = flat.reshape(c, h, w)
        return out


def _snap_table() -> list[int]:
    """byte -> the nearest of ~40 bytes spread evenly in log scale (0, 1, 2, ..., 215, 255)."""
    grid = np.unique(np.round(2 ** (np.arange(33) / 4)).clip(0, 255)).tolist() + [0]
    logs = np.log(np.asarray(grid) + 0.5)
    nearest = np.abs(np.log(np.arange(256) + 0.5)[:, None] - logs[None]).argmin(1)
    return [int(grid[i]) for i in nearest]


SNAP = _snap_table()  # the encoder's gain and again: a few cached flag tables serve a stream


def _pow2(odds: float) -> int:
    """The byte 2**j − 1 (j in 0..8) nearest ``odds`` − 1 in log scale."""
    return (1 << min(8, max(0, round(math.log2(max(odds, 1.0)))))) - 1
