"""The streaming commit point (DESIGN.md section 5).

Before commit everything is buffered and any failure is an attempt failure. Commit is the first
chunk that carries content, reasoning or a tool call (or a content-filter finish: a refusal is
an answer, never shopped around). After commit the stream is relayed with an idle deadline
around every read; a cut, stall, malformed chunk or in-band error ends it with an error the api
renders as a final error event, never as a truncated answer that looks complete.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import trio

from mana_llm import errors
from mana_llm.domain import ChatRequest, StreamChunk, Target, Usage
from mana_llm.errors import GatewayError
from mana_llm.providers.protocol import ChunkStream, Provider


async def open_committed(
    provider: Provider, target: Target, request: ChatRequest
) -> CommittedStream:
    """Open an upstream stream and read it until it commits; the caller bounds the time."""
    upstream = await provider.open_stream(target, request)
    committed = False
    try:
        buffered = await _read_until_commit(upstream, target)
        committed = True
    finally:
        if not committed:
            await upstream.aclose()
    return CommittedStream(target, upstream, buffered)


async def _read_until_commit(upstream: ChunkStream, target: Target) -> list[StreamChunk]:
    buffered: list[StreamChunk] = []
    while True:
        chunks = await upstream.receive()
        if not chunks:
            raise errors.UpstreamUnavailable(
                f"{target.resolved} ended the stream before any content", provider=target.provider
            )
        buffered.extend(chunks)
        if any(c.commits or c.finish_reason == "content_filter" for c in chunks):
            return buffered
        if any(c.finish_reason for c in chunks):
            raise errors.UpstreamUnavailable(
                f"{target.resolved} finished the stream without content", provider=target.provider
            )


@attrs.define(eq=False)
class CommittedStream:
    target: Target
    _upstream: ChunkStream
    _pending: list[StreamChunk]
    idle_timeout_s: float = 60.0
    deadline: float = float("inf")  # absolute trio time by which the stream must be over
    on_error: Callable[[GatewayError], None] = lambda error: None
    attempts: int = 1
    usage: Usage | None = None
    finish_reason: str | None = None
    _ended: bool = False

    async def receive(self) -> list[StreamChunk]:
        """The next chunks to relay; [] once the answer is complete. Raises GatewayError when the
        upstream fails after commit."""
        if self._pending:
            chunks, self._pending = self._pending, []
            return self._note(chunks)
        if self._ended:
            return []
        # a bare CancelScope: move_on_at's contextlib wrapper costs more than the scope itself
        # on this per-chunk path
        with trio.CancelScope(
            deadline=min(trio.current_time() + self.idle_timeout_s, self.deadline)
        ):
            try:
                chunks = await self._upstream.receive()
            except errors.ProviderError as error:
                return self._fail(error)
            if chunks:
                return self._note(chunks)
            if self.finish_reason is not None:
                self._ended = True
                return []
            return self._fail(
                errors.UpstreamUnavailable(
                    f"{self.target.resolved} cut the stream before it finished",
                    provider=self.target.provider,
                )
            )
        if self.finish_reason is not None:  # finished, then idle: the answer is complete
            self._ended = True
            return []
        return self._fail(
            errors.UpstreamTimeout(
                f"{self.target.resolved} stalled mid-stream (no data for {self.idle_timeout_s:g}s)",
                provider=self.target.provider,
            )
        )

    def _note(self, chunks: list[StreamChunk]) -> list[StreamChunk]:
        for chunk in chunks:
            if chunk.finish_reason is not None:
                self.finish_reason = chunk.finish_reason
            if chunk.usage is not None:
                self.usage = chunk.usage
        return chunks

    def _fail(self, error: GatewayError) -> list[StreamChunk]:
        self._ended = True
        self.on_error(error)
        raise error

    async def aclose(self) -> None:
        self._ended = True
        await self._upstream.aclose()
