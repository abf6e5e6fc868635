"""The request pipeline: one ASGI layer around every exchange, the plain inference routes and
Quart's routes alike, so that each step of it is done once, here:

- the request's context: its id (the caller's X-Request-Id when sane), its trace, its nursery
  for work beside the body, its cleanups and its cache namespace, one `RequestContext` under
  one key of the ASGI scope (`context(scope)`);
- who may call: a gateway key on /v1/* (`Guard`), a 401 before any route runs;
- every answer's head: the request id, CORS, the status on the trace and the cache header (a
  stream's status is known at its end), `Connection: close` when the body has not all arrived;
- the end, however it came: the nursery cancelled, every cleanup run (no task and no upstream
  connection left behind: a streaming answer owns an open upstream even if its body was never
  sent), the trace finished once (its metrics and its log line), the context dropped from the
  scope (nothing of the exchange is left for the cycle collector);
- the drain deadline (`Lifecycle.cut_open_exchanges`): an exchange still open ends as the
  gateway's own doing, 503 `server_shutting_down`: a JSON error when nothing was sent yet, the
  final error event (no `[DONE]`) of a stream.

Why plain ASGI in front of Quart-Trio rather than one of them: the two inference routes skip
Quart's request and response objects and its tasks per request (10-25% of a streamed chunk's
CPU, issue 13), and Quart keeps routing, views and error handlers for every other route. What
both need is above, and lives only here; views stay thin (parse, one use case, render).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs
import trio

from mana_llm import errors, logs
from mana_llm.api.guard import PUBLIC, Guard
from mana_llm.api.render import error_headers, error_object
from mana_llm.codec import dumps
from mana_llm.lifecycle import Lifecycle
from mana_llm.metrics import Metrics, RequestTrace

Cleanup = Callable[[], Awaitable[None]]
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

CONTEXT = "mana_llm"  # the one key of the ASGI scope the gateway adds

log = logging.getLogger("mana_llm.request")

# A response sent before the request body has fully arrived closes the connection: the rest of
# the body would otherwise be read as the next request, or leave the connection waiting.
CLOSE = (b"connection", b"close")
LAST_SEND_S = 10.0
CACHE = b"x-mana-llm-cache"
CACHE_HEADER = {"hit": b"HIT", "miss": b"MISS", "bypass": b"BYPASS", "error": b"BYPASS"}
SSE_TYPE = b"text/event-stream"


@attrs.define(eq=False)
class RequestContext:
    """One exchange's own state, outliving its view."""

    trace: RequestTrace
    nursery: trio.Nursery  # work beside the body; cancelled when the exchange ends
    server_send: Send  # the server's own send: the middle of a streamed body goes straight there
    namespace: str  # the caller's cache namespace (its key, hashed)
    cleanups: list[Cleanup] = attrs.field(factory=list)
    caller: Any = None  # access.keys.Caller: the keys file's caller, None when anonymous
    admission: Any = None  # access.gate.Admission, once admitted

    def add_cleanup(self, cleanup: Cleanup) -> None:
        """Run once the exchange is over, however it ended (each shields and bounds itself)."""
        self.cleanups.append(cleanup)

    def begin(self, metrics: Metrics, endpoint: str, stream: bool = False) -> RequestTrace:
        """The exchange is a request to `endpoint`: count it as active."""
        self.trace.endpoint, self.trace.stream = endpoint, stream
        metrics.begin(self.trace)
        return self.trace


class AccessStep(Protocol):
    """The admission step (`api/callers.Access`): who calls, and the end of what it asked."""

    def identify(self, token: str) -> Any: ...

    def namespace(self, caller: Any) -> str: ...

    def finish(self, ctx: RequestContext, now: float, wall: float) -> None: ...

    def settle_later(self, ctx: RequestContext) -> bool: ...

    async def settle(self, ctx: RequestContext) -> None: ...


class SpanStep(Protocol):
    """The request's server span (`telemetry/spans.ServerSpans`): begun as the exchange
    starts (None: not traced), ended after its cleanups, from its trace."""

    def begin(self, scope: Any, trace: RequestTrace) -> Any: ...

    def end(self, span: Any, now: float) -> None: ...


def context(scope: Any) -> RequestContext:
    found: RequestContext = scope[CONTEXT]
    return found


def _header(headers: Any, name: bytes) -> bytes:
    """The first value of header `name` (lower case) in ASGI headers, or b""."""
    return next((v for k, v in headers if k.lower() == name), b"")


