"""Camera mode (``spic-edge watch``): one loop of scan, capture, drain.

* **scan**: images in the folder, oldest first, that have *settled* (not modified for
  ``settle_s``), so a file the camera is still writing is left for a later scan.
* **capture**: encode, then put the frame on the disk queue (fsynced) and move the image into the
  ring of originals (``OriginalsRing``: ``--keep-hours``, ``--keep-mb``). A file that cannot be
  read is retried at later scans until it has been unchanged for ``give_up_s``, then moved to
  ``.spic-failed`` (a half-written JPEG finishes; a corrupt one does not). One that never will
  be read as it is (a decompression bomb, a whole image over the cloud's limits) and a frame
  larger than the whole queue go there at once. When the queue is full under ``reject_new``, or
  its disk is (any ``OSError`` writing a frame), capture pauses: the image stays for later.
* **drain**: upload queued frames in capture order (``Uploader``). It runs in every round, also
  while capture is paused, so an edge restarted on a full disk sends what it holds.

A round that moved nothing forward (every image unreadable, the queue or its disk full, the cloud
down) is followed by a sleep of ``--interval``, so a bad file costs one retry per interval, not a
spinning core. Every bad file gets one WARNING line when first seen and one when set aside; its
retries in between are logged at INFO. If the watch folder cannot be written (a read-only mount),
images stay where they are and the frames sent are remembered for the run instead.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_client.client import frame_key
from edge_client.errors import (
    EdgeError,
    FrameTooLargeError,
    ImageError,
    ImageRefusedError,
    QueueFullError,
)
from edge_client.frame_index import FrameIndex
from edge_client.frame_queue import FrameQueue, unique_path
from edge_client.limits import learn_limits
from edge_client.originals import OriginalsRing
from edge_client.refine import RefineServer
from edge_client.report import prediction_line
from edge_client.settings import EdgeSettings
from edge_client.uploader import Uploader
from shared.preprocess import IMAGE_SUFFIXES

log = logging.getLogger("spic.edge.watch")
INDEX_NAME = ".spic-index.jsonl"  # in the watch folder: which original each stored frame was


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
    _warned: set[Path] = field(default_factory=set)  # unreadable files already reported
    read_only: bool = False
    device_id: str = "camera"  # part of each frame's Idempotency-Key
    keep_bytes: int = 512 << 20  # the ring of originals in ``done`` (--keep-mb, --keep-hours)
    keep_s: float = 24 * 3600
    paused: str | None = None  # why capture is paused (the queue's disk), None while it runs
    moved: int = 0  # images that left the folder (captured or set aside): the loop's progress

    index: FrameIndex | None = None  # frame id -> original in the ring, for refinements

    def __post_init__(self) -> None:
        self.originals = OriginalsRing(self.done, self.keep_bytes, self.keep_s)
        if self.index is not None:
            self.originals.on_drop = self.index.forget

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

    def capture_all(self) -> int:
        """Scan and capture what settled, oldest first, until the queue or its disk is full;
        returns how many images left the folder (captured or set aside)."""
        before = self.moved
        for path in self.scan():
            if not self.capture(path):
                break
        return self.moved - before

    def capture(self, path: Path) -> bool:
        """Encode and queue one image; False when the queue or its disk is full and the scan
        should stop."""
        try:
            mtime = path.stat().st_mtime  # when the camera finished writing it: the capture time
            frame = self.encoder.encode(path)
        except OSError:
            return True  # gone since the scan
        except ImageRefusedError as exc:  # never readable as it is: no point waiting
            self._set_aside(path, str(exc))
            return True
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
            except OSError as exc:
                self._pause(path, exc)
                return False
            if self.paused is not None:
                self.paused = None
                log.warning("capture resumed: %s", self._space())
        self._finish(path, key)
        return True

    def _space(self) -> str:
        try:
            du = shutil.disk_usage(self.queue.root)
        except OSError:
            return f"free space on {self.queue.root} unknown"
        return f"{du.free} B free of {du.total} B on {self.queue.root}"

    def _pause(self, path: Path, exc: OSError) -> None:
        """The queue cannot be written (its disk is full): capture waits, draining goes on."""
        why = f"{exc.strerror or exc} writing {exc.filename or self.queue.root}"
        cause = exc.strerror or str(exc)  # not the file: each attempt writes another one
        if self.paused != cause:  # once per cause, not once per round
            self.paused = cause
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            log.warning(
                "capture paused at %s: %s (%s); %s frame(s) still queued and draining, %s",
                path.name,
                why,
                self._space(),
                len(self.queue),
                "capture resumes when space returns" if full else "retrying every interval",
            )

    def _unreadable(self, path: Path, exc: EdgeError) -> None:
        try:
            age = self.now() - path.stat().st_mtime_ns / 1e9
        except OSError:
            return  # gone
        if age >= self.give_up_s:
            self._set_aside(path, str(exc))
            return
        if path in self._warned:
            log.info("%s: still unreadable (%s)", path.name, exc)
        else:
            self._warned.add(path)
            log.warning(
                "%s: %s; retrying until it has been unchanged for %g s",
                path.name,
                exc,
                self.give_up_s,
            )

    def _set_aside(self, path: Path, why: str) -> None:
        self._seen.pop(path, None)
        self._warned.discard(path)
        self.moved += 1
        try:
            target = unique_path(self.failed, path.name)
            os.replace(path, target)
        except OSError as exc:
            self._sent.add(path)
            log.warning("%s: %s; cannot move it (%s), skipping it", path.name, why, exc)
            return
        log.warning("%s: %s; moved to %s", path.name, why, target)

    def _finish(self, path: Path, key: str | None = None) -> None:
        self._seen.pop(path, None)
        self._warned.discard(path)
        self.moved += 1
        if not self.read_only:
            try:
                name = self.originals.keep(path)
                if name is not None and key is not None and self.index is not None:
                    self.index.captured(key, name)
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
    done = settings.done_dir or folder / ".spic-done"
    watcher = Watcher(
        folder,
        queue,
        encoder,
        done=done,
        failed=folder / ".spic-failed",
        settle_s=settings.settle_s,
        give_up_s=settings.give_up_s,
        device_id=settings.device_id,
        keep_bytes=int(settings.keep_mb * (1 << 20)),
        keep_s=settings.keep_hours * 3600,
        index=FrameIndex(folder / INDEX_NAME, done) if settings.refine else None,
    )

    def on_result(item: Any, result: dict[str, Any]) -> None:
        if watcher.index is not None:
            watcher.index.uploaded(item.key, result.get("frame_id"))
        print(prediction_line(item.source, result, args.json), flush=True)

    uploader: Any = Uploader(queue, client, on_result=on_result)
    refiner = None
    if watcher.index is not None:  # the cloud may ask for better pictures of what was sent
        refiner = RefineServer(client, encoder, watcher.index, settings.device_id)
        client.on_refine = refiner.offer_header
        refiner.start()
    if getattr(args, "stream", False):  # the folder's images as one stream's frames
        from edge_client.stream import StreamImages, StreamSender, StreamUploader

        sender = StreamSender.from_flags(encoder, client, queue, settings, args)
        watcher.encoder = StreamImages(sender)
        uploader = StreamUploader(
            sender, lambda src, r: print(prediction_line(src, r, args.json), flush=True)
        )
    start, was_down = time.monotonic(), False
    limits_known = learn_limits(encoder, client)
    while True:
        # Capture first: after a restart, an image whose frame is already queued is recognised
        # (by its key) before that frame is delivered and forgotten. A full disk only pauses it.
        captured = watcher.capture_all()
        watcher.originals.trim()  # the age bound holds while no image arrives, too
        report = uploader.drain()
        served = refiner.serve() if refiner is not None else 0
        if report.sent and not limits_known:  # the cloud was away at start: ask it now
            limits_known = learn_limits(encoder, client)
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
            if refiner is not None:
                refiner.stop()
            return 0
        if report.cloud_down or not (captured or report.sent or served):  # wait, not spin
            if refiner is not None:
                refiner.wait(settings.interval)  # a refinement request cuts the wait short
            else:
                time.sleep(settings.interval)
