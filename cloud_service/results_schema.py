"""The results store's schema: numbered migrations, each for SQLite and for PostgreSQL, applied
in order and recorded in ``spic_schema`` (``cloud_service.database.migrate``), so that a store
opened by a newer release upgrades itself."""

from __future__ import annotations

from cloud_service.database import Migration

MIGRATIONS: list[Migration] = [
    (
        1,
        [
            "CREATE TABLE frames (id INTEGER PRIMARY KEY AUTOINCREMENT, device TEXT NOT NULL, "
            "captured_us INTEGER, received_us INTEGER NOT NULL, model_id TEXT NOT NULL, "
            "qf INTEGER NOT NULL, bytes INTEGER NOT NULL, bpp REAL NOT NULL, class_id INTEGER "
            "NOT NULL, label TEXT NOT NULL, confidence REAL NOT NULL, top_k TEXT NOT NULL, "
            "frame BLOB NOT NULL, idem_key TEXT UNIQUE)",
            "CREATE INDEX frames_received ON frames (received_us DESC, id DESC)",
            "CREATE INDEX frames_device ON frames (device, received_us DESC, id DESC)",
            "CREATE INDEX frames_label ON frames (label, received_us DESC, id DESC)",
        ],
        [
            "CREATE TABLE frames (id BIGSERIAL PRIMARY KEY, device TEXT NOT NULL, "
            "captured_us BIGINT, received_us BIGINT NOT NULL, model_id TEXT NOT NULL, "
            "qf INTEGER NOT NULL, bytes INTEGER NOT NULL, bpp DOUBLE PRECISION NOT NULL, "
            "class_id INTEGER NOT NULL, label TEXT NOT NULL, confidence DOUBLE PRECISION NOT "
            "NULL, top_k TEXT NOT NULL, frame BYTEA NOT NULL, idem_key TEXT UNIQUE)",
            "CREATE INDEX frames_received ON frames (received_us DESC, id DESC)",
            "CREATE INDEX frames_device ON frames (device, received_us DESC, id DESC)",
            "CREATE INDEX frames_label ON frames (label, received_us DESC, id DESC)",
        ],
    ),
    (
        2,  # file frames under their capture time; labels match whatever their case
        [
            "DROP INDEX frames_device",
            "DROP INDEX frames_label",
            # confidence rides along: a min_confidence page walks this index alone, not the
            # rows (bench/query_reads.py's "scan": a threshold nothing meets). PostgreSQL's
            # planner has statistics and picks frames_confidence instead.
            "CREATE INDEX frames_at ON frames "
            "(COALESCE(captured_us, received_us) DESC, id DESC, confidence)",
            "CREATE INDEX frames_device_at ON frames "
            "(device, COALESCE(captured_us, received_us) DESC, id DESC)",
            "CREATE INDEX frames_label_at ON frames "
            "(lower(label), COALESCE(captured_us, received_us) DESC, id DESC)",
        ],
        [
            "DROP INDEX frames_device",
            "DROP INDEX frames_label",
            "CREATE INDEX frames_at ON frames ((COALESCE(captured_us, received_us)) DESC, id DESC)",
            "CREATE INDEX frames_device_at ON frames "
            "(device, (COALESCE(captured_us, received_us)) DESC, id DESC)",
            "CREATE INDEX frames_label_at ON frames "
            "((lower(label)), (COALESCE(captured_us, received_us)) DESC, id DESC)",
            "CREATE INDEX frames_confidence ON frames (confidence)",
        ],
    ),
    (
        3,  # heads: the default head's reject verdict, and every head's prediction (JSON)
        [
            "ALTER TABLE frames ADD COLUMN unknown INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE frames ADD COLUMN heads TEXT",
        ],
        [
            "ALTER TABLE frames ADD COLUMN unknown INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE frames ADD COLUMN heads TEXT",
        ],
    ),
    (
        4,  # labels given to stored frames, to train heads from (cloud_service/labels.py)
        [
            "CREATE TABLE labels (frame_id INTEGER PRIMARY KEY, label TEXT NOT NULL, "
            "labelled_at INTEGER NOT NULL)",
        ],
        [
            "CREATE TABLE labels (frame_id BIGINT PRIMARY KEY, label TEXT NOT NULL, "
            "labelled_at BIGINT NOT NULL)",
        ],
    ),
    (
        5,  # streams: a skip repeats a row (counted, not stored); a change of answer is marked
        [
            "ALTER TABLE frames ADD COLUMN repeats INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE frames ADD COLUMN last_us INTEGER",
            "ALTER TABLE frames ADD COLUMN changed INTEGER NOT NULL DEFAULT 0",
            # ?changes=true pages walk only the changes, however rare among the frames
            "CREATE INDEX frames_changes_at ON frames "
            "(COALESCE(captured_us, received_us) DESC, id DESC) WHERE changed > 0",
            "CREATE INDEX frames_device_changes_at ON frames "
            "(device, COALESCE(captured_us, received_us) DESC, id DESC) WHERE changed > 0",
            # ?unknown=true pages, likewise (migration 3 added the column without one)
            "CREATE INDEX frames_unknown_at ON frames "
            "(COALESCE(captured_us, received_us) DESC, id DESC) WHERE unknown = 1",
        ],
        [
            "ALTER TABLE frames ADD COLUMN repeats INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE frames ADD COLUMN last_us BIGINT",
            "ALTER TABLE frames ADD COLUMN changed INTEGER NOT NULL DEFAULT 0",
            "CREATE INDEX frames_changes_at ON frames "
            "((COALESCE(captured_us, received_us)) DESC, id DESC) WHERE changed > 0",
            "CREATE INDEX frames_device_changes_at ON frames "
            "(device, (COALESCE(captured_us, received_us)) DESC, id DESC) WHERE changed > 0",
            "CREATE INDEX frames_unknown_at ON frames "
            "((COALESCE(captured_us, received_us)) DESC, id DESC) WHERE unknown = 1",
        ],
    ),
]
