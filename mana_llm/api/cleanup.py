"""The request's own scope, outliving the view.

A streaming view returns a Response whose body owns an open upstream connection. If the client
disconnects after the view returned but before Quart starts sending that body, the body is
never iterated and never closed. This ASGI wrapper gives each HTTP exchange a nursery (for
work that must run beside the body, such as a walk behind SSE keep-alives) and a list of
cleanups; when the exchange is over, however it ended, the nursery is cancelled and every
cleanup runs, so no task and no upstream connection is left behind.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

Cleanup = Callable[[], Awaitable[None]]
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]

CLEANUPS = "mana_llm.cleanup"
NURSERY = "mana_llm.nursery"


def add_cleanup(scope: Any, cleanup: Cleanup) -> None:
    scope[CLEANUPS].append(cleanup)


def request_nursery(scope: Any) -> trio.Nursery:
    nursery: trio.Nursery = scope[NURSERY]
    return nursery


def with_request_scope(app: ASGIApp) -> ASGIApp:
    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        cleanups: list[Cleanup] = []
        scope[CLEANUPS] = cleanups
        try:
            async with trio.open_nursery() as nursery:
                scope[NURSERY] = nursery
                await app(scope, receive, send)
                nursery.cancel_scope.cancel()
        finally:
            for cleanup in cleanups:
                await cleanup()  # each cleanup shields and bounds itself

    return asgi
