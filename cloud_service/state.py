"""What the lifespan loads, and the dependencies routes use to reach it (overridable in tests)."""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cloud_service.batcher import Batcher, HeavyLane
from cloud_service.idempotency import IdempotencyStore
from cloud_service.metrics import Metrics
from cloud_service.problems import Problem
from cloud_service.results import ResultsStore
from cloud_service.runtime import BundleRuntime
from cloud_service.settings import Settings
from cloud_service.webhooks import WebhookSender


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics
    idempotency: IdempotencyStore
    runtimes: dict[str, BundleRuntime] = field(default_factory=dict)
    batchers: dict[str, Batcher] = field(default_factory=dict)
    heavy: HeavyLane | None = None
    results: ResultsStore | None = None
    webhooks: WebhookSender | None = None
    # frame id -> PNG of its reconstruction, most recently used last
    reconstructions: OrderedDict[int, bytes] = field(default_factory=OrderedDict)
    ready: bool = False
    load_error: str | None = None
    store_checked: bool = False  # the results store's file was read whole once since start

    def runtime_for(self, model_id: str) -> BundleRuntime | None:
        return self.runtimes.get(model_id)

    def not_ready_reason(self) -> str | None:
        """Why the service cannot answer inference requests now, or None when it can."""
        if self.load_error:
            return f"model loading failed: {self.load_error}"
        if not self.ready:
            return "models are still loading"
        dead = [model_id for model_id, b in self.batchers.items() if not b.alive]
        if dead:
            return f"batch worker down for {', '.join(dead)}"
        if not self.store_checked:
            return "the results store is being checked"
        for name, db in (
            ("results", getattr(self.results, "db", None)),
            ("idempotency", getattr(self.idempotency, "db", None)),
        ):
            if db is not None and db.damaged:
                return f"{name} store damaged: {db.damaged}"
        return None


def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.spic
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


# Declared for the OpenAPI document (the Bearer security scheme); the checks below are our own so
# every refusal is problem+json with a reason.
bearer = HTTPBearer(auto_error=False, description="an upload key from SPIC_CLOUD_API_KEYS")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
ANONYMOUS = "anonymous"


def _matches(given: bytes, keys: list[str]) -> str | None:
    found = None
    for key in keys:  # compare with every key, in constant time, whatever matches
        if hmac.compare_digest(given, key.encode()):
            found = key
    return found


def check_bearer(request: Request, keys: list[str], other_scope: list[str] | None = None) -> str:
    """The matching key of ``keys`` named by the request's Bearer token; 401/403 otherwise
    (403 ``wrong-key-scope`` when it is one of ``other_scope``: a valid key of another kind)."""
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
    found = _matches(given, keys)
    if found is None and other_scope and _matches(given, other_scope) is not None:
        raise Problem(
            403,
            "wrong-key-scope",
            "key of the wrong kind",
            "upload keys may only send frames, read keys only query, admin keys only delete",
        )
    if found is None:
        raise Problem(
            403, "wrong-api-key", "API key not accepted", "the key is not one this service accepts"
        )
    return found


def other_keys(settings: Settings, kind: list[str]) -> list[str]:
    """Every configured key that is not of ``kind`` (the keys sent to the wrong route)."""
    return [
        k for k in settings.api_keys + settings.read_keys + settings.admin_keys if k not in kind
    ]


def require_api_key(request: Request, state: StateDep, _bearer: BearerDep) -> str:
    """The caller's scope: a digest of its upload key (idempotency keys live in it)."""
    keys = state.settings.api_keys
    if not keys:
        return ANONYMOUS
    key = check_bearer(request, keys, other_keys(state.settings, keys))
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def require_read_key(request: Request, state: StateDep, _bearer: BearerDep) -> None:
    """Queries need a read key whenever the service has keys at all."""
    settings = state.settings
    if settings.api_keys or settings.read_keys or settings.admin_keys:
        check_bearer(request, settings.read_keys, other_keys(settings, settings.read_keys))


ReadAuthDep = Annotated[None, Depends(require_read_key)]


def require_admin_key(request: Request, state: StateDep, _bearer: BearerDep) -> None:
    """Deleting frames needs an admin key whenever the service has keys at all."""
    s = state.settings
    if s.api_keys or s.read_keys or s.admin_keys:
        check_bearer(request, s.admin_keys, other_keys(s, s.admin_keys))


AdminAuthDep = Annotated[None, Depends(require_admin_key)]


AuthDep = Annotated[str, Depends(require_api_key)]


def require_metrics_key(request: Request, state: StateDep, _bearer: BearerDep) -> None:
    if state.settings.metrics_key:
        check_bearer(request, [state.settings.metrics_key])


def require_ready(state: StateDep) -> None:
    reason = state.not_ready_reason()
    if reason is not None:
        detail = reason
        raise Problem(
            503,
            "not-ready",
            "service not ready",
            detail,
            headers={"Retry-After": str(state.settings.retry_after_s)},
        )


ReadyDep = Annotated[None, Depends(require_ready)]
