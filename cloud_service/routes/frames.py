"""The query API over the results store, for read keys: what the cameras saw.

GET /v1/frames                       newest capture first, filtered, keyset-paginated
GET /v1/frames/{frame_id}            one stored frame
GET /v1/frames/{frame_id}/bitstream  the frame's bytes, as the camera sent them
GET /v1/frames/{frame_id}/reconstruction   the frame re-rendered as PNG (cached)
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from cloud_service.problems import Problem
from cloud_service.routes.common import CAPTURED, QUERY_ERRORS, frame_filters, get_bytes, query_time
from cloud_service.routes.query_params import strict_query
from cloud_service.services import frames, refine
from cloud_service.services.frames import FrameQuery, decode_cursor
from cloud_service.state import AdminAuthDep, ReadAuthDep, ReadyDep, StateDep
from shared.schemas import FramesPage, StoredFrame

router = APIRouter(prefix="/v1/frames", tags=["frames"], dependencies=[strict_query])
# Ids are positive 63-bit integers on both engines; a larger one is refused (422), not a 500.
FrameId = Annotated[int, Path(ge=1, le=(1 << 63) - 1)]


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
    page, next_cursor = await frames.query(frames.store(state), q)
    return FramesPage(frames=page, next_cursor=next_cursor)


def _not_found(frame_id: int) -> Problem:
    return Problem(404, "frame-not-found", "no such frame", f"frame {frame_id} is not stored")


@router.get(
    "/{frame_id}", response_model=StoredFrame, responses=QUERY_ERRORS, summary="One stored frame"
)
async def get_frame(frame_id: FrameId, state: StateDep, _auth: ReadAuthDep) -> StoredFrame:
    stored = await frames.get(frames.store(state), frame_id)
    if stored is None:
        raise _not_found(frame_id)
    return stored


@router.delete(
    "/{frame_id}",
    status_code=204,
    response_class=Response,
    responses=QUERY_ERRORS,
    summary="Delete a stored frame (admin keys)",
)
async def delete_frame(frame_id: FrameId, state: StateDep, _auth: AdminAuthDep) -> Response:
    if not await frames.delete(state, frame_id):
        raise _not_found(frame_id)
    return Response(status_code=204)


@get_bytes(
    router,
    "/{frame_id}/bitstream",
    "application/octet-stream",
    "The frame's bytes, as the camera sent them",
)
async def get_bitstream(frame_id: FrameId, state: StateDep, _auth: ReadAuthDep) -> Response:
    data = await frames.frame_bytes(frames.store(state), frame_id)
    if data is None:
        raise _not_found(frame_id)
    return Response(data, media_type="application/octet-stream")


@get_bytes(
    router,
    "/{frame_id}/reconstruction",
    "image/png",
    "The frame re-rendered by its bundle's decoder (PNG, cached)",
)
async def get_reconstruction(
    frame_id: FrameId,
    state: StateDep,
    _auth: ReadAuthDep,
    _ready: ReadyDep,
    best: Annotated[
        bool, Query(description="the best picture held: a camera's refinement, if one came")
    ] = False,
) -> Response:
    png = await frames.reconstruction(state, frame_id)  # 409 if its bundle is no longer served
    if png is None:
        raise _not_found(frame_id)
    if best:  # issue 35: the refinement is looked up only once the frame is known to be stored
        return await refine.best_response(state, frame_id, png)
    return Response(png, media_type="image/png")
