"""How long each camera held each answer: ``/v1/stats?measure=seconds``, over the results store.

A stream's skip frames are counted on the row they repeat (``repeats``, ``last_us``), so the time
an answer was held comes from the rows alone: from a frame to its camera's next one, through one
window function (``LEAD``) that SQLite and PostgreSQL both run.
"""

from __future__ import annotations

from cloud_service.results import (
    AT,
    LABEL_OR_UNKNOWN,
    FrameQuery,
    ResultsStore,
    answer_filters,
    camera_time_filters,
)


def held(
    store: ResultsStore, bucket_us: int, q: FrameQuery, max_rows: int, gap_us: int
) -> list[tuple[str, str, int, int, int]]:
    """(camera, label or "unknown", bucket start, frames, µs held) per camera, answer and
    bucket of the answer's start, oldest first; at most ``max_rows`` + 1 rows.

    An answer is held from its frame until the camera's next stored frame, if that comes
    within ``gap_us`` of the last sign of the answer (the frame, or its latest repeat);
    otherwise until that last sign (a camera gone quiet is not counted as seeing it). The
    next frame is looked for within ``q``'s camera and time filters; the answer filters
    (label, confidence, unknown) apply afterwards, so they never join two answers."""
    where, params = camera_time_filters(q)
    outer, more = answer_filters(q)
    inner = (
        f"SELECT device, {LABEL_OR_UNKNOWN} AS answer, label, unknown, confidence, "
        f"repeats, {AT} AS at, COALESCE(last_us, {AT}) AS seen, "
        f"LEAD({AT}) OVER (PARTITION BY device ORDER BY {AT}, id) AS nxt FROM frames"
    )
    if where:
        inner += " WHERE " + " AND ".join(where)
    sql = (
        "SELECT device, answer, (at / ?) * ? AS bucket, SUM(1 + repeats), SUM(CASE WHEN "
        "nxt IS NOT NULL AND nxt < seen + ? THEN nxt - at ELSE seen - at END) "
        f"FROM ({inner}) AS t"
    )
    if outer:
        sql += " WHERE " + " AND ".join(outer)
    sql += " GROUP BY device, answer, bucket ORDER BY bucket, device, answer LIMIT ?"
    args = [bucket_us, bucket_us, gap_us, *params, *more, max_rows + 1]
    with store.db.read_session() as run:
        rows = run(sql, args).fetchall()
    return [(str(d), str(a), int(b), int(n), int(us)) for d, a, b, n, us in rows]
