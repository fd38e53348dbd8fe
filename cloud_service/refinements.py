"""The refinement store: the cloud's requests to a camera for a better picture of a stored frame,
and the pictures the cameras sent back (issue 35).

A table of its own (``refinements``) with its own migrations (``spic_refinements_schema``), in
``refinements.sqlite`` beside the results store or in the PostgreSQL database of
``SPIC_CLOUD_DATABASE_URL``, so it never touches the frames table's schema.

A request's life: ``pending`` (asked, waiting for its camera) -> ``delivered`` (handed to the
camera, piggybacked on an upload answer or through the long-poll) -> ``done`` (the picture is
stored), or ``gone`` (the camera no longer holds the original, or cannot render it) or
``expired`` (its TTL ran out first: the camera was offline). A request delivered but not answered
within ``redeliver_s`` is offered again: a camera restarted in between answers it then.

``Refiner`` is what the service state holds: the store, its settings (``SPIC_CLOUD_REFINE_*``),
and this process's long-polls (one per device, and the events that wake them).
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cloud_service.database import Database, Migration, migrate, open_database
from cloud_service.refine_settings import RefineSettings, parse_rules

Kind = Literal["layer", "whole", "original"]
KINDS: tuple[Kind, ...] = ("layer", "whole", "original")
Status = Literal["pending", "delivered", "expired", "gone", "done"]
OPEN: tuple[Status, ...] = ("pending", "delivered")  # still waiting for the camera
# Which stored picture is best: the original beats a whole-image frame beats a crop's layer;
# among pictures of one kind the larger (the higher quality) wins.
RANK = "CASE kind WHEN 'original' THEN 0 WHEN 'whole' THEN 1 ELSE 2 END"

MIGRATIONS: list[Migration] = [
    (
        1,
        [
            "CREATE TABLE refinements (id TEXT PRIMARY KEY, frame_id INTEGER NOT NULL, device "
            "TEXT NOT NULL, kind TEXT NOT NULL, quality INTEGER NOT NULL, format TEXT NOT NULL, "
            "status TEXT NOT NULL, created_us INTEGER NOT NULL, expires_us INTEGER NOT NULL, "
            "delivered_us INTEGER, finished_us INTEGER, detail TEXT, media_type TEXT, "
            "bytes INTEGER NOT NULL DEFAULT 0, data BLOB)",
            "CREATE INDEX refinements_device ON refinements (device, status, created_us)",
            "CREATE INDEX refinements_frame ON refinements (frame_id, status)",
            "CREATE INDEX refinements_expiry ON refinements (status, expires_us)",
            "CREATE INDEX refinements_created ON refinements (created_us)",
        ],
        [
            "CREATE TABLE refinements (id TEXT PRIMARY KEY, frame_id BIGINT NOT NULL, device "
            "TEXT NOT NULL, kind TEXT NOT NULL, quality INTEGER NOT NULL, format TEXT NOT NULL, "
            "status TEXT NOT NULL, created_us BIGINT NOT NULL, expires_us BIGINT NOT NULL, "
            "delivered_us BIGINT, finished_us BIGINT, detail TEXT, media_type TEXT, "
            "bytes BIGINT NOT NULL DEFAULT 0, data BYTEA)",
            "CREATE INDEX refinements_device ON refinements (device, status, created_us)",
            "CREATE INDEX refinements_frame ON refinements (frame_id, status)",
            "CREATE INDEX refinements_expiry ON refinements (status, expires_us)",
            "CREATE INDEX refinements_created ON refinements (created_us)",
        ],
    ),
]
COLUMNS = (
    "id, frame_id, device, kind, quality, format, status, created_us, expires_us, "
    "delivered_us, finished_us, detail, media_type, bytes"
)
OPEN_SQL = "status IN ('pending', 'delivered')"


class TooManyPending(Exception):
    """The device already has as many open requests as it may."""


@dataclass(frozen=True)
class Refinement:
    id: str
    frame_id: int
    device: str
    kind: Kind
    quality: int
    format: str  # "spic" for layer and whole; "jpeg" or "avif" for original
    status: Status
    created_us: int
    expires_us: int
    delivered_us: int | None = None
    finished_us: int | None = None
    detail: str | None = None
    media_type: str | None = None
    bytes: int = 0

    @property
    def idempotency_key(self) -> str:
        """The Idempotency-Key the camera answers with: derived from the request alone, so a
        camera restarted mid-answer sends the same key again."""
        return f"refine-{self.id}"


def _row(r: Sequence[Any]) -> Refinement:
    return Refinement(
        str(r[0]),
        int(r[1]),
        str(r[2]),
        r[3],
        int(r[4]),
        str(r[5]),
        r[6],
        int(r[7]),
        int(r[8]),
        None if r[9] is None else int(r[9]),
        None if r[10] is None else int(r[10]),
        r[11],
        r[12],
        int(r[13]),
    )


class RefinementStore:
    """The refinements table on a ``Database`` (SQLite or PostgreSQL)."""

    def __init__(self, db: Database):
        self.db = db
        migrate(db, "spic_refinements_schema", MIGRATIONS)

    def create(
        self,
        frame_id: int,
        device: str,
        kind: Kind,
        quality: int,
        fmt: str,
        now_us: int,
        ttl_us: int,
        max_open: int,
    ) -> tuple[Refinement, bool]:
        """A request for ``frame_id``'s camera, and whether it is new: an open request for the
        same picture is answered instead of a second one. ``TooManyPending`` past ``max_open``
        open requests of the device."""
        with self.db.transaction() as run:
            same = run(
                f"SELECT {COLUMNS} FROM refinements WHERE frame_id = ? AND kind = ? AND "
                f"quality = ? AND format = ? AND {OPEN_SQL} AND expires_us > ? LIMIT 1",
                (frame_id, kind, quality, fmt, now_us),
            ).fetchone()
            if same is not None:
                return _row(same), False
            count = run(
                f"SELECT COUNT(*) FROM refinements WHERE device = ? AND {OPEN_SQL} "
                "AND expires_us > ?",
                (device, now_us),
            ).fetchone()[0]
            if int(count) >= max_open:
                raise TooManyPending(device)
            request_id = secrets.token_hex(12)
            run(
                "INSERT INTO refinements (id, frame_id, device, kind, quality, format, status, "
                "created_us, expires_us) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                (request_id, frame_id, device, kind, quality, fmt, now_us, now_us + ttl_us),
            )
            row = run(f"SELECT {COLUMNS} FROM refinements WHERE id = ?", (request_id,)).fetchone()
        return _row(row), True

    def get(self, request_id: str) -> Refinement | None:
        with self.db.session() as run:
            row = run(f"SELECT {COLUMNS} FROM refinements WHERE id = ?", (request_id,)).fetchone()
        return None if row is None else _row(row)

    def take(self, device: str, now_us: int, redeliver_us: int, limit: int) -> list[Refinement]:
        """The device's open requests to hand it now, oldest first, marked ``delivered``: those
        pending, and those delivered over ``redeliver_us`` ago and still unanswered."""
        # Asked on every upload answer: the look runs on the read connection, and the writers'
        # lock is taken only when there is something to hand out.
        with self.db.read_session() as run:
            rows = run(
                f"SELECT {COLUMNS} FROM refinements WHERE device = ? AND expires_us > ? AND "
                "(status = 'pending' OR (status = 'delivered' AND delivered_us < ?)) "
                "ORDER BY created_us LIMIT ?",
                (device, now_us, now_us - redeliver_us, limit),
            ).fetchall()
        if not rows:
            return []
        taken = []
        with self.db.session() as run:
            for r in rows:
                # Only the row as read: a concurrent take (another worker) hands it out once.
                cur = run(
                    "UPDATE refinements SET status = 'delivered', delivered_us = ? WHERE id = ? "
                    "AND status = ? AND COALESCE(delivered_us, 0) = ?",
                    (now_us, r[0], r[6], r[9] or 0),
                )
                if cur.rowcount:
                    taken.append(_row(r))
        return taken

    def finish(
        self,
        request_id: str,
        status: Status,
        now_us: int,
        detail: str | None = None,
        media_type: str | None = None,
        data: bytes | None = None,
    ) -> bool:
        """Close an open request as ``done`` (with its picture) or ``gone``; False when it was no
        longer open (answered, expired)."""
        with self.db.session() as run:
            cur = run(
                "UPDATE refinements SET status = ?, finished_us = ?, detail = ?, media_type = ?, "
                f"bytes = ?, data = ? WHERE id = ? AND {OPEN_SQL}",
                (
                    status,
                    now_us,
                    detail,
                    media_type,
                    len(data or b""),
                    data,
                    request_id,
                ),
            )
        return bool(cur.rowcount)

    def expire_batch(self, now_us: int, batch: int) -> int:
        """Mark up to ``batch`` open requests past their TTL ``expired``; how many."""
        with self.db.session() as run:
            cur = run(
                "UPDATE refinements SET status = 'expired', finished_us = ? WHERE id IN "
                f"(SELECT id FROM refinements WHERE {OPEN_SQL} AND expires_us <= ? LIMIT ?)",
                (now_us, now_us, batch),
            )
        return int(cur.rowcount)

    def prune_batch(self, before_us: int, batch: int) -> int:
        """Delete up to ``batch`` requests (and their pictures) made before ``before_us``."""
        with self.db.session() as run:
            cur = run(
                "DELETE FROM refinements WHERE id IN (SELECT id FROM refinements WHERE "
                "created_us < ? ORDER BY created_us LIMIT ?)",
                (before_us, batch),
            )
        return int(cur.rowcount)

    def oldest_pictures(self, batch: int) -> list[tuple[str, int]]:
        """(id, bytes) of the oldest stored pictures, at most ``batch``."""
        with self.db.session() as run:
            rows = run(
                "SELECT id, bytes FROM refinements WHERE status = 'done' "
                "ORDER BY created_us LIMIT ?",
                (batch,),
            ).fetchall()
        return [(str(i), int(n)) for i, n in rows]

    def delete(self, ids: list[str]) -> None:
        with self.db.session() as run:
            for request_id in ids:
                run("DELETE FROM refinements WHERE id = ?", (request_id,))

    def drop_frame(self, frame_id: int) -> int:
        """Delete every request and picture of a frame (the frame was deleted); how many."""
        with self.db.session() as run:
            return int(run("DELETE FROM refinements WHERE frame_id = ?", (frame_id,)).rowcount)

    def best(self, frame_id: int) -> tuple[Refinement, bytes] | None:
        """The best picture held for a frame, and its bytes; None when no request is done."""
        with self.db.session() as run:
            row = run(
                f"SELECT {COLUMNS}, data FROM refinements WHERE frame_id = ? AND status = 'done' "
                f"ORDER BY {RANK}, bytes DESC, finished_us DESC LIMIT 1",
                (frame_id,),
            ).fetchone()
        return None if row is None else (_row(row[:-1]), bytes(row[-1]))

    def totals(self) -> tuple[dict[str, int], int]:
        """Requests per status, and the bytes of the pictures stored."""
        with self.db.session() as run:
            counts = run("SELECT status, COUNT(*) FROM refinements GROUP BY status").fetchall()
            size = run(
                "SELECT COALESCE(SUM(bytes), 0) FROM refinements WHERE status = 'done'"
            ).fetchone()[0]
        return {str(s): int(n) for s, n in counts}, int(size)

    def close(self) -> None:
        self.db.close()


def open_refinements(database_url: str, data_dir: str | Path) -> RefinementStore:
    """PostgreSQL for ``postgresql://...``; otherwise SQLite in ``data_dir/refinements.sqlite``."""
    return RefinementStore(open_database(database_url, Path(data_dir) / "refinements.sqlite"))


class Refiner:
    """The store, its settings, and this process's long-polls."""

    def __init__(self, store: RefinementStore, settings: RefineSettings):
        self.store, self.settings = store, settings
        self.rules = parse_rules(settings.rules)
        self.waiting: Counter[str] = Counter()  # long-polls held now, per device
        self.wakeups: dict[str, asyncio.Event] = {}  # set when a request is made for a device
        self.pngs: OrderedDict[str, bytes] = OrderedDict()

    def wake(self, device: str) -> None:
        event = self.wakeups.get(device)
        if event is not None:
            event.set()

    def close(self) -> None:
        self.store.close()


def open_refiner(database_url: str, data_dir: str) -> Refiner:
    """The refinement store beside the results store, with the ``SPIC_CLOUD_REFINE_*`` settings."""
    return Refiner(open_refinements(database_url, data_dir), RefineSettings())
