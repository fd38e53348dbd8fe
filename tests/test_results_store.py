"""The results store on real SQLite and a real PostgreSQL server: the same tests on both."""

from __future__ import annotations

import threading

import pytest

from cloud_service.results import (
    MIGRATIONS,
    FrameQuery,
    FrameRecord,
    ResultsStore,
    decode_cursor,
    open_store,
)
from cloud_service.retention import drop_oldest, expire_batch, tally_chunk
from shared.schemas import ClassScore, Prediction


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = open_store("", tmp_path / "data")
    else:
        s = open_store(request.getfixturevalue("postgres_server")(), tmp_path)
    yield s
    s.close()


def record(i: int, device: str = "cam-1", label: str = "tench", conf: float = 0.9) -> FrameRecord:
    prediction = Prediction(
        model_id="2290519bfc38c845",
        qf=16,
        bytes=550,
        bpp=0.088,
        class_id=0,
        label=label,
        confidence=conf,
        top_k=[ClassScore(class_id=0, label=label, confidence=conf)],
    )
    return FrameRecord(device, 1_000_000 * i, 1_000_000 * i + 500, prediction)


def test_schema_is_migrated_once_and_reopens(tmp_path):
    s = open_store("", tmp_path)
    assert s.schema_version == MIGRATIONS[-1][0]
    s.add(record(1), b"frame-1")
    s.close()
    again = open_store("", tmp_path)
    assert again.schema_version == MIGRATIONS[-1][0] and again.count() == 1
    again.close()


def test_filters_and_record_round_trip(store: ResultsStore):
    ids = [
        store.add(record(1, "cam-1", "tench", 0.9), b"a"),
        store.add(record(2, "cam-2", "church", 0.4), b"b"),
        store.add(record(3, "cam-1", "church", 0.8), b"c"),
    ]
    assert [r.id for r in store.query(FrameQuery())[0]] == ids[::-1]  # newest first
    assert [r.id for r in store.query(FrameQuery(device="cam-1"))[0]] == [ids[2], ids[0]]
    assert [r.id for r in store.query(FrameQuery(label="church", min_confidence=0.5))[0]] == [
        ids[2]
    ]
    window = FrameQuery(after_us=2_000_000, before_us=3_000_000)
    assert [r.id for r in store.query(window)[0]] == [ids[1]]
    got = store.get(ids[1])
    assert got is not None and got.prediction.top_k[0].label == "church"
    assert got.captured_us == 2_000_000
    assert store.frame_bytes(ids[1]) == b"b" and store.get(10**9) is None


def test_a_retried_key_is_stored_once(store: ResultsStore):
    first = store.add(record(1), b"frame", idem_key="anon:classify:k1")
    again = store.add(record(1), b"frame", idem_key="anon:classify:k1")
    assert first == again and store.count() == 1


def test_keyset_pages_are_stable_while_frames_arrive(store: ResultsStore):
    for i in range(1, 26):
        store.add(record(i), b"x")
    stop = threading.Event()

    def writer() -> None:  # newer frames keep arriving while a consumer pages back
        i = 1000
        while not stop.is_set() and i < 1200:
            store.add(record(i), b"y")
            i += 1

    seen: list[int] = []
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        page, cursor = store.query(FrameQuery(before_us=1_000_000 * 26, limit=10))
        seen += [r.id for r in page]
        while cursor:
            page, cursor = store.query(
                FrameQuery(before_us=1_000_000 * 26, limit=10, cursor=decode_cursor(cursor))
            )
            seen += [r.id for r in page]
    finally:
        stop.set()
        thread.join()
    assert len(seen) == 25 == len(set(seen))  # nothing repeated, nothing skipped
    received = [store.get(i).received_us for i in seen]  # type: ignore[union-attr]
    assert received == sorted(received, reverse=True)


def test_bad_cursors_are_refused():
    for bad in ("", "!!!", "bm90LWEtY3Vyc29y"):
        with pytest.raises(ValueError):
            decode_cursor(bad)


def test_delete_and_retention_batches(store: ResultsStore):
    ids = [store.add(record(i), b"x") for i in range(1, 11)]  # 550 bytes each
    assert store.delete(ids[0]) and not store.delete(ids[0])
    assert expire_batch(store, before_us=1_000_000 * 4, batch=100) == 2  # 2, 3 (1 is gone)
    assert tally_chunk(store, 0) == (ids[-1], 7, 7 * 550)
    excess = (7 - 3) * 550  # keep 3 frames' bytes: the oldest four of the seven left go
    assert drop_oldest(store, excess, batch=100) == (4, excess)
    assert [r.id for r in store.query(FrameQuery())[0]] == ids[7:][::-1]


def test_live_consumers_see_a_row_once_no_lower_id_can_still_commit(store: ResultsStore):
    """On PostgreSQL, ids are taken when an INSERT starts, so a lower id can commit after a higher
    one; rows younger than SETTLE_US are held back from ``since``. SQLite has one writer."""
    from cloud_service.results import SETTLE_US
    from cloud_service.timeutil import now_us

    settled = store.add(
        FrameRecord("cam", None, now_us() - 2 * SETTLE_US, record(0).prediction), b"f"
    )
    fresh = store.add(FrameRecord("cam", None, now_us(), record(1).prediction), b"f")
    seen = [r.id for r in store.since(0, FrameQuery())]
    assert seen == ([settled] if store.engine == "postgresql" else [settled, fresh])
