"""This worker's tracer provider, built from the OTEL_* settings, and its end.

The provider is the worker's own (never the process-global one the OpenTelemetry API keeps):
each gateway in a process, a test's included, exports its own spans. The SDK's batch
processor exports on its own thread, off the request path; its queue is bounded (OTEL_BSP_*
tune it), and what it drops, queue full or export failed (an unreachable collector), is counted
in `mana_llm_trace_spans_dropped_total`.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import attrs
import trio
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import Tracer

from mana_llm.lifecycle import Lifecycle
from mana_llm.metrics import Metrics
from mana_llm.settings import Settings

log = logging.getLogger("mana_llm.service")

Dropped = Callable[[str, int], None]  # (reason, spans)


def sampler(settings: Settings) -> Sampler:
    """OTEL_TRACES_SAMPLER and _ARG, as the OTel SDK configuration spec names them."""
    name, ratio = settings.traces_sampler, settings.traces_sampler_arg
    root: Sampler = {"always_on": ALWAYS_ON, "always_off": ALWAYS_OFF}.get(
        name.removeprefix("parentbased_"), TraceIdRatioBased(ratio)
    )
    return ParentBased(root) if name.startswith("parentbased_") else root


def resource(settings: Settings) -> Resource:
    """The service, and this worker: `service.instance.id` is unique per process."""
    attributes: dict[str, str | int] = dict(settings.resource_attributes)
    attributes["service.name"] = settings.service_name
    attributes["service.instance.id"] = f"{socket.gethostname()}-{os.getpid()}"
    if settings.worker is not None:
        attributes["mana_llm.worker"] = settings.worker
    return Resource.create(attributes)


@attrs.define(eq=False)
class _Counting(SpanExporter):
    """The exporter, with the spans of a failed export counted as dropped."""

    inner: SpanExporter
    dropped: Dropped

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:  # an exporter's own bug: the spans are lost all the same
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self.dropped("export_failed", len(spans))
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _Batching(BatchSpanProcessor):
    """The SDK's batch processor; a span that finds its queue full is counted (the SDK drops
    the oldest and only logs it: `_shared_internal.BatchProcessor.emit`)."""

    def __init__(self, exporter: SpanExporter, dropped: Dropped) -> None:
        super().__init__(_Counting(exporter, dropped))
        batcher = getattr(self, "_batch_processor", None)
        self._queue = getattr(batcher, "_queue", None)  # a deque with maxlen, or unknown
        self._dropped = dropped

    def on_end(self, span: ReadableSpan) -> None:
        queue = self._queue
        if queue is not None and queue.maxlen is not None and len(queue) >= queue.maxlen:
            self._dropped("queue_full", 1)
        super().on_end(span)


def exporter(settings: Settings) -> SpanExporter:
    if settings.traces_exporter == "console":
        return ConsoleSpanExporter()
    # imported here: the OTLP exporter loads protobuf and requests, only when asked for
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=settings.traces_endpoint)


@attrs.define(eq=False)
class Tracing:
    """Traces on: the worker's tracer and what the spans need to know."""

    provider: TracerProvider
    tracer: Tracer
    capture_content: bool = False  # OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT

    async def close(self, within_s: float) -> None:
        """Export what is queued and stop, within `within_s` (a collector that does not answer
        costs that long at most: the flush is left to its thread)."""
        with trio.move_on_after(within_s) as scope:
            await trio.to_thread.run_sync(self.provider.force_flush, abandon_on_cancel=True)
        if scope.cancelled_caught:
            log.warning("traces: the exporter did not finish within %gs; spans lost", within_s)
        with trio.move_on_after(1.0):
            await trio.to_thread.run_sync(self.provider.shutdown, abandon_on_cancel=True)


def describe(settings: Settings) -> str:
    """Where traces go, for the start-up line."""
    if settings.traces_exporter == "none":
        return "traces: off (OTEL_TRACES_EXPORTER or OTEL_EXPORTER_OTLP_ENDPOINT turn them on)"
    where = "the console" if settings.traces_exporter == "console" else settings.traces_endpoint
    arg = f" {settings.traces_sampler_arg:g}" if "ratio" in settings.traces_sampler else ""
    return f"traces: to {where} as {settings.service_name} (sampler {settings.traces_sampler}{arg})"


@asynccontextmanager
async def open_tracing(
    settings: Settings, metrics: Metrics, lifecycle: Lifecycle
) -> AsyncIterator[Tracing | None]:
    """The worker's tracing for the service's life (None when off), flushed at the end within
    what is left of the drain's budget (DRAIN_DELAY + GRACEFUL_TIMEOUT after SIGTERM: the
    orchestrator's grace period is sized on it), GRACEFUL_TIMEOUT when no drain ran."""
    log.info("%s", describe(settings))
    if settings.traces_exporter == "none":
        yield None
        return

    def dropped(reason: str, count: int) -> None:  # on the exporter's thread: the counter locks
        metrics.trace_spans_dropped.labels(reason).inc(count)

    provider = TracerProvider(sampler=sampler(settings), resource=resource(settings))
    provider.add_span_processor(_Batching(exporter(settings), dropped))
    tracing = Tracing(provider, provider.get_tracer("mana_llm"), settings.capture_message_content)
    try:
        yield tracing
    finally:
        with trio.CancelScope(shield=True):
            left = lifecycle.drain_left_s(trio.current_time(), settings.graceful_timeout_s)
            await tracing.close(left)
