"""POST /v1/classify and /v1/reconstruct: a SPIC frame in, a prediction or a PNG out.

A frame goes through the same steps on both routes, each bounded before the next allocates:

1. ``read_frame``: content type, declared length, the body counted while it streams in, within
   ``body_timeout_s`` (408) and ``max_body_bytes`` (413); a client that hangs up is a 499.
2. ``parse_frame``: header, CRC and geometry against the bundle and the serving limits (400, 409,
   413, 422); only the header is read, on the event loop, in microseconds.
3. The entropy decode and the networks run off the event loop: a frame of the bundle's own crop in
   a worker thread and then the classify batcher, anything larger (and every reconstruction) in
   the bounded heavy lane.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import APIRouter, Depends, Header, Request, Response
from PIL import Image
from starlette.requests import ClientDisconnect

from cloud_service.batcher import Overloaded
from cloud_service.idempotency import Stored, reused, scoped_key
from cloud_service.keys import DEVICE_ID as DEVICE_ID  # frames.py filters by it too
from cloud_service.problems import Problem, problem_response
from cloud_service.results import FrameRecord, KeyReused
from cloud_service.runtime import BundleRuntime
from cloud_service.state import AuthDep, Caller, ReadyDep, ServiceState, StateDep
from cloud_service.timeutil import now_us, parse_rfc3339
from shared import bitstream
from shared.codecs import CODEC_IDS
from shared.errors import BitstreamError
from shared.schemas import ClassifyResponse, ClassScore, Prediction, ProblemDetails

router = APIRouter(prefix="/v1", tags=["inference"])
T = TypeVar("T")
FRAME_MEDIA_TYPE = "application/octet-stream"
ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ProblemDetails, "content": {"application/problem+json": {}}}
    for s in (400, 401, 403, 404, 408, 409, 413, 415, 422, 503)
}
FRAME_BODY = {
    "requestBody": {
        "required": True,
        "content": {FRAME_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
    }
}
# A frame's header is sound but it does not fit the model: the status says which way.
STATUS_FOR_REASON = {"over_limit": 413, "geometry": 422}
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="1 to 200 printable characters, one per frame: a retry with the same key and "
        "the same frame gets the first answer again (Idempotent-Replayed: true)",
    ),
]


async def read_frame(request: Request, state: ServiceState) -> bytes:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != FRAME_MEDIA_TYPE:
        raise Problem(
            415,
            "unsupported-media-type",
            "unsupported media type",
            f"send the frame as {FRAME_MEDIA_TYPE}, not {media or 'nothing'}",
        )
    limit = state.settings.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Problem(
            413,
            "body-too-large",
            "frame too large",
            f"{declared} bytes declared, the limit is {limit}",
        )
    body = bytearray()
    try:
        async with asyncio.timeout(state.settings.body_timeout_s):
            async for chunk in request.stream():  # counted while reading: never past the limit
                body += chunk
                if len(body) > limit:
                    raise Problem(413, "body-too-large", "frame too large", f"over {limit} bytes")
    except TimeoutError:
        raise Problem(
            408,
            "body-timeout",
            "request body too slow",
            f"the frame did not arrive within {state.settings.body_timeout_s:g} s",
            headers={"Connection": "close"},
        ) from None
    except ClientDisconnect:
        # Nobody is left to answer; 499 (nginx's "client closed request") keeps it out of the 5xx.
        raise Problem(499, "client-closed-request", "client closed the request") from None
    return bytes(body)


def _bad_frame(exc: BitstreamError) -> Problem:
    return Problem(
        STATUS_FOR_REASON.get(exc.reason, 400),
        f"bad-frame-{exc.reason}",
        "malformed SPIC frame" if exc.reason not in STATUS_FOR_REASON else "frame not servable",
        str(exc),
        reason=exc.reason,
    )


def parse_frame(state: ServiceState, body: bytes) -> tuple[BundleRuntime, bitstream.Frame]:
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


def decode_latent(runtime: BundleRuntime, frame: bitstream.Frame) -> np.ndarray:
    """Entropy-decode and dequantize a checked frame: (C, H, W) float32. Runs in a thread."""
    try:
        symbols = runtime.codebook.decode_frame(frame, runtime.limits)
    except BitstreamError as exc:
        raise _bad_frame(exc) from None
    return runtime.manifest.dequantize_latent(symbols, frame.qf)


def _classify_one(runtime: BundleRuntime, frame: bitstream.Frame) -> np.ndarray:
    probs: np.ndarray = runtime.classify_latents(decode_latent(runtime, frame)[None])[0]
    return probs


def reconstruct_png(runtime: BundleRuntime, frame: bitstream.Frame) -> bytes:
    image = runtime.reconstruct_latents(decode_latent(runtime, frame)[None], frame.qf)[0]
    region = runtime.codebook.captured_region(frame)
    if region is not None:  # a whole image the edge padded to the stride: back to its own size
        image = image[: region[1], : region[0]]
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


class ReusedInStore(Problem):
    """The results store holds the key with another frame (the idempotency store forgot it)."""

    def __init__(self) -> None:
        p = reused()
        super().__init__(p.status, p.slug, p.title, p.detail)


async def idempotent(
    request: Request,
    state: ServiceState,
    key: str | None,
    body: bytes,
    handler: Callable[[], Awaitable[Response]],
    recompute: bool = False,
) -> Response:
    """Run ``handler`` once per Idempotency-Key; replay its stored answer to retries.

    With ``recompute`` only the status is kept, and a replay runs ``handler`` again (for answers
    that are a pure function of the frame and too large to keep, such as a PNG).
    """
    if key is None:
        return await handler()
    store = state.idempotency
    stored = await asyncio.to_thread(store.begin, key, body)
    if stored is not None:
        replay = await handler() if stored.recompute else None
        return Response(
            replay.body if replay is not None else stored.body,
            stored.status,
            media_type=stored.media_type,
            headers={"Idempotent-Replayed": "true"},
        )
    try:
        response = await handler()
    except ReusedInStore:
        # Kept nowhere: the key's own frame, retried, must still get its answer.
        await asyncio.to_thread(store.abandon, key)
        raise
    except Problem as exc:
        if exc.status in (400, 409, 413, 422):  # the same frame will always get this answer
            resp = problem_response(request, exc)
            answer = Stored(resp.status_code, bytes(resp.body), resp.media_type or "")
            await asyncio.to_thread(store.complete, key, answer)
        else:
            await asyncio.to_thread(store.abandon, key)  # overload and the like: retry may work
        raise
    except BaseException:
        await asyncio.to_thread(store.abandon, key)
        raise
    answer = Stored(
        response.status_code, bytes(response.body), response.media_type or "", recompute=recompute
    )
    await asyncio.to_thread(store.complete, key, answer)
    return response


@dataclass(frozen=True)
class FrameIn:
    body: bytes
    key: str | None  # the Idempotency-Key in its caller's and route's scope, if one was sent
    device_id: str
    captured_us: int | None


DeviceId = Annotated[
    str | None,
    Header(alias="X-Device-Id", description="the camera's id: a slug of 1 to 64 characters"),
]
CapturedAt = Annotated[
    str | None,
    Header(alias="X-Captured-At", description="when the image was captured, RFC 3339"),
]


def _who_and_when(
    caller: Caller, device_id: str | None, captured_at: str | None
) -> tuple[str, int | None]:
    device = device_id or caller.device or "unknown"
    if not DEVICE_ID.match(device):
        raise Problem(
            422, "bad-device-id", "bad X-Device-Id", "a slug: letters, digits, . _ -, up to 64"
        )
    if caller.device is not None and device != caller.device:
        # A camera's key is bound to its id: one camera cannot write as another.
        raise Problem(
            403,
            "device-mismatch",
            "X-Device-Id is not this key's device",
            f"this key belongs to device {caller.device!r}",
        )
    if captured_at is None:
        return device, None
    try:
        return device, parse_rfc3339(captured_at)
    except ValueError as exc:
        raise Problem(422, "bad-captured-at", "bad X-Captured-At", str(exc)) from None


async def frame_in(
    request: Request,
    state: StateDep,
    caller: AuthDep,
    _ready: ReadyDep,
    idempotency_key: IdempotencyKey = None,
    device_id: DeviceId = None,
    captured_at: CapturedAt = None,
) -> FrameIn:
    """What both routes take: an authorised, ready request's frame bytes, its scoped key, and
    who sent it when."""
    route = request.url.path.rsplit("/", 1)[-1]
    device, captured_us = _who_and_when(caller, device_id, captured_at)
    key = None if idempotency_key is None else scoped_key(caller.namespace, route, idempotency_key)
    return FrameIn(await read_frame(request, state), key, device, captured_us)


FrameDep = Annotated[FrameIn, Depends(frame_in)]


async def store_result(state: ServiceState, answer: ClassifyResponse, frame_in: FrameIn) -> int:
    """Keep the classified frame in the results store (off the event loop); its id."""
    assert state.results is not None  # opened by the lifespan
    prediction = Prediction(**answer.model_dump(include=set(Prediction.model_fields)))
    record = FrameRecord(frame_in.device_id, frame_in.captured_us, now_us(), prediction)
    try:
        return await asyncio.to_thread(state.results.add, record, frame_in.body, frame_in.key)
    except KeyReused:
        raise ReusedInStore() from None


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


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    responses=ERRORS,
    openapi_extra=FRAME_BODY,
    summary="Classify a SPIC frame from its latent (no pixel decode)",
)
async def classify(request: Request, state: StateDep, frame_in: FrameDep) -> Response:
    body = frame_in.body

    async def run() -> Response:
        runtime, frame = parse_frame(state, body)
        if frame.latent_shape[1:] == runtime.native_shape[1:]:
            batcher = state.batchers[runtime.model_id]
            try:
                batcher.check_room()  # shed before spending a decode on a frame we cannot queue
                latent = await asyncio.to_thread(decode_latent, runtime, frame)
                # The classifier reads the base channels: frames with and without an enhancement
                # layer share a batch.
                probs = await batcher.submit(latent[: runtime.manifest.latent.channels])
            except Overloaded:
                raise overloaded(state) from None
        else:
            probs = await run_heavy(state, _classify_one, runtime, frame)
        order = np.argsort(-probs)[: state.settings.top_k]
        top = [
            ClassScore(class_id=int(i), label=runtime.labels[i], confidence=float(probs[i]))
            for i in order
        ]
        answer = ClassifyResponse(
            request_id=request.state.request_id,
            model_id=runtime.model_id,
            class_id=top[0].class_id,
            label=top[0].label,
            confidence=top[0].confidence,
            top_k=top,
            qf=frame.qf,
            codec=CODEC_IDS[frame.codec],
            bytes=len(body),
            bits=8 * len(body),
            bpp=frame.bpp,
            latent_shape=list(frame.latent_shape),
            input_size=list(frame.input_size),
            image_size=list(frame.image_size),
            device_id=frame_in.device_id,
        )
        if state.settings.store_results:
            answer.frame_id = await store_result(state, answer, frame_in)
        if state.webhooks is not None:
            state.webhooks.submit({"event": "frame", **answer.model_dump()})
        request.state.model_id = runtime.model_id
        return Response(answer.model_dump_json(), media_type="application/json")

    return await idempotent(request, state, frame_in.key, body, run)


@router.post(
    "/reconstruct",
    responses={200: {"content": {"image/png": {}}}, **ERRORS},
    openapi_extra=FRAME_BODY,
    response_class=Response,
    summary="Decode a SPIC frame back to an image (PNG)",
)
async def reconstruct(request: Request, state: StateDep, frame_in: FrameDep) -> Response:
    async def run() -> Response:
        runtime, frame = parse_frame(state, frame_in.body)
        png = await run_heavy(state, reconstruct_png, runtime, frame)
        request.state.model_id = runtime.model_id
        return Response(png, media_type="image/png")

    return await idempotent(request, state, frame_in.key, frame_in.body, run, recompute=True)
