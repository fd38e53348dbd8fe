"""Refinement on demand (issue 35): the cloud asks a camera for a better picture of a stored frame.

* **Ask** (``ask``): an operator or admin names a frame and a kind (``layer``: the frame again at
  a higher QF, its enhancement layer included; ``whole``: a whole-image frame; ``original``: a
  JPEG or AVIF of the camera's original at a quality). The request waits for the frame's camera
  with a TTL. Rules (``SPIC_CLOUD_REFINE_RULES``) ask by themselves after a classification.
* **Deliver**: piggybacked on the camera's next upload answer (the ``SPIC-Refine-Requests``
  header of ``POST /v1/classify``, fresh on every answer, replays included), or through the
  camera's long-poll (``poll``): held up to ``max_wait_s``, one per camera per process.
* **Answer** (``answer``, ``gone``): the camera uploads the picture, which is checked (a frame the
  service decodes, an image within ``max_pixels``) and stored beside the frame;
  ``best_png`` renders the best picture held.
* Requests past their TTL are marked ``expired`` by ``refine_loop``, in batches, off the request
  path; it also keeps the stored pictures within ``keep_days`` and ``max_mb``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from typing import Any

from PIL import Image
from starlette.responses import Response

from cloud_service.problems import Problem
from cloud_service.refine_settings import RefineSettings
from cloud_service.refinements import OPEN as OPEN  # the statuses still waiting for a camera
from cloud_service.refinements import Kind, RefinementStore, Refiner, TooManyPending
from cloud_service.refinements import Refinement as Refinement
from cloud_service.services.inference import parse_frame, reconstruct_png, run_heavy
from cloud_service.state import ServiceState
from cloud_service.timeutil import now_us

log = logging.getLogger("spic.cloud.refine")
HEADER = "SPIC-Refine-Requests"  # on classify answers: the camera's requests, as a JSON array
MEDIA_TYPES = {"spic": "application/octet-stream", "jpeg": "image/jpeg", "avif": "image/avif"}
DEFAULT_QF, DEFAULT_JPEG_QUALITY = 128, 90
PNG_CACHE = 16  # rendered best pictures kept, by request id
PRUNE_EVERY = 30  # expiry passes between two prunes of old requests and pictures


def refiner(state: ServiceState) -> Refiner:
    if state.refinements is None:
        raise Problem(503, "not-ready", "refinement store not open", "retry shortly")
    return state.refinements


def _choose(state: ServiceState, model_id: str, kind: Kind, quality: int | None) -> int:
    """The quality asked for, checked: a QF of the frame's bundle, or a JPEG/AVIF quality."""
    if kind == "original":
        quality = DEFAULT_JPEG_QUALITY if quality is None else quality
        if not 1 <= quality <= 100:
            raise Problem(422, "bad-quality", "bad quality", "an original's quality is 1 to 100")
        return quality
    runtime = state.runtime_for(model_id)
    if runtime is None:
        raise Problem(
            409,
            "unknown-model",
            "frame made by a model this service does not serve",
            f"frame model id {model_id}: a {kind} frame could not be decoded; ask for the original",
        )
    qfs = runtime.manifest.qfs
    if quality is None:
        quality = DEFAULT_QF if DEFAULT_QF in qfs else max(qfs)
    if quality not in qfs:
        raise Problem(
            422, "bad-quality", "bad quality", f"a {kind} frame's quality is a QF of {qfs}"
        )
    return quality


async def ask(
    state: ServiceState, frame_id: int, kind: Kind, quality: int | None, fmt: str | None
) -> tuple[Refinement, bool]:
    """Ask the camera of a stored frame for a better picture; (the request, whether new)."""
    r = refiner(state)
    if state.results is None:
        raise Problem(503, "not-ready", "results store not open", "retry shortly")
    record = await asyncio.to_thread(state.results.get, frame_id)
    if record is None:
        raise Problem(404, "frame-not-found", "no such frame", f"frame {frame_id} is not stored")
    if kind == "original":
        fmt = fmt or "jpeg"
    elif fmt not in (None, "spic"):
        raise Problem(422, "bad-format", "bad format", "format is for kind original: jpeg, avif")
    quality = _choose(state, record.prediction.model_id, kind, quality)
    s = r.settings
    try:
        request, new = await asyncio.to_thread(
            r.store.create,
            frame_id,
            record.device,
            kind,
            quality,
            fmt or "spic",
            now_us(),
            int(s.ttl_s * 1e6),
            s.max_pending,
        )
    except TooManyPending:
        raise Problem(
            429,
            "too-many-refinements",
            "too many open refinement requests",
            f"device {record.device} has {s.max_pending} open requests; retry when some are done",
            headers={"Retry-After": str(int(s.redeliver_s))},
        ) from None
    if new:
        r.wake(record.device)
    return request, new


