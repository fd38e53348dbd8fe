"""Refinement on demand (issue 35): the routes of the back-channel to the cameras.

    POST /v1/frames/{id}/refine              admin or operator key: ask the frame's camera (202)
    GET  /v1/refinements/{request_id}        read, operator or admin key: the request's status
    GET  /v1/refinements                     read, operator or admin key: counts and bytes
    GET  /v1/devices/{device_id}/requests    that device's upload key: its requests (?wait= s)
    POST /v1/refinements/{request_id}/answer that device's upload key: the picture
    POST /v1/refinements/{request_id}/gone   that device's upload key: the original is gone

The best picture held is served by ``GET /v1/frames/{id}/reconstruction?best=1``. Requests also
reach a camera on its upload answers: ``SPIC-Refine-Requests`` (``cloud_service.services.refine``).
Every body is size-capped before it is read; a malformed request is a 4xx problem.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Header, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import ClientDisconnect

from cloud_service.problems import Problem
from cloud_service.routes.common import ERRORS
from cloud_service.routes.query_params import strict_query
from cloud_service.services import refine
from cloud_service.services.refine import OPEN, Refinement
from cloud_service.state import (
    BearerDep,
    Caller,
    ServiceState,
    StateDep,
    auth_enabled,
    bearer_token,
    identify,
    not_accepted,
)
from cloud_service.timeutil import format_rfc3339, format_rfc3339_or_none, now_us
from shared.schemas import DEVICE_ID

router = APIRouter(prefix="/v1", tags=["refinement"], dependencies=[strict_query])
FrameId = Annotated[int, Path(ge=1, le=(1 << 63) - 1)]  # as /v1/frames/{frame_id} takes it
RequestId = Annotated[str, Path(pattern=r"^[0-9a-f]{24}$", description="a refinement request")]
DeviceId = Annotated[str, Path(pattern=DEVICE_ID.pattern)]
CLOSED: dict[int | str, dict[str, Any]] = {
    410: ERRORS[409]
}  # a request that closed (expired, gone) before the answer came
SMALL_BODY = 4096  # the JSON bodies of ask and gone: a few fields
M = TypeVar("M", bound=BaseModel)


class RefineAsk(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["layer", "whole", "original"] = Field(
        "layer",
        description="layer: the frame again at a higher QF (its enhancement layer included); "
        "whole: a whole-image SPIC frame; original: a JPEG or AVIF of the camera's original",
    )
    quality: int | None = Field(
        None, ge=1, le=255, description="the QF (layer, whole; default 128) or 1-100 (original; 90)"
    )
    format: Literal["jpeg", "avif"] | None = Field(None, description="original only; jpeg")


class GoneBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    detail: str = Field("", max_length=500)


class RefinementStatus(BaseModel):
    request_id: str
    status: Literal["pending", "delivered", "expired", "gone", "done"]
    frame_id: int
    device_id: str
    kind: str
    quality: int
    format: str = Field(description="spic (layer, whole), jpeg or avif (original)")
    created_at: str
    expires_at: str
    delivered_at: str | None
    finished_at: str | None
    detail: str | None = Field(description="why it is gone, as the camera said")
    bytes: int = Field(description="the picture's bytes, once done")
    picture: str | None = Field(description="where the best picture is served, once done")


class Order(BaseModel):
    """A request as a camera gets it."""

    request_id: str
    frame_id: int
    kind: str
    quality: int
    format: str
    expires_at: str
    idempotency_key: str = Field(description="the Idempotency-Key to answer with")
    answer: str = Field(description="POST the picture here")
    gone: str = Field(description="POST here when the original is no longer held")


class DeviceRequests(BaseModel):
    device_id: str
    requests: list[Order]


class RefinementTotals(BaseModel):
    requests: dict[str, int] = Field(description="requests per status")
    refinement_bytes: int = Field(description="bytes of the pictures stored, apart from frames")


def view(q: Refinement) -> RefinementStatus:
    status = q.status
    if status in OPEN and q.expires_us <= now_us():  # the expiry pass has not come by yet
        status = "expired"
    return RefinementStatus(
        request_id=q.id,
        status=status,
        frame_id=q.frame_id,
        device_id=q.device,
        kind=q.kind,
        quality=q.quality,
        format=q.format,
        created_at=format_rfc3339(q.created_us),
        expires_at=format_rfc3339(q.expires_us),
        delivered_at=format_rfc3339_or_none(q.delivered_us),
        finished_at=format_rfc3339_or_none(q.finished_us),
        detail=q.detail,
        bytes=q.bytes,
        picture=f"/v1/frames/{q.frame_id}/reconstruction?best=1" if status == "done" else None,
    )


def order(q: Refinement) -> Order:
    base = f"/v1/refinements/{q.id}"
    return Order(
        request_id=q.id,
        frame_id=q.frame_id,
        kind=q.kind,
        quality=q.quality,
        format=q.format,
        expires_at=format_rfc3339(q.expires_us),
        idempotency_key=q.idempotency_key,
        answer=base + "/answer",
        gone=base + "/gone",
    )


def _caller(request: Request, state: ServiceState, scopes: tuple[str, ...]) -> Caller | None:
    """The caller when its key is of one of ``scopes``; None with authentication off."""
    if not auth_enabled(state):
        return None
    caller = identify(state, bearer_token(request))
    if caller is None:
        raise not_accepted()
    if caller.scope not in scopes:
        raise Problem(
            403,
            "wrong-key-scope",
            "key of the wrong kind",
            f"this needs a {' or '.join(scopes)} key",
        )
    return caller


def _camera(request: Request, state: ServiceState, device: str) -> None:
    """Only the device's own upload key (or one that may send as any device) speaks for it."""
    caller = _caller(request, state, ("upload",))
    if caller is not None and caller.device is not None and caller.device != device:
        raise Problem(
            403,
            "device-mismatch",
            "not this key's device",
            f"this key belongs to device {caller.device!r}",
        )


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body, refused (413) once past ``limit`` bytes, declared or counted while it streams."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Problem(413, "body-too-large", "body too large", f"the limit is {limit} bytes")
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise Problem(413, "body-too-large", "body too large", f"over {limit} bytes")
    except TimeoutError:
        raise Problem(
            408, "body-timeout", "request body too slow", headers={"Connection": "close"}
        ) from None
    except ClientDisconnect:
        raise Problem(499, "client-closed-request", "client closed the request") from None
    return bytes(body)


