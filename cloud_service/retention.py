"""Retention: frames older than ``SPIC_CLOUD_RETENTION_DAYS``, then the oldest beyond
``SPIC_CLOUD_RETENTION_MB`` of frame bytes, every ``SPIC_CLOUD_RETENTION_INTERVAL_S``.

Uploads and queries share the store with it, so a pass never holds the database for long: it
deletes ``SPIC_CLOUD_RETENTION_BATCH`` rows per statement, each in a worker thread of its own, and
pauses ``SPIC_CLOUD_RETENTION_PAUSE_MS`` between them, when waiting requests take the database.
It reads the table's size in chunks of the primary key, not one ``SUM`` over it. Each batch is
counted in ``spic_frames_removed_total`` as soon as it is gone. (One ``DELETE`` of a million old
rows held a classify for 14.5 s; trimming with a ``SUM`` of the table before every batch took
5 min 20 s, counted only at the end.)
"""

from __future__ import annotations

import asyncio
import logging

from cloud_service.results import ResultsStore
from cloud_service.state import ServiceState
from cloud_service.timeutil import now_us

log = logging.getLogger("spic.cloud")
TALLY_CHUNK = 10_000  # rows read per statement while sizing the table


def expire_batch(store: ResultsStore, before_us: int, batch: int) -> int:
    """Delete up to ``batch`` of the oldest frames received before ``before_us``; how many."""
    with store.db.session() as run:
        cur = run(
            "DELETE FROM frames WHERE id IN (SELECT id FROM frames WHERE received_us < ? "
            "ORDER BY received_us, id LIMIT ?)",
            (before_us, batch),
        )
    return int(cur.rowcount)


def tally_chunk(store: ResultsStore, after_id: int) -> tuple[int, int, int] | None:
    """(last id, frames, frame bytes) of the ``TALLY_CHUNK`` frames after ``after_id``, in id
    order; None past the last frame."""
    with store.db.read_session() as run:  # a read: never the writers' lock
        row = run(
            "SELECT MAX(id), COUNT(*), COALESCE(SUM(bytes), 0) FROM (SELECT id, bytes FROM "
            "frames WHERE id > ? ORDER BY id LIMIT ?) AS chunk",
            (after_id, TALLY_CHUNK),
        ).fetchone()
    return None if row[0] is None else (int(row[0]), int(row[1]), int(row[2]))


def drop_oldest(store: ResultsStore, excess: int, batch: int) -> tuple[int, int]:
    """Delete the oldest frames, at most ``batch``, until ``excess`` frame bytes are freed;
    (frames, bytes) deleted."""
    with store.db.session() as run:
        oldest = run(
            "SELECT received_us, id, bytes FROM frames ORDER BY received_us, id LIMIT ?", (batch,)
        ).fetchall()
        freed, last = 0, None
        for received_us, frame_id, size in oldest:
            if freed >= excess:
                break
            freed, last = freed + int(size), (received_us, frame_id)
        if last is None:
            return 0, 0
        # The row value, not a list of ids: no bound on parameters, and the index answers it.
        cur = run("DELETE FROM frames WHERE (received_us, id) <= (?, ?)", last)
    return int(cur.rowcount), freed


async def apply_retention(state: ServiceState) -> None:
    """One pass of age and size retention, a batch at a time; counted in /metrics."""
    settings, store, metrics = state.settings, state.results, state.metrics
    assert store is not None
    batch, pause_s = settings.retention_batch, settings.retention_pause_ms / 1000
    if settings.retention_days:
        cutoff = now_us() - int(settings.retention_days * 86400 * 1_000_000)
        while removed := await asyncio.to_thread(expire_batch, store, cutoff, batch):
            metrics.frames_removed.labels("age").inc(removed)
            await asyncio.sleep(pause_s)
    count, size, last_id = 0, 0, 0
    while chunk := await asyncio.to_thread(tally_chunk, store, last_id):
        last_id, count, size = chunk[0], count + chunk[1], size + chunk[2]
        await asyncio.sleep(pause_s)
    excess = size - int(settings.retention_mb * (1 << 20)) if settings.retention_mb else 0
    while excess > 0:
        removed, freed = await asyncio.to_thread(drop_oldest, store, excess, batch)
        if not removed:
            break
        metrics.frames_removed.labels("size").inc(removed)
        count, excess = count - removed, excess - freed
        await asyncio.sleep(pause_s)
    metrics.frames_stored.set(count)


async def retention_loop(state: ServiceState) -> None:
    while True:
        try:
            await apply_retention(state)
        except Exception:  # a database hiccup must not end retention for good
            log.exception("retention pass failed; trying again later")
        await asyncio.sleep(state.settings.retention_interval_s)
