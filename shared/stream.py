"""Streams: a fixed camera sends what changed. Key, delta and skip frames (bitstream version 2).

A delta frame's payload codes the frame's symbols against its reference's symbols ``prev``
(both (C, H, W), the reference being the frame ``ref_seq`` of the same device and stream). It is
lossless: the symbols decoded are exactly those the frame would carry coded alone, so the cloud's
answer on a delta is its answer on that frame coded alone. Layout::

    ┌──────────┬──────────┬─────────────────────────────────────────────────────────┐
    │ pos: u8  │ gain: u8 │ one ANS stack (constriction) as little-endian u32 words │
    └──────────┴──────────┴─────────────────────────────────────────────────────────┘

The ANS stack pops, in this order, nothing else, and must then be empty:

1. H·W position flags (row-major), each Bernoulli with p = (256·pos + 128) / 2**16: does any
   channel change at this position;
2. for the n flagged positions, C·n channel flags (channel-major, then position order), channel c
   Bernoulli with p_c = clip(⌊gain · w_c / 4⌋, 16, 32768) / 2**16, where w_c = max(1, round(256 ·
   entropy in bits of row c of the QF's table)): channels the model's own tables find busier
   change more often (a prior that costs no table of its own);
3. for each changed symbol (channel-major, then position order), its new value: categorical over
   0..ceiling_c (the QF, or ``base_qf`` for the base channels of a layered frame), weights the
   table row c plus one, the previous value's weight set to zero (a change is never to itself).

Tables conditioned on the previous symbol, P(value | previous value, channel), were measured
before this choice and not shipped: fitted on five clips and applied to the sixth, their ideal
code length is from 8% below to 32% above this payload's real size (docs/streams.md), and they
would be tables fitted to a handful of videos, shipped in every bundle.

``StreamEncoder`` (the edge) turns each frame's symbols into a key, delta or skip frame and keeps
the symbols the cloud will hold; ``StreamDecoder`` (the cloud) decodes a stream's next frame
against its ``StreamState``: the last frame's sequence number, header fields and symbols.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from typing import Any

import constriction
import numpy as np

from shared import bitstream
from shared.codebook import Codebook, latent_shape
from shared.errors import BitstreamError

SCALE = 1 << 16
P_MIN, P_MAX = 16, 32768
_CATEGORICAL = constriction.stream.model.Categorical(perfect=False)


@lru_cache(maxsize=4096)
def _bernoulli(p: int) -> Any:
    """constriction's Bernoulli model of P(1) = p / 2**16, built once: a model per call, not
    per symbol, is what keeps a delta's coding cheaper than the frame's own."""
    return constriction.stream.model.Bernoulli(p / SCALE, perfect=False)


class DeltaCoder:
    """The delta payload of one (codebook, QF): the tables it reads, both directions."""

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
        weights = table.astype(np.float64) + 1
        weights[np.arange(k)[None, :] > ceiling[:, None]] = 0
        self.weights, self.channels, self.k = weights, c, k

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

    def _best_gain(self, flags: np.ndarray) -> int:
        """The gain whose channel probabilities code ``flags`` (C, n) in the fewest bits."""
        ones = np.count_nonzero(flags, axis=1).astype(np.float64)
        one_bits, zero_bits = self._gain_bits
        return int((one_bits @ ones + zero_bits @ (flags.shape[1] - ones)).argmin())

    def encode(self, prev: np.ndarray, cur: np.ndarray) -> bytes:
        changed = prev != cur
        pos = changed.any(0).ravel()
        pos_code = min(255, np.count_nonzero(pos) * 256 // pos.size)
        flags = changed.reshape(self.channels, -1)[:, pos]
        gain = self._best_gain(flags) if flags.size else 0
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


@dataclass
class StreamFrame:
    kind: bitstream.FrameType
    seq: int
    data: bytes
    symbols: np.ndarray  # what the frame decodes to (a skip: its reference's)
    changed: int  # symbols that differ from the reference (the whole latent for a key frame)


@dataclass
class StreamEncoder:
    """The edge's half: each frame's symbols -> a key, delta or skip frame of one stream.

    A key frame starts the stream, comes every ``key_interval`` frames (skips counted) and when
    ``request_key`` is called (the cloud lost the reference). Between key frames, a position of
    the latent is sent when at least ``position_changes`` of its channels differ from what the
    cloud holds there, with all its channels; other positions keep what the cloud holds, and a
    frame with no position to send is a skip. With 1 (the default) every change is sent: the
    stream decodes to exactly the frames coded alone. Higher values drop the flicker of a symbol
    or two near a quantization boundary that sensor noise makes (lossy: each position then
    differs from its frame coded alone in fewer than ``position_changes`` channels). Every delta
    and skip refers to the last frame sent, which the edge's durable queue delivers first: the
    frame just before it, unless skips were withheld (``withhold``: a camera that sends a skip
    only every few seconds, as a heartbeat)."""

    codebook: Codebook
    qf: int
    stream_id: int = 0
    key_interval: int = 300
    position_changes: int = 1
    first_seq: int = 0
    _prev: np.ndarray | None = field(default=None, init=False)
    _seq: int = field(default=-1, init=False)
    _since_key: int = field(default=0, init=False)
    _ref: int = field(default=-1, init=False)  # the last frame sent: what the next refers to
    _ref_before: int = field(default=-1, init=False)
    _last_kind: str = field(default="", init=False)

    def __post_init__(self) -> None:
        if self.position_changes < 1 or self.key_interval < 1:
            raise ValueError("position_changes and key_interval are at least 1")
        self._seq = self.first_seq - 1
        self.codec = self.codebook.codec("rans", self.qf)

    @cached_property
    def delta(self) -> DeltaCoder:
        return DeltaCoder(self.codebook, self.qf)

    def request_key(self) -> None:
        self._prev = None

    @property
    def reference(self) -> np.ndarray | None:
        """The symbols the next frame is coded against; None when it will be a key frame."""
        if self._prev is None or self._since_key + 1 >= self.key_interval:
            return None
        return self._prev

    @property
    def seq(self) -> int:
        """The sequence number of the last frame made."""
        return self._seq

    def withhold(self) -> bool:
        """Do not send the skip frame just made: the next frame refers to the one before it. False
        (send it after all) when the last frame was no skip or the gap would outgrow the format."""
        if self._last_kind != "skip" or self._ref != self._seq:
            return False
        if self._seq + 1 - self._ref_before > bitstream.MAX_REF_GAP:
            return False
        self._ref = self._ref_before
        return True

    def encode(self, symbols: np.ndarray, image_size: tuple[int, int]) -> StreamFrame:
        self._seq += 1
        seq, prev = self._seq, self._prev
        kind: bitstream.FrameType = "key"
        if prev is None or self._since_key + 1 >= self.key_interval or prev.shape != symbols.shape:
            payload, changed, out = self.codec.encode(symbols), symbols.size, symbols
        else:
            differ = prev != symbols
            send = differ.sum(0) >= self.position_changes
            out = symbols if self.position_changes == 1 else np.where(send, symbols, prev)
            changed = int(differ[:, send].sum())
            if not changed:
                kind, payload, out = "skip", b"", prev
            else:
                kind, payload = "delta", self.delta.encode(prev, out)
        self._since_key = 0 if kind == "key" else self._since_key + 1
        self._prev = out
        ref = seq if kind == "key" else self._ref
        self._ref_before, self._ref, self._last_kind = self._ref, seq, kind
        data = pack(
            self.codebook, out, payload, self.qf, image_size, kind, self.stream_id, seq, ref
        )
        return StreamFrame(kind, seq, data, out, changed)


def pack(
    codebook: Codebook,
    symbols: np.ndarray,
    payload: bytes,
    qf: int,
    image_size: tuple[int, int],
    kind: bitstream.FrameType,
    stream_id: int,
    seq: int,
    ref_seq: int | None = None,
) -> bytes:
    """A frame of a stream; a delta or skip refers to ``ref_seq`` (default: the frame before)."""
    if ref_seq is None:
        ref_seq = seq if kind == "key" else seq - 1
    frame = bitstream.Frame(
        codec=bitstream.RANS_ID,
        qf=qf,
        model_id=codebook.model_id,
        latent_shape=latent_shape(symbols),
        image_size=(
            min(image_size[0], bitstream.MAX_IMAGE_SIDE),
            min(image_size[1], bitstream.MAX_IMAGE_SIDE),
        ),
        payload=payload,
        stride=codebook.manifest.latent.stride,
        version=bitstream.STREAM_VERSION,
        frame_type=kind,
        stream_id=stream_id,
        seq=seq,
        ref_seq=ref_seq,
    )
    return bitstream.pack(frame)


@dataclass
class StreamState:
    """The last decoded frame of one (device, stream): its sequence number, its header (a key
    frame's fields, which a delta or skip inherits) and its symbols."""

    seq: int
    header: bitstream.Frame
    symbols: np.ndarray

    @classmethod
    def after(cls, frame: bitstream.Frame, symbols: np.ndarray) -> StreamState:
        """The state once ``frame`` (resolved, as ``StreamDecoder.decode`` returns it) is read."""
        return cls(frame.seq, replace(frame, payload=b""), symbols)


class StreamDecoder:
    """The cloud's half (and the edge's mirror of it): a parsed frame and the state of its
    stream -> the frame, with its reference's fields when it is a delta or skip, and its
    symbols. Work per frame is bounded by the latent's size: a delta pops at most
    H·W + 2·C·H·W symbols; a key frame is an ordinary frame."""

    def __init__(self, codebook: Codebook):
        self.codebook = codebook
        self._coders: dict[int, DeltaCoder] = {}

    def coder(self, qf: int) -> DeltaCoder:
        if qf not in self._coders:
            self._coders[qf] = DeltaCoder(self.codebook, qf)
        return self._coders[qf]

    def decode(
        self, frame: bitstream.Frame, state: StreamState | None, accept: list[str] | None = None
    ) -> tuple[bitstream.Frame, np.ndarray]:
        """``BitstreamError("needs_reference")`` when ``state`` is not the frame's reference; a
        key frame is checked and decoded as ``Codebook.decode_frame`` does."""
        if frame.frame_type == "key":
            return frame, self.codebook.decode_frame(frame, accept=accept)
        if state is None or state.seq != frame.ref_seq:
            held = "nothing" if state is None else f"frame {state.seq}"
            raise BitstreamError(
                "needs_reference",
                f"{frame.frame_type} frame {frame.seq} refers to frame {frame.ref_seq}; "
                f"stream {frame.stream_id} holds {held}: send a key frame",
            )
        frame = frame.inherit(state.header)
        if frame.frame_type == "skip":
            return frame, state.symbols
        symbols = self.coder(frame.qf).decode(frame.payload, state.symbols)
        try:  # constriction's models leave every value codable: a forged one may be too large
            self.codebook.manifest.check_symbols(symbols, frame.qf)
        except ValueError as exc:
            raise BitstreamError("corrupt_payload", str(exc)) from None
        return frame, symbols
