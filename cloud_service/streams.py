"""Stream state in the results database: per (device, stream), the last frame the cloud decoded.

One row per (device_id, stream_id) in its own table ``stream_state`` (its own migrations table,
``spic_stream_schema``): the frame's sequence number, its key frame's header fields (which its
deltas and skips inherit), its symbols (uint16, C·H·W) and the answer given for it (a skip
repeats it). In the results database, so every replica behind a load balancer reads the same
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
]


@dataclass(frozen=True)
class Held:
    """What the cloud holds for one stream."""

    seq: int
    header: bitstream.Frame  # a key frame's fields, no payload
    symbols: np.ndarray
    answer: dict[str, Any]  # the prediction given for frame ``seq``


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
                "SELECT seq, header, symbols, answer FROM stream_state "
                "WHERE device_id = ? AND stream_id = ?",
                (device_id, stream_id),
            ).fetchone()
        if row is None:
            return None
        seq = int(row[0])
        header = header_of(row[1], seq, stream_id)
        symbols = np.frombuffer(bytes(row[2]), dtype="<u2").reshape(header.latent_shape)
        return Held(seq, header, symbols, json.loads(row[3]))

    def put_key(
        self, device_id: str, frame: bitstream.Frame, symbols: np.ndarray, answer: dict[str, Any]
    ) -> None:
        """A key frame replaces whatever the stream held (a restarted camera starts again)."""
        with self.db.session() as run:
            run(
                "INSERT INTO stream_state (device_id, stream_id, seq, header, symbols, answer, "
                "updated) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device_id, stream_id) DO "
                "UPDATE SET seq = excluded.seq, header = excluded.header, symbols = "
                "excluded.symbols, answer = excluded.answer, updated = excluded.updated",
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
        self, device_id: str, frame: bitstream.Frame, symbols: np.ndarray, answer: dict[str, Any]
    ) -> bool:
        """Apply a delta or skip: only if the stream still holds its reference. False if not."""
        with self.db.session() as run:
            row = run(
                "UPDATE stream_state SET seq = ?, symbols = ?, answer = ?, updated = ? "
                "WHERE device_id = ? AND stream_id = ? AND seq = ? RETURNING seq",
                (
                    frame.seq,
                    symbols.astype("<u2").tobytes(),
                    json.dumps(answer),
                    time.time(),
                    device_id,
                    frame.stream_id,
                    frame.ref_seq,
                ),
            ).fetchone()
        return row is not None

    def note(self, device_id: str, frame: bitstream.Frame, answer: dict[str, Any]) -> None:
        """Record the answer of frame ``frame.seq`` again once it is stored (with its row's id,
        which the stream's skips count on), if the stream still holds that frame."""
        with self.db.session() as run:
            run(
                "UPDATE stream_state SET answer = ? WHERE device_id = ? AND stream_id = ? "
                "AND seq = ?",
                (json.dumps(answer), device_id, frame.stream_id, frame.seq),
            )
