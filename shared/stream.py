"""Streams: a fixed camera sends what changed: key, delta, skip and cdelta frames (version 2).

A delta frame's payload codes the frame's symbols against its reference's symbols ``prev``
(both (C, H, W), the reference being the frame ``ref_seq`` of the same device and stream). It is
lossless: the symbols decoded are exactly those the frame would carry coded alone, so the cloud's
answer on a delta is its answer on that frame coded alone. Two payloads: type 1 ``delta`` (what
edges before cdelta write; every reader keeps decoding it) and type 3 ``cdelta`` (what an edge
writes now), which also reads the reference's own change. Type 1's layout::

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

Type 3 (cdelta) codes the same three groups, each in ONE constriction call with a probability per
symbol, with contexts from the reference's change D = (reference − its own reference), per
symbol, clipped to ±127 (int8), which both sides hold: none after a key frame, all zero after a
skip. Every symbol is coded with constriction's ``Categorical(perfect=False)`` family, a flag
as the row (1 − p, p) of its probability p of a 1. C must be a multiple of 4 (the edge writes
type 1 otherwise; a reader refuses such a cdelta as corrupt). Layout::

    ┌───────┬────────┬────────┬────────┬─────────┬──────────┬─────────┬─────────┬───────────┐
    │ check │ pos0   │ pos1   │ pos2   │ gain    │ again    │ step    │ back    │ ANS stack │
    │ u8    │ u8     │ u8     │ u8     │ u8      │ u8       │ u8      │ u8      │ u32 words │
    └───────┴────────┴────────┴────────┴─────────┴──────────┴─────────┴─────────┴───────────┘

check is 0 when the frame was coded with no change known (D is then not read: every context 0),
else 1 + (number of nonzero symbols of D mod 255); a reader holding no change, or one whose count
differs, refuses the frame (``needs_reference``: the edge sends it as a key frame). The stack
pops, in this order, nothing else, and must then be empty:

1. H·W position flags (row-major); position x has context 2 if any channel of D is nonzero at x,
   else 1 if one is at a 3×3 neighbour of x, else 0; p = (256·pos_ctx + 128) / 2**16, pos_ctx
   the byte of its context;
2. for the n flagged positions, their channel flags four at a time: (C/4)·n symbols 0..15
   (group-major, then position order), bit j of group g's symbol the flag of channel 4g + j.
   Channel c's flag has p_c = (256·again + 128) / 2**16 where D ≠ 0 (at that channel and
   position), else type 1's p_c (with ``gain``); the 16 patterns f have the probabilities
   ((q0·q1)·q2)·q3 (float64, in that order), q_j = p_{4g+j} if bit j of f is set, else its 1 − p;
3. for each changed symbol (channel-major, then position order) with previous value v and r = v −
   D, its new value: categorical over 0..K−1 (K = the table's width), integer weights (table row
   c + 1, zero above ceiling_c) × (1 + step) where |k − v| = 1 × (1 + back) where k = r and D ≠ 0,
   then the weight of v set to zero; P = weight / row sum (a row summing to zero is corrupt).

A cdelta pops at most H·W + 2·C·H·W symbols, as a delta does. The encoder picks the bytes from
counts (pos, again: the rate of ones; gain: as many ones expected as seen; step, back: odds),
rounded so that a few cached tables serve a stream, but any bytes decode.

Tables conditioned on the previous symbol, P(value | previous value, channel), were measured
before this choice and not shipped: fitted on five clips and applied to the sixth, their ideal
code length is from 8% below to 32% above the type-1 payload's real size (docs/streams.md), and
they would be tables fitted to a handful of videos, shipped in every bundle.

``StreamEncoder`` (the edge) turns each frame's symbols into a key, cdelta or skip frame and keeps
the symbols (and their change) the cloud will hold; ``StreamDecoder`` (the cloud) decodes a
stream's next frame against its ``StreamState``: the last frame's sequence number, header
fields, symbols and change.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from shared import bitstream
from shared.codebook import Codebook, latent_shape
from shared.context_delta import ContextDeltaCoder, Contexts
from shared.delta_coding import DeltaCoder, change_between
from shared.errors import BitstreamError

__all__ = ["ContextDeltaCoder", "DeltaCoder", "StreamDecoder", "StreamEncoder", "StreamState"]


@lru_cache(maxsize=64)
def delta_coder(codebook: Codebook, qf: int) -> ContextDeltaCoder:
    """The delta coder of a codec and QF, one per process: the tables it builds (and caches as
    frames ask for them) serve every stream of that codec."""
    return ContextDeltaCoder(codebook, qf)


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
    and skip refers to the frame just before it, which the edge's durable queue delivers first.
    Deltas are cdeltas (type 3), or type 1 with ``contexts=False`` (for a cloud that predates
    type 3)."""

    codebook: Codebook
    qf: int
    stream_id: int = 0
    key_interval: int = 300
    position_changes: int = 1
    first_seq: int = 0
    contexts: bool = True
    _prev: np.ndarray | None = field(default=None, init=False)
    # what the cloud holds with _prev: the contexts of its change (None after a key frame)
    _ctx: Contexts | None = field(default=None, init=False)
    _seq: int = field(default=-1, init=False)
    _since_key: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.position_changes < 1 or self.key_interval < 1:
            raise ValueError("position_changes and key_interval are at least 1")
        self._seq = self.first_seq - 1
        self.codec = self.codebook.codec("rans", self.qf)

    @property
    def delta(self) -> ContextDeltaCoder:
        return delta_coder(self.codebook, self.qf)

    def request_key(self) -> None:
        self._prev = None

    @property
    def seq(self) -> int:
        """The sequence number of the last frame made."""
        return self._seq

    def encode(self, symbols: np.ndarray, image_size: tuple[int, int]) -> StreamFrame:
        self._seq += 1
        seq, prev = self._seq, self._prev
        kind: bitstream.FrameType = "key"
        ctx: Contexts | None = None  # what the next cdelta reads of this frame's change
        if prev is None or self._since_key + 1 >= self.key_interval or prev.shape != symbols.shape:
            payload, changed, out = self.codec.encode(symbols), symbols.size, symbols
        else:
            differ = prev != symbols
            if self.position_changes == 1:  # the default: every change, nothing to select
                out, changed = symbols, int(np.count_nonzero(differ))
            else:
                send = differ.sum(0) >= self.position_changes
                out = np.where(send, symbols, prev)
                changed = int(differ[:, send].sum())
            if not changed:  # the change is all zero, as a skip leaves it
                kind, payload, out = "skip", b"", prev
                ctx = self.delta.still(*prev.shape[1:]) if self.contexts else None
            elif self.contexts and symbols.shape[0] % 4 == 0:  # cdelta flags: 4 channels a symbol
                kind = "cdelta"
                payload, ctx = self.delta.encode_next(prev, out, self._ctx)
            else:
                kind, payload = "delta", self.delta.encode(prev, out)
        self._since_key = 0 if kind == "key" else self._since_key + 1
        self._ctx = ctx
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


