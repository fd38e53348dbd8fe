"""``/``: the dashboard for the people behind the cameras, served with its assets (no CDN).

A static page (``cloud_service/dashboard/``) over the query API: live feed per camera with
re-rendered thumbnails, counts per label over time, one line per camera, filters, and a frame's
detail. It asks for a read key and sends it as a Bearer header, so it has no access of its own.
``/favicon.ico`` is an SVG: browsers (and anything else that asks for it by that name) take it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(__file__).resolve().parent.parent / "dashboard"


def install(app: FastAPI) -> None:
    app.mount("/dashboard-assets", StaticFiles(directory=ASSETS), name="dashboard-assets")

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(ASSETS / "index.html", media_type="text/html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(ASSETS / "favicon.svg", media_type="image/svg+xml")
