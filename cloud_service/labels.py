"""Labels people give stored frames, to train heads from (``spic-head``): the ``labels`` table of
the results store (migration 4), one label per frame, the latest kept.

A frame's label lives beside the frame, not in it: the frame's own prediction stays what the
heads answered. Listing joins the frames still stored, so a frame removed by retention or by an
admin takes its label out of the list with it; pages go by frame id, oldest first, so a trainer
that keeps its cursor reads each labelled frame once (a frame labelled again after it was read
is not listed again).
"""

from __future__ import annotations

from dataclasses import dataclass

from cloud_service.results import ResultsStore


@dataclass(frozen=True)
class LabelRow:
    frame_id: int
    label: str
    model_id: str


def set_label(store: ResultsStore, frame_id: int, label: str, at_us: int) -> str | None:
    """Label a stored frame (again); its codec id, or None when the frame is not stored."""
    with store.db.session() as run:
        row = run("SELECT model_id FROM frames WHERE id = ?", (frame_id,)).fetchone()
        if row is None:
            return None
        run(
            "INSERT INTO labels (frame_id, label, labelled_at) VALUES (?, ?, ?) "
            "ON CONFLICT (frame_id) DO UPDATE SET label = excluded.label, "
            "labelled_at = excluded.labelled_at",
            (frame_id, label, at_us),
        )
    return str(row[0])


def list_labels(store: ResultsStore, after_id: int, limit: int) -> tuple[list[LabelRow], bool]:
    """Labelled frames still stored with an id above ``after_id``, by id, at most ``limit``; and
    whether more follow."""
    with store.db.read_session() as run:
        rows = run(
            "SELECT l.frame_id, l.label, f.model_id FROM labels l JOIN frames f "
            "ON f.id = l.frame_id WHERE l.frame_id > ? ORDER BY l.frame_id LIMIT ?",
            (after_id, limit + 1),
        ).fetchall()
    out = [LabelRow(int(r[0]), str(r[1]), str(r[2])) for r in rows]
    return out[:limit], len(out) > limit
