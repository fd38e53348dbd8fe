"""Stream mode (``spic-edge stream SOURCE``): a fixed camera sends what changed.

Each sampled frame is encoded, quantized and coded by ``shared.stream.StreamEncoder`` as a key,
delta or skip frame of this device's stream, put on the durable queue (``FrameQueue``: on disk
before it counts as captured) and drained to the cloud in order, so every delta reaches the cloud
after the frame it refers to: no frame lost, none doubled (each frame's Idempotency-Key is
derived from its device, stream, sequence number and bytes).

When the cloud does not hold a delta's reference (a 409 ``need-keyframe``: its state was lost,
or a frame before was refused; or a cloud that does not know streams refusing it with
``needs_reference``), the edge re-codes that same frame as a key frame at once, from the symbols
it kept for every frame not yet acknowledged, and sends it in its place; the deltas queued behind
it refer to it and go through. A frame whose symbols are no longer held (the edge restarted) is
set aside like any refused frame, and the next capture is a key frame.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edge_client.client import CloudClient
from edge_client.errors import AuthError, CloudRejectedError, CloudUnavailableError
from edge_client.frame_queue import FrameQueue, QueuedFrame
from shared import bitstream
from shared.errors import BitstreamError
from shared.preprocess import prepare
from shared.stream import StreamEncoder, StreamFrame, pack
from shared.stream_guard import guard_for

log = logging.getLogger("spic.edge.stream")
NEED_KEYFRAME = "urn:spic:problem:need-keyframe"
# A cloud that predates streams refuses a delta as a malformed frame with this reason.
NEEDS_REFERENCE = "urn:spic:problem:bad-frame-needs_reference"
MAX_PENDING = 4096  # symbols kept for unacknowledged frames (12.5 kB each at 32x14x14)


def stream_key(device_id: str, frame: bytes) -> str:
    """Idempotency-Key of a stream frame: device, then the frame's bytes (which carry its stream
    id and sequence number), so a replay after a crash is the same request."""
    return hashlib.sha256(device_id.encode() + b"\0" + frame).hexdigest()[:32]


def needs_key(exc: CloudRejectedError) -> bool:
    return exc.problem.get("type") in (NEED_KEYFRAME, NEEDS_REFERENCE)


@dataclass
class StreamSender:
    encoder: Any  # EdgeEncoder
    client: CloudClient | None
    queue: FrameQueue
    device_id: str = "camera"
    stream_id: int = 0
    key_interval: int = 300
    position_changes: int = 1
    guard: bool = False  # the semantic guard (shared.stream_guard): needs the bundle's classifier
    # Send a skip only when this many frames have passed since the last frame sent (a heartbeat);
    # the others are withheld and the cloud counts them from the next frame's reference. 0: all.
    heartbeat: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    bytes_sent: int = 0
    cpu_ms: list[float] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    # stream_key(frame) -> symbols and image size of each frame not yet acknowledged (keyed by
    # the frame's bytes, not its sequence number: a restarted edge numbers its stream from 0).
    _pending: dict[str, tuple[np.ndarray, tuple[int, int]]] = field(default_factory=dict)
    _since_sent: int = field(default=0, init=False)

    @classmethod
    def from_flags(
        cls,
        encoder: Any,
        client: CloudClient,
        queue: FrameQueue,
        settings: Any,
        args: Any,
        **kw: Any,
    ) -> StreamSender:
        """A sender as ``spic-edge stream`` and ``watch --stream`` set one up: the edge's
        settings and the stream flags (``parser._stream_flags``)."""
        return cls(
            encoder,
            client,
            queue,
            device_id=settings.device_id,
            stream_id=args.stream_id,
            key_interval=args.key_interval,
            position_changes=args.position_changes,
            guard=args.guard,
            **kw,
        )

    def __post_init__(self) -> None:
        self.coder = StreamEncoder(
            self.encoder.codebook,
            self.encoder.qf,
            stream_id=self.stream_id,
            key_interval=self.key_interval,
            position_changes=self.position_changes,
        )
        self._guard = guard_for(self.encoder.core, self.encoder.qf) if self.guard else None
        if self.guard and self._guard is None:
            log.warning("no semantic guard at QF %d (its frames carry a layer)", self.encoder.qf)

    def code(self, image: Image.Image) -> StreamFrame:
        """One captured image -> its stream frame; the edge's CPU time is recorded."""
        t0 = time.process_time()
        x = prepare(image, self.encoder.spec, self.encoder.stride)
        m = self.encoder.manifest
        y = self.encoder.latent(x, m.channels_at(self.encoder.qf) > m.latent.channels)
        symbols = m.quantize_latent(y, self.encoder.qf)
        if self._guard is not None:  # the cheapest symbols that keep the classifier's answer
            symbols = self._guard.choose(y, symbols, self.coder.reference, self.encoder.qf)
        made = self.coder.encode(symbols, image.size)
        self.cpu_ms.append(1e3 * (time.process_time() - t0))
        self.counts[made.kind] += 1
        self._pending[stream_key(self.device_id, made.data)] = (made.symbols, image.size)
        while len(self._pending) > MAX_PENDING:
            del self._pending[next(iter(self._pending))]
        return made

    def capture(self, image: Image.Image, taken: float | None = None) -> QueuedFrame | None:
        """Code and queue the next frame; None when it is a skip withheld (``heartbeat``)."""
        made = self.code(image)
        self._since_sent += 1
        if made.kind == "skip" and self._since_sent < self.heartbeat and self.coder.withhold():
            self.counts["withheld"] += 1
            return None
        self._since_sent = 0
        key = stream_key(self.device_id, made.data)
        item = self.queue.put(
            made.data,
            key,
            source=f"stream {self.stream_id} seq {made.seq} {made.kind}",
            taken=taken,
        )
        return item

    def promote(self, data: bytes) -> bytes | None:
        """The key frame of a queued delta or skip, from the symbols kept for it; None when they
        are not held."""
        frame = bitstream.unpack(data)
        kept = self._pending.get(stream_key(self.device_id, data))
        if frame.stream_id != self.stream_id or kept is None:
            return None
        symbols, size = kept
        payload = self.coder.codec.encode(symbols)
        qf = self.coder.qf
        return pack(
            self.encoder.codebook, symbols, payload, qf, size, "key", frame.stream_id, frame.seq
        )

    def send(self, item: QueuedFrame, data: bytes) -> dict[str, Any]:
        """Upload one queued frame, re-coded as a key frame if the cloud lacks its reference."""
        assert self.client is not None
        taken = item.taken if item.taken is not None else item.captured
        self.bytes_sent += len(data)
        try:
            return self.client.classify(data, item.key, captured_at=taken)
        except CloudRejectedError as exc:
            if isinstance(exc, AuthError) or not needs_key(exc):
                raise
            key = self.promote(data)
            if key is None:
                self.coder.request_key()
                raise
            log.info("cloud lacks the reference of %s: sent as a key frame", item.source)
            self.counts["promoted"] += 1
            self.bytes_sent += len(key)
            return self.client.classify(key, stream_key(self.device_id, key), captured_at=taken)

    def drain(self, report: Any = None) -> bool:
        """Send every queued frame in order; False when the cloud is unavailable. ``report``
        (an ``uploader.DrainReport``) counts what was sent and refused."""
        for item in self.queue:
            try:
                data = item.read()
                result = self.send(item, data)
            except CloudUnavailableError as exc:
                log.warning("cloud unavailable, %d frame(s) kept: %s", len(self.queue), exc)
                return False
            except CloudRejectedError as exc:
                if isinstance(exc, AuthError):
                    raise
                self.queue.set_aside(item, self.queue.root / "rejected")
                log.warning("REJECTED frame %s (%s): %s", item.key, item.source, exc)
                self.counts["rejected"] += 1
                if report is not None:
                    report.rejected += 1
                continue
            except BitstreamError as exc:  # not a frame of ours: never sendable
                self.queue.set_aside(item, self.queue.root / "rejected")
                log.warning("REJECTED queue file %s: %s", item.source, exc)
                continue
            self.queue.ack(item)
            self._pending.pop(stream_key(self.device_id, data), None)
            self.results.append({"source": item.source, **result})
            if report is not None:
                report.sent += 1
        return True

    def summary(self) -> dict[str, Any]:
        c = self.counts
        frames = c["key"] + c["delta"] + c["skip"]
        cpu = np.asarray(self.cpu_ms) if self.cpu_ms else np.zeros(1)
        return {
            "frames": frames,
            "key": c["key"],
            "delta": c["delta"],
            "skip": c["skip"],
            "promoted": c["promoted"],
            "rejected": c["rejected"],
            "sent": len(self.results),
            "queued": len(self.queue),
            "bytes_sent": self.bytes_sent,
            "bytes_per_frame": self.bytes_sent / frames if frames else 0.0,
            "edge_cpu_ms_per_frame": float(cpu.mean()),
            "guard_runs": 0 if self._guard is None else self._guard.runs,
            "withheld": c["withheld"],
            "qf": self.encoder.qf,
            "stream_id": self.stream_id,
        }


