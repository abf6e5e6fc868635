"""Each HTTP exchange's own scope, outliving the view: its request id, its trace, a nursery for
work beside the body, and cleanups.

A streaming view returns a Response whose body owns an open upstream connection. If the client
disconnects after the view returned but before Quart starts sending that body, the body is
never iterated and never closed. This ASGI wrapper runs around the whole exchange: when it is
over, however it ended, the nursery is cancelled, every cleanup runs (no task and no upstream
connection is left behind), and the trace is finished once: its metrics and its log line.

At the drain deadline (`Lifecycle.cut_open_exchanges`) an exchange still open is cut: its
nursery is cancelled and it ends as the gateway's own doing, 503 `server_shutting_down`: a
JSON error when nothing was sent yet, the final error event (no `[DONE]`) of a stream.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from mana_llm import errors, logs
from mana_llm.api.render import error_headers, error_object
from mana_llm.codec import dumps
from mana_llm.lifecycle import Lifecycle
from mana_llm.metrics import Metrics, RequestTrace

Cleanup = Callable[[], Awaitable[None]]
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]

CLEANUPS = "mana_llm.cleanup"
NURSERY = "mana_llm.nursery"
TRACE = "mana_llm.trace"
SERVER_SEND = "mana_llm.server_send"

log = logging.getLogger("mana_llm.request")

# A response sent before the request body has fully arrived closes the connection: the rest of
# the body would otherwise be read as the next request, or leave the connection waiting.
CLOSE = (b"connection", b"close")
LAST_SEND_S = 10.0


def add_cleanup(scope: Any, cleanup: Cleanup) -> None:
    scope[CLEANUPS].append(cleanup)


def request_nursery(scope: Any) -> trio.Nursery:
    nursery: trio.Nursery = scope[NURSERY]
    return nursery


def server_send(scope: Any) -> Any:
    """The server's own ASGI `send`, for the middle of a streamed body (`more_body` true):
    the request scope's wrapper does nothing there but cost a coroutine a chunk. The head and
    the last message go through the scope's `send` (request id, metrics, the shielded last
    send)."""
    return scope[SERVER_SEND]


def request_trace(scope: Any) -> RequestTrace:
    trace: RequestTrace = scope[TRACE]
    return trace


def begin(metrics: Metrics, scope: Any, endpoint: str, stream: bool = False) -> RequestTrace:
    """The exchange is a request to `endpoint`: count it as active."""
    trace = request_trace(scope)
    trace.endpoint, trace.stream = endpoint, stream
    metrics.begin(trace)
    return trace


@attrs.define(eq=False)
class _Exchange:
    """One HTTP exchange as the wrapper sees it: its trace, whether the request body has fully
    arrived, the request id header, and its metrics and log line, finished once."""

    trace: RequestTrace
    metrics: Metrics
    clock: Callable[[], float]
    receive: Any
    send: Any
    body_complete: bool
    rid_header: tuple[bytes, bytes]
    finished: bool = False
    head: dict[str, Any] | None = None  # the response's head, once sent
    ended: bool = False  # the body's last message was sent
    cut_scope: trio.CancelScope | None = None  # cancelled by the drain deadline
    cut_by_drain: bool = False

    async def receive_tracked(self) -> Any:
        message = await self.receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.body_complete = True
        return message

    def finish(self) -> None:
        if not self.finished:
            self.finished = True
            self.metrics.finish(self.trace, self.clock())
            log_request(self.trace, self.clock())

    def cut(self) -> None:
        """The drain deadline: the exchange's work stops; `end_cut` says why to the client."""
        self.cut_by_drain = True
        if self.cut_scope is not None:
            self.cut_scope.cancel()

    async def end_cut(self) -> None:
        """End an exchange the drain deadline cut: a 503 if nothing was sent, the final error
        event of an SSE body, nothing if the answer was already whole."""
        if self.ended:
            return
        error = errors.ServerShuttingDown(
            "the gateway is shutting down: its drain deadline (GRACEFUL_TIMEOUT) passed"
            " before this request finished; send it again"
        )
        self.trace.fail(error)
        body = dumps(error_object(error))
        if self.head is None:
            headers = [(k.encode(), v.encode()) for k, v in error_headers(error).items()]
            headers += [(b"content-length", str(len(body)).encode()), CLOSE]
            head = {"type": "http.response.start", "status": error.status, "headers": headers}
            await self.send_with_id(head)
        elif (b"content-type", b"text/event-stream") in self.head["headers"]:
            body = b"data: " + body + b"\n\n"  # the stream's final event: no [DONE]
        else:
            return  # a JSON answer cut half-way: hypercorn closes the connection
        await self.send_with_id({"type": "http.response.body", "body": body, "more_body": False})

    async def send_with_id(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            headers = [*message.get("headers", ()), self.rid_header]
            if not self.body_complete:  # answered early (401, 404, 405, 413): see LAST_SEND_S
                headers.append(CLOSE)
            message["headers"] = headers
            self.head = message
        elif message["type"] == "http.response.body" and not message.get("more_body"):
            self.ended = True
            self.finish()  # before the last byte: a client that has its answer sees metrics
            # Hypercorn recycles or closes the connection inside this send, while Quart
            # cancels the exchange's tasks as the stream closes; unshielded, that close is
            # cancelled half-way and the connection hangs (bounded, shielded: the socket)
            with trio.move_on_after(LAST_SEND_S, shield=True):
                await self.send(message)
            return
        await self.send(message)


def with_request_scope(
    app: ASGIApp,
    metrics: Metrics,
    clock: Callable[[], float] = trio.current_time,
    lifecycle: Lifecycle | None = None,
) -> ASGIApp:
    lifecycle = lifecycle or Lifecycle()

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        rid = logs.accept_request_id(given.decode("latin-1"))
        token = logs.request_id.set(rid)
        cleanups: list[Cleanup] = []
        scope[CLEANUPS] = cleanups
        scope[TRACE] = trace = RequestTrace(rid, clock())
        scope[SERVER_SEND] = send
        bodiless = not any(  # a request without a body has all of it from the start
            k in (b"transfer-encoding", b"content-length") and v.strip() != b"0"
            for k, v in scope["headers"]
        )
        exchange = _Exchange(
            trace, metrics, clock, receive, send, bodiless, (b"x-request-id", rid.encode())
        )
        try:
            async with trio.open_nursery() as nursery:
                scope[NURSERY] = nursery
                exchange.cut_scope = nursery.cancel_scope
                lifecycle.track(exchange.cut)
                await app(scope, exchange.receive_tracked, exchange.send_with_id)
                nursery.cancel_scope.cancel()
        finally:
            lifecycle.untrack(exchange.cut)
            for cleanup in cleanups:
                await cleanup()  # each cleanup shields and bounds itself
            if exchange.cut_by_drain:
                await exchange.end_cut()
            exchange.finish()  # the exchange ended before its last byte: a disconnect, a failure
            logs.request_id.reset(token)

    return asgi


def log_request(trace: RequestTrace, now: float) -> None:
    """One line per request; never the prompt or the answer."""
    if not log.isEnabledFor(logging.INFO):
        return
    fields: dict[str, Any] = {
        "endpoint": trace.endpoint,
        "stream": trace.stream,
        "status": trace.status if trace.status is not None else 499,
        "duration_ms": round((now - trace.started_at) * 1000, 2),
    }
    if trace.model is not None:
        fields["model"] = trace.model
        fields["resolved"] = trace.resolved
        fields["attempts"] = [{"model": a.model, "reason": a.reason} for a in trace.attempts]
    if trace.first_token_at is not None:
        fields["ttft_ms"] = round((trace.first_token_at - trace.started_at) * 1000, 2)
    if trace.usage is not None:
        fields["prompt_tokens"] = trace.usage.prompt_tokens
        fields["completion_tokens"] = trace.usage.completion_tokens
    if trace.cache is not None:
        fields["cache"] = trace.cache
    if trace.error is not None:
        fields["error_type"] = trace.error
    log.info("request", extra={"fields": fields})
