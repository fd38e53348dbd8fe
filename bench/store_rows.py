"""Stored frames written straight into a results store, for the store benchmarks.

One writer for ``bench/store.py`` (query latency), ``bench/retention.py`` (deleting old rows) and
``bench/query_reads.py`` (reads over years): rows go in by the 50,000 with one statement per batch,
so a million rows take seconds instead of a million HTTP uploads.
"""

from __future__ import annotations

import json
import random
import time

from cloud_service.database import Database, PostgresDatabase, SqliteDatabase
from models.data import WNID_NAMES
from shared.schemas import ClassScore, Prediction

LABELS = list(WNID_NAMES.values())  # Imagenette's ten, as the shipped bundles name them
BATCH = 50_000
INSERT = (
    "INSERT INTO frames (device, captured_us, received_us, model_id, qf, bytes, bpp, "
    "class_id, label, confidence, top_k, frame) VALUES (" + ", ".join(["?"] * 12) + ")"
)


def prediction(nbytes: int = 500, bpp: float = 0.08, scores: int = 1) -> Prediction:
    """One frame's prediction as a bench or a test stores it: tench at 0.9, ``scores`` top-k
    entries, a frame of ``nbytes``."""
    top = [
        ClassScore(class_id=c, label=LABELS[c], confidence=0.9 if c == 0 else 0.02)
        for c in range(scores)
    ]
    return Prediction(
        model_id="0" * 16,
        qf=16,
        bytes=nbytes,
        bpp=bpp,
        class_id=0,
        label="tench",
        confidence=0.9,
        top_k=top,
    )


def fill(
    db: Database,
    rows: int,
    frame: bytes,
    step_s: float = 1.0,
    cameras: int = 10,
    model_id: str = "2290519bfc38c845",
    jitter_s: float = 0.0,
) -> None:
    """``rows`` frames ``step_s`` apart, ending now, over ``cameras`` cameras and 10 labels.

    Without ``jitter_s`` each is received 0.5 ms after capture with a confidence cycling over
    0.50-0.99; with it, received up to ``jitter_s`` later and the confidence random (seeded)."""
    end, step = int(time.time() * 1e6), int(step_s * 1e6)
    rng = random.Random(0)
    top_k = json.dumps([{"class_id": 0, "label": "tench", "confidence": 0.9}])
    for start in range(0, rows, BATCH):
        values = []
        for i in range(start, min(rows, start + BATCH)):
            at = end - (rows - i) * step
            late = rng.randint(0, int(jitter_s * 1e6)) if jitter_s else 500
            confidence = rng.random() * 0.99 if jitter_s else 0.5 + (i % 50) / 100
            values.append((f"cam-{i % cameras}", at, at + late, model_id, 16, len(frame), 0.09,
                           i % 10, LABELS[i % 10], confidence, top_k, frame))  # fmt: skip
        if isinstance(db, PostgresDatabase):
            with db.pool.connection() as conn, conn.cursor() as cur:
                cur.executemany(INSERT.replace("?", "%s"), values)
        else:
            assert isinstance(db, SqliteDatabase)
            db.conn.execute("BEGIN")
            db.conn.executemany(INSERT, values)
            db.conn.execute("COMMIT")
