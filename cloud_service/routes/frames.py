"""The query API over the results store, for read keys: what the cameras saw.

GET /v1/frames                       newest capture first, filtered, keyset-paginated
GET /v1/frames/{frame_id}            one stored frame
GET /v1/frames/{frame_id}/bitstream  the frame's bytes, as the camera sent them
GET /v1/frames/{frame_id}/reconstruction   the frame re-rendered as PNG (cached)
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response

from cloud_service.problems import Problem
from cloud_service.results import FrameQuery, FrameRecord, ResultsStore, decode_cursor
from cloud_service.routes.inference import (
    DEVICE_ID,
    ERRORS,
    parse_frame,
    reconstruct_png,
    run_heavy,
)
from cloud_service.routes.query_params import strict_query
from cloud_service.state import AdminAuthDep, ReadAuthDep, ReadyDep, ServiceState, StateDep
from cloud_service.timeutil import format_rfc3339, format_rfc3339_or_none, parse_rfc3339
from shared.schemas import FramesPage, StoredFrame

router = APIRouter(prefix="/v1/frames", tags=["frames"], dependencies=[strict_query])
# Ids are positive 63-bit integers on both engines; a larger one is refused (422), not a 500.
FrameId = Annotated[int, Path(ge=1, le=(1 << 63) - 1)]
CAPTURED = "captured (received, for a frame sent without X-Captured-At)"
QUERY_ERRORS: dict[int | str, dict[str, Any]] = {s: ERRORS[s] for s in (401, 403, 404, 422, 503)}


def answers(media_type: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI answers of a route whose success is ``media_type`` bytes."""
    return {200: {"content": {media_type: {}}}, **QUERY_ERRORS}


def stored_frame(r: FrameRecord) -> StoredFrame:
    assert r.id is not None
    return StoredFrame(
        **r.prediction.model_dump(),
        frame_id=r.id,
        device_id=r.device,
        # A camera's time, which older releases stored unchecked: unwritable reads as unknown.
        captured_at=format_rfc3339_or_none(r.captured_us),
        received_at=format_rfc3339(r.received_us),
        bitstream=f"/v1/frames/{r.id}/bitstream",
        reconstruction=f"/v1/frames/{r.id}/reconstruction",
    )


def query_time(name: str, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        us = parse_rfc3339(value)
        format_rfc3339(us)  # a time the API can answer with: years 1 to 9999 in UTC
    except ValueError as exc:
        raise Problem(422, "bad-query", f"bad {name}", str(exc)) from None
    return us


def results_store(state: ServiceState) -> ResultsStore:
    if state.results is None:
        raise Problem(503, "not-ready", "results store not open", "retry shortly")
    state.results.db.refuse_if_damaged()  # known unreadable: 503 without reading it again
    return state.results


def _filters(
    device: Annotated[str | None, Query(pattern=DEVICE_ID.pattern)] = None,
    label: Annotated[
        str | None,
        Query(pattern=r"^[^\x00-\x1f\x7f]{1,200}$", description="any case: Church finds church"),
    ] = None,
    min_confidence: Annotated[float | None, Query(ge=0, le=1)] = None,
) -> FrameQuery:
    """The filters /v1/frames, /v1/stats and /v1/events share."""
    return FrameQuery(device=device, label=label, min_confidence=min_confidence)


frame_filters = Depends(_filters)


@router.get("", response_model=FramesPage, responses=QUERY_ERRORS, summary="Stored frames")
async def list_frames(
    state: StateDep,
    _auth: ReadAuthDep,
    q: Annotated[FrameQuery, frame_filters],
    after: Annotated[str | None, Query(description=f"RFC 3339: {CAPTURED} at or after")] = None,
    before: Annotated[str | None, Query(description=f"RFC 3339: {CAPTURED} before")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> FramesPage:
    try:
        q.cursor = None if cursor is None else decode_cursor(cursor)
    except ValueError:
        raise Problem(422, "bad-query", "bad cursor", "pass next_cursor as it was given") from None
    q.after_us, q.before_us, q.limit = (
        query_time("after", after),
        query_time("before", before),
        limit,
    )
    rows, next_cursor = await asyncio.to_thread(results_store(state).query, q)
    return FramesPage(frames=[stored_frame(r) for r in rows], next_cursor=next_cursor)


def _not_found(frame_id: int) -> Problem:
    return Problem(404, "frame-not-found", "no such frame", f"frame {frame_id} is not stored")


@router.get(
    "/{frame_id}", response_model=StoredFrame, responses=QUERY_ERRORS, summary="One stored frame"
)
async def get_frame(frame_id: FrameId, state: StateDep, _auth: ReadAuthDep) -> StoredFrame:
    record = await asyncio.to_thread(results_store(state).get, frame_id)
    if record is None:
        raise _not_found(frame_id)
    return stored_frame(record)


@router.delete(
    "/{frame_id}",
    status_code=204,
    response_class=Response,
    responses=QUERY_ERRORS,
    summary="Delete a stored frame (admin keys)",
)
async def delete_frame(frame_id: FrameId, state: StateDep, _auth: AdminAuthDep) -> Response:
    if not await asyncio.to_thread(results_store(state).delete, frame_id):
        raise _not_found(frame_id)
    state.reconstructions.pop(frame_id, None)
    state.metrics.frames_removed.labels("deleted").inc()
    return Response(status_code=204)


@router.get(
    "/{frame_id}/bitstream",
    response_class=Response,
    responses=answers("application/octet-stream"),
    summary="The frame's bytes, as the camera sent them",
)
async def get_bitstream(frame_id: FrameId, state: StateDep, _auth: ReadAuthDep) -> Response:
    data = await asyncio.to_thread(results_store(state).frame_bytes, frame_id)
    if data is None:
        raise _not_found(frame_id)
    return Response(data, media_type="application/octet-stream")


@router.get(
    "/{frame_id}/reconstruction",
    response_class=Response,
    responses=answers("image/png"),
    summary="The frame re-rendered by its bundle's decoder (PNG, cached)",
)
async def get_reconstruction(
    frame_id: FrameId, state: StateDep, _auth: ReadAuthDep, _ready: ReadyDep
) -> Response:
    cache = state.reconstructions
    png = cache.get(frame_id)
    if png is None:
        data = await asyncio.to_thread(results_store(state).frame_bytes, frame_id)
        if data is None:
            raise _not_found(frame_id)
        runtime, frame = parse_frame(state, data)  # 409 if its bundle is no longer served
        png = await run_heavy(state, reconstruct_png, runtime, frame)
        if state.settings.reconstruction_cache:
            cache[frame_id] = png
            while len(cache) > state.settings.reconstruction_cache:
                cache.popitem(last=False)
    else:
        cache.move_to_end(frame_id)
    return Response(png, media_type="image/png")
