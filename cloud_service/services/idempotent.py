"""One answer per Idempotency-Key: claim the key, run the work once, keep its answer, replay it.

An answer the same frame will always get (a success, or a 400/409/413/422 refusal) is kept; one
that a retry may change (overload, a crash) releases the key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from starlette.responses import Response

from cloud_service.idempotency import IdempotencyStore, Stored, reused
from cloud_service.idempotency import scoped_key as scoped_key  # a key in its caller's scope
from cloud_service.problems import Problem


class ReusedInStore(Problem):
    """The results store holds the key with another frame (the idempotency store forgot it)."""

    def __init__(self) -> None:
        p = reused()
        super().__init__(p.status, p.slug, p.title, p.detail)


async def idempotent(
    store: IdempotencyStore,
    key: str | None,
    body: bytes,
    handler: Callable[[], Awaitable[Response]],
    render: Callable[[Problem], Response],
    recompute: bool = False,
) -> Response:
    """Run ``handler`` once per Idempotency-Key; replay its stored answer to retries.

    ``render`` turns a refusal into the response kept for the key. With ``recompute`` only the
    status is kept, and a replay runs ``handler`` again (for answers that are a pure function of
    the frame and too large to keep, such as a PNG).
    """
    if key is None:
        return await handler()
    stored = await asyncio.to_thread(store.begin, key, body)
    if stored is not None:
        replay = await handler() if stored.recompute else None
        return Response(
            replay.body if replay is not None else stored.body,
            stored.status,
            media_type=stored.media_type,
            headers={"Idempotent-Replayed": "true"},
        )
    try:
        response = await handler()
    except ReusedInStore:
        # Kept nowhere: the key's own frame, retried, must still get its answer.
        await asyncio.to_thread(store.abandon, key)
        raise
    except Problem as exc:
        if exc.status in (400, 409, 413, 422):  # the same frame will always get this answer
            resp = render(exc)
            answer = Stored(resp.status_code, bytes(resp.body), resp.media_type or "")
            await asyncio.to_thread(store.complete, key, answer)
        else:
            await asyncio.to_thread(store.abandon, key)  # overload and the like: retry may work
        raise
    except BaseException:
        await asyncio.to_thread(store.abandon, key)
        raise
    answer = Stored(
        response.status_code, bytes(response.body), response.media_type or "", recompute=recompute
    )
    await asyncio.to_thread(store.complete, key, answer)
    return response
