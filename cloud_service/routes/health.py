"""Probes and metrics: ``/healthz`` (the process answers), ``/readyz`` (models loaded, batch
workers alive, the results store answering and its file sound), ``/metrics`` (Prometheus text;
behind ``SPIC_CLOUD_METRICS_KEY`` when it is set)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cloud_service.routes.common import ERRORS
from cloud_service.state import StateDep, require_metrics_key, require_ready

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "live"}


@router.get(
    "/readyz",
    summary="Readiness: every model bundle is loaded, its batch worker alive, the store sound",
    responses={503: ERRORS[503]},
)
def readyz(state: StateDep) -> dict[str, object]:
    require_ready(state)
    if state.results is not None:  # the store answers now (503 store-unavailable if not)
        state.results.db.check()
    return {"status": "ready", "models": sorted(state.runtimes)}


def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def install_metrics(app: FastAPI, protected: bool) -> None:
    """``GET /metrics``; behind the metrics key (and documented so) only when one is set."""
    text = {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}
    responses: dict[int | str, dict[str, Any]] = {200: text}
    if protected:
        responses |= {401: ERRORS[401], 403: ERRORS[403]}
    app.add_api_route(
        "/metrics",
        metrics,
        methods=["GET"],
        tags=["operations"],
        summary="Prometheus metrics (text exposition format)",
        response_class=Response,
        responses=responses,
        dependencies=[Depends(require_metrics_key)] if protected else [],
    )
