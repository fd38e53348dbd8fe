"""RFC 9457 problem details: every error the service returns is application/problem+json."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from cloud_service.database import StoreUnavailable

PROBLEM_TYPE = "urn:spic:problem:"
MEDIA_TYPE = "application/problem+json"


class Problem(Exception):
    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str = "",
        headers: dict[str, Any] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status, self.slug, self.title, self.detail = status, slug, title, detail
        self.headers, self.extra = headers or {}, extra


def problem_response(request: Request, problem: Problem) -> JSONResponse:
    """The RFC 9457 answer for ``problem``: type, title, status, detail, instance, extras."""
    body = {
        "type": PROBLEM_TYPE + problem.slug,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": request.url.path,
        **problem.extra,
    }
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        body["request_id"] = request_id
    return JSONResponse(
        body, status_code=problem.status, media_type=MEDIA_TYPE, headers=problem.headers
    )


async def handle_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(request, exc)


async def handle_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    headers = dict(exc.headers or {})
    if status == 405:  # Starlette names the first matching route's methods; name them all
        headers["Allow"] = ", ".join(allowed_methods(request))
    problem = Problem(status, f"http-{status}", str(exc.detail), headers=headers)
    return problem_response(request, problem)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this request's path."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


MAX_ERRORS = 10  # reported per request; a body can fail in many places at once


def invalid_params(errors: Sequence[Any]) -> list[dict[str, str]]:
    """Pydantic's errors as RFC 9457 extension members: where (query, header, path, body), which
    parameter, and why; never the value sent, which may be large or a secret."""
    out = []
    for error in list(errors)[:MAX_ERRORS]:
        where, *name = [str(part) for part in error.get("loc", ())] or ["request"]
        out.append({"in": where, "name": ".".join(name)[:100], "reason": str(error.get("msg"))})
    return out


async def handle_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    params = invalid_params(exc.errors())
    detail = "; ".join(f"{p['in']} {p['name']}: {p['reason']}".replace(" :", ":") for p in params)
    problem = Problem(422, "invalid-request", "invalid request", detail[:500], errors=params)
    return problem_response(request, problem)


async def handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Never expected: the fuzz tests hold every malformed input to a 4xx. Kept as a last guard so a
    # bug still answers problem+json, and logged with its traceback.
    import logging

    logging.getLogger("spic.cloud").exception("unhandled error on %s", request.url.path)
    return problem_response(request, Problem(500, "internal", "internal error", "see the log"))


async def handle_store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # The database is down or restarting: nothing was kept, so the client sends the frame again.
    problem = Problem(
        503,
        "store-unavailable",
        "results store unavailable",
        "the database cannot be reached; retry later",
        headers={"Retry-After": "1"},
    )
    return problem_response(request, problem)


def install(app: FastAPI) -> None:
    app.add_exception_handler(Problem, handle_problem)
    app.add_exception_handler(StoreUnavailable, handle_store_unavailable)
    app.add_exception_handler(StarletteHTTPException, handle_http)
    app.add_exception_handler(RequestValidationError, handle_validation)
    app.add_exception_handler(Exception, handle_unexpected)
