"""What the route modules share of HTTP: the problem answers they declare, the query API's
filters, and its time parameters. No routes here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.types import DecoratedCallable

from cloud_service.problems import Problem
from cloud_service.services.frames import FrameQuery
from cloud_service.timeutil import format_rfc3339, parse_rfc3339
from shared.schemas import DEVICE_ID, ProblemDetails

ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ProblemDetails, "content": {"application/problem+json": {}}}
    for s in (400, 401, 403, 404, 408, 409, 413, 415, 422, 503)
}
QUERY_ERRORS: dict[int | str, dict[str, Any]] = {s: ERRORS[s] for s in (401, 403, 404, 422, 503)}
CAPTURED = "captured (received, for a frame sent without X-Captured-At)"


def get_bytes(
    router: APIRouter,
    path: str,
    media_type: str,
    summary: str,
    response_class: type[Response] = Response,
) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """``router.get`` for a query route whose success is ``media_type`` bytes, not JSON: its
    OpenAPI answers say so."""
    return router.get(
        path,
        response_class=response_class,
        responses={200: {"content": {media_type: {}}}, **QUERY_ERRORS},
        summary=summary,
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


def _filters(
    device: Annotated[str | None, Query(pattern=DEVICE_ID.pattern)] = None,
    label: Annotated[
        str | None,
        Query(
            pattern=r"^[^\x00-\x1f\x7f]{1,200}$",
            description="any case: Church finds church; never matches an unknown frame",
        ),
    ] = None,
    min_confidence: Annotated[float | None, Query(ge=0, le=1)] = None,
    unknown: Annotated[
        bool | None,
        Query(
            description="true: only frames the default head called unknown; false: only the others"
        ),
    ] = None,
    changes: Annotated[
        bool,
        Query(
            description="true: only frames whose answer changed from their camera's frame before "
            "(another label or unknown, or the confidence across one of the cloud's bounds)"
        ),
    ] = False,
) -> FrameQuery:
    """The filters /v1/frames, /v1/stats and /v1/events share."""
    return FrameQuery(
        device=device,
        label=label,
        min_confidence=min_confidence,
        unknown=unknown,
        changes=changes,
    )


frame_filters = Depends(_filters)
