"""The inference routes (POST /v1/chat/completions, /v1/embeddings) as plain ASGI: no Quart
request or response objects on the hot path. What every route needs (the caller's key, CORS,
the status and cache header, the request id) the request pipeline (`request_scope.py`) has
done or will do to every answer's head; here only what a plain view needs besides: the body
read bounded in size and time, a client that goes away cancelling the work (the watch Quart-Trio
keeps for its own routes), a failure rendered as Quart's error handlers render theirs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from mana_llm import errors
from mana_llm.api.render import error_headers, error_object
from mana_llm.api.request_scope import RequestContext, context
from mana_llm.api.sse import BodySend
from mana_llm.codec import dumps
from mana_llm.domain import CLIENT_GONE

log = logging.getLogger(__name__)

Header = tuple[bytes, bytes]
JSON_TYPE: Header = (b"content-type", b"application/json")
SSE_HEADERS: tuple[Header, ...] = (
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
    (b"content-type", b"text/event-stream"),
)


class _ClientGone(Exception):
    """The client disconnected before its request body arrived."""


@attrs.define(eq=False)
class Call:
    """One POST on an inference route: its scope, its trace, and how to answer it."""

    scope: Any
    receive: Any
    send: Any
    context: RequestContext
    started: bool = False  # the response's head is out: a failure can only end the body

    def header(self, name: bytes) -> str:
        """The first value of a request header (`name` in lower case), or ""."""
        for key, value in self.scope["headers"]:
            if key == name:
                return str(value.decode("latin-1"))
        return ""

    async def body(self, max_bytes: int, timeout_s: float) -> bytes:
        """The whole request body: a 413 past `max_bytes` (at once when the declared length is
        over), a 408 when it does not arrive within `timeout_s`."""
        declared = self.header(b"content-length")
        if declared.isdigit() and int(declared) > max_bytes:
            raise _too_large(max_bytes)
        parts: list[bytes] = []
        size = 0
        with trio.move_on_after(timeout_s):
            while True:
                message = await self.receive()
                if message["type"] == "http.disconnect":
                    raise _ClientGone
                part = message.get("body", b"")
                size += len(part)
                if size > max_bytes:
                    raise _too_large(max_bytes)
                parts.append(part)
                if not message.get("more_body", False):
                    self.context.nursery.start_soon(_watch_disconnect, self)
                    return parts[0] if len(parts) == 1 else b"".join(parts)
        raise errors.RequestTimeout(f"the request body did not arrive within {timeout_s:g}s")

    def _head(self, status: int, headers: list[Header]) -> dict[str, Any]:
        self.started = True
        return {"type": "http.response.start", "status": status, "headers": headers}

    async def answer(self, status: int, headers: list[Header], content: bytes) -> None:
        headers.append((b"content-length", str(len(content)).encode()))
        await self.send(self._head(status, headers))
        await self.send({"type": "http.response.body", "body": content, "more_body": False})

    async def answer_json(self, payload: Any, headers: list[Header]) -> None:
        headers.append(JSON_TYPE)
        await self.answer(200, headers, dumps(payload))

    async def start_stream(self, headers: list[Header]) -> BodySend:
        """Send the head of an SSE answer; returns where its body goes."""
        headers.extend(SSE_HEADERS)
        await self.send(self._head(200, headers))
        return BodySend(more=self.context.server_send, last=self.send)

    async def fail(self, error: errors.GatewayError) -> None:
        self.context.trace.fail(error)
        headers = [(k.encode(), v.encode()) for k, v in error_headers(error).items()]
        await self.answer(error.status, headers, dumps(error_object(error)))


View = Callable[[Call], Awaitable[None]]


async def serve(view: View, scope: Any, receive: Any, send: Any) -> None:
    """Run `view` for one exchange (inside the request pipeline). A client that goes away
    cancels the exchange's nursery, the view with it: the exchange ends there (no scope of its
    own here: one fewer per request, issue 13)."""
    call = Call(scope, receive, send, context(scope))
    try:
        await view(call)
    except _ClientGone:
        return  # nothing to answer, nobody to answer: the trace says 499
    except Exception as raised:
        if call.started:
            raise  # the head is out: hypercorn ends the connection
        await call.fail(_as_gateway_error(raised, scope["path"]))


def _as_gateway_error(raised: Exception, path: str) -> errors.GatewayError:
    """A failure as Quart-Trio's handlers see it (a nursery's group stands for its first
    exception); anything not a GatewayError is a bug, logged, and a 500."""
    error: BaseException = raised
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    if isinstance(error, errors.GatewayError):
        return error
    log.error("unhandled error on POST %s", path, exc_info=raised)
    return errors.InternalError("internal gateway error")


async def _watch_disconnect(call: Call) -> None:
    """Once the body is in, the next message can only be the client going away: then the
    exchange's nursery is cancelled, its work with it (an upstream stream closed at once, a
    walk abandoned). hypercorn also says so inside the last send of a finished exchange."""
    while (await call.receive())["type"] != "http.disconnect":
        pass
    call.context.nursery.cancel_scope.cancel(CLIENT_GONE)


def _too_large(max_bytes: int) -> errors.PayloadTooLarge:
    return errors.PayloadTooLarge(f"the request body is larger than {max_bytes} bytes")