async def get(state: ServiceState, request_id: str) -> Refinement | None:
    return await asyncio.to_thread(refiner(state).store.get, request_id)


async def totals(state: ServiceState) -> tuple[dict[str, int], int]:
    """Requests per status, and the bytes of the pictures stored (apart from frame bytes)."""
    return await asyncio.to_thread(refiner(state).store.totals)


async def take(state: ServiceState, device: str) -> list[Refinement]:
    r = refiner(state)
    s = r.settings
    return await asyncio.to_thread(
        r.store.take, device, now_us(), int(s.redeliver_s * 1e6), s.batch
    )


async def poll(
    state: ServiceState, device: str, wait: float, disconnected: Any
) -> list[Refinement]:
    """The device's requests, waiting up to ``wait`` seconds (capped) for one to be made; 429
    while another long-poll of the device is held here."""
    r = refiner(state)
    wait = min(wait, r.settings.max_wait_s)
    if wait <= 0:
        return await take(state, device)
    if r.waiting[device] >= 1:
        raise Problem(
            429,
            "poll-in-progress",
            "this device already has a long-poll open",
            "one waiting poll per device; the open one gets the requests",
            headers={"Retry-After": str(max(1, int(wait)))},
        )
    r.waiting[device] += 1
    event = r.wakeups.setdefault(device, asyncio.Event())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    try:
        while True:
            event.clear()  # before the look: a request made after it sets the event again
            if await disconnected():  # a camera gone away must not be handed requests
                return []
            found = await take(state, device)
            left = deadline - loop.time()
            if found or left <= 0:
                return found
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(left, r.settings.poll_s))
    finally:
        r.waiting[device] -= 1
        if r.waiting[device] <= 0:
            del r.waiting[device]
            r.wakeups.pop(device, None)


def _check_image(data: bytes, fmt: str, max_pixels: int) -> None:
    """A JPEG or AVIF of at most ``max_pixels``, decoded whole once (a truncated file fails
    here, not when it is shown). Runs in the heavy lane."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if (im.format or "").lower() != fmt:
                raise Problem(422, "bad-picture", "not the format asked", f"a {im.format} image")
            if im.width * im.height > max_pixels:
                raise Problem(
                    422, "picture-too-large", "picture too large", f"over {max_pixels} pixels"
                )
            im.load()
    except Problem:
        raise
    except Exception as exc:  # Pillow raises many kinds for a bad file
        raise Problem(422, "bad-picture", "unreadable picture", str(exc)[:200]) from None


async def answer(state: ServiceState, request: Refinement, media_type: str, body: bytes) -> bool:
    """Store a camera's picture for ``request``; False when the request was already closed."""
    r = refiner(state)
    want = MEDIA_TYPES[request.format]
    if media_type != want:
        raise Problem(
            415, "unsupported-media-type", "unsupported media type", f"send {want} for this request"
        )
    if request.format == "spic":
        _, frame = parse_frame(state, body)  # 400/409/413/422 for a frame not served
        if frame.qf != request.quality:
            raise Problem(
                422, "bad-picture", "not the QF asked", f"QF {frame.qf}, asked {request.quality}"
            )
    else:
        await run_heavy(state, _check_image, body, request.format, r.settings.max_pixels)
    done = await asyncio.to_thread(
        r.store.finish, request.id, "done", now_us(), None, media_type, body
    )
    if done:
        log.info("refinement %s of frame %s: %d B", request.id, request.frame_id, len(body))
    return done


async def gone(state: ServiceState, request: Refinement, detail: str) -> bool:
    r = refiner(state)
    return await asyncio.to_thread(r.store.finish, request.id, "gone", now_us(), detail)


def _to_png(data: bytes) -> bytes:
    buf = io.BytesIO()
    with Image.open(io.BytesIO(data)) as im:
        im.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


