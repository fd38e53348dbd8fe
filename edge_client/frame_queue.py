"""A disk-backed store-and-forward queue: a frame is on disk before anyone is told it exists.

Each queued frame is one file ``<seq:012d>.frame`` in the queue folder::

    ┌──────────────────────────────────────────────┬─────────────────────────┐
    │ one JSON line: {"key", "source", "captured",  │ the SPIC frame's bytes  │
    │                 "taken"}                      │                         │
    └──────────────────────────────────────────────┴─────────────────────────┘

* ``put`` writes a temporary file, fsyncs it, renames it into place and fsyncs the folder, and
  only then returns: a frame reported captured survives a crash or power cut.
* ``ack`` deletes a frame; only the uploader calls it, after the cloud confirmed the frame.
* Frames come out in capture order (sequence numbers), also after a restart.
* Bounded by total bytes and by age (TTL). When full, the policy decides: ``reject_new`` (the
  default; ``put`` raises ``QueueFullError``) or ``drop_oldest``. Every refused, dropped or
  expired frame is logged at WARNING with its key and source.
* The idempotency key travels with the frame, so a retry after a crash is recognised by the cloud.
* A file in the folder that is not a readable frame (garbage, empty, another program's) is moved
  to ``quarantine/`` with a WARNING at start, and the queue goes on without it.
* The folder is read once at start; after that an in-memory index answers depth, size, keys and
  order, so a capture never rescans a queue that may hold hundreds of thousands of frames while the
  cloud is away. One process owns a queue folder at a time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge_client.errors import FrameTooLargeError, QueueFullError

log = logging.getLogger("spic.edge.queue")
SUFFIX = ".frame"
QUARANTINE = "quarantine"  # beside the frames: files found in the queue that are not frames
MAX_META_LINE = 4096  # a queue file's JSON line is ~100 bytes; a longer one is not ours
Policy = Literal["reject_new", "drop_oldest"]


@dataclass(frozen=True)
class QueuedFrame:
    seq: int
    key: str
    source: str
    captured: float  # when the frame entered the queue: the TTL counts from here
    path: Path
    taken: float | None = None  # when the image was taken (its file's mtime), sent to the cloud

    def read(self) -> bytes:
        with self.path.open("rb") as f:
            f.readline()
            return f.read()


def unique_path(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/name.1`` and so on if taken; creates ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    target, n = folder / name, 0
    while target.exists():
        n += 1
        target = folder / f"{name}.{n}"
    return target


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FrameQueue:
    def __init__(
        self,
        root: str | Path,
        max_bytes: int = 256 << 20,
        ttl_s: float = 24 * 3600,
        policy: Policy = "reject_new",
    ):
        if policy not in ("reject_new", "drop_oldest"):
            raise ValueError(f"unknown queue policy {policy!r}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.ttl_s, self.policy = max_bytes, ttl_s, policy
        for tmp in self.root.glob("*.tmp"):
            tmp.unlink()  # a put that crashed before its rename never reported success
        # seq -> frame, in ascending seq order (dicts keep insertion order and seqs only grow), so
        # the oldest frame is the first entry: expiring and dropping never sort. The folder is
        # scanned only here.
        self._items: dict[int, QueuedFrame] = {}
        self._sizes: dict[int, int] = {}
        self._keys: dict[str, int] = {}  # key -> how many queued frames carry it
        for seq, path in self._scan():
            item = self._load(seq, path)
            if item is None:
                continue
            self._items[seq], self._sizes[seq] = item, path.stat().st_size
            self._keys[item.key] = self._keys.get(item.key, 0) + 1
        self._bytes = sum(self._sizes.values())
        self._next = self._highest_seen + 1

    def _scan(self) -> list[tuple[int, Path]]:
        """Queue files in sequence order; a file not named ``<digits>.frame`` is quarantined."""
        found = []
        for path in self.root.glob(f"*{SUFFIX}"):
            if path.stem.isdigit():
                found.append((int(path.stem), path))
            else:
                self._quarantine(path, "not named <sequence>.frame")
        # Numbers of quarantined files are not reused either, so no two files ever share one.
        self._highest_seen = max((seq for seq, _ in found), default=0)
        return sorted(found)

    def _quarantine(self, path: Path, why: str) -> None:
        target = unique_path(self.root / QUARANTINE, path.name)
        os.replace(path, target)
        log.warning("QUARANTINED queue file %s (%s): moved to %s", path.name, why, target)

    def _load(self, seq: int, path: Path) -> QueuedFrame | None:
        try:
            with path.open("rb") as f:
                meta = json.loads(f.readline(MAX_META_LINE))
            return QueuedFrame(
                seq,
                str(meta["key"]),
                str(meta["source"]),
                float(meta["captured"]),
                path,
                None if meta.get("taken") is None else float(meta["taken"]),
            )
        except (ValueError, OSError, KeyError, TypeError) as exc:
            self._quarantine(path, f"unreadable: {type(exc).__name__}: {exc}")
            return None

    def __len__(self) -> int:
        return len(self._items)

    def total_bytes(self) -> int:
        return self._bytes

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def __iter__(self) -> Iterator[QueuedFrame]:
        """Frames in capture order; a snapshot, so acking while iterating is fine."""
        return iter(list(self._items.values()))

    def oldest(self) -> QueuedFrame | None:
        return next(iter(self._items.values()), None)

    def put(
        self,
        frame: bytes,
        key: str,
        source: str = "",
        captured: float | None = None,
        taken: float | None = None,
    ) -> QueuedFrame:
        """Store a frame durably and return it; raises ``QueueFullError`` under ``reject_new``."""
        self.expire()
        captured = time.time() if captured is None else captured
        meta = {"key": key, "source": source, "captured": captured, "taken": taken}
        header = json.dumps(meta).encode() + b"\n"
        size = len(header) + len(frame)
        if size > self.max_bytes:
            log.warning(
                "REFUSED frame %s (%s): %d bytes exceeds the queue limit", key, source, size
            )
            raise FrameTooLargeError(
                f"frame of {size} bytes exceeds the queue limit of {self.max_bytes}"
            )
        while self._bytes + size > self.max_bytes:
            if self.policy == "reject_new":
                log.warning(
                    "REFUSED frame %s (%s): queue full (%d of %d bytes)",
                    key,
                    source,
                    self._bytes,
                    self.max_bytes,
                )
                raise QueueFullError(f"queue full: {self._bytes} of {self.max_bytes} bytes used")
            oldest = self.oldest()
            assert oldest is not None  # the queue holds bytes, so it holds a frame
            log.warning(
                "DROPPED oldest frame %s (%s) to make room: queue full", oldest.key, oldest.source
            )
            self._remove(oldest)
        seq = self._next
        self._next += 1
        path = self.root / f"{seq:012d}{SUFFIX}"
        tmp = path.with_suffix(".tmp")
        try:
            with tmp.open("wb") as f:
                f.write(header)
                f.write(frame)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            # A full disk: give back what the partial write took, and name the file (a failed
            # write() carries no file name of its own).
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise OSError(exc.errno, exc.strerror, str(exc.filename or tmp)) from exc
        _fsync_dir(self.root)
        item = QueuedFrame(seq, key, source, captured, path, taken)
        self._items[seq], self._sizes[seq] = item, size
        self._keys[key] = self._keys.get(key, 0) + 1
        self._bytes += size
        return item

    def ack(self, item: QueuedFrame) -> None:
        """The cloud confirmed this frame: forget it."""
        self._remove(item)

    def set_aside(self, item: QueuedFrame, folder: Path) -> Path:
        """Move a frame the cloud will never accept out of the queue, keeping its file."""
        # Named by sequence and key, never overwritten: sequences restart when a queue empties.
        target = unique_path(folder, f"{item.path.stem}-{item.key[:32]}{SUFFIX}")
        os.replace(item.path, target)
        self._forget(item)
        _fsync_dir(self.root)
        return target

    def _remove(self, item: QueuedFrame) -> None:
        item.path.unlink(missing_ok=True)
        self._forget(item)
        _fsync_dir(self.root)

    def _forget(self, item: QueuedFrame) -> None:
        if self._items.pop(item.seq, None) is not None:
            self._bytes -= self._sizes.pop(item.seq)
            left = self._keys[item.key] - 1
            if left:
                self._keys[item.key] = left
            else:
                del self._keys[item.key]

    def expire(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        dropped = 0
        # Capture times rise with sequence numbers, so only the oldest frames can be due: the loop
        # stops at the first fresh one, O(1) per put when nothing expires.
        while (item := self.oldest()) is not None:
            if now - item.captured <= self.ttl_s:
                break
            log.warning(
                "EXPIRED frame %s (%s) after %.0f s undelivered",
                item.key,
                item.source,
                now - item.captured,
            )
            self._remove(item)
            dropped += 1
        return dropped
