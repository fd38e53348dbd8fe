from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cloud_service.state import StateDep, require_ready

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict:
    return {"status": "live"}


@router.get("/readyz", summary="Readiness: every model bundle is loaded")
def readyz(state: StateDep) -> dict:
    require_ready(state)
    return {"status": "ready", "models": sorted(state.runtimes)}


@router.get("/metrics", summary="Prometheus metrics")
def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
