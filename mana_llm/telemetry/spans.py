"""The server span of each /v1 request, and what attempt spans share with it.

The request pipeline begins it as the exchange starts (continuing the caller's trace from a
valid `traceparent`/`tracestate`; anything else starts a new one), attached to the
OpenTelemetry context with the request's `RequestSpan` beside it, and ends it after the
exchange's cleanups, from its `RequestTrace`: the status, the error type, what only the gateway
knows (alias, cache, caller, hedge), the first token (`mana_llm.first_token`, when the client
got it) and hedges as events. A client that went away ends it as 499 with `error.type`
`client_disconnected`. Attempt spans: `telemetry/attempts.py`.
"""

from __future__ import annotations

import time
from typing import Any

import attrs
from opentelemetry import context as otel_context
from opentelemetry.trace import (
    Span,
    SpanKind,
    Status,
    StatusCode,
    get_current_span,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from mana_llm.domain import Target
from mana_llm.metrics import RequestTrace
from mana_llm.routing.targets import ALIAS_PREFIX
from mana_llm.telemetry.setup import Tracing

PROPAGATOR = TraceContextTextMapPropagator()
REQUEST = otel_context.create_key("mana_llm.request")  # the RequestSpan, in the OTel context
ROUTES = frozenset(
    {"/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/models", "/v1/usage"}
)
DISCONNECTED = "client_disconnected"


@attrs.define(eq=False)
class RequestSpan:
    """One request's server span, and what its attempts need from the request."""

    span: Span
    trace: RequestTrace
    wall_ns: int  # the wall clock at trace.started_at: the trace's times become timestamps
    token: object = None
    tries: int = 0
    last: tuple[Target, str] | None = None  # the try before: its entry and its error type

    def at(self, when: float) -> int:
        return self.wall_ns + int((when - self.trace.started_at) * 1e9)


def _route(path: str) -> str | None:
    if path in ROUTES:
        return path
    return "/v1/models/{model}" if path.startswith("/v1/models/") else None


@attrs.define(eq=False)
class ServerSpans:
    """The request pipeline's span step (`api/request_scope.SpanStep`)."""

    tracing: Tracing

    def begin(self, scope: Any, trace: RequestTrace) -> RequestSpan | None:
        path, method = scope["path"], scope["method"]
        if not path.startswith("/v1/") or method == "OPTIONS":
            return None
        carrier = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope["headers"]
            if k in (b"traceparent", b"tracestate", b"user-agent")
        }
        parent = PROPAGATOR.extract(carrier)  # malformed: an empty context, a new trace
        route = _route(path)
        server = scope.get("server") or ("", None)
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.scheme": scope.get("scheme", "http"),
            "server.address": server[0] or "",
        }
        if route is not None:
            attributes["http.route"] = route
        if "user-agent" in carrier:
            attributes["user_agent.original"] = carrier["user-agent"][:256]
        name = f"{method} {route}" if route else method
        span = self.tracing.tracer.start_span(
            name, parent, SpanKind.SERVER, attributes, start_time=time.time_ns()
        )
        request = RequestSpan(span, trace, time.time_ns())
        context = otel_context.set_value(REQUEST, request, set_span_in_context(span, parent))
        request.token = otel_context.attach(context)
        return request

    def end(self, request: RequestSpan, now: float) -> None:
        trace, span = request.trace, request.span
        status = trace.status if trace.status is not None else 499
        fields = _describe(trace)
        fields["http.response.status_code"] = status
        error = trace.error if trace.status is not None else DISCONNECTED
        if error is not None:
            fields["error.type"] = error
        span.set_attributes(fields)
        if status >= 500 or trace.status is None:
            span.set_status(Status(StatusCode.ERROR, error))
        if trace.first_token_at is not None:
            span.add_event("mana_llm.first_token", timestamp=request.at(trace.first_token_at))
        if trace.hedge in ("won", "lost"):
            span.add_event("mana_llm.hedge", {"mana_llm.hedge.winner": _winner(trace)})
        span.end(end_time=request.at(now))
        otel_context.detach(request.token)  # type: ignore[arg-type]


def _winner(trace: RequestTrace) -> str:
    """Which of the two raced: `first` (the entry) or `hedge` (the one started beside it)."""
    return "hedge" if trace.hedge == "won" else "first"


def _describe(trace: RequestTrace) -> dict[str, Any]:
    """What only the gateway knows of the request, for its server span: the alias asked for,
    what the cache did (and, for a hit, which model's answer it was: no attempt says so),
    the caller, a hedge. Each attribute is paid for twice (on the request path and in the
    exporter's encoding), so what an attempt span already says is not repeated here."""
    fields: dict[str, Any] = {}
    if trace.model is not None and trace.model.startswith(ALIAS_PREFIX):
        fields["mana_llm.alias"] = trace.model
    if trace.cache is not None and trace.cache != "bypass":
        fields["mana_llm.cache"] = trace.cache
        if trace.cache == "hit" and trace.resolved is not None:
            fields["mana_llm.resolved"] = trace.resolved
    if trace.caller is not None:
        fields["mana_llm.caller"] = trace.caller
    if trace.hedge is not None:
        fields["mana_llm.hedge"] = trace.hedge
    return fields


def current_ids() -> tuple[str, str] | None:
    """The current span's trace and span ids as hex (log lines carry them), or None."""
    found = get_current_span().get_span_context()
    if not found.is_valid:
        return None
    return format(found.trace_id, "032x"), format(found.span_id, "016x")
