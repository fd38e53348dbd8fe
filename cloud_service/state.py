"""What the lifespan loads, and the dependencies routes use to reach it (overridable in tests)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cloud_service.batcher import Batcher, HeavyLane
from cloud_service.idempotency import IdempotencyStore
from cloud_service.keys import KeyStore, Scope
from cloud_service.metrics import Metrics
from cloud_service.problems import Problem
from cloud_service.reconstruction_cache import ReconstructionCache
from cloud_service.refinements import Refiner
from cloud_service.results import ResultsStore
from cloud_service.settings import Settings
from cloud_service.webhooks import WebhookSender
from shared.runtime import SpicCodec


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics
    idempotency: IdempotencyStore
    runtimes: dict[str, SpicCodec] = field(default_factory=dict)  # by codec id
    aliases: dict[str, SpicCodec] = field(default_factory=dict)  # by an older id of a codec
    batchers: dict[str, Batcher[Any]] = field(default_factory=dict)
    heavy: HeavyLane | None = None
    results: ResultsStore | None = None
    keys: KeyStore | None = None  # per-device keys; opened by the lifespan
    webhooks: WebhookSender | None = None
    refinements: Refiner | None = None  # refinement requests and pictures; opened by the lifespan
    reconstructions: ReconstructionCache = field(init=False)  # bounded by the settings
    ready: bool = False
    load_error: str | None = None
    store_checked: bool = False  # the results store's file was read whole once since start
    # Loading, SIGHUP reloads and head uploads change what is served one at a time.
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.reconstructions = ReconstructionCache(self.settings.reconstruction_cache, self.metrics)

    def runtime_for(self, model_id: str) -> SpicCodec | None:
        """The codec a frame's id names: its codec id or one of the codec's aliases."""
        return self.runtimes.get(model_id) or self.aliases.get(model_id)

    def add_runtime(self, runtime: SpicCodec) -> None:
        self.runtimes[runtime.model_id] = runtime
        for alias in runtime.manifest.aliases:
            self.aliases[alias] = runtime

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
bearer = HTTPBearer(
    auto_error=False,
    description="a key from `spic-cloud keys add` (or SPIC_CLOUD_API_KEYS / READ_KEYS / ADMIN_KEYS)",
)
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Caller:
    """Who a request's key says it is."""

    namespace: str  # its idempotency namespace: a digest of its key
    scope: Scope
    device: str | None = None  # the only device it may send as; None: any


def auth_enabled(state: ServiceState) -> bool:
    """Keys are checked once any exists, in the environment or the key store, or when
    SPIC_CLOUD_REQUIRE_KEYS says so."""
    s = state.settings
    if s.require_keys or s.api_keys or s.read_keys or s.admin_keys:
        return True
    return state.keys is not None and state.keys.has_keys()


def bearer_token(request: Request) -> str:
    """The request's Bearer token; 401 when there is none."""
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
    return token.strip()


def _matches(given: bytes, keys: list[str]) -> str | None:
    found = None
    for key in keys:  # compare with every key, in constant time, whatever matches
        if hmac.compare_digest(given, key.encode()):
            found = key
    return found


def not_accepted() -> Problem:
    return Problem(
        403, "wrong-api-key", "API key not accepted", "the key is not one this service accepts"
    )


def identify(state: ServiceState, token: str) -> Caller | None:
    """The caller ``token`` names: an environment key (any device) or a stored one."""
    s, given = state.settings, token.encode()
    kinds: tuple[tuple[Scope, list[str]], ...] = (
        ("upload", s.api_keys),
        ("read", s.read_keys),
        ("admin", s.admin_keys),
    )
    for scope, keys in kinds:
        found = _matches(given, keys)
        if found is not None:
            return Caller(hashlib.sha256(found.encode()).hexdigest()[:16], scope)
    stored = state.keys.find(token) if state.keys is not None else None
    return None if stored is None else Caller(stored.namespace, stored.scope, stored.device)


def authorize(request: Request, state: ServiceState, scope: Scope, *also: Scope) -> Caller:
    """The caller, when its key is of ``scope`` (or one of ``also``); 401/403 otherwise (403
    ``wrong-key-scope`` for a valid key of another kind)."""
    caller = identify(state, bearer_token(request))
    if caller is None:
        raise not_accepted()
    if caller.scope != scope and caller.scope not in also:
        raise Problem(
            403,
            "wrong-key-scope",
            "key of the wrong kind",
            "upload keys may only send frames, read keys only query, admin keys only delete and "
            "add heads, labeller keys only label frames",
        )
    return caller


def require_api_key(request: Request, state: StateDep, _bearer: BearerDep) -> Caller:
    """The caller of an upload route: its idempotency namespace and the device it may send as."""
    if not auth_enabled(state):
        return Caller(ANONYMOUS, "upload")
    return authorize(request, state, "upload")


def require_read_key(request: Request, state: StateDep, _bearer: BearerDep) -> None:
    """Queries need a read key whenever the service has keys at all."""
    if auth_enabled(state):
        authorize(request, state, "read")


ReadAuthDep = Annotated[None, Depends(require_read_key)]


def require_admin_key(request: Request, state: StateDep, _bearer: BearerDep) -> None:
    """Deleting frames needs an admin key whenever the service has keys at all."""
    if auth_enabled(state):
        authorize(request, state, "admin")


AdminAuthDep = Annotated[None, Depends(require_admin_key)]


def require_label_key(request: Request, state: StateDep, _bearer: BearerDep) -> None:
    """Labelling a stored frame needs a labeller or an admin key whenever keys are on."""
    if auth_enabled(state):
        authorize(request, state, "labeller", "admin")


LabelAuthDep = Annotated[None, Depends(require_label_key)]


AuthDep = Annotated[Caller, Depends(require_api_key)]


def require_metrics_key(request: Request, state: StateDep, _bearer: BearerDep) -> None:
    key = state.settings.metrics_key
    if key and _matches(bearer_token(request).encode(), [key]) is None:
        raise not_accepted()


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
