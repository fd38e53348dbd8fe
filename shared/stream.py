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

Tables conditioned on the previous symbol were measured before this choice and not shipped: fitted
on five clips and applied to the sixth (docs/streams.md), they code 1-10% fewer bytes than this
prior, and would be a table fitted to a handful of videos shipped in the bundle.

``StreamEncoder`` (the edge) turns each frame's symbols into a key, delta or skip frame and keeps
the symbols the cloud will hold; ``StreamState`` (the cloud, and the edge's mirror of it) holds the
last decoded symbols of a stream and their sequence number, and decodes the next frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import constriction
import numpy as np

from shared import bitstream
from shared.codebook import Codebook, latent_shape
from shared.errors import BitstreamError

SCALE = 1 << 16
P_MIN, P_MAX = 16, 32768
_BERNOULLI = constriction.stream.model.Bernoulli(perfect=False)
_CATEGORICAL = constriction.stream.model.Categorical(perfect=False)


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

    def channel_p(self, gain: int) -> np.ndarray:
        p: np.ndarray = np.clip((gain * self.w) >> 2, P_MIN, P_MAX).astype(np.float64) / SCALE
        return p

    def _value_probs(self, chans: np.ndarray, prev: np.ndarray) -> np.ndarray:
        w = self.weights[chans].copy()
        w[np.arange(len(prev)), prev] = 0
        out: np.ndarray = w / w.sum(1, keepdims=True)
        return out

    def _best_gain(self, flags: np.ndarray) -> int:
        """The gain whose channel probabilities code ``flags`` (C, n) in the fewest bits."""
        ones = flags.sum(1).astype(np.float64)
        zeros = flags.shape[1] - ones
        p = np.clip((np.arange(256)[:, None] * self.w[None]) >> 2, P_MIN, P_MAX) / SCALE
        bits = -(ones * np.log2(p) + zeros * np.log2(1 - p)).sum(1)
        return int(bits.argmin())

    def encode(self, prev: np.ndarray, cur: np.ndarray) -> bytes:
        changed = prev != cur
        pos = changed.any(0).ravel()
        pos_code = min(255, int(pos.mean() * 256))
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
            p_c = np.repeat(self.channel_p(gain), flags.shape[1])
            coder.encode_reverse(flags.ravel().astype(np.int32), _BERNOULLI, p_c)
        p_pos = np.full(pos.size, (256 * pos_code + 128) / SCALE)
        coder.encode_reverse(pos.astype(np.int32), _BERNOULLI, p_pos)
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
            p_pos = np.full(h * w, (256 * pos_code + 128) / SCALE)
            pos = coder.decode(_BERNOULLI, p_pos).astype(bool)
            n = int(pos.sum())
            flags = np.zeros((c, n), dtype=bool)
            if n:
                p_c = np.repeat(self.channel_p(gain), n)
                flags = coder.decode(_BERNOULLI, p_c).reshape(c, n).astype(bool)
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
    ``request_key`` is called (the cloud lost the reference). A frame whose symbols differ from
    the reference in at most ``skip_changes`` positions is a skip (0: only identical symbols, so
    a stream decodes to exactly the frames coded alone). Every delta and skip refers to the frame
    just before it, which the edge's durable queue delivers first."""

    codebook: Codebook
    qf: int
    stream_id: int = 0
    key_interval: int = 300
    skip_changes: int = 0
    first_seq: int = 0
    _prev: np.ndarray | None = field(default=None, init=False)
    _seq: int = field(default=-1, init=False)
    _since_key: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._seq = self.first_seq - 1
        self.codec = self.codebook.codec("rans", self.qf)

    @cached_property
    def delta(self) -> DeltaCoder:
        return DeltaCoder(self.codebook, self.qf)

    def request_key(self) -> None:
        self._prev = None

    @property
    def seq(self) -> int:
        """The sequence number of the last frame made."""
        return self._seq

    def encode(self, symbols: np.ndarray, image_size: tuple[int, int]) -> StreamFrame:
        self._seq += 1
        seq, prev = self._seq, self._prev
        key = prev is None or self._since_key + 1 >= self.key_interval
        if key or prev is None or prev.shape != symbols.shape:
            kind: bitstream.FrameType = "key"
            payload, changed, out = self.codec.encode(symbols), symbols.size, symbols
        else:
            changed = int((prev != symbols).sum())
            if changed <= self.skip_changes:
                kind, payload, out = "skip", b"", prev
            else:
                kind, payload, out = "delta", self.delta.encode(prev, symbols), symbols
        self._since_key = 0 if kind == "key" else self._since_key + 1
        self._prev = out
        data = pack(self.codebook, out, payload, self.qf, image_size, kind, self.stream_id, seq)
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
) -> bytes:
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
        ref_seq=seq if kind == "key" else seq - 1,
    )
    return bitstream.pack(frame)


@dataclass
class StreamState:
    """The last decoded frame of one (device, stream): its sequence number, QF and symbols."""

    seq: int
    qf: int
    symbols: np.ndarray


class StreamDecoder:
    """The cloud's half (and the edge's mirror of it): a parsed frame and the state of its
    stream -> the frame's symbols. Work per frame is bounded by the latent's size: a delta pops
    at most H·W + C·H·W + C·H·W symbols, a key frame is an ordinary frame."""

    def __init__(self, codebook: Codebook):
        self.codebook = codebook
        self._coders: dict[int, DeltaCoder] = {}

    def coder(self, qf: int) -> DeltaCoder:
        if qf not in self._coders:
            self._coders[qf] = DeltaCoder(self.codebook, qf)
        return self._coders[qf]

    def decode(
        self, frame: bitstream.Frame, state: StreamState | None, accept: list[str] | None = None
    ) -> np.ndarray:
        """The symbols of ``frame`` (checked as ``Codebook.decode_frame`` checks a key frame).
        ``BitstreamError("needs_reference")`` when ``state`` is not the frame's reference."""
        if frame.frame_type == "key":
            return self.codebook.decode_frame(frame, accept=accept)
        if state is None or state.seq != frame.ref_seq:
            held = "nothing" if state is None else f"frame {state.seq}"
            raise BitstreamError(
                "needs_reference",
                f"{frame.frame_type} frame {frame.seq} refers to frame {frame.ref_seq}; "
                f"stream {frame.stream_id} holds {held}: send a key frame",
            )
        if frame.qf != state.qf or frame.latent_shape != state.symbols.shape:
            raise BitstreamError(
                "needs_reference",
                f"{frame.frame_type} frame {frame.seq} at QF {frame.qf}, shape "
                f"{frame.latent_shape} cannot refer to a frame at QF {state.qf}, shape "
                f"{state.symbols.shape}: send a key frame",
            )
        try:  # the header checks of a key frame (model id, geometry) without its decoding
            self.codebook.decode_frame(frame, accept=accept)
        except BitstreamError as exc:
            if exc.reason != "needs_reference":
                raise
        if frame.frame_type == "skip":
            return state.symbols
        symbols = self.coder(frame.qf).decode(frame.payload, state.symbols)
        try:  # constriction's models leave every value codable: a forged one may be too large
            self.codebook.manifest.check_symbols(symbols, frame.qf)
        except ValueError as exc:
            raise BitstreamError("corrupt_payload", str(exc)) from None
        return symbols
