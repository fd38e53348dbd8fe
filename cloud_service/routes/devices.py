"""``GET /v1/devices``: one line per camera, for read keys: when it last saw something, and what
it sent since a time (today, by default).

Times are capture times (``AT`` in ``cloud_service.results``: received when the camera sent no
``X-Captured-At``). ``unknowns_since`` counts the frames the codec's default head called unknown
(its reject rule refused them: ``unknown: true``, ``label: null``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from cloud_service.routes.common import QUERY_ERRORS, query_time
from cloud_service.routes.query_params import strict_query
from cloud_service.services import frames
from cloud_service.state import ReadAuthDep, StateDep
from cloud_service.timeutil import format_rfc3339, format_rfc3339_or_none

router = APIRouter(prefix="/v1", tags=["frames"], dependencies=[strict_query])


class DeviceRow(BaseModel):
    device_id: str
    last_seen: str | None = Field(
        description="RFC 3339: the newest frame's capture time (null if a stored row's cannot be written)"
    )
    frames: int = Field(description="frames stored from this camera")
    frames_since: int = Field(
        description="frames captured since `since`, a stream's skips (repeats) included"
    )
    unknowns_since: int = Field(description="of those, frames the default head called unknown")
    bytes_since: int = Field(description="of those, the bytes the camera sent")


class DevicesResponse(BaseModel):
    since: str
    devices: list[DeviceRow]
    more: bool = Field(description="true when `limit` cut the list")


def start_of_today() -> int:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return int(today.timestamp() * 1_000_000)


@router.get(
    "/devices", response_model=DevicesResponse, responses=QUERY_ERRORS, summary="Per camera"
)
async def devices(
    state: StateDep,
    _auth: ReadAuthDep,
    since: Annotated[
        str | None, Query(description="RFC 3339; default: today's start (UTC)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> DevicesResponse:
    since_us = query_time("since", since)
    since_us = start_of_today() if since_us is None else since_us
    rows = await frames.devices(frames.store(state), since_us, limit + 1)
    return DevicesResponse(
        since=format_rfc3339(since_us),
        devices=[
            DeviceRow(
                device_id=r.device,
                last_seen=format_rfc3339_or_none(r.last_at_us),
                frames=r.frames,
                frames_since=r.frames_since,
                unknowns_since=r.unknowns_since,
                bytes_since=r.bytes_since,
            )
            for r in rows[:limit]
        ],
        more=len(rows) > limit,
    )
