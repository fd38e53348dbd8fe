"""The results store: every classified frame, queryable by the cloud's REST consumers.

One schema on two engines: SQLite (WAL, a file under ``SPIC_CLOUD_DATA_DIR``; the embedded
default) and PostgreSQL (``SPIC_CLOUD_DATABASE_URL=postgresql://...``). The schema is created by
numbered migrations recorded in ``spic_schema``, so a store opened by a newer release upgrades
itself. Times are integer microseconds since the epoch (UTC), the same on both engines, so the
keyset cursor ``(time, id)`` orders identically everywhere.

A frame is filed under the time it was captured (``X-Captured-At``), or the time it was received
when the camera sent none (``AT``): frames a camera queued through an outage land where they
happened, not where they arrived. Queries filter, order and bucket on it, from indexes on it.

A frame is stored with its bytes (a few hundred), so it can be re-rendered or re-classified later.
A retried frame is stored once: its scoped Idempotency-Key is unique.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cloud_service.database import Database, migrate, open_database
from cloud_service.results_schema import MIGRATIONS
from cloud_service.timeutil import now_us
from shared.schemas import Prediction

# The time a frame is filed under; written exactly as the indexes above name it, so that both
# engines' planners match it to them.
AT = "COALESCE(captured_us, received_us)"
COLUMNS = (
    "id, device, captured_us, received_us, model_id, qf, bytes, bpp, class_id, label, "
    "confidence, top_k, unknown, heads, repeats, last_us, changed"
)
# ``changed``: how a frame's answer differs from its camera's frame before it (0: it does not).
Change = Literal["label", "confidence"]
CHANGES: dict[int, Change | None] = {0: None, 1: "label", 2: "confidence"}
# What /v1/stats groups by label: an unknown frame's ``label`` column keeps its most probable
# class (SQLite cannot drop NOT NULL cheaply), read back as null; it counts under "unknown".
LABEL_OR_UNKNOWN = "CASE WHEN unknown = 1 THEN 'unknown' ELSE label END"


class KeyReused(Exception):
    """The Idempotency-Key is stored with another frame."""


@dataclass
class FrameRecord:
    device: str
    captured_us: int | None
    received_us: int
    prediction: Prediction
    id: int | None = None
    repeats: int = 0  # skip frames of a stream that repeated this answer, not stored as rows
    last_us: int | None = None  # AT of the latest of them
    change: Change | None = None  # what differs from the camera's frame before

    @property
    def at_us(self) -> int:
        """The time the frame is filed under (``AT``): captured, else received."""
        return self.received_us if self.captured_us is None else self.captured_us


@dataclass
class DeviceSummary:
    device: str
    frames: int
    last_at_us: int
    frames_since: int
    unknowns_since: int
    bytes_since: int


@dataclass
class FrameQuery:
    device: str | None = None
    label: str | None = None  # matches frames with a label: never an unknown one
    min_confidence: float | None = None
    unknown: bool | None = None
    after_us: int | None = None  # filed (``AT``) at or after
    before_us: int | None = None  # filed before
    limit: int = 50
    cursor: tuple[int, int] | None = None  # (AT, id) of the last row already seen
    changes: bool = False  # only frames whose answer differs from their camera's frame before


MAX_ID = (1 << 63) - 1  # ids and times are signed 64-bit integers on both engines


def encode_cursor(at_us: int, frame_id: int) -> str:
    return base64.urlsafe_b64encode(f"{at_us}:{frame_id}".encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[int, int]:
    """Raise ValueError for anything that is not a cursor this store handed out."""
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
    received, _, frame_id = raw.partition(":")
    cursor = int(received), int(frame_id)
    if not all(-MAX_ID <= v <= MAX_ID for v in cursor):  # the engines bind 64-bit integers
        raise ValueError("cursor value outside 64 bits")
    return cursor


SETTLE_US = 1_000_000  # how old a row must be before live consumers see it (PostgreSQL)
PREDICTION_COLUMNS = ("model_id", "qf", "bytes", "bpp", "class_id", "label", "confidence")


def _record(row: Sequence[Any]) -> FrameRecord:
    fields = dict(zip(PREDICTION_COLUMNS, row[4:11], strict=True))
    unknown = bool(row[12])
    if unknown:
        fields["label"] = None
    heads = None if row[13] is None else json.loads(row[13])
    prediction = Prediction(**fields, unknown=unknown, top_k=json.loads(row[11]), heads=heads)
    repeats, last_us, change = int(row[14]), row[15], CHANGES.get(int(row[16]))
    return FrameRecord(
        row[1], row[2], int(row[3]), prediction, int(row[0]), repeats, last_us, change
    )


def _conditions(pairs: tuple[tuple[str, Any], ...]) -> tuple[list[str], list[Any]]:
    """The conditions whose value is given, and their values in order (never user text in SQL)."""
    given = [(c, v) for c, v in pairs if v is not None]
    return [c for c, _ in given], [v for _, v in given]


def camera_time_filters(q: FrameQuery) -> tuple[list[str], list[Any]]:
    """``q``'s camera and filing-time conditions."""
    return _conditions(
        (("device = ?", q.device), (f"{AT} >= ?", q.after_us), (f"{AT} < ?", q.before_us))
    )


