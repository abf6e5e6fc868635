"""A client span per attempt: the walk's observer (`routing/attempts.AttemptObserver`),
entered around each try on a deployment in the try's own task and current while the try runs
(so the outgoing request carries its `traceparent`, and an image fetch is its child). A
failure ends it with the gateway's closed error type; a cancellation (a deadline, a lost
hedge, a client gone) ends it too. A stream's span sees its commit point (`mana_llm.commit`)
and stays open while the answer streams: it ends when the upstream is closed, however that
happens.
"""

from __future__ import annotations

import functools
import urllib.parse
from typing import Any

import attrs
import trio
from opentelemetry import context as otel_context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context

from mana_llm import errors
from mana_llm.domain import CLIENT_GONE, ChatResponse, EmbeddingResponse, Target
from mana_llm.routing.commit import CommittedStream
from mana_llm.routing.operations import Embed
from mana_llm.routing.targets import ALIAS_PREFIX
from mana_llm.telemetry import content
from mana_llm.telemetry.setup import Tracing
from mana_llm.telemetry.spans import DISCONNECTED, REQUEST, RequestSpan

# gen_ai.provider.name: the GenAI registry's well-known value where a provider has one
# (semantic-conventions-genai, docs/gen-ai/client-inference.md), else the provider's name
REGISTRY = {
    "openai": "openai",
    "groq": "groq",
    "deepseek": "deepseek",
    "mistral": "mistral_ai",
    "xai": "x_ai",
    "perplexity": "perplexity",
    "anthropic": "anthropic",
    "cohere": "cohere",
}


@functools.lru_cache(maxsize=256)
def _server(base_url: str) -> tuple[tuple[str, Any], ...]:
    """`server.address` and `server.port` of a deployment's base URL (never its path, which
    some providers put keys in)."""
    parsed = urllib.parse.urlsplit(base_url)
    if not parsed.hostname:
        return ()
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return (("server.address", parsed.hostname), ("server.port", port))


@attrs.define(eq=False)
class AttemptSpans:
    """The walk's observer (`routing/attempts.AttemptObserver`): a client span per try."""

    tracing: Tracing

    def trying(self, attempt: Any, deployment: Any, target: Target, hedge: bool) -> _Tried:
        """The try's span, current while the try runs (`_Tried` is the context manager)."""
        request = otel_context.get_value(REQUEST)
        request = request if isinstance(request, RequestSpan) else None
        operation = "embeddings" if isinstance(attempt, Embed) else "chat"
        prepared = getattr(attempt, "prepared", None)
        chat = getattr(prepared, "request", None)
        attributes = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": REGISTRY.get(target.provider, target.provider),
            "gen_ai.request.model": target.resolved,
            "mana_llm.deployment": deployment.name,
            **dict(_server(getattr(deployment, "base_url", "") or "")),
            **content.request_attributes(chat, attempt),
            **_place(request, target, hedge),
        }
        span = self.tracing.tracer.start_span(
            f"{operation} {target.resolved}", kind=SpanKind.CLIENT, attributes=attributes
        )
        if hedge and request is not None:
            request.span.add_event("mana_llm.hedge_started", {"mana_llm.target": target.resolved})
        if self.tracing.capture_content and chat is not None:
            content.record_input(span, chat, operation, attributes["gen_ai.provider.name"])
        return _Tried(span, request, target, self.tracing.capture_content, trio.current_time())

    def skipped(self, target: Target, error: errors.GatewayError) -> None:
        """An entry passed over without contact: an event on the request's span."""
        request = otel_context.get_value(REQUEST)
        if not isinstance(request, RequestSpan):
            return
        name = "mana_llm.circuit_refusal" if error.status == 503 else "mana_llm.skipped"
        attributes = {"mana_llm.target": target.resolved, "error.type": error.error_type}
        request.span.add_event(name, attributes)
        request.last = (target, error.error_type)