async def _small_json(request: Request, state: ServiceState, model: type[M]) -> M:
    body = await read_body(request, SMALL_BODY, state.settings.body_timeout_s)
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise Problem(422, "invalid-request", "invalid request", reasons[:500]) from None


async def _request(state: ServiceState, request_id: str) -> Refinement:
    found = await refine.get(state, request_id)
    if found is None:
        raise Problem(404, "refinement-not-found", "no such refinement request", request_id)
    return found


@router.post(
    "/frames/{frame_id}/refine",
    status_code=202,
    response_model=RefinementStatus,
    responses={**ERRORS, 429: ERRORS[409]},
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": RefineAsk.model_json_schema()}},
        }
    },
    summary="Ask the frame's camera for a better picture (admin or operator keys)",
)
async def ask(frame_id: FrameId, request: Request, state: StateDep, _bearer: BearerDep) -> Response:
    _caller(request, state, ("admin", "operator"))
    asked = await _small_json(request, state, RefineAsk)
    found, _new = await refine.ask(state, frame_id, asked.kind, asked.quality, asked.format)
    return Response(
        view(found).model_dump_json(),
        202,
        media_type="application/json",
        headers={"Location": f"/v1/refinements/{found.id}"},
    )


@router.get(
    "/refinements",
    response_model=RefinementTotals,
    responses=ERRORS,
    summary="Refinement requests per status, and the bytes of their pictures",
)
async def totals(request: Request, state: StateDep, _bearer: BearerDep) -> RefinementTotals:
    _caller(request, state, ("read", "operator", "admin"))
    counts, size = await refine.totals(state)
    return RefinementTotals(requests=counts, refinement_bytes=size)


