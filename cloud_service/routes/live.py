"""Aggregates and live events over the results store, for read keys.

    GET /v1/stats?group_by=label|device&bucket=1h|auto&after=&before=&device=&label=&min_confidence=&unknown=&changes=
        counts per group and bucket of capture time (``AT``: received time when none was sent);
        frames the default head called unknown count under the label "unknown"
    GET /v1/stats?measure=seconds&...   per camera and answer: seconds held, frames (repeats in)
    GET /v1/events?device=&label=&min_confidence=&changes=          Server-Sent Events

A stats answer is bounded before it is computed: the buckets between the first and last matching
frame may number ``MAX_BUCKETS`` at most (else 422 naming the smallest bucket that fits; or ask
``bucket=auto`` for it), and the rows ``MAX_ROWS``. Both come from indexes, and every read runs on
the store's read connection, apart from the uploads' writes.

Each event is one stored frame: ``id:`` is its frame id, ``event: frame`` (``event: change``
with ``changes=true``: only frames whose answer differs from their camera's frame before),
``data:`` the stored record as JSON. A stream's skip frames are no events: they repeat a stored
frame's answer and are counted on it (``repeats``). A consumer that reconnects with ``Last-Event-ID`` (browsers' EventSource does it
by itself) gets every matching frame stored after that id, in order, then the live ones; without
it, the stream starts with the next frame stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from cloud_service.problems import Problem
from cloud_service.routes.common import CAPTURED, QUERY_ERRORS, frame_filters, get_bytes, query_time
from cloud_service.routes.query_params import strict_query
from cloud_service.services import frames
from cloud_service.services.frames import MAX_ID, FrameQuery
from cloud_service.state import ReadAuthDep, StateDep
from cloud_service.timeutil import format_rfc3339_or_none

router = APIRouter(prefix="/v1", tags=["frames"], dependencies=[strict_query])
BUCKETS = {
    "1m": 60,
    "5m": 300,
    "15m": 900,
    "1h": 3600,
    "6h": 21600,
    "1d": 86400,
    "7d": 7 * 86400,
    "30d": 30 * 86400,
}
BucketName = Literal["auto", "1m", "5m", "15m", "1h", "6h", "1d", "7d", "30d"]
# 1h buckets over 41 days, 1d over 2.7 years; ten years of 1m buckets had answered 70 MB of JSON.
MAX_BUCKETS = 1000
MAX_ROWS = 20_000  # buckets x groups
HEARTBEAT_S = 15.0  # a comment line keeps proxies from closing a quiet stream


class StatsRow(BaseModel):
    group: str
    bucket_start: str
    count: int = Field(description="frames; with measure=seconds, a stream's repeats included")
    device: str | None = Field(None, description="measure=seconds: the camera")
    seconds: float | None = Field(
        None, description="measure=seconds: how long the camera held this answer"
    )


class StatsResponse(BaseModel):
    group_by: str
    bucket: str = Field(description="the bucket counted in (bucket=auto: the one chosen)")
    max_buckets: int = Field(description="the most buckets one answer may span")
    rows: list[StatsRow]


def slots(span: tuple[int, int], bucket_s: int) -> int:
    """How many buckets of ``bucket_s`` the times from ``span[0]`` to ``span[1]`` (µs) touch."""
    size = bucket_s * 1_000_000
    return span[1] // size - span[0] // size + 1


def choose_bucket(bucket: str, span: tuple[int, int] | None) -> str:
    """``bucket``, or for ``auto`` the finest that fits; 422 if the span needs too many."""
    fitting = [n for n, s in BUCKETS.items() if span is None or slots(span, s) <= MAX_BUCKETS]
    if bucket == "auto" and fitting:
        return fitting[0]
    if bucket in fitting:
        return bucket
    assert span is not None  # every bucket fits an empty answer
    asked = "30d" if bucket == "auto" else bucket
    hint = f"bucket={fitting[0]} (or bucket=auto), or " if fitting else ""
    raise Problem(
        422,
        "too-many-buckets",
        "too many buckets",
        f"the matching frames span {slots(span, BUCKETS[asked])} buckets of {asked}; an answer "
        f"may span {MAX_BUCKETS} at most: ask for {hint}narrow after/before",
        max_buckets=MAX_BUCKETS,
    )


@router.get(
    "/stats",
    response_model=StatsResponse,
    responses=QUERY_ERRORS,
    summary="Counts",
    description="Frames per group and bucket of capture time. Grouped by label, the frames the "
    "codec's default head called unknown (`unknown: true`, `label: null`) count under the group "
    '"unknown".',
)
async def stats(
    state: StateDep,
    _auth: ReadAuthDep,
    q: Annotated[FrameQuery, frame_filters],
    group_by: Literal["label", "device"] = "label",
    bucket: Annotated[
        BucketName, Query(description=f"auto: the finest that spans at most {MAX_BUCKETS}")
    ] = "1h",
    after: Annotated[str | None, Query(description=f"RFC 3339: {CAPTURED} at or after")] = None,
    before: Annotated[str | None, Query(description=f"RFC 3339: {CAPTURED} before")] = None,
    measure: Annotated[
        Literal["frames", "seconds"],
        Query(
            description="seconds: per camera (device) and label, how long the answer was held: "
            "from a frame to its camera's next within SPIC_CLOUD_STATS_GAP_S of its last repeat"
        ),
    ] = "frames",
) -> StatsResponse:
    q.after_us, q.before_us = query_time("after", after), query_time("before", before)
    store = frames.store(state)
    chosen = choose_bucket(bucket, await frames.span(store, q))
    size_us = BUCKETS[chosen] * 1_000_000
    if measure == "seconds":
        if group_by != "label" or q.changes:
            raise Problem(
                422,
                "bad-query",
                "measure=seconds groups by label, per camera",
                "ask group_by=label (each row names its device), without changes=true",
            )
        gap_us = int(state.settings.stats_gap_s * 1e6)
        held = await frames.held(store, size_us, q, MAX_ROWS, gap_us)
        too_many(len(held))
        out = []
        for device, answer, start_us, n, us in held:
            start = format_rfc3339_or_none(start_us)
            if start is not None:
                row = StatsRow(group=answer, bucket_start=start, count=n, device=device)
                out.append(row.model_copy(update={"seconds": us / 1e6}))
        return StatsResponse(group_by=group_by, bucket=chosen, max_buckets=MAX_BUCKETS, rows=out)
    rows = await frames.stats(store, group_by, size_us, q, MAX_ROWS)
    too_many(len(rows))
    # A bucket no instant can name (a row stored before capture times were checked) is left out.
    starts = [(g, format_rfc3339_or_none(b), n) for g, b, n in rows]
    out = [StatsRow(group=g, bucket_start=b, count=n) for g, b, n in starts if b is not None]
    return StatsResponse(group_by=group_by, bucket=chosen, max_buckets=MAX_BUCKETS, rows=out)


def too_many(rows: int) -> None:
    if rows > MAX_ROWS:
        raise Problem(
            422,
            "too-many-rows",
            "too many rows",
            f"more than {MAX_ROWS} (group, bucket) rows: filter by device or label, widen the "
            "bucket, or narrow after/before",
            max_rows=MAX_ROWS,
        )


def _sse(event_id: int, data: str, event: str = "frame") -> bytes:
    return f"id: {event_id}\nevent: {event}\ndata: {data}\n\n".encode()


@get_bytes(
    router,
    "/events",
    "text/event-stream",
    "Live stream of stored frames (Server-Sent Events; resume with Last-Event-ID)",
    StreamingResponse,
)
async def events(
    request: Request,
    state: StateDep,
    _auth: ReadAuthDep,
    filters: Annotated[FrameQuery, frame_filters],
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    store = frames.store(state)
    if last_event_id is not None:
        text = last_event_id.strip()
        # ASCII digits of a 64-bit id: the engines bind nothing larger
        if not (text.isascii() and text.isdigit() and len(text) <= 19 and int(text) <= MAX_ID):
            raise Problem(422, "bad-last-event-id", "bad Last-Event-ID", "an event id is a number")
        position = int(text)
    else:
        position = await frames.last_id(store)
    filters.limit = 100  # per poll; a consumer far behind catches up page by page
    poll_s = state.settings.events_poll_s
    kind = "change" if filters.changes else "frame"

    async def stream() -> AsyncIterator[bytes]:
        nonlocal position
        yield b"retry: 2000\n\n"  # reconnect after 2 s, with Last-Event-ID
        quiet = 0.0
        while not await request.is_disconnected():
            rows = await frames.since(store, position, filters)
            for r in rows:
                position = r.frame_id or position
                yield _sse(position, r.model_dump_json(), kind)
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
