"""`python -m mana_llm` with its spans exported to an in-process sink: the tracer provider,
the batch processor and its thread as configured, but an exporter that takes each batch and
keeps nothing (no encoding, no HTTP). `bench/traces.py` runs it to measure what traces cost
on the request path, apart from what the OTLP exporter's encoding costs on its thread."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from mana_llm import __main__ as cli
from mana_llm.settings import Settings
from mana_llm.telemetry import setup


class Sink(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _sink(settings: Settings) -> SpanExporter:
    return Sink()


if __name__ == "__main__":
    setup.exporter = _sink
    sys.exit(cli.main())
