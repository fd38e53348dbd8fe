"""A SPIC frame's bytes to a prediction or a PNG: parse, decode, classify or reconstruct, keep.

Every step is bounded before the next allocates: ``parse_frame`` reads only the header (on the
event loop, in microseconds) and refuses what the bundle and the serving limits cannot take (400,
409, 413, 422). The entropy decode and the networks run off the event loop: a frame of the bundle's
own crop in a worker thread and then the classify batcher, anything larger (and every
reconstruction) in the bounded heavy lane.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from cloud_service.batcher import Overloaded
from cloud_service.problems import Problem
from cloud_service.results import CHANGES, FrameRecord, KeyReused
from cloud_service.services.idempotent import ReusedInStore
from cloud_service.services.predictions import (
    FrameRows,
    asked_heads,
    head_predictions,
    run_heads,
    top_scores,
)
from cloud_service.state import ServiceState
from cloud_service.timeutil import now_us
from shared import bitstream
from shared.codecs import CODEC_IDS
from shared.errors import BitstreamError
from shared.runtime import SpicCodec
from shared.schemas import ClassifyResponse, ClassScore, Prediction

T = TypeVar("T")
# A frame's header is sound but it does not fit the model: the status says which way.
STATUS_FOR_REASON = {"over_limit": 413, "geometry": 422}


@dataclass(frozen=True)
class FrameIn:
    body: bytes
    key: str | None  # the Idempotency-Key in its caller's and route's scope, if one was sent
    device_id: str
    captured_us: int | None
    # What the store keeps when not ``body``: a stream's delta or skip is kept as the frame its
    # symbols make alone (version 1), so a stored row can always be re-rendered and re-read.
    stored: bytes | None = None


def _bad_frame(exc: BitstreamError) -> Problem:
    return Problem(
        STATUS_FOR_REASON.get(exc.reason, 400),
        f"bad-frame-{exc.reason}",
        "malformed SPIC frame" if exc.reason not in STATUS_FOR_REASON else "frame not servable",
        str(exc),
        reason=exc.reason,
    )


def parse_frame(state: ServiceState, body: bytes) -> tuple[SpicCodec, bitstream.Frame]:
    """Header, CRC, model and geometry: everything that can refuse a frame before decoding it."""
    try:
        frame = bitstream.unpack(body)
    except BitstreamError as exc:
        raise _bad_frame(exc) from None
    runtime = state.runtime_for(frame.model_id_hex)
    if runtime is None:
        served = sorted(state.runtimes)
        raise Problem(
            409,
            "unknown-model",
            "frame made by a model this service does not serve",
            f"frame model id {frame.model_id_hex}; served: {', '.join(served)}",
            frame_model_id=frame.model_id_hex,
            served_model_ids=served,
        )
    try:
        runtime.codebook.check_geometry(frame, runtime.limits)
    except BitstreamError as exc:
        raise _bad_frame(exc) from None
    return runtime, frame


def decode_latent(runtime: SpicCodec, frame: bitstream.Frame) -> np.ndarray:
    """Entropy-decode and dequantize a checked frame: (C, H, W) float32. Runs in a thread."""
    try:
        return runtime.decompress(frame)
    except BitstreamError as exc:
        raise _bad_frame(exc) from None


def _classify_one(runtime: SpicCodec, frame: bitstream.Frame) -> FrameRows:
    return run_heads(runtime, decode_latent(runtime, frame)[None])[0]


def reconstruct_png(runtime: SpicCodec, frame: bitstream.Frame) -> bytes:
    try:
        image = runtime.picture(frame)  # a padded whole image comes back at its captured size
    except BitstreamError as exc:
        raise _bad_frame(exc) from None
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def overloaded(state: ServiceState) -> Problem:
    return Problem(
        503,
        "overloaded",
        "service overloaded",
        "the inference queue is full; retry later",
        headers={"Retry-After": str(state.settings.retry_after_s)},
    )


async def run_heavy(state: ServiceState, fn: Callable[..., T], *args: object) -> T:
    assert state.heavy is not None  # set by the lifespan before the service is ready
    try:
        return await state.heavy.run(fn, *args)
    except Overloaded:
        raise overloaded(state) from None


async def _head_rows(state: ServiceState, runtime: SpicCodec, frame: bitstream.Frame) -> FrameRows:
    if frame.latent_shape[1:] != runtime.native_shape[1:]:
        return await run_heavy(state, _classify_one, runtime, frame)
    batcher = state.batchers[runtime.model_id]
    try:
        batcher.check_room()  # shed before spending a decode on a frame we cannot queue
        latent = await asyncio.to_thread(decode_latent, runtime, frame)
        # The classifier reads the base channels: frames with and without an enhancement layer
        # share a batch.
        rows: FrameRows = await batcher.submit(latent[: runtime.manifest.latent.channels])
    except Overloaded:
        raise overloaded(state) from None
    return rows


async def classify(
    state: ServiceState, frame_in: FrameIn, request_id: str, heads: str | None = None
) -> ClassifyResponse:
    """Classify a frame with every head of its codec, answer the default head's prediction (and
    those of the ``heads`` asked for), keep them all in the results store (when the settings say
    so) and tell the webhooks. A frame of a stream (bitstream version 2) goes through
    ``services.streams`` instead."""
    runtime, frame = parse_frame(state, frame_in.body)
    names = asked_heads(runtime, heads)  # 422 before any work for a head not served
    rows = await _head_rows(state, runtime, frame)
    main = rows[runtime.default_head]
    top = top_scores(main, state.settings.top_k)
    return await answer(state, runtime, frame, top, main.unknown, frame_in, request_id, rows, names)


def base_answer(
    runtime: SpicCodec,
    frame: bitstream.Frame,
    top: list[ClassScore],
    unknown: bool,
    frame_in: FrameIn,
    request_id: str,
) -> dict[str, Any]:
    """The fields of a classify answer for the default head's ``top``."""
    body = frame_in.body
    return dict(
        request_id=request_id,
        model_id=runtime.model_id,
        class_id=top[0].class_id,
        label=None if unknown else top[0].label,
        confidence=top[0].confidence,
        unknown=unknown,
        top_k=top,
        qf=frame.qf,
        codec=CODEC_IDS[frame.codec],
        bytes=len(body),
        bits=8 * len(body),
        bpp=8 * len(body) / (frame.input_size[0] * frame.input_size[1]),
        latent_shape=list(frame.latent_shape),
        input_size=list(frame.input_size),
        image_size=list(frame.image_size),
        device_id=frame_in.device_id,
    )


