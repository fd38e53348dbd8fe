from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cloud_service.problems import Problem
from cloud_service.state import StateDep

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict:
    return {"status": "live"}


@router.get("/readyz", summary="Readiness: every model bundle is loaded")
def readyz(state: StateDep) -> dict:
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
    return {"status": "ready", "models": sorted(state.runtimes)}


@router.get("/metrics", summary="Prometheus metrics")
def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
