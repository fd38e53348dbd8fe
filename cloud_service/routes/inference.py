"""POST /v1/classify and /v1/reconstruct: a SPIC frame in, a prediction or a PNG out."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable

import numpy as np
from fastapi import APIRouter, Request, Response
from PIL import Image

from cloud_service.batcher import Overloaded
from cloud_service.idempotency import Stored
from cloud_service.problems import Problem, problem_response
from cloud_service.runtime import BundleRuntime
from cloud_service.state import AuthDep, ReadyDep, ServiceState, StateDep
from shared import bitstream
from shared.codecs import CODEC_IDS
from shared.errors import BitstreamError
from shared.quantize import dequantize
from shared.schemas import ClassifyResponse, ProblemDetails

router = APIRouter(prefix="/v1", tags=["inference"])
FRAME_MEDIA_TYPE = "application/octet-stream"
ERRORS = {
    s: {"model": ProblemDetails, "content": {"application/problem+json": {}}}
    for s in (400, 401, 403, 409, 413, 415, 422, 503)
}
FRAME_BODY = {
    "requestBody": {
        "required": True,
        "content": {FRAME_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
    }
}


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
    async for chunk in request.stream():  # counted while reading: never buffers past the limit
        body += chunk
        if len(body) > limit:
            raise Problem(413, "body-too-large", "frame too large", f"over {limit} bytes")
    return bytes(body)


def decode(state: ServiceState, body: bytes) -> tuple[BundleRuntime, bitstream.Frame, np.ndarray]:
    try:
        frame = bitstream.unpack(body)
    except BitstreamError as exc:
        raise Problem(
            400, f"bad-frame-{exc.reason}", "malformed SPIC frame", str(exc), reason=exc.reason
        ) from None
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
        symbols = runtime.codebook.decode_frame(frame)
    except BitstreamError as exc:
        raise Problem(
            400, f"bad-frame-{exc.reason}", "malformed SPIC frame", str(exc), reason=exc.reason
        ) from None
    return runtime, frame, symbols


async def idempotent(
    request: Request,
    state: ServiceState,
    body: bytes,
    route: str,
    handler: Callable[[], Awaitable[Response]],
) -> Response:
    """Run ``handler`` once per Idempotency-Key; replay its stored answer to retries."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return await handler()
    store = state.idempotency
    stored = store.begin(f"{route}:{key}", body)
    if stored is not None:
        return Response(
            stored.body,
            stored.status,
            media_type=stored.media_type,
            headers={"Idempotent-Replayed": "true"},
        )
    try:
        response = await handler()
    except Problem as exc:
        if exc.status in (400, 409):  # the same frame will always get this answer: keep it
            resp = problem_response(
                request, exc.status, exc.slug, exc.title, exc.detail, exc.headers, **exc.extra
            )
            store.complete(f"{route}:{key}", Stored(resp.status_code, resp.body, resp.media_type))
        else:
            store.abandon(f"{route}:{key}")  # overload and the like: a retry may well succeed
        raise
    except BaseException:
        store.abandon(f"{route}:{key}")
        raise
    store.complete(
        f"{route}:{key}", Stored(response.status_code, response.body, response.media_type)
    )
    return response


def overloaded(state: ServiceState) -> Problem:
    return Problem(
        503,
        "overloaded",
        "service overloaded",
        "the inference queue is full; retry later",
        headers={"Retry-After": str(state.settings.retry_after_s)},
    )


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    responses=ERRORS,
    openapi_extra=FRAME_BODY,
    summary="Classify a SPIC frame from its latent (no pixel decode)",
)
async def classify(request: Request, state: StateDep, _auth: AuthDep, _ready: ReadyDep) -> Response:
    body = await read_frame(request, state)

    async def run() -> Response:
        runtime, frame, symbols = decode(state, body)
        try:
            probs = await state.batchers[runtime.model_id].submit(dequantize(symbols, frame.qf))
        except Overloaded:
            raise overloaded(state) from None
        order = np.argsort(-probs)[: state.settings.top_k]
        top = [
            {"class_id": int(i), "label": runtime.labels[i], "confidence": float(probs[i])}
            for i in order
        ]
        answer = ClassifyResponse(
            request_id=request.state.request_id,
            model_id=runtime.model_id,
            class_id=top[0]["class_id"],
            label=top[0]["label"],
            confidence=top[0]["confidence"],
            top_k=top,
            qf=frame.qf,
            codec=CODEC_IDS[frame.codec],
            bytes=len(body),
            bits=8 * len(body),
            bpp=frame.bpp,
            latent_shape=list(frame.latent_shape),
            input_size=list(frame.input_size),
            image_size=list(frame.image_size),
        )
        request.state.model_id = runtime.model_id
        return Response(answer.model_dump_json(), media_type="application/json")

    return await idempotent(request, state, body, "classify", run)


@router.post(
    "/reconstruct",
    responses={200: {"content": {"image/png": {}}}, **ERRORS},
    openapi_extra=FRAME_BODY,
    response_class=Response,
    summary="Decode a SPIC frame back to an image (PNG)",
)
async def reconstruct(
    request: Request, state: StateDep, _auth: AuthDep, _ready: ReadyDep
) -> Response:
    body = await read_frame(request, state)

    async def run() -> Response:
        runtime, frame, symbols = decode(state, body)
        if state.reconstruct_waiting >= state.settings.queue_size:
            raise overloaded(state)
        state.reconstruct_waiting += 1
        try:
            async with state.reconstruct_slots:
                y_hat = dequantize(symbols, frame.qf)[None]
                image = await asyncio.get_running_loop().run_in_executor(
                    None, runtime.reconstruct_latents, y_hat
                )
        finally:
            state.reconstruct_waiting -= 1
        buf = io.BytesIO()
        Image.fromarray(image[0]).save(buf, format="PNG")
        request.state.model_id = runtime.model_id
        return Response(buf.getvalue(), media_type="image/png")

    return await idempotent(request, state, body, "reconstruct", run)
