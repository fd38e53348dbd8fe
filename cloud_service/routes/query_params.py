"""Query parameters a route does not take are refused (422), not silently ignored.

``/v1/frames?qf=128`` used to answer every frame, as if the filter had applied. A router that
lists ``strict_query`` among its dependencies answers such a request with a problem naming the
unknown parameters and the ones the route takes.
"""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from cloud_service.problems import Problem


def declared(dependant: Dependant) -> set[str]:
    """The query parameters a route takes, its dependencies' included."""
    own = {param.alias for param in dependant.query_params}
    return own.union(*(declared(d) for d in dependant.dependencies))


async def reject_unknown_query(request: Request) -> None:
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    known = declared(route.dependant)
    unknown = sorted({name for name in request.query_params if name not in known})
    if unknown:
        takes = ", ".join(sorted(known)) or "none"
        raise Problem(
            422,
            "unknown-query-parameter",
            "unknown query parameter",
            f"{', '.join(repr(n[:40]) for n in unknown[:5])} not taken here; this route takes: "
            f"{takes}",
            unknown=unknown[:20],
        )


strict_query = Depends(reject_unknown_query)
