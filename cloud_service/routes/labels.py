"""Labels for training heads from stored frames.

    PUT /v1/frames/{frame_id}/label   {"label": "..."}   labeller or admin keys
    GET /v1/labels?cursor=&limit=                          read keys

A trainer pages through the labelled frames (oldest frame first) and fetches each one's bytes
from ``bitstream``; ``next_cursor`` is null at the end of what is labelled now.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from cloud_service.problems import Problem
from cloud_service.routes.common import QUERY_ERRORS
from cloud_service.routes.query_params import strict_query
from cloud_service.services import labels
from cloud_service.services.frames import MAX_ID
from cloud_service.state import LabelAuthDep, ReadAuthDep, StateDep

router = APIRouter(prefix="/v1", tags=["labels"], dependencies=[strict_query])
FrameId = Annotated[int, Path(ge=1, le=MAX_ID)]


class LabelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field(
        min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$", description="the class"
    )


class LabelOut(BaseModel):
    frame_id: int
    label: str
    model_id: str = Field(description="the codec id of the frame")
    bitstream: str = Field(description="URL of the frame's bytes")


class LabelsPage(BaseModel):
    labels: list[LabelOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null: end")


def _out(frame_id: int, label: str, model_id: str) -> LabelOut:
    return LabelOut(
        frame_id=frame_id,
        label=label,
        model_id=model_id,
        bitstream=f"/v1/frames/{frame_id}/bitstream",
    )


@router.put(
    "/frames/{frame_id}/label",
    response_model=LabelOut,
    responses=QUERY_ERRORS,
    summary="Label a stored frame, to train heads from (labeller or admin keys)",
)
async def put_label(
    frame_id: FrameId, body: LabelIn, state: StateDep, _auth: LabelAuthDep
) -> LabelOut:
    model_id = await labels.set_label(state, frame_id, body.label)
    if model_id is None:
        raise Problem(404, "frame-not-found", "no such frame", f"frame {frame_id} is not stored")
    return _out(frame_id, body.label, model_id)


@router.get(
    "/labels",
    response_model=LabelsPage,
    responses=QUERY_ERRORS,
    summary="Labelled frames, oldest first",
)
async def get_labels(
    state: StateDep,
    _auth: ReadAuthDep,
    cursor: Annotated[str | None, Query(max_length=20, pattern=r"^[0-9]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> LabelsPage:
    after = 0 if cursor is None else int(cursor)
    if after > MAX_ID:
        raise Problem(422, "bad-query", "bad cursor", "pass next_cursor as it was given")
    rows, more = await labels.list_labels(state, after, limit)
    page = [_out(r.frame_id, r.label, r.model_id) for r in rows]
    return LabelsPage(labels=page, next_cursor=str(page[-1].frame_id) if more and page else None)
