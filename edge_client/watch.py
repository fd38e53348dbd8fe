"""Camera mode (``spic-edge watch``): one loop of scan, capture, drain.

* **scan**: images in the folder, oldest first, that have *settled* (not modified for
  ``settle_s``), so a file the camera is still writing is left for a later scan.
* **capture**: encode, then put the frame on the disk queue (fsynced) and move the image to the
  done folder. A file that cannot be read is retried at later scans until it has been unchanged
  for ``give_up_s``, then moved to ``.spic-failed`` (a half-written JPEG finishes; a corrupt one
  does not). A frame larger than the whole queue is set aside the same way. When the queue is
  full under ``reject_new`` the scan stops: the image stays for later.
* **drain**: upload queued frames in capture order (``Uploader``).

Every bad file gets one WARNING line and the stream goes on. If the watch folder cannot be
written (a read-only mount), images stay where they are and the frames sent are remembered for
the run instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_client.client import frame_key
from edge_client.errors import EdgeError, FrameTooLargeError, ImageError, QueueFullError
from edge_client.frame_queue import FrameQueue, unique_path
from edge_client.report import prediction_line
from edge_client.settings import EdgeSettings
from edge_client.uploader import Uploader
from shared.preprocess import IMAGE_SUFFIXES

log = logging.getLogger("spic.edge.watch")


@dataclass
class Watcher:
    folder: Path
    queue: FrameQueue
    encoder: Any  # EdgeEncoder; Any keeps this module free of onnxruntime at import
    done: Path
    failed: Path
    settle_s: float
    give_up_s: float
    now: Any = time.time
    # path -> ((size, mtime_ns), when that signature was first seen), for files whose mtime cannot
    # be trusted (a camera clock ahead of ours): unchanged for settle_s also counts as settled.
    _seen: dict[Path, tuple[tuple[int, int], float]] = field(default_factory=dict)
    _sent: set[Path] = field(default_factory=set)  # only used when images cannot be moved
    read_only: bool = False
    device_id: str = "camera"  # part of each frame's Idempotency-Key

    def scan(self) -> list[Path]:
        """Settled images not yet captured, oldest first."""
        found = []
        try:
            entries = list(self.folder.iterdir())
        except OSError as exc:
            log.warning("cannot list %s: %s", self.folder, exc)
            return []
        for path in entries:
            if path.suffix.lower() not in IMAGE_SUFFIXES or path in self._sent:
                continue
            try:
                st = path.stat()
            except OSError:  # removed since the listing
                continue
            if not path.is_file():
                continue
            now, signature = self.now(), (st.st_size, st.st_mtime_ns)
            seen, since = self._seen.get(path, (None, now))
            if seen != signature:
                since = now
            self._seen[path] = (signature, since)
            # Every write moves the mtime, so a file untouched for settle_s is complete (or its
            # writer stalled: then it fails to decode and is retried until give_up_s). Judged on
            # the first sight, so after a restart a queued frame's image is recognised before
            # its frame can be delivered and forgotten.
            if now - st.st_mtime_ns / 1e9 >= self.settle_s or now - since >= self.settle_s:
                found.append((st.st_mtime_ns, path.name, path))
        return [p for _, _, p in sorted(found)]

    def capture(self, path: Path) -> bool:
        """Encode and queue one image; False when the queue is full and the scan should stop."""
        try:
            mtime = path.stat().st_mtime  # when the camera finished writing it: the capture time
            frame = self.encoder.encode(path)
        except OSError:
            return True  # gone since the scan
        except ImageError as exc:
            self._unreadable(path, exc)
            return True
        key = frame_key(self.device_id, path.name, frame)
        if key not in self.queue:
            try:
                self.queue.put(frame, key=key, source=path.name, taken=mtime)
            except FrameTooLargeError as exc:  # can never fit: set aside, the stream goes on
                self._set_aside(path, str(exc))
                return True
            except QueueFullError:
                return False  # logged by the queue; the image stays in the folder
        self._finish(path)
        return True

    def _unreadable(self, path: Path, exc: EdgeError) -> None:
        try:
            age = self.now() - path.stat().st_mtime_ns / 1e9
        except OSError:
            return  # gone
        if age < self.give_up_s:
            log.warning("%s: %s; retrying at the next scan", path.name, exc)
            return
        self._set_aside(path, str(exc))

    def _set_aside(self, path: Path, why: str) -> None:
        self._seen.pop(path, None)
        try:
            target = unique_path(self.failed, path.name)
            os.replace(path, target)
        except OSError as exc:
            self._sent.add(path)
            log.warning("%s: %s; cannot move it (%s), skipping it", path.name, why, exc)
            return
        log.warning("%s: %s; moved to %s", path.name, why, target)

    def _finish(self, path: Path) -> None:
        self._seen.pop(path, None)
        if not self.read_only:
            try:
                os.replace(path, unique_path(self.done, path.name))
                return
            except OSError as exc:
                self.read_only = True
                log.warning(
                    "cannot move images out of %s (%s): leaving them in place and remembering "
                    "what was sent for this run",
                    self.folder,
                    exc,
                )
        self._sent.add(path)

    def pending_images(self) -> bool:
        return any(
            p.suffix.lower() in IMAGE_SUFFIXES and p not in self._sent and p.is_file()
            for p in self.folder.iterdir()
        )


def run_watch(args: argparse.Namespace, settings: EdgeSettings, encoder: Any, client: Any) -> int:
    folder: Path = args.folder
    if not folder.is_dir():
        raise EdgeError(f"watch folder {folder} does not exist")
    queue = FrameQueue(
        settings.queue_dir or folder / ".spic-queue",
        max_bytes=int(settings.max_queue_mb * (1 << 20)),
        ttl_s=settings.ttl_hours * 3600,
        policy=settings.policy,
    )
    watcher = Watcher(
        folder,
        queue,
        encoder,
        done=settings.done_dir or folder / ".spic-done",
        failed=folder / ".spic-failed",
        settle_s=settings.settle_s,
        give_up_s=settings.give_up_s,
        device_id=settings.device_id,
    )
    uploader = Uploader(
        queue,
        client,
        on_result=lambda item, r: print(prediction_line(item.source, r, args.json), flush=True),
    )
    start, was_down = time.monotonic(), False
    while True:
        images = watcher.scan()
        for path in images:
            if not watcher.capture(path):
                break
        report = uploader.drain()
        if report.cloud_down != was_down:
            state = "DOWN, queueing" if report.cloud_down else "back, catching up"
            print(f"spic-edge: cloud {state}; {len(queue)} frame(s) in queue", file=sys.stderr)
            was_down = report.cloud_down
        if args.verbose or report.cloud_down:
            print(
                f"spic-edge: queue depth {len(queue)} ({queue.total_bytes()} B)",
                file=sys.stderr,
                flush=True,
            )
        # Listing the folder again only when asked to stop once idle.
        idle = args.exit_when_idle and len(queue) == 0 and not watcher.pending_images()
        if idle or (args.max_seconds and time.monotonic() - start > args.max_seconds):
            return 0
        if not images or report.cloud_down:
            time.sleep(settings.interval)
