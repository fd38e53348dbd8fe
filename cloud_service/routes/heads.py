"""``PUT /v1/heads/{name}``: an admin adds or replaces a classifier head while the cloud runs.

The body is a zip of the head's folder (``cloud_service.services.heads`` says what it may hold).
Its declared length is checked before a byte is read, and the body counted while it streams in.
201 with the head's description when the codec had no head of that name, 200 when it replaced
one. GET /v1/models lists the heads served.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from starlette.requests import ClientDisconnect

from cloud_service.problems import Problem
from cloud_service.routes.common import ERRORS
from cloud_service.routes.query_params import strict_query
from cloud_service.services import heads
from cloud_service.state import AdminAuthDep, ReadyDep, StateDep
from shared.schemas import HeadInfo

router = APIRouter(prefix="/v1", tags=["models"], dependencies=[strict_query])
ZIP = "application/zip"
# application/octet-stream is taken too: what generic HTTP clients send for a file's bytes.
MEDIA_TYPES = (ZIP, "application/octet-stream")
HeadName = Annotated[
    str, Path(pattern=heads.HEAD_NAME, description="the head's name (its head.json's)")
]


async def read_zip(request: Request, state: StateDep) -> bytes:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in MEDIA_TYPES:
        raise Problem(
            415, "unsupported-media-type", "unsupported media type", f"send the head as {ZIP}"
        )
    limit = heads.MAX_UPLOAD
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Problem(
            413, "body-too-large", "head too large", f"{declared} bytes declared, at most {limit}"
        )
    body = bytearray()
    try:
        async with asyncio.timeout(max(60.0, state.settings.body_timeout_s)):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise Problem(413, "body-too-large", "head too large", f"over {limit} bytes")
    except TimeoutError:
        raise Problem(
            408, "body-timeout", "request body too slow", "the head did not arrive in time"
        ) from None
    except ClientDisconnect:
        raise Problem(499, "client-closed-request", "client closed the request") from None
    return bytes(body)


@router.put(
    "/heads/{name}",
    response_model=HeadInfo,
    status_code=200,
    responses={
        201: {"model": HeadInfo, "description": "a new head"},
        **{s: ERRORS[s] for s in (401, 403, 408, 409, 413, 415, 422, 503)},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {m: {"schema": {"type": "string", "format": "binary"}} for m in MEDIA_TYPES},
        }
    },
    summary="Add or replace a classifier head (admin keys): a zip of head.json and its files",
)
async def put_head(
    name: HeadName, request: Request, state: StateDep, _auth: AdminAuthDep, _ready: ReadyDep
) -> Response:
    body = await read_zip(request, state)
    head, created = await heads.put_head(state, name, body)
    return Response(
        json.dumps(head.describe()),
        status_code=201 if created else 200,
        media_type="application/json",
    )
