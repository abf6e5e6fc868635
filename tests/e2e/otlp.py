"""A real OTLP/HTTP trace receiver on 127.0.0.1 (the fake server, answering `POST /v1/traces`
as the OTLP spec says: 200 with an empty `ExportTraceServiceResponse`), decoding what the
exporter sent with opentelemetry-proto, and the spans as plain values for tests."""

from __future__ import annotations

from typing import Any

import attrs
import trio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.fakes.server import FakeServer, Reply, Request

KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


def value(any_value: AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


@attrs.frozen
class Span:
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any], int]]
    status: int  # 0 unset, 1 ok, 2 error
    start: int
    end: int
    resource: dict[str, Any]

    def event(self, name: str) -> dict[str, Any]:
        found = [attributes for n, attributes, _ in self.events if n == name]
        assert len(found) == 1, (name, self.events)
        return found[0]


@attrs.define(eq=False)
class Receiver:
    server: FakeServer | None = None
    spans: list[Span] = attrs.field(factory=list)
    batches: int = 0
    arrived: trio.Event = attrs.field(factory=trio.Event)

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url + "/v1/traces"

    def __call__(self, request: Request) -> Reply:
        export = ExportTraceServiceRequest.FromString(request.body)
        for resource_spans in export.resource_spans:
            resource = {a.key: value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(_span(s, resource) for s in scope_spans.spans)
        self.batches += 1
        self.arrived.set()
        self.arrived = trio.Event()
        body = ExportTraceServiceResponse().SerializeToString()
        return Reply(200, [body], {"content-type": "application/x-protobuf"})

    async def wait_for(self, count: int) -> list[Span]:
        """Until `count` spans have arrived (the caller bounds the wait)."""
        while len(self.spans) < count:
            await self.arrived.wait()
        return self.spans

    def named(self, prefix: str) -> list[Span]:
        return [s for s in self.spans if s.name.startswith(prefix)]


def _span(span: Any, resource: dict[str, Any]) -> Span:
    return Span(
        span.name,
        KINDS.get(span.kind, "?"),
        span.trace_id.hex(),
        span.span_id.hex(),
        span.parent_span_id.hex(),
        {a.key: value(a.value) for a in span.attributes},
        [
            (e.name, {a.key: value(a.value) for a in e.attributes}, e.time_unix_nano)
            for e in span.events
        ],
        span.status.code,
        span.start_time_unix_nano,
        span.end_time_unix_nano,
        resource,
    )


async def start_receiver(nursery: trio.Nursery) -> Receiver:
    receiver = Receiver()
    receiver.server = await nursery.start(FakeServer(receiver).serve)
    return receiver
