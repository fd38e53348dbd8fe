"""create_app(settings): the SPIC cloud service.

The lifespan loads every configured bundle (ONNX sessions, codec tables) in the background:
``/healthz`` answers at once, ``/readyz`` and the inference routes answer 503 until the models are
in. One access-log line (JSON) per request: request id, route, status, model id, bytes, latency.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from cloud_service import problems
from cloud_service.admission import Admission
from cloud_service.batcher import HeavyLane
from cloud_service.database import StoreUnavailable, open_database
from cloud_service.idempotency import IdempotencyStore
from cloud_service.idempotency_sql import SqlIdempotencyStore
from cloud_service.keys import open_keys
from cloud_service.metrics import Metrics
from cloud_service.observe import Observe
from cloud_service.refinements import open_refiner
from cloud_service.results import open_store
from cloud_service.retention import retention_loop
from cloud_service.routes import (
    dashboard,
    devices,
    docs,
    frames,
    heads,
    health,
    inference,
    labels,
    live,
    models,
    refine,
)
from cloud_service.services.refine import refine_loop
from cloud_service.services.serving import load_models, reload
from cloud_service.services.serving import open_codec as open_codec  # the cloud's codec opener
from cloud_service.settings import Settings, get_settings
from cloud_service.state import ServiceState, auth_enabled
from cloud_service.webhooks import WebhookSender

log = logging.getLogger("spic.cloud")


async def check_store(state: ServiceState) -> None:
    """Read the whole results store once at start (seconds for a large SQLite file): a damaged
    file keeps the service unready instead of failing requests one by one."""
    assert state.results is not None
    try:
        await asyncio.to_thread(state.results.db.check, True)
    except StoreUnavailable as exc:
        log.error("results store unusable: %s", exc)
    state.store_checked = True


def install_reload(state: ServiceState) -> bool:
    """SIGHUP rescans the model folder, the uploaded heads and the --head folders
    (``cloud_service.services.serving.reload``); whether the handler is installed."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    def on_hup() -> None:
        task = loop.create_task(reload(state))
        tasks.add(task)  # held until done: the loop keeps only a weak reference
        task.add_done_callback(tasks.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, on_hup)
    except (NotImplementedError, RuntimeError, ValueError):  # no signals here (another thread)
        log.warning("SIGHUP reload not available in this process")
        return False
    return True


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: ServiceState = app.state.spic
    state.heavy = HeavyLane(
        state.settings.heavy_concurrency, state.settings.heavy_queue_size, state.metrics
    )
    s = state.settings
    state.results = await asyncio.to_thread(
        open_store, s.database_url, s.data_dir, s.confidence_bounds
    )
    state.keys = await asyncio.to_thread(open_keys, s.database_url, s.data_dir, s.key_cache_s)
    state.refinements = await asyncio.to_thread(open_refiner, s.database_url, s.data_dir)
    if s.api_keys:
        log.warning(
            "SPIC_CLOUD_API_KEYS: %d upload key(s) that may send as ANY device; give each camera "
            "its own key instead (spic-cloud keys add --device ID)",
            len(s.api_keys),
        )
    if not await asyncio.to_thread(auth_enabled, state):
        log.warning("no API keys (spic-cloud keys add, SPIC_CLOUD_API_KEYS): authentication is OFF")
    loader = asyncio.create_task(load_models(state))
    retention = asyncio.create_task(retention_loop(state))
    checker = asyncio.create_task(check_store(state))
    refining = asyncio.create_task(refine_loop(state))
    if state.settings.webhook_url:
        s = state.settings
        state.webhooks = WebhookSender(
            s.webhook_url, s.webhook_secret, state.metrics, s.webhook_max_attempts
        )
    reloads = install_reload(state)
    yield
    if reloads:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
    loader.cancel()
    retention.cancel()
    checker.cancel()
    refining.cancel()
    for batcher in state.batchers.values():
        await batcher.close()
    state.heavy.close()
    if state.webhooks is not None:
        await state.webhooks.close()
    state.results.close()
    state.keys.close()
    state.refinements.close()
    state.idempotency.close()


def document_security(app: FastAPI, settings: Settings) -> None:
    """The OpenAPI document declares the Bearer scheme only on routes that really check a key:
    with no keys configured (authentication off) it declares none. Written once, at the first
    request for it: keys added to the key store later show from the next start."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        keyed = {
            "/metrics": bool(settings.metrics_key),
            "/v1/": auth_enabled(app.state.spic),
        }
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                if not any(path.startswith(p) and on for p, on in keyed.items()):
                    operation.pop("security", None)
                    for status in ("401", "403"):
                        operation.get("responses", {}).pop(status, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="SPIC cloud service",
        version="1.0.0",
        description="Classifies SPIC frames (semantic-preserving compressed images) straight from their latents.",
        lifespan=lifespan,
        docs_url=None,  # served below from the swagger-ui-bundle package, not a CDN
        redoc_url=None,
    )
    bounds = (
        settings.idempotency_ttl_s,
        settings.idempotency_max_entries,
        settings.idempotency_max_bytes,
        settings.idempotency_lease_s,
    )
    # PostgreSQL when the service has a database URL (replicas share their keys), else the
    # SQLite file when one is named (the workers of one host share it), else memory.
    store: IdempotencyStore = (
        SqlIdempotencyStore(open_database(settings.database_url, settings.idempotency_db), *bounds)
        if settings.database_url or settings.idempotency_db
        else IdempotencyStore(*bounds)
    )
    app.state.spic = ServiceState(settings=settings, metrics=Metrics(), idempotency=store)
    problems.install(app)
    app.include_router(health.router)
    health.install_metrics(app, protected=bool(settings.metrics_key))
    app.include_router(models.router)
    app.include_router(heads.router)
    app.include_router(inference.router)
    app.include_router(frames.router)
    app.include_router(labels.router)
    app.include_router(live.router)
    app.include_router(devices.router)
    app.include_router(refine.router)
    docs.install(app)
    dashboard.install(app)
    document_security(app, settings)

    # Outermost last: every answer is observed, the admission refusals included.
    app.add_middleware(Admission, settings=settings, metrics=app.state.spic.metrics)
    app.add_middleware(Observe, metrics=app.state.spic.metrics)
    return app
