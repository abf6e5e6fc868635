"""OpenTelemetry traces (issue 24), off unless the standard OTEL_* variables ask for them.

setup.py    the tracer provider of this worker: resource, sampler, the batch processor and
            its exporter (OTLP over HTTP/protobuf, or the console), dropped spans counted,
            flushed at shutdown within GRACEFUL_TIMEOUT
spans.py    where spans begin and end: the server span of each /v1 request (the request
            pipeline's step) and a client span per attempt (the walk's observer), read off
            what the gateway already keeps (RequestTrace, the attempt, its outcome)
content.py  the opt-in message content, as the GenAI conventions' event, bounded
http.py     outgoing requests carry the attempt's `traceparent`; image fetches get a span

Spans follow a request through trio's tasks because OpenTelemetry's context is a
contextvars.ContextVar and trio copies the spawning task's context into every task it starts
(trio 0.35 `_core/_run.py`, `Runner.spawn_impl`: `context = copy_context()`): the walk beside
the keep-alives, a hedge's attempt and the request's cleanups all see the request's span.
"""
