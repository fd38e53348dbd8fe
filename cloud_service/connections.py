"""Connection caps, applied when a connection is accepted (uvicorn's h11 protocol, subclassed).

uvicorn's own ``limit_concurrency`` counts open connections against every *request*: one client
holding 520 idle sockets made nearly every legitimate request on an already open connection fail,
and its 503 is text/plain without Retry-After. Here the caps are checked once, when a connection
is accepted: at most ``max_connections`` open in this process and ``max_connections_per_client``
per client address. A connection beyond them is answered at once, before any request is read,
with a complete problem+json response (503, or 429 for the per-address cap) and Retry-After; then
the server half-closes and discards what the client still sends, so the client reads the answer
instead of a reset. Connections already accepted are never refused for the count: one address
cannot take the service's connections from the others, and idle ones are closed by the request
head deadline (``HeadDeadlineH11Protocol``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from http import HTTPStatus
from typing import Any

from cloud_service.problems import MEDIA_TYPE, PROBLEM_TYPE
from cloud_service.protocol import HeadDeadlineH11Protocol
from cloud_service.settings import get_settings

log = logging.getLogger("spic.cloud.connections")
LINGER_S = 1.0  # how long a refused connection may take to read its answer and hang up
# Refused connections lingering at once; past this (a client reconnecting in a loop without
# hanging up) the next ones are closed as soon as their answer is written, reset or not.
MAX_LINGERING = 256

# Open connections per client address, in this process (each uvicorn worker counts its own).
_open: Counter[str] = Counter()
_lingering_now = 0
LOG_EVERY_S = 10.0  # refusals are logged as a count, at most this often: a flood floods no log
_unlogged = 0
_logged_at = float("-inf")


def note_refusal(address: str) -> None:
    global _unlogged, _logged_at
    _unlogged += 1
    now = time.monotonic()
    if now - _logged_at >= LOG_EVERY_S:
        log.warning(
            "refused %d connection(s) at accept since the last report (latest from %s)",
            _unlogged,
            address or "?",
        )
        _unlogged, _logged_at = 0, now


def refusal(status: int, slug: str, title: str, detail: str, retry_after_s: int) -> bytes:
    """A whole HTTP/1.1 response: problem+json, Retry-After, and the connection closing."""
    body = json.dumps(
        {"type": PROBLEM_TYPE + slug, "title": title, "status": status, "detail": detail}
    ).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        f"Content-Type: {MEDIA_TYPE}\r\nContent-Length: {len(body)}\r\n"
        f"Retry-After: {retry_after_s}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def client_address(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


class ConnectionCapH11Protocol(HeadDeadlineH11Protocol):
    _address: str | None = None  # set once the connection is admitted and counted
    _refused = False
    _lingering = False  # refused, answered, and waiting for the client to hang up

    def _refusal(self, address: str) -> bytes | None:
        s = get_settings()
        if _open[address] >= s.max_connections_per_client:
            return refusal(
                429,
                "too-many-connections",
                "too many connections from this address",
                f"at most {s.max_connections_per_client} open connections per client address",
                s.retry_after_s,
            )
        if len(self.connections) >= s.max_connections:
            return refusal(
                503,
                "connection-limit",
                "service at its connection limit",
                f"{s.max_connections} connections are open; retry later",
                s.retry_after_s,
            )
        return None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        address = client_address(transport)
        answer = self._refusal(address)
        if answer is None:
            self._address = address
            _open[address] += 1
            super().connection_made(transport)
            return
        global _lingering_now
        note_refusal(address)
        self._refused = True
        self.transport = transport
        transport.write(answer)
        if _lingering_now >= MAX_LINGERING or not transport.can_write_eof():
            transport.close()
            return
        _lingering_now += 1
        self._lingering = True
        transport.write_eof()
        self.loop.call_later(LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        if not self._refused:  # a refused connection's request is read and dropped
            super().data_received(data)

    def eof_received(self) -> Any:
        if not self._refused:
            return super().eof_received()
        return None  # the client hung up after reading its answer: close

    def connection_lost(self, exc: Exception | None) -> None:
        global _lingering_now
        if self._refused:
            if self._lingering:
                _lingering_now -= 1
                self._lingering = False
            return
        if self._address is not None:
            _open[self._address] -= 1
            if _open[self._address] <= 0:
                del _open[self._address]
            self._address = None
        super().connection_lost(exc)
