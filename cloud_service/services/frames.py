"""Reads of the results store for the query API: each off the event loop, each record answered as
the API's ``StoredFrame``; and the stored frames' reconstructions, through their cache.

``store(state)`` opens the way (503 while the store is closed or known damaged); the reads take
what it returns, so a stream reads the store it started with.
"""

from __future__ import annotations

import asyncio

from cloud_service.held import held as held_by_answer
from cloud_service.problems import Problem
from cloud_service.results import MAX_ID as MAX_ID  # the largest id a query may name
from cloud_service.results import DeviceSummary, FrameRecord, ResultsStore
from cloud_service.results import FrameQuery as FrameQuery  # what the routes fill from a query
from cloud_service.results import decode_cursor as decode_cursor
from cloud_service.services.inference import parse_frame, reconstruct_png, run_heavy
from cloud_service.state import ServiceState
from cloud_service.timeutil import format_rfc3339, format_rfc3339_or_none
from shared.schemas import StoredFrame


def store(state: ServiceState) -> ResultsStore:
    if state.results is None:
        raise Problem(503, "not-ready", "results store not open", "retry shortly")
    state.results.db.refuse_if_damaged()  # known unreadable: 503 without reading it again
    return state.results


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
        repeats=r.repeats,
        last_repeat_at=format_rfc3339_or_none(r.last_us),
        change=r.change,
    )


async def query(results: ResultsStore, q: FrameQuery) -> tuple[list[StoredFrame], str | None]:
    rows, next_cursor = await asyncio.to_thread(results.query, q)
    return [stored_frame(r) for r in rows], next_cursor


async def get(results: ResultsStore, frame_id: int) -> StoredFrame | None:
    record = await asyncio.to_thread(results.get, frame_id)
    return None if record is None else stored_frame(record)


async def since(results: ResultsStore, after_id: int, q: FrameQuery) -> list[StoredFrame]:
    return [stored_frame(r) for r in await asyncio.to_thread(results.since, after_id, q)]


async def last_id(results: ResultsStore) -> int:
    return await asyncio.to_thread(results.last_id)


async def span(results: ResultsStore, q: FrameQuery) -> tuple[int, int] | None:
    return await asyncio.to_thread(results.span, q)


async def stats(
    results: ResultsStore, group_by: str, bucket_us: int, q: FrameQuery, max_rows: int
) -> list[tuple[str, int, int]]:
    return await asyncio.to_thread(results.stats, group_by, bucket_us, q, max_rows)


async def held(
    results: ResultsStore, bucket_us: int, q: FrameQuery, max_rows: int, gap_us: int
) -> list[tuple[str, str, int, int, int]]:
    return await asyncio.to_thread(held_by_answer, results, bucket_us, q, max_rows, gap_us)


async def repeat(results: ResultsStore, frame_id: int, at_us: int, count: int = 1) -> bool:
    return await asyncio.to_thread(results.repeat, frame_id, at_us, count)


async def devices(results: ResultsStore, since_us: int, limit: int) -> list[DeviceSummary]:
    return await asyncio.to_thread(results.devices, since_us, limit)


async def frame_bytes(results: ResultsStore, frame_id: int) -> bytes | None:
    return await asyncio.to_thread(results.frame_bytes, frame_id)


async def delete(state: ServiceState, frame_id: int) -> bool:
    """Delete a stored frame, its cached reconstruction and its refinements; False if it was not
    stored."""
    if not await asyncio.to_thread(store(state).delete, frame_id):
        return False
    state.reconstructions.drop(frame_id)
    if state.refinements is not None:  # the cameras' better pictures of it go with it
        await asyncio.to_thread(state.refinements.store.drop_frame, frame_id)
    state.metrics.frames_removed.labels("deleted").inc()
    return True


async def reconstruction(state: ServiceState, frame_id: int) -> bytes | None:
    """The stored frame re-rendered as PNG (cached); None if it is not stored, 409 if its bundle
    is no longer served."""
    # The store first: a frame deleted by retention or another replica is gone, cached or not.
    data = await frame_bytes(store(state), frame_id)
    if data is None:
        return None
    png = state.reconstructions.get(frame_id)
    if png is None:
        runtime, frame = parse_frame(state, data)
        png = await run_heavy(state, reconstruct_png, runtime, frame)
        state.reconstructions.put(frame_id, png)
    return png
