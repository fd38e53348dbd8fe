"""Aggregates and live events over the results store, for read keys.

    GET /v1/stats?group_by=label|device&after=&before=&bucket=1h   counts per group and bucket
    GET /v1/events?device=&label=&min_confidence=                   Server-Sent Events

Each event is one stored frame: ``id:`` is its frame id, ``event: frame``, ``data:`` the stored
record as JSON. A consumer that reconnects with ``Last-Event-ID`` (browsers' EventSource does it
by itself) gets every matching frame stored after that id, in order, then the live ones; without
it, the stream starts with the next frame stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from cloud_service.problems import Problem
from cloud_service.results import MAX_ID, FrameQuery
from cloud_service.routes.frames import (
    QUERY_ERRORS,
    answers,
    frame_filters,
    query_time,
    results_store,
    stored_frame,
)
from cloud_service.state import ReadAuthDep, StateDep
from cloud_service.timeutil import format_rfc3339

router = APIRouter(prefix="/v1", tags=["frames"])
BUCKETS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "6h": 21600, "1d": 86400}
HEARTBEAT_S = 15.0  # a comment line keeps proxies from closing a quiet stream


class StatsRow(BaseModel):
    group: str
    bucket_start: str
    count: int


class StatsResponse(BaseModel):
    group_by: str
    bucket: str
    rows: list[StatsRow]


@router.get("/stats", response_model=StatsResponse, responses=QUERY_ERRORS, summary="Counts")
async def stats(
    state: StateDep,
    _auth: ReadAuthDep,
    group_by: Literal["label", "device"] = "label",
    bucket: Literal["1m", "5m", "15m", "1h", "6h", "1d"] = "1h",
    after: Annotated[str | None, Query(description="RFC 3339: received at or after")] = None,
    before: Annotated[str | None, Query(description="RFC 3339: received before")] = None,
) -> StatsResponse:
    q = FrameQuery(after_us=query_time("after", after), before_us=query_time("before", before))
    bucket_us = BUCKETS[bucket] * 1_000_000
    rows = await asyncio.to_thread(results_store(state).stats, group_by, bucket_us, q)
    out = [StatsRow(group=g, bucket_start=format_rfc3339(b), count=n) for g, b, n in rows]
    return StatsResponse(group_by=group_by, bucket=bucket, rows=out)


def _sse(event_id: int, data: str) -> bytes:
    return f"id: {event_id}\nevent: frame\ndata: {data}\n\n".encode()


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses=answers("text/event-stream"),
    summary="Live stream of stored frames (Server-Sent Events; resume with Last-Event-ID)",
)
async def events(
    request: Request,
    state: StateDep,
    _auth: ReadAuthDep,
    filters: Annotated[FrameQuery, frame_filters],
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    store = results_store(state)
    if last_event_id is not None:
        text = last_event_id.strip()
        # ASCII digits of a 64-bit id: the engines bind nothing larger
        if not (text.isascii() and text.isdigit() and len(text) <= 19 and int(text) <= MAX_ID):
            raise Problem(422, "bad-last-event-id", "bad Last-Event-ID", "an event id is a number")
        position = int(text)
    else:
        position = await asyncio.to_thread(store.last_id)
    filters.limit = 100  # per poll; a consumer far behind catches up page by page
    poll_s = state.settings.events_poll_s

    async def stream() -> AsyncIterator[bytes]:
        nonlocal position
        yield b"retry: 2000\n\n"  # reconnect after 2 s, with Last-Event-ID
        quiet = 0.0
        while not await request.is_disconnected():
            rows = await asyncio.to_thread(store.since, position, filters)
            for r in rows:
                position = r.id or position
                yield _sse(position, stored_frame(r).model_dump_json())
            if rows:
                quiet = 0.0
                continue
            await asyncio.sleep(poll_s)
            quiet += poll_s
            if quiet >= HEARTBEAT_S:
                quiet = 0.0
                yield b": keep-alive\n\n"

    headers: dict[str, Any] = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)
