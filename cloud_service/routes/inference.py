"""POST /v1/classify and /v1/reconstruct: a SPIC frame in, a prediction or a PNG out.

The routes read the request: its content type, declared length, and the body counted while it
streams in, within ``body_timeout_s`` (408) and ``max_body_bytes`` (413); a client that hangs up
is a 499. The frame then goes to ``cloud_service.services.inference`` (parse, decode, classify or
reconstruct, keep), once per Idempotency-Key (``cloud_service.services.idempotent``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from starlette.requests import ClientDisconnect

from cloud_service.problems import Problem, problem_response
from cloud_service.routes.common import ERRORS
from cloud_service.routes.query_params import strict_query
from cloud_service.services import inference, refine, streams
from cloud_service.services.idempotent import idempotent, scoped_key
from cloud_service.services.inference import FrameIn
from cloud_service.state import AuthDep, Caller, ReadyDep, ServiceState, StateDep
from cloud_service.timeutil import parse_rfc3339
from shared.schemas import DEVICE_ID, ClassifyResponse

router = APIRouter(prefix="/v1", tags=["inference"])
FRAME_MEDIA_TYPE = "application/octet-stream"
FRAME_BODY = {
    "requestBody": {
        "required": True,
        "content": {FRAME_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
    }
}
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
HeadsParam = Annotated[
    str | None,
    Query(
        max_length=2000,
        pattern=r"^[a-z0-9._,-]+$",
        description="comma-separated head names, or `all`: the answer's `heads` holds each one's "
        "prediction (GET /v1/models lists the heads of each codec); the top-level fields stay "
        "the default head's",
    ),
]


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    responses=ERRORS,
    openapi_extra=FRAME_BODY,
    dependencies=[strict_query],
    summary="Classify a SPIC frame from its latent (no pixel decode)",
)
async def classify(
    request: Request, state: StateDep, frame_in: FrameDep, heads: HeadsParam = None
) -> Response:
    async def run() -> Response:
        # A frame of a stream (bitstream version 2) is read against its stream's state.
        handler = (
            streams.classify_stream if streams.is_stream(frame_in.body) else inference.classify
        )
        answer = await handler(state, frame_in, request.state.request_id, heads)
        request.state.model_id = answer.model_id
        return Response(answer.model_dump_json(), media_type="application/json")

    response = await _once(request, state, frame_in, run)
    await refine.after_classify(state, frame_in.device_id, response)  # outside replays: fresh
    return response


@router.post(
    "/reconstruct",
    responses={200: {"content": {"image/png": {}}}, **ERRORS},
    openapi_extra=FRAME_BODY,
    response_class=Response,
    summary="Decode a SPIC frame back to an image (PNG)",
)
async def reconstruct(request: Request, state: StateDep, frame_in: FrameDep) -> Response:
    async def run() -> Response:
        model_id, png = await inference.reconstruct(state, frame_in.body)
        request.state.model_id = model_id
        return Response(png, media_type="image/png")

    return await _once(request, state, frame_in, run, recompute=True)


async def _once(
    request: Request,
    state: ServiceState,
    frame_in: FrameIn,
    run: Callable[[], Awaitable[Response]],
    recompute: bool = False,
) -> Response:
    """``run`` once per Idempotency-Key; a refusal kept for the key as this request renders it."""
    return await idempotent(
        state.idempotency,
        frame_in.key,
        frame_in.body,
        run,
        lambda exc: problem_response(request, exc),
        recompute,
    )