async def answer(
    state: ServiceState,
    runtime: SpicCodec,
    frame: bitstream.Frame,
    top: list[ClassScore],
    unknown: bool,
    frame_in: FrameIn,
    request_id: str,
    rows: FrameRows | None = None,
    names: list[str] | None = None,
) -> ClassifyResponse:
    """The answer for a classified frame (the default head's ``top``; every head's ``rows`` when
    they ran), stored and sent to the webhooks: every frame, or with ``webhook_events=changes``
    those whose answer changed (``results.change_of``)."""
    k = state.settings.top_k
    result = ClassifyResponse(
        **base_answer(runtime, frame, top, unknown, frame_in, request_id),
        heads=None if names is None or rows is None else head_predictions(rows, names, k),
    )
    changed = 1  # not stored: nothing to compare with, so every frame counts
    if state.settings.store_results:
        every = None if rows is None else head_predictions(rows, None, k)
        stored = result.model_copy(update={"heads": every})
        result.frame_id, changed = await store_result(state, stored, frame_in)
    if state.webhooks is not None:
        if state.settings.webhook_events == "frames":
            state.webhooks.submit({"event": "frame", **result.model_dump()})
        elif changed:
            change = CHANGES[changed]
            state.webhooks.submit({"event": "change", "change": change, **result.model_dump()})
    return result


async def store_result(
    state: ServiceState, answer: ClassifyResponse, frame_in: FrameIn
) -> tuple[int, int]:
    """Keep the classified frame in the results store (off the event loop): its id, and how its
    answer changed from its camera's frame before (``results.change_of``)."""
    assert state.results is not None  # opened by the lifespan
    prediction = Prediction(**answer.model_dump(include=set(Prediction.model_fields)))
    record = FrameRecord(frame_in.device_id, frame_in.captured_us, now_us(), prediction)
    try:
        kept = frame_in.body if frame_in.stored is None else frame_in.stored
        return await asyncio.to_thread(state.results.insert, record, kept, frame_in.key)
    except KeyReused:
        raise ReusedInStore() from None


async def reconstruct(state: ServiceState, body: bytes) -> tuple[str, bytes]:
    """A frame re-rendered by its bundle's decoder: (the model id, the PNG)."""
    runtime, frame = parse_frame(state, body)
    return runtime.model_id, await run_heavy(state, reconstruct_png, runtime, frame)
