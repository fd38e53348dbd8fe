"""The edge's half of refinement on demand: the cloud asks for a better picture of a frame it
stored, the camera answers from its ring of originals (``spic-edge watch``; ``--no-refine`` off).

Requests arrive two ways: piggybacked on classify answers (the ``SPIC-Refine-Requests`` header,
``CloudClient.on_refine``) and through a long-poll of ``GET /v1/devices/{id}/requests?wait=``
held by a thread of its own, so an idle camera answers within seconds. Either way they land in an
inbox; the watch loop serves them between its rounds (``serve``), in its own thread, so the
encoder is never used by two threads at once.

Serving one: the frame index (``FrameIndex``) names the original; it is rendered as asked
(``render``: the frame again at a higher QF, a whole-image frame, or a JPEG/AVIF) and posted to
the request's ``answer`` URL with ``Idempotency-Key: refine-{request_id}``, or, with the original
gone or unrenderable, to its ``gone`` URL with the reason. An answer that could not be delivered
(the cloud away) is left: the cloud hands the request out again after its redelivery time.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from edge_client.client import CloudClient, retry_after_seconds
from edge_client.errors import EdgeError
from edge_client.frame_index import FrameIndex
from shared.bitstream import padded_size
from shared.preprocess import prepare

log = logging.getLogger("spic.edge.refine")
SEEN = 512  # request ids answered this run, remembered so a redelivered one is not redone
ATTEMPTS = 3  # posts of one answer before it is left for the cloud to hand out again
INBOX = 64  # requests waiting to be served; beyond, the newest are left for redelivery
MEDIA = {"spic": "application/octet-stream", "jpeg": "image/jpeg", "avif": "image/avif"}


class RenderError(EdgeError):
    """The picture asked for cannot be made from this original."""


def render(encoder: Any, path: Path, kind: str, quality: int, fmt: str) -> tuple[bytes, str]:
    """The picture a request asks for, made from the original at ``path``: (bytes, media type).

    * layer: the frame again as the camera made it (its crop or whole image) at QF ``quality``,
      the enhancement layer's channels included from the bundle's layer QF up;
    * whole: a whole-image frame at QF ``quality``;
    * original: the original as a JPEG or AVIF at ``quality``."""
    im = encoder.load(path)
    if kind == "original":
        buf = io.BytesIO()
        try:
            im.save(buf, format=fmt.upper(), quality=int(quality))
        except (KeyError, OSError, ValueError) as exc:  # no AVIF in this Pillow, say
            raise RenderError(f"cannot write {fmt}: {exc}") from exc
        return buf.getvalue(), MEDIA[fmt]
    manifest = encoder.manifest
    if quality not in manifest.qfs:
        raise RenderError(f"QF {quality} is not one of this bundle's: {manifest.qfs}")
    spec = dict(encoder.spec)
    if kind == "whole":
        spec["mode"] = "whole"
        w, h = padded_size(im.width, im.height, encoder.stride)
        lim = encoder.limits
        if lim is not None and (w * h > lim.max_input_pixels or max(w, h) > lim.max_input_side):
            raise RenderError(f"whole image {im.size[0]}x{im.size[1]} is over the cloud's limits")
    try:
        x = prepare(im, spec, encoder.stride)
    except ValueError as exc:
        raise RenderError(str(exc)) from exc
    y = encoder.latent(x, manifest.channels_at(quality) > manifest.latent.channels)
    return encoder.encode_latent(y, im.size, qf=quality), MEDIA["spic"]


class RefineServer:
    def __init__(
        self,
        client: CloudClient,
        encoder: Any,
        index: FrameIndex,
        device_id: str,
        wait_s: float = 25.0,
    ):
        self.client, self.encoder, self.index = client, encoder, index
        self.device_id, self.wait_s = device_id, wait_s
        self.inbox: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.lock = threading.Lock()
        self.arrived = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._poll_loop, name="spic-refine", daemon=True)
        self.answered = 0

    # --- requests in ------------------------------------------------------------------------

    def offer(self, requests: Any) -> None:
        """Take requests in (from either way), once each; anything malformed is skipped."""
        if not isinstance(requests, list):
            return
        with self.lock:
            for q in requests:
                if not isinstance(q, dict) or not isinstance(q.get("request_id"), str):
                    continue
                rid = q["request_id"]
                if rid in self.seen or rid in self.inbox or len(self.inbox) >= INBOX:
                    continue
                self.inbox[rid] = q
        if self.inbox:
            self.arrived.set()

    def offer_header(self, text: str) -> None:
        try:
            self.offer(json.loads(text))
        except ValueError:
            log.warning("unreadable refinement header from the cloud: %.100s", text)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()

    def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``, less when a request arrives (the watch loop's idle wait)."""
        self.arrived.wait(seconds)

    def _poll_loop(self) -> None:
        url = f"{self.client.base_url}/v1/devices/{self.device_id}/requests"
        backoff, warned = 1.0, False
        with httpx.Client(verify=self.client.verify) as http:
            while not self.stopping.is_set():
                started, pause = time.monotonic(), 0.0
                try:
                    resp = http.get(
                        url,
                        params={"wait": self.wait_s},
                        headers=self.client.headers,
                        timeout=self.wait_s + self.client.timeout,
                    )
                except httpx.TransportError:
                    pause, backoff = backoff, min(backoff * 2, 30.0)
                else:
                    if resp.status_code == 200:
                        backoff, warned = 1.0, False
                        self.offer(_json(resp).get("requests"))
                    elif resp.status_code == 429:
                        pause = retry_after_seconds(resp.headers.get("Retry-After")) or 1.0
                    else:  # a key refused, an older cloud without the route: say so once
                        if not warned:
                            # A cloud without the back-channel is no fault of the camera's.
                            older = resp.status_code in (404, 405, 501)
                            log.log(
                                logging.INFO if older else logging.WARNING,
                                "refinement requests unavailable (HTTP %d): %.200s",
                                resp.status_code,
                                resp.text,
                            )
                            warned = True
                        pause, backoff = backoff, min(backoff * 2, 60.0)
                # An answer that came back at once (the cloud holds no long-poll) must not spin.
                pause = max(pause, 1.0 - (time.monotonic() - started))
                self.stopping.wait(pause)

    # --- requests served --------------------------------------------------------------------

    def serve(self) -> int:
        """Serve every request in the inbox (the watch loop's thread); how many were closed."""
        done = 0
        while True:
            with self.lock:
                if not self.inbox:
                    self.arrived.clear()
                    return done
                rid, q = self.inbox.popitem(last=False)
            if self._serve_one(rid, q):
                done += 1
                self.seen[rid] = None
                while len(self.seen) > SEEN:
                    self.seen.popitem(last=False)

    def _serve_one(self, rid: str, q: dict[str, Any]) -> bool:
        base = f"/v1/refinements/{rid}"
        try:
            frame_id = int(q["frame_id"])
            kind, quality = str(q.get("kind", "layer")), int(q.get("quality", 128))
            fmt = str(q.get("format", "spic" if kind != "original" else "jpeg"))
        except (KeyError, TypeError, ValueError):
            log.warning("malformed refinement request %s: %.200s", rid, q)
            return True
        path = self.index.original(frame_id)
        if path is None:
            why = f"frame {frame_id}: the edge no longer holds its original"
            return self._post(base + "/gone", json.dumps({"detail": why}).encode(), None, rid)
        try:
            data, media = render(self.encoder, path, kind, quality, fmt)
        except (EdgeError, OSError, ValueError, Image.DecompressionBombError) as exc:
            why = f"frame {frame_id}: cannot make the {kind} picture: {exc}"[:500]
            log.warning("refinement %s: %s", rid, why)
            return self._post(base + "/gone", json.dumps({"detail": why}).encode(), None, rid)
        ok = self._post(base + "/answer", data, media, rid)
        if ok:
            self.answered += 1
            log.info(
                "refinement %s: frame %d, %s QF/quality %d, %d B",
                rid,
                frame_id,
                kind,
                quality,
                len(data),
            )
        return ok

    def _post(self, path: str, body: bytes, media: str | None, rid: str) -> bool:
        """Post an answer or a gone; True once the cloud has it or will never take it."""
        headers = {
            **self.client.headers,
            "Content-Type": media or "application/json",
            "Idempotency-Key": f"refine-{rid}",
        }
        for attempt in range(ATTEMPTS):
            try:
                resp = self.client.http.post(
                    self.client.base_url + path,
                    content=body,
                    headers=headers,
                    timeout=self.client.timeout,
                )
            except httpx.TransportError as exc:
                log.info("refinement %s: %s; attempt %d", rid, exc, attempt + 1)
            else:
                if resp.status_code < 300:
                    return True
                if resp.status_code < 500 and resp.status_code not in (408, 429):
                    # Expired meanwhile (410), refused (4xx): nothing a retry would change.
                    log.warning(
                        "refinement %s refused (HTTP %d): %.200s", rid, resp.status_code, resp.text
                    )
                    return True
            self.stopping.wait(min(2.0**attempt, 5.0))
        return False  # left: the cloud hands the request out again


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
