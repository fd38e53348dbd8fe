"""Per-request observation as a pure ASGI middleware: request id, metrics, one access-log line.

Starlette's ``@app.middleware("http")`` (BaseHTTPMiddleware) wraps every response in a task group
and a memory stream; on two cores, under load, that was a visible share of the event loop, which
is what limits the service's throughput (the classifier thread waits for it). Here the response
messages pass straight through; the status and headers are read as they go by.

The latency recorded is the time to the response's start (its status and headers), as before: a
live event stream's lifetime is not a request's latency.
"""

from __future__ import annotations

import json
import logging
import os
import time

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud_service.metrics import Metrics

access_log = logging.getLogger("spic.cloud.access")


class Observe:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        # The same 32 hex digits as uuid4().hex, without building the UUID object.
        request_id = headers.get("x-request-id", "")[:64] or os.urandom(16).hex()
        state = scope.setdefault("state", {})
        state["request_id"], state["model_id"] = request_id, None
        start = time.perf_counter()
        elapsed: float | None = None
        status, replayed = 500, False

        async def send_observed(message: Message) -> None:
            nonlocal status, replayed, elapsed
            if message["type"] == "http.response.start":
                status = message["status"]
                elapsed = time.perf_counter() - start
                out = MutableHeaders(scope=message)
                replayed = out.get("idempotent-replayed") == "true"
                out["X-Request-ID"] = request_id
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_observed)
        finally:
            self.metrics.in_flight.dec()
            if elapsed is None:  # no response was started
                elapsed = time.perf_counter() - start
            self._record(scope, headers, status, replayed, elapsed)

    def _record(
        self, scope: Scope, headers: Headers, status: int, replayed: bool, elapsed: float
    ) -> None:
        route = getattr(scope.get("route"), "path", "unmatched")
        self.metrics.requests.labels(route, str(status)).inc()
        self.metrics.total.labels(route).observe(elapsed)
        length = headers.get("content-length")
        size = int(length) if length and length.isdigit() else 0
        if route.startswith("/v1/") and length and length.isdigit():
            self.metrics.frame_bytes.observe(size)
        if not access_log.isEnabledFor(logging.INFO):
            return  # the line is not built when nobody reads it
        state = scope.get("state", {})
        access_log.info(
            json.dumps(
                {
                    "request_id": state.get("request_id"),
                    "method": scope["method"],
                    "route": route,
                    "status": status,
                    "model_id": state.get("model_id"),
                    "bytes": size,
                    "latency_ms": round(elapsed * 1e3, 3),
                    "idempotency_key": headers.get("idempotency-key"),
                    "replayed": replayed,
                }
            )
        )
