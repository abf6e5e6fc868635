"""The SSE body of a committed stream: chunks re-framed as `data:` events, `[DONE]` only after a
complete answer, a final error event (and no `[DONE]`) when the upstream fails after commit."""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from mana_llm import errors
from mana_llm.api.render import error_object
from mana_llm.codec import dumps
from mana_llm.domain import AnswerStream
from mana_llm.metrics import RequestTrace

log = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"


def error_event(error: errors.GatewayError) -> bytes:
    return b"data: " + dumps(error_object(error)) + b"\n\n"


class SSEBody:
    """An async iterator of bytes (not a generator: it owns the upstream and closes it in
    `aclose`, which `plain.Call.stream` calls when the body ends, fails or is cancelled).
    `done` once the last event (`[DONE]` or a final error) has been given."""

    def __init__(
        self,
        stream: AnswerStream,
        include_usage: bool,
        trace: RequestTrace,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._stream = stream
        self._include_usage = include_usage
        self._trace = trace
        self._clock = clock
        self.done = False

    def __aiter__(self) -> SSEBody:
        return self

    async def __anext__(self) -> bytes:
        while not self.done:
            try:
                chunks = await self._stream.receive()
            except errors.GatewayError as error:
                return self._end(error)
            except Exception:  # the root of this stream's relay: a bug must not look like an answer
                log.exception("stream relay failed")
                return self._end(errors.InternalError("the gateway failed relaying the stream"))
            if not chunks:
                self.done = True
                self._trace.status = 200
                self._trace.usage = self._stream.usage
                self._trace.upstream_ended_at = self._clock()
                return DONE
            keep = self._include_usage
            events = [
                b"data: " + dumps(chunk.payload) + b"\n\n"
                for chunk in chunks
                if keep or not chunk.usage_only
            ]
            if events:
                return b"".join(events)
        raise StopAsyncIteration

    def _end(self, error: errors.GatewayError) -> bytes:
        self.done = True
        self._trace.fail(error)
        self._trace.usage = self._stream.usage
        self._trace.upstream_ended_at = self._clock()
        return error_event(error)

    async def aclose(self) -> None:
        self.done = True
        await self._stream.aclose()


class PendingSSEBody:
    """SSE keep-alives while the walk looks for a first token (headers are already out, so
    proxies with idle timeouts keep the connection); then the committed stream, or a final
    error event when nothing answered. Comments do not commit the stream."""

    def __init__(self, include_usage: bool, keepalive_s: float, trace: RequestTrace) -> None:
        self._include_usage = include_usage
        self._trace = trace
        self._keepalive_s = keepalive_s
        self._ready = trio.Event()
        self._result: SSEBody | bytes | None = None
        self._closed = False

    @property
    def done(self) -> bool:
        result = self._result
        return self._closed if isinstance(result, bytes) else result is not None and result.done

    def resolve(self, result: AnswerStream | errors.GatewayError) -> None:
        if isinstance(result, errors.GatewayError):
            self._trace.fail(result)
            self._result = error_event(result)
        else:
            self._result = SSEBody(result, self._include_usage, self._trace)
        self._ready.set()

    def __aiter__(self) -> PendingSSEBody:
        return self

    async def __anext__(self) -> bytes:
        if not self._ready.is_set():
            with trio.move_on_after(self._keepalive_s):
                await self._ready.wait()
            if not self._ready.is_set():
                return KEEPALIVE
        result = self._result
        if isinstance(result, bytes):
            if self._closed:
                raise StopAsyncIteration
            self._closed = True
            return result
        assert result is not None
        return await result.__anext__()

    async def aclose(self) -> None:
        self._closed = True
        if isinstance(self._result, SSEBody):
            await self._result.aclose()
