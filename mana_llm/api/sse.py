"""The SSE body of a committed stream, relayed as it comes: chunks re-framed as `data:` events,
one send per upstream read, `[DONE]` only after a complete answer, a final error event (and no
`[DONE]`) when the upstream fails after commit. The last event ends the body in the same send.

One loop per stream, pushing to the ASGI `send`: no iterator protocol, no body object between
the upstream and hypercorn (issue 13: each layer is paid on every chunk).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import attrs
import trio

from mana_llm import errors
from mana_llm.api.render import error_object
from mana_llm.codec import dumps
from mana_llm.domain import AnswerStream, StreamChunk
from mana_llm.metrics import RequestTrace

log = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"
Send = Callable[[dict[str, Any]], Any]


@attrs.frozen
class BodySend:
    """Where an SSE body goes: its middle messages (`more_body` true) straight to the
    server, its last through the request scope's `send` (metrics, the shielded last send)."""

    more: Send
    last: Send

    async def end(self, body: bytes) -> None:
        await self.last({"type": "http.response.body", "body": body, "more_body": False})


def error_event(error: errors.GatewayError) -> bytes:
    return b"data: " + dumps(error_object(error)) + b"\n\n"


class Frames(Protocol):
    """Another API's events for the same chat stream (the Responses API's): what a read's
    chunks become (b"": nothing to send), the last event of a complete answer, of a failure."""

    def chunks(self, chunks: list[StreamChunk]) -> bytes: ...

    def done(self) -> bytes: ...

    def failed(self, error: errors.GatewayError) -> bytes: ...


async def relay(
    send: BodySend,
    stream: AnswerStream,
    include_usage: bool,
    trace: RequestTrace,
    clock: Callable[[], float] = trio.current_time,
    frames: Frames | None = None,
) -> None:
    """The body of an SSE answer whose head is out; closes the stream however it ends.
    Chat completion chunks as they come, or, given `frames`, the events they become."""
    more = send.more
    relayed = [0]  # chunks sent: what a charge estimates when the upstream gave no usage

    async def emit(chunks: list[StreamChunk]) -> None:
        relayed[0] += len(chunks)
        if frames is not None:
            body = frames.chunks(chunks)
            if not body:
                return
        elif len(chunks) == 1 and chunks[0].usage is None:  # the common read: one content chunk
            body = b"data: " + dumps(chunks[0].payload) + b"\n\n"
        else:
            events = [
                b"data: " + dumps(chunk.payload) + b"\n\n"
                for chunk in chunks
                if include_usage or not chunk.usage_only
            ]
            if not events:
                return
            body = events[0] if len(events) == 1 else b"".join(events)
        await more({"type": "http.response.body", "body": body, "more_body": True})

    try:
        try:
            await stream.relay(emit)
        except errors.GatewayError as error:
            last = _failed(trace, stream, error, clock, frames)
        except Exception:  # the root of this stream's relay: a bug must not look like an answer
            log.exception("stream relay failed")
            bug = errors.InternalError("the gateway failed relaying the stream")
            last = _failed(trace, stream, bug, clock, frames)
        else:
            trace.status = 200
            trace.usage, trace.finish_reason = stream.usage, stream.finish_reason
            trace.upstream_ended_at = clock()
            last = DONE if frames is None else frames.done()
        trace.relayed = relayed[0]  # before the last send, which finishes the trace
        await send.end(last)
    finally:
        trace.relayed = relayed[0]
        await stream.aclose()  # after the last event: what follows the answer is off its path


def _failed(
    trace: RequestTrace,
    stream: AnswerStream,
    error: errors.GatewayError,
    clock: Callable[[], float],
    frames: Frames | None,
) -> bytes:
    trace.fail(error)
    trace.usage = stream.usage
    trace.upstream_ended_at = clock()
    return error_event(error) if frames is None else frames.failed(error)


@attrs.define(eq=False)
class Pending:
    """What the walk behind keep-alives found: a committed stream or the error that ended it."""

    _ready: trio.Event = attrs.field(factory=trio.Event)
    result: AnswerStream | errors.GatewayError | None = None

    def resolve(self, result: AnswerStream | errors.GatewayError) -> None:
        self.result = result
        self._ready.set()

    async def wait(self, seconds: float) -> bool:
        """Whether the walk is over, waiting at most `seconds` for it."""
        with trio.move_on_after(seconds):
            await self._ready.wait()
        return self._ready.is_set()


async def relay_pending(
    send: BodySend,
    pending: Pending,
    keepalive_s: float,
    include_usage: bool,
    trace: RequestTrace,
    frames: Frames | None = None,
) -> None:
    """SSE keep-alives while the walk looks for a first token (headers are already out, so
    proxies with idle timeouts keep the connection); then the committed stream, or a final
    error event when nothing answered. Comments do not commit the stream."""
    while not await pending.wait(keepalive_s):
        await send.more({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
    result = pending.result
    if isinstance(result, errors.GatewayError):
        trace.fail(result)
        await send.end(error_event(result) if frames is None else frames.failed(result))
        return
    assert result is not None
    await relay(send, result, include_usage, trace, frames=frames)
