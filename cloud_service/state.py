"""What the lifespan loads, and the dependencies routes use to reach it (overridable in tests)."""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from cloud_service.batcher import Batcher
from cloud_service.idempotency import IdempotencyStore
from cloud_service.metrics import Metrics
from cloud_service.problems import Problem
from cloud_service.runtime import BundleRuntime
from cloud_service.settings import Settings


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics
    idempotency: IdempotencyStore
    runtimes: dict[str, BundleRuntime] = field(default_factory=dict)
    batchers: dict[str, Batcher] = field(default_factory=dict)
    ready: bool = False
    load_error: str | None = None
    reconstruct_slots: asyncio.Semaphore | None = None
    reconstruct_waiting: int = 0

    def runtime_for(self, model_id: str) -> BundleRuntime | None:
        return self.runtimes.get(model_id)


def get_state(request: Request) -> ServiceState:
    return request.app.state.spic


StateDep = Annotated[ServiceState, Depends(get_state)]


def require_api_key(request: Request, state: StateDep) -> None:
    keys = state.settings.api_keys
    if not keys:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise Problem(
            401,
            "missing-api-key",
            "missing API key",
            "send Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(
            401,
            "malformed-authorization",
            "malformed Authorization header",
            "expected: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    given = token.strip().encode()
    match = False
    for key in keys:  # compare with every key, in constant time, whatever matches
        match |= hmac.compare_digest(given, key.encode())
    if not match:
        raise Problem(
            403, "wrong-api-key", "API key not accepted", "the key is not one this service accepts"
        )


AuthDep = Annotated[None, Depends(require_api_key)]


def require_ready(state: StateDep) -> None:
    if not state.ready:
        detail = (
            f"model loading failed: {state.load_error}"
            if state.load_error
            else "models are still loading"
        )
        raise Problem(
            503,
            "not-ready",
            "service not ready",
            detail,
            headers={"Retry-After": str(state.settings.retry_after_s)},
        )


ReadyDep = Annotated[None, Depends(require_ready)]