def answer_filters(q: FrameQuery) -> tuple[list[str], list[Any]]:
    """``q``'s conditions on the answer: label, confidence, unknown."""
    where, params = _conditions(
        (
            # `Church` finds `church`; an unknown frame has no label to match
            ("lower(label) = lower(?) AND unknown = 0", q.label),
            ("confidence >= ?", q.min_confidence),
        )
    )
    if q.unknown is not None:  # literal, so that the partial index of unknowns matches it
        where.append("unknown = 1" if q.unknown else "unknown = 0")
    return where, params


def change_of(p: Prediction, before: Sequence[Any] | None, bounds: Sequence[float]) -> int:
    """1 when ``p``'s answer (its label, or unknown) is not that of ``before`` (the camera's
    previous row: label, unknown, confidence; None: its first frame), 2 when it is but the
    confidence crossed one of ``bounds``, else 0."""
    if before is None:
        return 1
    label = None if p.unknown else (p.label or "").lower()
    was = None if before[1] else str(before[0]).lower()
    if label != was:
        return 1
    lo, hi = sorted((float(before[2]), p.confidence))
    return 2 if any(lo < b <= hi for b in bounds) else 0


class ResultsStore:
    """The frames table on a ``Database`` (SQLite or PostgreSQL)."""

    def __init__(self, db: Database, confidence_bounds: Sequence[float] = ()):
        self.db, self.engine = db, db.engine
        self.bounds = tuple(confidence_bounds)  # a change of confidence across one is marked
        migrate(db, "spic_schema", MIGRATIONS)

    @property
    def schema_version(self) -> int:
        with self.db.session() as run:
            return int(run("SELECT MAX(version) FROM spic_schema").fetchone()[0])

    def add(self, record: FrameRecord, frame: bytes, idem_key: str | None = None) -> int:
        return self.insert(record, frame, idem_key)[0]

    def insert(
        self, record: FrameRecord, frame: bytes, idem_key: str | None = None
    ) -> tuple[int, int]:
        """Store a classified frame; returns its id and ``changed`` (``change_of``) (the first one's, for a retried key).
        ``KeyReused`` if the key is stored with another frame: an idempotency store that forgot
        the key (a restart, its TTL) must not turn the new frame into the old one's answer."""
        p = record.prediction
        # An unknown frame's label column holds its most probable class (read back as null).
        label = p.top_k[0].label if p.label is None and p.top_k else p.label
        columns = {c: getattr(p, c) for c in PREDICTION_COLUMNS} | {"label": label or ""}
        heads = None if p.heads is None else {n: h.model_dump() for n, h in p.heads.items()}
        values = (
            record.device,
            record.captured_us,
            record.received_us,
            *columns.values(),
            json.dumps([s.model_dump() for s in p.top_k]),
            frame,
            idem_key,
            int(p.unknown),
            None if heads is None else json.dumps(heads),
        )
        with self.db.session() as run:
            # The camera's newest row before this one, from the device index: one lookup.
            before = run(
                f"SELECT label, unknown, confidence FROM frames WHERE device = ? AND {AT} <= ? "
                f"ORDER BY {AT} DESC, id DESC LIMIT 1",
                (record.device, record.at_us),
            ).fetchone()
            changed = change_of(p, before, self.bounds)
            row = run(
                "INSERT INTO frames (device, captured_us, received_us, model_id, qf, bytes, bpp, "
                "class_id, label, confidence, top_k, frame, idem_key, unknown, heads, changed) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (idem_key) DO NOTHING RETURNING id",
                (*values, changed),
            ).fetchone()
            if row is None:  # the key was stored before: the same frame retried, or another
                row = run(
                    "SELECT id, frame, changed FROM frames WHERE idem_key = ?", (idem_key,)
                ).fetchone()
                if bytes(row[1]) != frame:
                    raise KeyReused(idem_key)
                changed = int(row[2])
        return int(row[0]), changed

    def repeat(self, frame_id: int, at_us: int, count: int = 1) -> bool:
        """``count`` skip frames of a stream repeated row ``frame_id``'s answer, the last at
        ``at_us``: counted on that row, not stored as rows. False if the row is gone (retention,
        a delete)."""
        with self.db.session() as run:
            row = run(
                "UPDATE frames SET repeats = repeats + ?, last_us = CASE WHEN last_us IS NULL OR "
                "last_us < ? THEN ? ELSE last_us END WHERE id = ? RETURNING id",
                (count, at_us, at_us, frame_id),
            ).fetchone()
        return row is not None

    def query(self, q: FrameQuery) -> tuple[list[FrameRecord], str | None]:
        """Newest first, ``q.limit`` rows, and the cursor for the next page (None at the end).

        Keyset pagination: a page starts strictly after the last (AT, id) seen, so frames
        arriving meanwhile never shift or repeat a page."""
        where, params = self._filters(q)
        if q.cursor is not None:
            # (AT, id) < cursor, spelled so that SQLite takes the first term as a range of the
            # (AT, id) index: a row value over an expression made it scan from the newest row
            # (bench/store.py's deep_cursor case).
            where.append(f"{AT} <= ? AND ({AT} < ? OR id < ?)")
            params += [q.cursor[0], q.cursor[0], q.cursor[1]]
        sql = f"SELECT {COLUMNS} FROM frames"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {AT} DESC, id DESC LIMIT ?"
        params.append(q.limit + 1)  # one more tells whether a next page exists
        with self.db.read_session() as run:
            rows = [_record(r) for r in run(sql, params).fetchall()]
        page = rows[: q.limit]
        more = len(rows) > q.limit
        last = page[-1] if page else None
        cursor = encode_cursor(last.at_us, last.id or 0) if more and last else None
        return page, cursor

    @staticmethod
    def _filters(q: FrameQuery) -> tuple[list[str], list[Any]]:
        where, params = camera_time_filters(q)
        more, values = answer_filters(q)
        if q.changes:
            more.append("changed > 0")
        return where + more, params + values

    def since(self, after_id: int, q: FrameQuery) -> list[FrameRecord]:
        """Frames stored after ``after_id`` that match ``q``'s filters, oldest first (at most
        ``q.limit``): what a live consumer has not seen yet. Ids only grow.

        On PostgreSQL several connections insert at once (the pool, the replicas), and an id is
        taken when its INSERT starts, so a lower id can commit after a higher one; a consumer that
        moved past the higher id would never see the lower. Rows are offered only once they are
        ``SETTLE_US`` old, far longer than an insert takes. SQLite has one writer at a time."""
        where, params = self._filters(q)
        where.append("id > ?")
        params.append(after_id)
        if self.engine == "postgresql":
            where.append("received_us < ?")
            params.append(now_us() - SETTLE_US)
        params.append(q.limit)
        sql = f"SELECT {COLUMNS} FROM frames WHERE {' AND '.join(where)} ORDER BY id LIMIT ?"
        with self.db.read_session() as run:
            return [_record(r) for r in run(sql, params).fetchall()]

    def last_id(self) -> int:
        with self.db.read_session() as run:
            row = run("SELECT MAX(id) FROM frames").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def stats(
        self, group_by: str, bucket_us: int, q: FrameQuery, max_rows: int
    ) -> list[tuple[str, int, int]]:
        """(group, bucket start in µs, count) per ``group_by`` (label or device) and time
        bucket of ``bucket_us`` (of ``AT``), oldest bucket first; at most ``max_rows`` + 1 rows
        (one more tells the caller there were too many). Unknown frames count under the label
        "unknown"."""
        # never user text in SQL
        column = {"label": LABEL_OR_UNKNOWN, "device": "device"}[group_by]
        where, params = self._filters(q)
        # Integer division rounds toward zero; bucket starts are taken for times after 1970.
        sql = f"SELECT {column}, ({AT} / ?) * ? AS bucket, COUNT(*) FROM frames"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" GROUP BY {column}, bucket ORDER BY bucket, {column} LIMIT ?"
        with self.db.read_session() as run:
            rows = run(sql, [bucket_us, bucket_us, *params, max_rows + 1]).fetchall()
        return [(str(g), int(b), int(n)) for g, b, n in rows]

    def span(self, q: FrameQuery) -> tuple[int, int] | None:
        """The first and last ``AT`` of the frames ``q``'s filters match (None if none): two
        index lookups, so a caller can bound an aggregate before running it."""
        where, params = self._filters(q)
        sql = f"SELECT {AT} FROM frames"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self.db.read_session() as run:
            first = run(sql + f" ORDER BY {AT} LIMIT 1", params).fetchone()
            last = run(sql + f" ORDER BY {AT} DESC LIMIT 1", params).fetchone()
        return None if first is None or last is None else (int(first[0]), int(last[0]))

    def devices(self, since_us: int, limit: int) -> list[DeviceSummary]:
        """Per camera (at most ``limit``, by name): frames stored and the newest one's ``AT``
        (from the device index alone), then frames (a stream's skips included, with the frame
        they repeat), unknowns (the default head refused them) and bytes filed since
        ``since_us``."""
        with self.db.read_session() as run:
            totals = run(
                f"SELECT device, COUNT(*), MAX({AT}) FROM frames GROUP BY device "
                "ORDER BY device LIMIT ?",
                (limit,),
            ).fetchall()
            # a stream's skips count as frames, with the frame they repeat
            recent = run(
                "SELECT device, SUM(1 + repeats), SUM(CASE WHEN unknown = 1 THEN 1 + repeats "
                f"ELSE 0 END), SUM(bytes) FROM frames WHERE {AT} >= ? GROUP BY device",
                (since_us,),
            ).fetchall()
        since = {str(r[0]): tuple(int(v) for v in r[1:]) for r in recent}
        return [
            DeviceSummary(str(d), int(n), int(last), *since.get(str(d), (0, 0, 0)))
            for d, n, last in totals
        ]

    def get(self, frame_id: int) -> FrameRecord | None:
        with self.db.read_session() as run:
            row = run(f"SELECT {COLUMNS} FROM frames WHERE id = ?", (frame_id,)).fetchone()
        return _record(row) if row else None

    def frame_bytes(self, frame_id: int) -> bytes | None:
        with self.db.read_session() as run:
            row = run("SELECT frame FROM frames WHERE id = ?", (frame_id,)).fetchone()
        return bytes(row[0]) if row else None

    def delete(self, frame_id: int) -> bool:
        with self.db.session() as run:
            cur = run("DELETE FROM frames WHERE id = ?", (frame_id,))
        return bool(cur.rowcount)

    def count(self) -> int:
        with self.db.session() as run:
            return int(run("SELECT COUNT(*) FROM frames").fetchone()[0])

    def close(self) -> None:
        self.db.close()


def open_store(
    database_url: str, data_dir: str | Path, confidence_bounds: Sequence[float] = ()
) -> ResultsStore:
    """PostgreSQL for ``postgresql://...``; otherwise SQLite in ``data_dir/results.sqlite``."""
    db = open_database(database_url, Path(data_dir) / "results.sqlite")
    return ResultsStore(db, confidence_bounds)