class StreamImages:
    """``spic-edge watch --stream``: the watcher's encoder, each image coded as the next frame of
    the stream (the folder's images in capture order are the stream's frames)."""

    def __init__(self, sender: StreamSender):
        self.sender = sender

    def encode(self, path: Any) -> bytes:
        return self.sender.code(self.sender.encoder.load(path)).data


class StreamUploader:
    """``spic-edge watch --stream``: the watcher's uploader, draining through ``StreamSender``
    (a delta whose reference the cloud lacks is re-sent as a key frame)."""

    def __init__(self, sender: StreamSender, on_result: Any):
        self.sender, self.on_result = sender, on_result

    def drain(self) -> Any:
        from edge_client.uploader import DrainReport

        report, before = DrainReport(), len(self.sender.results)
        report.cloud_down = not self.sender.drain(report)
        for result in self.sender.results[before:]:
            self.on_result(result.pop("source"), result)
        return report


def run_stream(args: Any, settings: Any, encoder: Any, client: CloudClient) -> int:
    """``spic-edge stream``: sample ``args.source``, queue and send; the summary last with --json."""
    from edge_client.report import prediction_line
    from edge_client.video import frames

    if encoder.codec_name != "rans":
        log.warning(
            "stream frames are coded with rANS (a delta needs it), not %s", encoder.codec_name
        )
    queue = FrameQueue(
        settings.queue_dir or Path(".spic-stream-queue"),
        max_bytes=int(settings.max_queue_mb * (1 << 20)),
        ttl_s=settings.ttl_hours * 3600,
        policy=settings.policy,
    )
    sender = StreamSender.from_flags(
        encoder, client, queue, settings, args, heartbeat=round(args.heartbeat * args.fps)
    )
    retry_at, shown = 0.0, 0

    def show() -> None:
        nonlocal shown
        for result in sender.results[shown:]:
            print(prediction_line(result.pop("source"), result, args.json), flush=True)
        shown = len(sender.results)

    for image in frames(args.source, args.fps, args.max_seconds):
        sender.capture(image, taken=time.time())
        if time.monotonic() >= retry_at and not sender.drain():
            retry_at = time.monotonic() + settings.interval  # the cloud is down: capture on
        show()
    sender.drain()
    show()
    summary = sender.summary()
    print(json.dumps(summary) if args.json else f"spic-edge stream: {summary}", flush=True)
    return 0 if not summary["queued"] and not summary["rejected"] else 1
