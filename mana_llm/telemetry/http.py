"""Outgoing HTTP, traced: every request to an upstream carries the current attempt span's
`traceparent` (and `tracestate`), so vLLM and other servers that trace continue the trace;
an image fetch (Ollama takes images inline, the gateway fetches URLs) gets its own short
client span, ended when its body is closed. Both wrap a transport (`providers/upstream.
Transport`): the providers know nothing of traces."""

from __future__ import annotations

from typing import Any

import attrs
import httpx
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from mana_llm.providers.pool import Released
from mana_llm.providers.upstream import Transport
from mana_llm.telemetry.spans import PROPAGATOR


@attrs.define(eq=False)
class Propagating:
    """A transport whose requests carry the current span's context (none outside a span)."""

    inner: Transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        PROPAGATOR.inject(request.headers)  # the default setter: headers[name] = value
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()


@attrs.define(eq=False)
class Spanned:
    """A transport whose every request is a client span (the image fetches')."""

    inner: Transport
    tracer: Tracer

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        attributes: dict[str, Any] = {
            "http.request.method": request.method,
            "server.address": url.host,
            "server.port": url.port or (443 if url.scheme == "https" else 80),
            "mana_llm.purpose": "image_fetch",
        }
        span = self.tracer.start_span(request.method, kind=SpanKind.CLIENT, attributes=attributes)
        try:
            response = await self.inner.handle_async_request(request)
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__name__)
            span.set_status(Status(StatusCode.ERROR))
            span.end()
            raise
        span.set_attribute("http.response.status_code", response.status_code)
        if response.status_code >= 400:
            span.set_attribute("error.type", str(response.status_code))
            span.set_status(Status(StatusCode.ERROR))
        response.stream = Released(response.stream, span.end)  # the span ends with the body
        return response
