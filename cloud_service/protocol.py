"""uvicorn's h11 protocol with a deadline for a request's head (slowloris protection).

uvicorn bounds the idle time between requests (``timeout_keep_alive``), but its timer is cancelled
by the first byte that arrives, so a client that sends its request line and headers one byte a
second holds a connection forever. Here a connection must deliver a complete request head within
``SPIC_CLOUD_HEADER_TIMEOUT_S`` of opening, or of the previous response; otherwise it is closed.
The body has its own deadline in the route (``body_timeout_s``, answered 408).
"""

from __future__ import annotations

import asyncio
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from cloud_service.settings import get_settings

log = logging.getLogger("spic.cloud.protocol")


class HeadDeadlineH11Protocol(H11Protocol):
    _head_timer: asyncio.TimerHandle | None = None

    def _arm_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(
            get_settings().header_timeout_s, self._head_deadline_passed
        )

    def _head_deadline_passed(self) -> None:
        self._head_timer = None
        # IDLE: h11 has not yet seen a whole request head from the client on this cycle.
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            log.info("closing %s: request head not complete in time", self.client)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)