@router.get(
    "/refinements/{request_id}",
    response_model=RefinementStatus,
    responses=ERRORS,
    summary="A refinement request's status",
)
async def status(
    request_id: RequestId, request: Request, state: StateDep, _bearer: BearerDep
) -> RefinementStatus:
    _caller(request, state, ("read", "operator", "admin"))
    return view(await _request(state, request_id))


@router.get(
    "/devices/{device_id}/requests",
    response_model=DeviceRequests,
    responses={**ERRORS, 429: ERRORS[409]},
    summary="A camera's refinement requests, waiting up to ?wait= seconds (its upload key)",
)
async def device_requests(
    device_id: DeviceId,
    request: Request,
    state: StateDep,
    _bearer: BearerDep,
    wait: Annotated[float, Query(ge=0, le=3600, description="seconds; capped by the service")] = 0,
) -> DeviceRequests:
    _camera(request, state, device_id)
    found = await refine.poll(state, device_id, wait, request.is_disconnected)
    return DeviceRequests(device_id=device_id, requests=[order(q) for q in found])


async def _open_for_camera(request: Request, state: ServiceState, request_id: str) -> Refinement:
    """The request, once its camera's key is checked; 410 if it closed without a picture."""
    found = await _request(state, request_id)
    _camera(request, state, found.device)
    if view(found).status in ("expired", "gone"):
        raise Problem(410, "refinement-closed", "refinement request closed", view(found).status)
    return found


def _answered(found: Refinement) -> Response:
    return Response(
        view(found).model_dump_json(),
        media_type="application/json",
        headers={"Idempotent-Replayed": "true"},
    )


@router.post(
    "/refinements/{request_id}/answer",
    response_model=RefinementStatus,
    responses={**ERRORS, **CLOSED},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                t: {"schema": {"type": "string", "format": "binary"}}
                for t in (refine.MEDIA_TYPES.values())
            },
        }
    },
    summary="A camera's picture for a refinement request (that device's upload key)",
)
async def answer(
    request_id: RequestId,
    request: Request,
    state: StateDep,
    _bearer: BearerDep,
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", description="refine-{request_id}: the request's own"),
    ] = None,
) -> Response:
    found = await _open_for_camera(request, state, request_id)
    if idempotency_key is not None and idempotency_key != found.idempotency_key:
        raise Problem(
            422,
            "bad-idempotency-key",
            "Idempotency-Key is not this request's",
            f"answer with Idempotency-Key: {found.idempotency_key}",
        )
    if found.status == "done":  # a retry of an answer already stored: the first one stands
        return _answered(found)
    limit = refine.refiner(state).settings.max_body_bytes
    body = await read_body(request, limit, state.settings.body_timeout_s)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    stored = await refine.answer(state, found, media, body)
    now = await _request(state, request_id)
    if not stored:
        if now.status != "done":
            raise Problem(410, "refinement-closed", "refinement request closed", now.status)
        return _answered(now)
    return Response(view(now).model_dump_json(), media_type="application/json")


@router.post(
    "/refinements/{request_id}/gone",
    response_model=RefinementStatus,
    responses={**ERRORS, **CLOSED},
    summary="The camera no longer holds the frame's original (that device's upload key)",
)
async def original_gone(
    request_id: RequestId, request: Request, state: StateDep, _bearer: BearerDep
) -> RefinementStatus:
    found = await _request(state, request_id)
    _camera(request, state, found.device)
    said = await _small_json(request, state, GoneBody)
    if found.status in OPEN:
        await refine.gone(state, found, said.detail or "the camera no longer holds the original")
    return view(await _request(state, request_id))