def _place(request: RequestSpan | None, target: Target, hedge: bool) -> dict[str, Any]:
    """The try's place in the walk: its index, and whether it retries the same entry, falls
    back from another (and why), or races beside one (a hedge); none of that for a first."""
    if request is None:
        return {"mana_llm.attempt": 0}
    index, last = request.tries, request.last
    request.tries += 1
    place: dict[str, Any] = {"mana_llm.attempt": index}
    trace = request.trace
    if trace.model is not None and trace.model.startswith(ALIAS_PREFIX):
        place["mana_llm.alias"] = trace.model
    if trace.caller is not None:
        place["mana_llm.caller"] = trace.caller
    if hedge:
        place["mana_llm.attempt.kind"] = "hedge"
        place["mana_llm.hedged"] = True
    elif last is not None:  # the first try of a walk says nothing more
        place["mana_llm.attempt.kind"] = "retry" if last[0] == target else "fallback"
        place["mana_llm.fallback.reason"] = last[1]
    return place


@attrs.define(eq=False)
class _Tried:
    """One try's span, ended by its outcome (a stream's: when its upstream closes)."""

    span: Span
    request: RequestSpan | None
    target: Target
    capture: bool
    started_at: float
    done: bool = False
    token: object = None

    def __enter__(self) -> _Tried:
        self.token = otel_context.attach(set_span_in_context(self.span))
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        try:
            if exc is not None:
                self.cancelled(exc)
        finally:
            otel_context.detach(self.token)  # type: ignore[arg-type]

    def ended(self, outcome: object) -> None:
        span = self.span
        if isinstance(outcome, errors.GatewayError):
            self._fail(outcome.error_type, outcome.reason)
            return
        if self.request is not None:
            self.request.last = None
        if isinstance(outcome, CommittedStream):
            self._committed(outcome)
            return
        if isinstance(outcome, ChatResponse):
            content.response_attributes(span, outcome.payload, outcome.usage, self.target)
            if self.capture:
                content.record_output(span, outcome.payload)
        elif isinstance(outcome, EmbeddingResponse) and outcome.usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", outcome.usage.prompt_tokens)
        self._end()

    def _committed(self, stream: CommittedStream) -> None:
        """The commit point; a live stream's span ends when its upstream is closed."""
        span = self.span
        span.add_event("mana_llm.commit")
        span.set_attribute(
            "gen_ai.response.time_to_first_chunk", trio.current_time() - self.started_at
        )
        content.response_attributes(span, stream.head, None, self.target)
        if stream.live:
            stream.hold(self._stream_closed)
        else:  # a buffered answer: already whole
            content.stream_attributes(span, stream.usage, stream.finish_reason)
            self._end()

    def _stream_closed(self) -> None:
        request = self.request
        trace = request.trace if request is not None else None
        if trace is not None and trace.resolved == self.target.resolved:
            content.stream_attributes(self.span, trace.usage, trace.finish_reason)
            if trace.status is None or trace.status >= 400:
                error = trace.error if trace.status is not None else DISCONNECTED
                # the conventions: a generation that ended abnormally reports `error`
                self.span.set_attribute("gen_ai.response.finish_reasons", ["error"])
                self._fail(error or "cancelled", "the stream ended without its answer")
                return
        self._end()

    def cancelled(self, exc: BaseException) -> None:
        """Ended before an outcome: a deadline, a hedge that lost, a client gone (trio says
        which: `Cancelled.source` and the reason a scope was cancelled with, trio >= 0.31)."""
        if self.done:
            return
        if getattr(exc, "source", None) == "deadline":
            self._fail("upstream_timeout", "the attempt's deadline passed")
        elif getattr(exc, "reason", None) == CLIENT_GONE:
            self._fail(DISCONNECTED, "the client went away")
        else:
            self._fail("cancelled" if isinstance(exc, trio.Cancelled) else "internal", repr(exc))

    def _fail(self, error_type: str, reason: str) -> None:
        self.span.set_attribute("error.type", error_type)
        self.span.set_status(Status(StatusCode.ERROR, reason[:200]))
        if self.request is not None:
            self.request.last = (self.target, error_type)
        self._end()

    def _end(self) -> None:
        if not self.done:
            self.done = True
            self.span.end()
