"""Drains the frame queue to the cloud, oldest first, acknowledging each frame only once the cloud
has confirmed it.

* ``CloudUnavailableError`` (after the client's own retries): stop, keep everything, try later.
* ``CloudRejectedError`` for one frame (a 4xx other than auth): that frame can never succeed;
  it is moved to ``rejected/`` beside the queue, with a WARNING, so it neither blocks the queue
  nor disappears.
* ``AuthError``: raised to the caller; a wrong key is a configuration error, not a frame's fault.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge_client.client import CloudClient
from edge_client.errors import AuthError, CloudRejectedError, CloudUnavailableError
from edge_client.frame_queue import FrameQueue, QueuedFrame

log = logging.getLogger("spic.edge.uploader")


@dataclass
class DrainReport:
    sent: int = 0
    rejected: int = 0
    cloud_down: bool = False


class Uploader:
    def __init__(
        self,
        queue: FrameQueue,
        client: CloudClient,
        on_result: Callable[[QueuedFrame, dict[str, Any]], None] | None = None,
    ):
        self.queue, self.client, self.on_result = queue, client, on_result
        self.rejected_dir = queue.root / "rejected"

    def drain(self, max_frames: int | None = None) -> DrainReport:
        report = DrainReport()
        for item in self.queue:
            if max_frames is not None and report.sent + report.rejected >= max_frames:
                break
            try:
                taken = item.taken if item.taken is not None else item.captured
                result = self.client.classify(item.read(), item.key, captured_at=taken)
            except AuthError:
                raise
            except CloudUnavailableError as exc:
                log.warning(
                    "cloud unavailable, %d frame(s) kept in the queue: %s", len(self.queue), exc
                )
                report.cloud_down = True
                break
            except CloudRejectedError as exc:
                self.queue.set_aside(item, self.rejected_dir)
                log.warning(
                    "REJECTED frame %s (%s) moved to %s: %s",
                    item.key,
                    item.source,
                    self.rejected_dir,
                    exc,
                )
                report.rejected += 1
                continue
            self.queue.ack(item)
            report.sent += 1
            if self.on_result:
                self.on_result(item, result)
        return report