def change_after(
    kind: bitstream.FrameType, reference: np.ndarray | None, symbols: np.ndarray, qf: int = 255
) -> np.ndarray | None:
    """The change a frame of ``kind`` leaves for the next cdelta's contexts: none after a key
    frame, zeros after a skip, else symbols − reference (int8, clipped to ±127)."""
    if kind == "key" or reference is None:
        return None
    if kind == "skip":
        return np.zeros(symbols.shape, dtype=np.int8)
    return change_between(reference, symbols, qf)


@dataclass
class StreamState:
    """The last decoded frame of one (device, stream): its sequence number, its header (a key
    frame's fields, which a delta or skip inherits), its symbols and their change from the
    frame before (None after a key frame: no change known; what a cdelta's contexts read)."""

    seq: int
    header: bitstream.Frame
    symbols: np.ndarray
    change: np.ndarray | None = None

    @classmethod
    def after(
        cls, frame: bitstream.Frame, symbols: np.ndarray, before: StreamState | None = None
    ) -> StreamState:
        """The state once ``frame`` (resolved, as ``StreamDecoder.decode`` returns it) is read
        against ``before`` (the state it was decoded with; without it, no change is known and
        the next cdelta coded with one is refused)."""
        reference = None if before is None else before.symbols
        change = change_after(frame.frame_type, reference, symbols)
        return cls(frame.seq, replace(frame, payload=b""), symbols, change)


class StreamDecoder:
    """The cloud's half (and the edge's mirror of it): a parsed frame and the state of its
    stream -> the frame, with its reference's fields when it is a delta or skip, and its
    symbols. Work per frame is bounded by the latent's size: a delta or cdelta pops at most
    H·W + 2·C·H·W symbols; a key frame is an ordinary frame."""

    def __init__(self, codebook: Codebook):
        self.codebook = codebook

    def coder(self, qf: int) -> ContextDeltaCoder:
        return delta_coder(self.codebook, qf)

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
        coder = self.coder(frame.qf)
        if frame.frame_type == "cdelta":
            symbols = coder.decode_ctx(frame.payload, state.symbols, state.change)
        else:
            symbols = coder.decode(frame.payload, state.symbols)
        try:  # constriction's models leave every value codable: a forged one may be too large
            self.codebook.manifest.check_symbols(symbols, frame.qf)
        except ValueError as exc:
            raise BitstreamError("corrupt_payload", str(exc)) from None
        return frame, symbols
