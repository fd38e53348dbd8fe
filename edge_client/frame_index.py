"""Which original in the ring a stored frame was made from: the edge's half of refinement.

The cloud asks for a better picture of a frame by its id (``frame_id``, from the classify answer).
The edge learns the pairs in two steps, each one JSON line appended to ``FOLDER/.spic-index.jsonl``:

* at capture, ``{"k": key, "n": name}``: the frame's Idempotency-Key and its original's name in
  the ring (``OriginalsRing`` may rename it: ``photo.jpg.1``);
* at upload, ``{"k": key, "f": frame_id}``.

So a frame queued before a restart and uploaded after it still finds its original. Bounded with
the ring: an original the ring drops leaves the index too (``forget``), and the file is rewritten
with the live entries alone once it has grown past twice their number. Entries whose original is
no longer in the ring are left out when the file is read at start.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger("spic.edge.index")
SLACK = 64  # lines beyond twice the live entries before the file is rewritten


class FrameIndex:
    def __init__(self, path: Path, ring: Path):
        self.path, self.ring = path, ring
        self.names: dict[str, str] = {}  # key -> original's name in the ring
        self.frames: dict[int, str] = {}  # frame id -> key
        self.lines = 0
        self.writable = True
        self._load()

    def _load(self) -> None:
        try:
            text = self.path.read_text(errors="replace")
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("cannot read the frame index %s: %s", self.path, exc)
            return
        for line in text.splitlines():
            try:
                entry = json.loads(line)
                key = str(entry["k"])
                if "n" in entry:
                    self.names[key] = str(entry["n"])
                elif "f" in entry:
                    self.frames[int(entry["f"])] = key
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by a crash: the rest still holds
            self.lines += 1
        held = {k for k, n in self.names.items() if (self.ring / n).is_file()}
        self.names = {k: n for k, n in self.names.items() if k in held}
        self.frames = {f: k for f, k in self.frames.items() if k in held}
        self._compact_if_needed()

    def __len__(self) -> int:
        return len(self.names)

    def _append(self, entry: dict[str, object]) -> None:
        if not self.writable:
            return
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(entry, separators=(",", ":")) + "\n")
        except OSError as exc:  # a read-only folder: refinements of this run only
            self.writable = False
            log.warning("cannot write the frame index %s (%s): kept in memory", self.path, exc)
            return
        self.lines += 1
        self._compact_if_needed()

    def captured(self, key: str, name: str) -> None:
        """A frame's original entered the ring under ``name``."""
        self.names[key] = name
        self._append({"k": key, "n": name})

    def uploaded(self, key: str, frame_id: object) -> None:
        """The cloud stored the frame of ``key`` as ``frame_id``."""
        if key not in self.names or not isinstance(frame_id, int) or frame_id < 1:
            return  # no original kept for it (--keep-mb 0, a read-only folder), or not stored
        self.frames[frame_id] = key
        self._append({"k": key, "f": frame_id})

    def forget(self, names: list[str]) -> None:
        """The ring dropped these originals."""
        dropped = set(names)
        keys = {k for k, n in self.names.items() if n in dropped}
        if not keys:
            return
        self.names = {k: n for k, n in self.names.items() if k not in keys}
        self.frames = {f: k for f, k in self.frames.items() if k not in keys}
        self._compact_if_needed()

    def original(self, frame_id: int) -> Path | None:
        """The original of a stored frame, if the ring still holds it."""
        key = self.frames.get(frame_id)
        name = None if key is None else self.names.get(key)
        if name is None:
            return None
        path = self.ring / name
        return path if path.is_file() else None

    def _compact_if_needed(self) -> None:
        live = len(self.names) + len(self.frames)
        if not self.writable or self.lines <= 2 * live + SLACK:
            return
        lines = [json.dumps({"k": k, "n": n}, separators=(",", ":")) for k, n in self.names.items()]
        lines += [
            json.dumps({"k": k, "f": f}, separators=(",", ":")) for f, k in self.frames.items()
        ]
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text("".join(line + "\n" for line in lines))
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("cannot rewrite the frame index %s: %s", self.path, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()
            return
        self.lines = len(lines)
