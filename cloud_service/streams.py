"""Stream state in the results database: per (device, stream), the last frame the cloud decoded.

One row per (device_id, stream_id) in its own table ``stream_state`` (its own migrations table,
``spic_stream_schema``): the frame's sequence number, its key frame's header fields (which its
deltas and skips inherit), its symbols (uint16, C·H·W), their change from the frame before
(int8, C·H·W; NULL after a key frame: what a cdelta's contexts read, ``shared.stream``) and the
answer given for it (a skip repeats it). In the results database, so every replica behind a load balancer reads the same
state (PostgreSQL) and a restart loses nothing.

The state is keyed by sequence number: a delta is applied with ``UPDATE ... WHERE seq =
ref_seq``, so of two replicas (or a retry racing the original) only one advances it, and a delta
replayed after its frame was applied (its idempotency entry gone) finds ``seq`` equal to its own
and is answered from the row, never applied twice.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from cloud_service.database import Database, Migration, migrate
from shared import bitstream

STREAM_MIGRATIONS: list[Migration] = [
    (
        1,
        [
            "CREATE TABLE IF NOT EXISTS stream_state (device_id TEXT NOT NULL, stream_id INTEGER "
            "NOT NULL, seq INTEGER NOT NULL, header TEXT NOT NULL, symbols BLOB NOT NULL, "
            "answer TEXT NOT NULL, updated REAL NOT NULL, PRIMARY KEY (device_id, stream_id))",
        ],
        [
            "CREATE TABLE IF NOT EXISTS stream_state (device_id TEXT NOT NULL, stream_id INTEGER "
            "NOT NULL, seq BIGINT NOT NULL, header TEXT NOT NULL, symbols BYTEA NOT NULL, "
            "answer TEXT NOT NULL, updated DOUBLE PRECISION NOT NULL, "
            "PRIMARY KEY (device_id, stream_id))",
        ],
    ),
    (  # cdelta frames (type 3) read the change the held frame made; NULL: none known
        2,
        ["ALTER TABLE stream_state ADD COLUMN prev_change BLOB"],
        ["ALTER TABLE stream_state ADD COLUMN IF NOT EXISTS prev_change BYTEA"],
    ),
]


@dataclass(frozen=True)
class Held:
    """What the cloud holds for one stream."""

    seq: int
    header: bitstream.Frame  # a key frame's fields, no payload
    symbols: np.ndarray
    answer: dict[str, Any]  # the prediction given for frame ``seq``
    change: np.ndarray | None = None  # int8 symbols − its reference's; None after a key frame


def header_json(frame: bitstream.Frame) -> str:
    return json.dumps(
        {
            "codec": frame.codec,
            "qf": frame.qf,
            "model_id": frame.model_id_hex,
            "shape": list(frame.latent_shape),
            "image_size": list(frame.image_size),
            "stride": frame.stride,
        }
    )


def header_of(text: str, seq: int, stream_id: int) -> bitstream.Frame:
    h = json.loads(text)
    c, height, w = (int(v) for v in h["shape"])
    iw, ih = (int(v) for v in h["image_size"])
    return bitstream.Frame(
        codec=int(h["codec"]),
        qf=int(h["qf"]),
        model_id=bytes.fromhex(h["model_id"]),
        latent_shape=(c, height, w),
        image_size=(iw, ih),
        payload=b"",
        stride=int(h["stride"]),
        version=bitstream.STREAM_VERSION,
        stream_id=stream_id,
        seq=seq,
        ref_seq=seq,
    )


class StreamStore:
    def __init__(self, db: Database):
        self.db = db
        migrate(db, "spic_stream_schema", STREAM_MIGRATIONS)

    def get(self, device_id: str, stream_id: int) -> Held | None:
        with self.db.session() as run:
            row = run(
                "SELECT seq, header, symbols, answer, prev_change FROM stream_state "
                "WHERE device_id = ? AND stream_id = ?",
                (device_id, stream_id),
            ).fetchone()
        if row is None:
            return None
        seq = int(row[0])
        header = header_of(row[1], seq, stream_id)
        symbols = np.frombuffer(bytes(row[2]), dtype="<u2").reshape(header.latent_shape)
        change = None
        if row[4] is not None:
            change = np.frombuffer(bytes(row[4]), dtype=np.int8).reshape(header.latent_shape)
        return Held(seq, header, symbols, json.loads(row[3]), change)

    def put_key(
        self, device_id: str, frame: bitstream.Frame, symbols: np.ndarray, answer: dict[str, Any]
    ) -> None:
        """A key frame replaces whatever the stream held (a restarted camera starts again)."""
        with self.db.session() as run:
            run(
                "INSERT INTO stream_state (device_id, stream_id, seq, header, symbols, answer, "
                "updated, prev_change) VALUES (?, ?, ?, ?, ?, ?, ?, NULL) ON CONFLICT "
                "(device_id, stream_id) DO UPDATE SET seq = excluded.seq, header = "
                "excluded.header, symbols = excluded.symbols, answer = excluded.answer, "
                "updated = excluded.updated, prev_change = NULL",
                (
                    device_id,
                    frame.stream_id,
                    frame.seq,
                    header_json(frame),
                    symbols.astype("<u2").tobytes(),
                    json.dumps(answer),
                    time.time(),
                ),
            )

    def advance(
        self,
        device_id: str,
        frame: bitstream.Frame,
        symbols: np.ndarray,
        answer: dict[str, Any],
        change: np.ndarray | None = None,
    ) -> bool:
        """Apply a delta, cdelta or skip (``change``: its symbols − its reference's, as
        ``shared.stream.change_after`` gives): only if the stream still holds its reference.
        False if not."""
        with self.db.session() as run:
            row = run(
                "UPDATE stream_state SET seq = ?, symbols = ?, answer = ?, updated = ?, "
                "prev_change = ? WHERE device_id = ? AND stream_id = ? AND seq = ? RETURNING seq",
                (
                    frame.seq,
                    symbols.astype("<u2").tobytes(),
                    json.dumps(answer),
                    time.time(),
                    None if change is None else change.astype(np.int8).tobytes(),
                    device_id,
                    frame.stream_id,
                    frame.ref_seq,
                ),
            ).fetchone()
        return row is not None