async def best_png(state: ServiceState, frame_id: int) -> tuple[bytes, Refinement] | None:
    """The best picture the cameras sent for a frame, as PNG; None when none is held."""
    r = refiner(state)
    found = await asyncio.to_thread(r.store.best, frame_id)
    if found is None:
        return None
    request, data = found
    png = r.pngs.get(request.id)
    if png is None:
        if request.format == "spic":
            runtime, frame = parse_frame(state, data)  # 409 once its bundle is no longer served
            png = await run_heavy(state, reconstruct_png, runtime, frame)
        else:
            png = await run_heavy(state, _to_png, data)
        r.pngs[request.id] = png
        while len(r.pngs) > PNG_CACHE:
            r.pngs.popitem(last=False)
    return png, request


def header_value(requests: list[Refinement]) -> str:
    """The piggybacked requests as compact JSON: ASCII only (ids are hex, kinds fixed)."""
    return json.dumps(
        [
            {
                "request_id": q.id,
                "frame_id": q.frame_id,
                "kind": q.kind,
                "quality": q.quality,
                "format": q.format,
            }
            for q in requests
        ],
        separators=(",", ":"),
    )


async def after_classify(state: ServiceState, device: str, response: Any) -> None:
    """On a classify answer: apply the rules to it, then piggyback the device's requests. Never
    fails the upload: a refinement store that is down only leaves the header off."""
    if state.refinements is None or response.status_code != 200:
        return
    r = state.refinements
    try:
        if r.rules:
            answer = json.loads(bytes(response.body))
            frame_id = answer.get("frame_id")
            if isinstance(frame_id, int) and any(rule.matches(answer) for rule in r.rules):
                kind: Kind = r.settings.rules_kind  # type: ignore[assignment]
                await ask(state, frame_id, kind, None, None)
        found = await take(state, device)
    except Exception as exc:  # noqa: BLE001 - the frame was answered; requests wait for a poll
        log.warning("refinement requests not piggybacked for %s: %s", device, exc)
        return
    if found:
        response.headers[HEADER] = header_value(found)


async def _prune(store: RefinementStore, s: RefineSettings) -> None:
    if s.keep_days:
        cutoff = now_us() - int(s.keep_days * 86400e6)
        while await asyncio.to_thread(store.prune_batch, cutoff, s.expire_batch) >= s.expire_batch:
            await asyncio.sleep(0)
    if s.max_mb:
        _, size = await asyncio.to_thread(store.totals)
        excess = size - int(s.max_mb * (1 << 20))
        while excess > 0:
            oldest = await asyncio.to_thread(store.oldest_pictures, s.expire_batch)
            if not oldest:
                break
            drop = []
            for request_id, n in oldest:
                if excess <= 0:
                    break
                drop.append(request_id)
                excess -= n
            await asyncio.to_thread(store.delete, drop)
            log.warning("dropped %d oldest refinement picture(s): over %g MB", len(drop), s.max_mb)


async def refine_loop(state: ServiceState) -> None:
    """Expire requests past their TTL, a batch at a time; now and then prune old ones."""
    passes = 0
    while True:
        r = state.refinements
        if r is not None:
            s = r.settings
            try:
                while await asyncio.to_thread(r.store.expire_batch, now_us(), s.expire_batch) >= (
                    s.expire_batch
                ):
                    await asyncio.sleep(0)  # a full batch: more may wait, but let requests in
                if passes % PRUNE_EVERY == 0:
                    await _prune(r.store, s)
            except Exception:  # a database hiccup must not end expiry for good
                log.exception("refinement expiry pass failed; trying again later")
            passes += 1
            await asyncio.sleep(s.interval_s)
        else:
            await asyncio.sleep(1)


async def best_response(state: ServiceState, frame_id: int, own_png: bytes) -> Response:
    """``?best=1``: the best refinement as PNG, else the frame's own reconstruction;
    ``SPIC-Picture`` says which (``frame``, or ``refinement <kind> <request id>``)."""
    found = await best_png(state, frame_id)
    if found is None:
        return Response(own_png, media_type="image/png", headers={"SPIC-Picture": "frame"})
    png, request = found
    which = f"refinement {request.kind} {request.id}"
    return Response(png, media_type="image/png", headers={"SPIC-Picture": which})
