"""Admission control, as a pure ASGI middleware: refuse what cannot be served before it costs.

Classify: past saturation, a refused request must cost almost nothing, or refusing eats the cores
that serving needs (``bench/cloud_load.py``: throughput at 256 clients fell to 0.57 of its peak
while each 503 went through routing, dependencies, the body and, for frames that then waited too
long, an entropy decode). Here classify requests are counted from admission until they are
answered: with ``admit_batches`` batches of them in the service (enough to keep the classifier
busy; at most a full queue behind a full batch, counting those being decoded), a new one is
answered 503 problem+json with Retry-After from the request line alone, before routing and
without reading its body, so no frame is decoded only to find the batcher's queue full. A request still sending its body holds no place while it does,
so slow clients cannot take them.

Live event streams (GET /v1/events) are long-lived and each polls the store: they are capped per
key (per client address with authentication off; 429) and in all (503), so listeners keep a
reserve of connections and CPU for uploads whatever their number.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from types import SimpleNamespace

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud_service.metrics import Metrics
from cloud_service.problems import Problem, problem_response
from cloud_service.settings import Settings

CLASSIFY = ("POST", "/v1/classify")
EVENTS = ("GET", "/v1/events")


def stream_owner(scope: Scope) -> str:
    """Whose event stream this is: a digest of its Bearer key, else its client address."""
    scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return "key:" + hashlib.sha256(token.strip().encode()).hexdigest()[:16]
    client = scope.get("client")
    return "address:" + (client[0] if client else "")


class Admission:
    def __init__(self, app: ASGIApp, settings: Settings, metrics: Metrics) -> None:
        self.app, self.settings, self.metrics = app, settings, metrics
        self.classify_capacity = min(
            settings.queue_size + settings.max_batch_size,
            settings.admit_batches * settings.max_batch_size,
        )
        self.classifying = 0  # classify requests with their body in hand, not yet answered
        self.streams: Counter[str] = Counter()  # open event streams per owner
        self.streams_open = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif (scope["method"], scope["path"]) == CLASSIFY:
            await self._classify(scope, receive, send)
        elif (scope["method"], scope["path"]) == EVENTS:
            await self._events(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _shed(
        self, scope: Scope, receive: Receive, send: Send, why: str, problem: Problem
    ) -> None:
        """Refuse a request a bound leaves no room for, counted by ``why`` in /metrics."""
        self.metrics.shed.labels(why).inc()
        problem.headers["Retry-After"] = str(self.settings.retry_after_s)
        # Refused before routing: name the route anyway, for the metrics and the access log.
        scope["route"] = SimpleNamespace(path=scope["path"])
        await problem_response(Request(scope), problem)(scope, receive, send)

    async def _classify(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.classifying >= self.classify_capacity:
            detail = f"{self.classifying} frames are being classified or queued; retry later"
            problem = Problem(503, "overloaded", "service overloaded", detail)
            return await self._shed(scope, receive, send, "admission", problem)
        # Counted from here, so the check and the count cannot race. The place is given up while
        # the route waits for body bytes still on their way and taken again once the body is in:
        # when the body is already there (a frame is one packet) the wait does not yield and
        # the place is held throughout, and a client trickling its body holds none.
        self.classifying += 1
        counted, body_in = True, False

        async def receive_counted() -> Message:
            nonlocal counted, body_in
            if body_in:  # a later receive (a wait for disconnect) keeps the place
                return await receive()
            if counted:
                self.classifying -= 1
                counted = False
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body"):
                self.classifying += 1
                counted = body_in = True
            return message

        try:
            await self.app(scope, receive_counted, send)
        finally:
            if counted:
                self.classifying -= 1

    async def _events(self, scope: Scope, receive: Receive, send: Send) -> None:
        s, owner = self.settings, stream_owner(scope)
        if self.streams[owner] >= s.max_event_streams_per_key:
            detail = f"at most {s.max_event_streams_per_key} live event streams per key"
            problem = Problem(429, "too-many-streams", "too many event streams", detail)
            return await self._shed(scope, receive, send, "streams_per_key", problem)
        if self.streams_open >= s.max_event_streams:
            detail = f"{s.max_event_streams} live event streams are open; retry later"
            problem = Problem(503, "stream-limit", "service at its event stream limit", detail)
            return await self._shed(scope, receive, send, "streams", problem)
        self.streams[owner] += 1
        self.streams_open += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.streams_open -= 1
            self.streams[owner] -= 1
            if self.streams[owner] <= 0:
                del self.streams[owner]
