"""cloud_service.streams: the change a cdelta reads is kept with the stream's state, on SQLite and
PostgreSQL, and a database made before it existed is migrated with its rows kept."""

from __future__ import annotations

import numpy as np
import pytest

from cloud_service.database import migrate, open_database
from cloud_service.streams import STREAM_MIGRATIONS, StreamStore
from shared import bitstream


def frame(seq: int, kind: bitstream.FrameType = "key") -> bitstream.Frame:
    return bitstream.Frame(
        codec=2,
        qf=4,
        model_id=b"\x01" * 8,
        latent_shape=(2, 3, 3),
        image_size=(48, 48),
        payload=b"",
        version=2,
        frame_type=kind,
        stream_id=7,
        seq=seq,
        ref_seq=seq if kind == "key" else seq - 1,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    url = request.getfixturevalue("postgres_server")() if request.param == "postgresql" else ""
    database = open_database(url, tmp_path / "results.db")
    yield database
    database.close()


def test_the_change_is_kept_and_reset_by_a_key_frame(db):
    store = StreamStore(db)
    s0 = np.arange(18, dtype=np.uint16).reshape(2, 3, 3) % 5
    store.put_key("cam", frame(0), s0, {"top_k": []})
    assert store.get("cam", 7).change is None
    change = np.zeros(s0.shape, np.int8)
    change[1, 2, 0] = -1
    assert store.advance("cam", frame(1, "cdelta"), s0, {"top_k": []}, change)
    np.testing.assert_array_equal(store.get("cam", 7).change, change)
    assert not store.advance("cam", frame(1, "cdelta"), s0, {"top_k": []}, None)  # ref gone
    store.put_key("cam", frame(2), s0, {"top_k": []})
    held = store.get("cam", 7)
    assert held.seq == 2 and held.change is None


def test_a_state_table_from_before_the_change_column_is_migrated(db):
    migrate(db, "spic_stream_schema", STREAM_MIGRATIONS[:1])  # what a deployed cloud has
    with db.session() as run:
        run(
            "INSERT INTO stream_state (device_id, stream_id, seq, header, symbols, answer, "
            "updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
            ("cam", 7, 5, _header(), bytes(36), '{"top_k": []}', 0.0),
        )
    store = StreamStore(db)  # migrates to the column
    held = store.get("cam", 7)
    assert held is not None and held.seq == 5 and held.change is None
    assert store.advance("cam", frame(6, "cdelta"), held.symbols, {}, np.ones((2, 3, 3), np.int8))
    assert store.get("cam", 7).change.sum() == 18


def _header() -> str:
    from cloud_service.streams import header_json

    return header_json(frame(5))
