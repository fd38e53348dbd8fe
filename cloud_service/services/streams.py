"""A frame of a stream (bitstream version 2) to a prediction, through its stream's state.

* key: checked and decoded as a frame alone (``parse_frame``), classified; the stream's state
  becomes this frame (a key frame always resets it).
* delta, cdelta: decoded against the symbols (and, a cdelta, their change) the stream holds
  (``shared.stream.StreamDecoder``; work bounded by the latent's size), classified; the state
  advances, with the frame's own change, only if it still holds the delta's reference
  (``StreamStore.advance``). A cdelta coded against another change than the one held (its
  reference reached the cloud re-coded as a key frame) is 400 ``needs_reference``, which the
  edge answers with a key frame.
* skip: the held symbols and the held answer: nothing decoded, nothing classified.

A delta or skip whose reference the stream does not hold gets 409 problem+json
``need-keyframe`` (the edge answers with a key frame of the same sequence number). The state is
looked up under the sender's own device id, so a frame cannot refer to another device's stream. A
delta or skip already applied (the state holds its own sequence number: a replay whose
idempotency entry has gone) is answered from the state, not applied again.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from cloud_service.batcher import Overloaded
from cloud_service.problems import Problem
from cloud_service.services.inference import (
    FrameIn,
    _bad_frame,
    answer,
    overloaded,
    parse_frame,
    run_heavy,
)
from cloud_service.services.predictions import FrameRows, asked_heads, run_heads, top_scores
from cloud_service.state import ServiceState
from cloud_service.streams import Held, StreamStore
from shared import bitstream
from shared.errors import BitstreamError
from shared.runtime import SpicCodec
from shared.schemas import ClassifyResponse, ClassScore
from shared.stream import StreamDecoder, StreamState, change_after


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
        state = StreamState(held.seq, held.header, held.symbols, held.change)
        return decoder.decode(frame, state)
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
                return await answer(
                    state,
                    runtime_held,
                    resolved,
                    _scores(held),
                    bool(held.answer.get("unknown", False)),
                    frame_in,
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
    else:
        rows = await _rows(state, runtime, frame, symbols)
        main = rows[runtime.default_head]
        top, unknown = top_scores(main, state.settings.top_k), main.unknown
    kept: dict[str, Any] = {"top_k": [s.model_dump() for s in top], "unknown": unknown}
    if frame.frame_type == "key":
        await asyncio.to_thread(store.put_key, device, frame, symbols, kept)
    elif not await asyncio.to_thread(
        store.advance,
        device,
        frame,
        symbols,
        kept,
        change_after(frame.frame_type, None if held is None else held.symbols, symbols),
    ):
        now = await asyncio.to_thread(store.get, device, frame.stream_id)
        if now is None or now.seq != frame.seq:  # another frame moved the stream on
            raise need_keyframe(frame, now)
    return await answer(
        state, runtime, frame, top, unknown, frame_in, request_id, rows, names if rows else None
    )