@attrs.define(eq=False)
class _Exchange:
    """One HTTP exchange as the pipeline sees it: its trace, whether the request body has fully
    arrived, what every answer's head gets, its metrics and log line (once), and whether the
    drain deadline cut it."""

    trace: RequestTrace
    metrics: Metrics
    clock: Callable[[], float]
    receive: Any
    send: Any
    body_complete: bool
    head_extra: list[tuple[bytes, bytes]]  # the request id, CORS
    finished: bool = False
    head: dict[str, Any] | None = None  # the response's head, once sent
    ended: bool = False  # the body's last message was sent
    cut_scope: trio.CancelScope | None = None  # cancelled by the drain deadline
    cut_by_drain: bool = False
    access: AccessStep | None = None
    context: RequestContext | None = None

    async def receive_tracked(self) -> Any:
        message = await self.receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.body_complete = True
        return message

    def finish(self) -> None:
        if not self.finished:
            self.finished = True
            if self.access is not None and self.context is not None:  # its charge, its row
                self.access.finish(self.context, self.clock(), time.time())
            self.metrics.finish(self.trace, self.clock())
            log_request(self.trace, self.clock())

    async def send_with_id(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = self._head(message["status"], message.get("headers", ()))
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

    def _head(self, status: int, given: Any) -> list[tuple[bytes, bytes]]:
        """Every answer's head: what the route gave, the request id and CORS, the cache
        header, and the status on the trace (a stream's is known only at its end)."""
        headers = [*given, *self.head_extra]
        trace = self.trace
        if trace.status is None and not _header(given, b"content-type").startswith(SSE_TYPE):
            trace.status = status
        if trace.cache is not None and status < 400:
            headers.append((CACHE, CACHE_HEADER[trace.cache]))
        if not self.body_complete:  # answered early (401, 404, 405, 413): see LAST_SEND_S
            headers.append(CLOSE)
        return headers

    async def answer_error(self, error: errors.GatewayError, close: bool = False) -> None:
        """A whole JSON error answer, from the pipeline itself (a 401, a drain cut; `close`:
        the connection closes with it)."""
        self.trace.fail(error)
        body = dumps(error_object(error))
        headers = [(k.encode(), v.encode()) for k, v in error_headers(error).items()]
        headers.append((b"content-length", str(len(body)).encode()))
        if close and self.body_complete:  # (else the head gets it anyway)
            headers.append(CLOSE)
        await self.send_with_id(
            {"type": "http.response.start", "status": error.status, "headers": headers}
        )
        await self.send_with_id({"type": "http.response.body", "body": body, "more_body": False})

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
        if self.head is None:
            await self.answer_error(error, close=True)
        elif _header(self.head["headers"], b"content-type").startswith(SSE_TYPE):
            self.trace.fail(error)  # the stream's final event: no [DONE]
            event = b"data: " + dumps(error_object(error)) + b"\n\n"
            await self.send_with_id(
                {"type": "http.response.body", "body": event, "more_body": False}
            )
        # else: a JSON answer cut half-way; hypercorn closes the connection


def with_request_scope(
    app: ASGIApp,
    metrics: Metrics,
    guard: Guard,
    lifecycle: Lifecycle,
    access: AccessStep | None = None,
    clock: Callable[[], float] = trio.current_time,
    spans: SpanStep | None = None,
) -> ASGIApp:
    """`app` (the plain routes in front of Quart) inside the pipeline."""

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = scope["headers"]
        rid = logs.accept_request_id(_header(headers, b"x-request-id").decode("latin-1"))
        token = logs.request_id.set(rid)
        trace = RequestTrace(rid, clock())
        span = spans.begin(scope, trace) if spans is not None else None
        bodiless = not any(  # a request without a body has all of it from the start
            k in (b"transfer-encoding", b"content-length") and v.strip() != b"0" for k, v in headers
        )
        extra = [(b"x-request-id", rid.encode())]
        extra += guard.cors_headers(_header(headers, b"origin").decode("latin-1"))
        exchange = _Exchange(trace, metrics, clock, receive, send, bodiless, extra, access=access)
        cleanups: list[Cleanup] = []
        try:
            try:
                namespace, caller = _caller(guard, access, scope)
            except errors.Unauthorized as error:  # before any route runs
                await exchange.answer_error(error)
                return
            trace.caller = None if caller is None else caller.name
            async with trio.open_nursery() as nursery:
                ctx = RequestContext(trace, nursery, send, namespace, cleanups, caller)
                scope[CONTEXT] = exchange.context = ctx
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
            if spans is not None and span is not None:
                spans.end(span, clock())
            ended = exchange.context  # its upstream is closed: its slot is freed
            if access is not None and ended is not None and not access.settle_later(ended):
                await access.settle(ended)
            # the scope held the context and the context the exchange's whole state, in a
            # cycle: cut, it is all freed now by reference counting, not by the cycle
            # collector every few requests (tests/e2e/test_garbage.py)
            scope.pop(CONTEXT, None)
            exchange.context = exchange.head = None
            logs.request_id.reset(token)

    return asgi


def _caller(guard: Guard, access: AccessStep | None, scope: Any) -> tuple[str, Any]:
    """The caller's cache namespace and, for a key of the keys file, the caller; Unauthorized
    on /v1/* without a valid key (a CORS preflight and the operators' endpoints need none)."""
    if scope["method"] == "OPTIONS" or not scope["path"].startswith("/v1/"):
        return PUBLIC, None
    authorization = _header(scope["headers"], b"authorization").decode("latin-1")
    token = guard.bearer(authorization)
    if access is not None and token:
        caller = access.identify(token)
        if caller is not None:
            return access.namespace(caller), caller
    return guard.namespace(authorization), None


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
