"""A frame of a stream (bitstream version 2) to a prediction, through its stream's state.

* key: checked and decoded as a frame alone (``parse_frame``), classified; the stream's state
  becomes this frame (a key frame always resets it).
* delta: decoded against the symbols the stream holds (``shared.stream.StreamDecoder``; work
  bounded by the latent's size), classified; the state advances only if it still holds the
  delta's reference (``StreamStore.advance``).
* skip: the held symbols and the held answer: nothing decoded, nothing classified, and nothing
  stored but a count: the row whose answer it repeats gets ``repeats + 1`` (consumers see
  changes, not repetitions; ``SPIC_CLOUD_STREAM_SKIP_ROWS=true`` stores a row per skip).

A delta or skip whose reference the stream does not hold gets 409 problem+json
``need-keyframe`` (the edge answers with a key frame of the same sequence number). The state is
looked up under the sender's own device id, so a frame cannot refer to another device's stream. A
delta or skip already applied (the state holds its own sequence number: a replay whose
idempotency entry has gone) is answered from the state, not applied again.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import numpy as np

from cloud_service.batcher import Overloaded
from cloud_service.problems import Problem
from cloud_service.services import frames
from cloud_service.services.inference import (
    FrameIn,
    _bad_frame,
    answer,
    base_answer,
    overloaded,
    parse_frame,
    run_heavy,
)
from cloud_service.services.predictions import FrameRows, asked_heads, run_heads, top_scores
from cloud_service.state import ServiceState
from cloud_service.streams import Held, StreamStore
from cloud_service.timeutil import now_us
from shared import bitstream
from shared.errors import BitstreamError
from shared.runtime import SpicCodec
from shared.schemas import ClassifyResponse, ClassScore
from shared.stream import StreamDecoder, StreamState


def is_stream(body: bytes) -> bool:
    """A frame of a stream (bitstream version 2), from its first five bytes."""
    return body[:4] == bitstream.MAGIC and body[4:5] == bytes([bitstream.STREAM_VERSION])


def need_keyframe(frame: bitstream.Frame, held: Held | None) -> Problem:
    return Problem(
        409,
        "need-keyframe",
        "the stream does not hold this frame's reference: send a key frame",
        f"{frame.frame_type} frame {frame.seq} of stream {frame.stream_id} refers to frame "
        f"{frame.ref_seq}; the stream holds {'nothing' if held is None else held.seq}",
        stream_id=frame.stream_id,
        seq=frame.seq,
        ref_seq=frame.ref_seq,
        held_seq=None if held is None else held.seq,
    )


async def store_of(state: ServiceState) -> StreamStore:
    """The stream store on the results database, opened (and migrated, off the event loop) on
    the first stream frame of the process."""
    store: StreamStore | None = getattr(state, "_stream_store", None)
    if store is None:
        if state.results is None:
            raise Problem(503, "store-unavailable", "results store not open", "retry later")
        store = await asyncio.to_thread(StreamStore, state.results.db)
        state._stream_store = store  # type: ignore[attr-defined]
    return store


def decoder_of(state: ServiceState, runtime: SpicCodec) -> StreamDecoder:
    decoders: dict[str, StreamDecoder] = state.__dict__.setdefault("_stream_decoders", {})
    if runtime.model_id not in decoders:
        decoders[runtime.model_id] = StreamDecoder(runtime.codebook)
    return decoders[runtime.model_id]


def _decode(
    runtime: SpicCodec, decoder: StreamDecoder, frame: bitstream.Frame, held: Held | None
) -> tuple[bitstream.Frame, np.ndarray]:
    try:
        if frame.frame_type == "key":
            return frame, runtime.codebook.decode_frame(frame, runtime.limits, accept=runtime.ids)
        assert held is not None
        return decoder.decode(frame, StreamState(held.seq, held.header, held.symbols))
    except BitstreamError as exc:
        raise _bad_frame(exc) from None


async def _rows(
    state: ServiceState, runtime: SpicCodec, frame: bitstream.Frame, symbols: np.ndarray
) -> FrameRows:
    """Every head's answer for a decoded stream frame, through the codec's batcher (a frame of
    the codec's own crop) or the heavy lane."""
    latent = runtime.manifest.dequantize_latent(symbols, frame.qf)
    base = latent[: runtime.manifest.latent.channels]
    if frame.latent_shape[1:] != runtime.native_shape[1:]:
        return await run_heavy(state, lambda: run_heads(runtime, latent[None])[0])
    try:
        rows: FrameRows = await state.batchers[runtime.model_id].submit(base)
    except Overloaded:
        raise overloaded(state) from None
    return rows


def standalone(runtime: SpicCodec, frame: bitstream.Frame, symbols: np.ndarray) -> bytes:
    """The version-1 frame of a stream frame's symbols: what the store keeps for a delta or
    skip, whose own bytes mean nothing without their reference."""
    payload = runtime.codebook.codec("rans", frame.qf).encode(symbols)
    alone = replace(frame, codec=bitstream.RANS_ID, payload=payload, version=bitstream.VERSION)
    return bitstream.pack(replace(alone, frame_type="key", stream_id=0, seq=0, ref_seq=0))


def _scores(held: Held) -> list[ClassScore]:
    return [ClassScore(**s) for s in held.answer["top_k"]]


async def classify_stream(
    state: ServiceState, frame_in: FrameIn, request_id: str, heads: str | None = None
) -> ClassifyResponse:
    try:
        frame = bitstream.unpack(frame_in.body)
    except BitstreamError as exc:
        raise _bad_frame(exc) from None
    store, device = await store_of(state), frame_in.device_id
    held: Held | None = None
    if frame.frame_type == "key":
        runtime, frame = parse_frame(state, frame_in.body)
    else:
        held = await asyncio.to_thread(store.get, device, frame.stream_id)
        if held is not None and held.seq == frame.seq:
            # Already applied (a replay that outlived its idempotency entry): the held answer.
            runtime_held = state.runtime_for(held.header.model_id_hex)
            if runtime_held is not None:
                resolved = frame.inherit(held.header)
                top, unknown = _scores(held), bool(held.answer.get("unknown", False))
                if resolved.frame_type == "skip":  # counted when it was applied, not again
                    args = (runtime_held, resolved, frame_in, request_id, top, unknown)
                    repeated = await repeat(state, *args, held.answer, count=False)
                    if repeated is not None:
                        return repeated
                alone = standalone(runtime_held, resolved, held.symbols)
                return await answer(
                    state,
                    runtime_held,
                    resolved,
                    top,
                    unknown,
                    replace(frame_in, stored=alone),
                    request_id,
                )
        if held is None or held.seq != frame.ref_seq:
            raise need_keyframe(frame, held)
        found = state.runtime_for(held.header.model_id_hex)
        if found is None:
            raise need_keyframe(frame, held)
        runtime = found
    names = asked_heads(runtime, heads)  # 422 before any work for a head not served
    decoder = decoder_of(state, runtime)
    frame, symbols = await asyncio.to_thread(_decode, runtime, decoder, frame, held)
    rows: FrameRows | None = None
    if frame.frame_type == "skip" and held is not None:  # the held answer, nothing classified
        top, unknown = _scores(held), bool(held.answer.get("unknown", False))
        kept: dict[str, Any] = dict(held.answer)  # with the row it repeats
    else:
        rows = await _rows(state, runtime, frame, symbols)
        main = rows[runtime.default_head]
        top, unknown = top_scores(main, state.settings.top_k), main.unknown
        kept = {"top_k": [s.model_dump() for s in top], "unknown": unknown}
    if frame.frame_type == "key":
        await asyncio.to_thread(store.put_key, device, frame, symbols, kept)
    elif not await asyncio.to_thread(store.advance, device, frame, symbols, kept):
        now = await asyncio.to_thread(store.get, device, frame.stream_id)
        if now is None or now.seq != frame.seq:  # another frame moved the stream on
            raise need_keyframe(frame, now)
    if frame.frame_type == "skip":
        repeated = await repeat(state, runtime, frame, frame_in, request_id, top, unknown, kept)
        if repeated is not None:
            return repeated
    elif frame.frame_type == "delta" and frame.seq - frame.ref_seq > 1 and held is not None:
        # skips the camera withheld (a heartbeat) repeated the held answer until this frame
        withheld = frame.seq - frame.ref_seq - 1
        await withheld_repeats(state, held.answer, frame_in, withheld)
    if frame.frame_type != "key":
        frame_in = replace(frame_in, stored=standalone(runtime, frame, symbols))
    result = await answer(
        state, runtime, frame, top, unknown, frame_in, request_id, rows, names if rows else None
    )
    if result.frame_id is not None:  # the row a skip of this stream will count on
        kept["frame_id"] = result.frame_id
        await asyncio.to_thread(store.note, device, frame, kept)
    return result


async def withheld_repeats(
    state: ServiceState, held: dict[str, Any], frame_in: FrameIn, count: int
) -> None:
    """Count ``count`` skips a camera withheld on the row whose answer they repeated (``held``,
    the stream's state before this frame); nothing when that row is not known or rows are kept
    per skip (a withheld skip has no bytes to keep)."""
    s, frame_id = state.settings, held.get("frame_id")
    if s.store_results and isinstance(frame_id, int):
        at = frame_in.captured_us if frame_in.captured_us is not None else now_us()
        await frames.repeat(frames.store(state), frame_id, at, count)


async def repeat(
    state: ServiceState,
    runtime: SpicCodec,
    frame: bitstream.Frame,
    frame_in: FrameIn,
    request_id: str,
    top: list[ClassScore],
    unknown: bool,
    kept: dict[str, Any],
    count: bool = True,
) -> ClassifyResponse | None:
    """A skip frame counted on the row whose answer it repeats (``Settings.stream_skip_rows``
    off): no row of its own, no webhook of the "changes" kind (nothing changed). None when it
    is to be stored as a row after all: rows asked for, or the repeated row is gone.

    The count follows the state's advance, so a skip replayed after it was applied (``count``
    false) is answered without counting again; a process killed between the two leaves the
    repeat uncounted rather than counted twice."""
    s, frame_id = state.settings, kept.get("frame_id")
    if s.stream_skip_rows or not s.store_results or not isinstance(frame_id, int):
        return None
    at = frame_in.captured_us if frame_in.captured_us is not None else now_us()
    # this skip and those the camera withheld before it (a heartbeat: it refers further back)
    n = frame.seq - frame.ref_seq
    if count and not await frames.repeat(frames.store(state), frame_id, at, n):
        return None
    result = ClassifyResponse(
        **base_answer(runtime, frame, top, unknown, frame_in, request_id),
        frame_id=frame_id,
        repeat=True,
    )
    if state.webhooks is not None and s.webhook_events == "frames":
        state.webhooks.submit({"event": "repeat", **result.model_dump()})
    return result
