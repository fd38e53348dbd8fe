"""Webhooks: every stored frame POSTed as JSON to ``SPIC_CLOUD_WEBHOOK_URL``, signed, retried,
never in the way of classification.

Signature (as Stripe and GitHub do it): ``X-SPIC-Signature: t=<unix seconds>,v1=<hex>`` where
``<hex>`` is HMAC-SHA256 with ``SPIC_CLOUD_WEBHOOK_SECRET`` over ``"<t>." + body``. A receiver
recomputes it, compares in constant time, and refuses timestamps older than a few minutes (the
timestamp inside the signed string stops replays).

Deliveries wait in a bounded in-memory queue served by one task; a failed POST (connection error,
timeout or non-2xx) is retried with exponential backoff up to ``max_attempts``. When the queue is
full the newest delivery is dropped and counted: the results store and ``/v1/events`` still have
every frame, so a consumer can catch up from there.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import httpx

from cloud_service.metrics import Metrics

log = logging.getLogger("spic.cloud.webhooks")


def sign(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify(secret: str, body: bytes, header: str, tolerance_s: float = 300) -> bool:
    """What a receiver does: check the signature and the timestamp's age."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), header)


class WebhookSender:
    def __init__(
        self,
        url: str,
        secret: str,
        metrics: Metrics,
        max_attempts: int = 5,
        queue_size: int = 1000,
        timeout_s: float = 5.0,
        backoff_s: float = 0.5,
    ):
        self.url, self.secret, self.metrics = url, secret, metrics
        self.max_attempts, self.timeout_s, self.backoff_s = max_attempts, timeout_s, backoff_s
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=queue_size)
        self.client = httpx.AsyncClient(timeout=timeout_s)
        self.task = asyncio.get_running_loop().create_task(self._run())

    def submit(self, payload: dict[str, Any]) -> None:
        """Queue a delivery; returns at once (never waits for the receiver)."""
        try:
            self.queue.put_nowait(json.dumps(payload).encode())
        except asyncio.QueueFull:
            self.metrics.webhooks.labels("dropped").inc()

    async def _deliver(self, body: bytes) -> bool:
        for attempt in range(self.max_attempts):
            headers = {
                "Content-Type": "application/json",
                "X-SPIC-Signature": sign(self.secret, body, int(time.time())),
            }
            try:
                resp = await self.client.post(self.url, content=body, headers=headers)
                if resp.is_success:
                    return True
                why = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                why = type(exc).__name__
            self.metrics.webhooks.labels("retried").inc()
            log.info("webhook attempt %d failed (%s)", attempt + 1, why)
            await asyncio.sleep(min(30.0, self.backoff_s * 2**attempt))
        return False

    async def _run(self) -> None:
        while True:
            body = await self.queue.get()
            delivered = await self._deliver(body)
            self.metrics.webhooks.labels("delivered" if delivered else "failed").inc()

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.client.aclose()
