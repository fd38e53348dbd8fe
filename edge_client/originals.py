"""The done folder as a bounded ring of originals (``--keep-hours``, ``--keep-mb``).

A captured image is moved into the ring once its frame is queued. Originals older than
``keep_hours``, or past ``keep_mb`` in all, are deleted, oldest first, with a WARNING naming them,
so a camera that runs for months never fills its card with images it has already sent. 0 for
either keeps none: the original is deleted once its frame is queued.

Age counts from when the image entered the ring (its ctime, which the move sets), not from its
mtime: a camera's clock may be off by years. The folder is read once at start; after that an
in-memory heap knows the oldest original and the total size.
"""

from __future__ import annotations

import heapq
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from edge_client.frame_queue import unique_path

log = logging.getLogger("spic.edge.originals")
NAMES_LOGGED = 5  # a trim that drops more names the first few and counts the rest


class OriginalsRing:
    def __init__(
        self,
        folder: Path,
        max_bytes: int,
        max_age_s: float,
        now: Callable[[], float] = time.time,
    ):
        self.folder, self.max_bytes, self.max_age_s, self.now = folder, max_bytes, max_age_s, now
        # told the names of the originals a trim drops (the frame index forgets them)
        self.on_drop: Callable[[list[str]], None] | None = None
        self._heap: list[tuple[float, str, int]] = []  # (entered, name, bytes), oldest on top
        self._bytes = 0
        try:
            entries = list(folder.iterdir())
        except FileNotFoundError:
            entries = []
        for path in entries:
            try:
                st = path.stat()
            except OSError:
                continue
            if path.is_file():
                self._heap.append((st.st_ctime, path.name, st.st_size))
                self._bytes += st.st_size
        heapq.heapify(self._heap)
        self.trim()

    @property
    def keeps_none(self) -> bool:
        return self.max_bytes <= 0 or self.max_age_s <= 0

    def total_bytes(self) -> int:
        return self._bytes

    def keep(self, path: Path) -> str | None:
        """Move a captured image into the ring, then drop what the bounds no longer allow; its
        name in the ring (None when none is kept). Raises ``OSError`` when the image cannot be
        moved or deleted (a read-only folder)."""
        if self.keeps_none:
            path.unlink()
            return None
        target = unique_path(self.folder, path.name)
        os.replace(path, target)
        try:
            st = target.stat()
        except OSError:
            return None
        heapq.heappush(self._heap, (st.st_ctime, target.name, st.st_size))
        self._bytes += st.st_size
        self.trim()
        return target.name if target.exists() else None  # a trim may drop it at once

    def trim(self) -> list[str]:
        """Delete the oldest originals until the ring is within its bounds; returns their names."""
        dropped: list[str] = []
        oldest_allowed = self.now() - self.max_age_s
        while self._heap and (self._bytes > self.max_bytes or self._heap[0][0] < oldest_allowed):
            _, name, size = heapq.heappop(self._heap)
            self._bytes -= size
            try:
                (self.folder / name).unlink()
            except FileNotFoundError:
                continue  # removed by hand: nothing to drop
            except OSError as exc:
                log.warning("cannot delete original %s from %s: %s", name, self.folder, exc)
                continue
            dropped.append(name)
        if dropped and self.on_drop is not None:
            self.on_drop(dropped)
        if dropped:
            shown = ", ".join(dropped[:NAMES_LOGGED])
            more = f" and {len(dropped) - NAMES_LOGGED} more" if len(dropped) > NAMES_LOGGED else ""
            log.warning(
                "DROPPED %d oldest original(s) from %s (--keep-mb %g, --keep-hours %g): %s%s",
                len(dropped),
                self.folder,
                self.max_bytes / (1 << 20),
                self.max_age_s / 3600,
                shown,
                more,
            )
        return dropped
