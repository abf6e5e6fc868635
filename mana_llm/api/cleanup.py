"""Per-request cleanup that outlives the view.

A streaming view returns a Response whose body owns an open upstream connection. If the client
disconnects after the view returned but before Quart starts sending that body, the body is
never iterated and never closed. This ASGI wrapper runs every cleanup a request registered
once the whole exchange is over, however it ended, so no upstream connection is left behind.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Cleanup = Callable[[], Awaitable[None]]
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]

SCOPE_KEY = "mana_llm.cleanup"


def add_cleanup(scope: dict[str, Any], cleanup: Cleanup) -> None:
    scope[SCOPE_KEY].append(cleanup)


def with_request_cleanup(app: ASGIApp) -> ASGIApp:
    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        cleanups: list[Cleanup] = []
        scope[SCOPE_KEY] = cleanups
        try:
            await app(scope, receive, send)
        finally:
            for cleanup in cleanups:
                await cleanup()  # each cleanup shields and bounds itself

    return asgi
