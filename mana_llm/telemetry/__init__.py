"""OpenTelemetry traces (issue 24), off unless the standard OTEL_* variables ask for them.

setup.py    the tracer provider of this worker: resource, sampler, the batch processor and
            its exporter (OTLP over HTTP/protobuf, or the console), dropped spans counted,
            flushed at shutdown within GRACEFUL_TIMEOUT
spans.py    the server span of each /v1 request (the request pipeline's step), read off its
            RequestTrace when the exchange ends
attempts.py a client span per attempt (the walk's observer), read off the try and its
            outcome
content.py  the opt-in message content, as the GenAI conventions' event, bounded
http.py     outgoing requests carry the attempt's `traceparent`; image fetches get a span

Spans follow a request through trio's tasks because OpenTelemetry's context is a
contextvars.ContextVar and trio copies the spawning task's context into every task it starts
(trio 0.35 `_core/_run.py`, `Runner.spawn_impl`: `context = copy_context()`): the walk beside
the keep-alives, a hedge's attempt and the request's cleanups all see the request's span.
"""

from __future__ import annotations

from mana_llm import logs
from mana_llm.telemetry.attempts import AttemptSpans
from mana_llm.telemetry.setup import Tracing
from mana_llm.telemetry.spans import ServerSpans, current_ids


def hooks(tracing: Tracing | None) -> tuple[AttemptSpans | None, ServerSpans | None]:
    """The walk's observer and the pipeline's span step (None, None: traces off)."""
    if tracing is None:
        return None, None
    logs.span_ids = current_ids
    return AttemptSpans(tracing), ServerSpans(tracing)
