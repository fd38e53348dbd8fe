"""Labels for training heads: each store call off the event loop (``cloud_service.labels``)."""

from __future__ import annotations

import asyncio

from cloud_service import labels
from cloud_service.labels import LabelRow as LabelRow
from cloud_service.services.frames import store
from cloud_service.state import ServiceState
from cloud_service.timeutil import now_us


async def set_label(state: ServiceState, frame_id: int, label: str) -> str | None:
    """The frame's codec id once labelled; None when it is not stored."""
    return await asyncio.to_thread(labels.set_label, store(state), frame_id, label, now_us())


async def list_labels(
    state: ServiceState, after_id: int, limit: int
) -> tuple[list[LabelRow], bool]:
    return await asyncio.to_thread(labels.list_labels, store(state), after_id, limit)
