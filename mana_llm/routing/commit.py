"""The streaming commit point (docs/ARCHITECTURE.md section 4).

Before commit everything is buffered and any failure is an attempt failure. Commit is the first
chunk that carries content, reasoning or a tool call (or a content-filter finish: a refusal is
an answer, never shopped around). An attempt opens the upstream and reads to that point, and
nothing else (`open_committed`); the walk's winner is then given its policy (`governed`: the
idle timeout and the request's deadline) and relayed. After commit a cut, stall, malformed
chunk or in-band error ends it with an error the api renders as a final error event, never as a
truncated answer that looks complete. Who hears of that failure, and what keeps the answer, is
decided by whoever holds the winner (gateway.LiveAnswer), not here.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NoReturn

import attrs
import trio

from mana_llm import errors
from mana_llm.domain import ChatRequest, StreamChunk, Target, Usage
from mana_llm.errors import GatewayError
from mana_llm.providers.protocol import ChunkStream, Provider
from mana_llm.routing.route import Prepared


@attrs.frozen
class StreamPolicy:
    """What a committed stream's relay keeps to: the idle timeout and the request's deadline."""

    idle_timeout_s: float = 60.0
    deadline: float = float("inf")  # absolute trio time by which the stream must be over


NO_POLICY = StreamPolicy()


async def open_committed(
    provider: Provider, target: Target, request: ChatRequest
) -> CommittedStream:
    """One stream attempt: open the upstream and read it until it commits; the walk bounds the
    time (the first-token deadline)."""
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
    """An AnswerStream over an upstream that has committed; built whole, then only read."""

    target: Target
    _upstream: ChunkStream
    _pending: list[StreamChunk]
    _policy: StreamPolicy = NO_POLICY
    usage: Usage | None = attrs.field(init=False, default=None)
    finish_reason: str | None = attrs.field(init=False, default=None)
    _ended: bool = attrs.field(init=False, default=False)
    _failed: bool = attrs.field(init=False, default=False)

    @classmethod
    def replay(cls, target: Target, chunks: list[StreamChunk]) -> CommittedStream:
        """A complete answer known in advance (a cache hit, a buffered answer), relayed like a
        live one."""
        return cls(target, _Ended(), chunks)

    def governed(self, policy: StreamPolicy) -> CommittedStream:
        """The walk's winner, given its policy; this one is not to be read any more."""
        return CommittedStream(self.target, self._upstream, self._pending, policy)

    @property
    def head(self) -> Mapping[str, Any]:
        """The first chunk's payload: the id and model the upstream named the answer by."""
        return self._pending[0].payload if self._pending else {}

    @property
    def live(self) -> bool:
        """An upstream still sending (not a replay of an answer known in advance)."""
        return not isinstance(self._upstream, _Ended)

    def hold(self, release: Callable[[], None]) -> None:
        """`release` once, when the upstream is closed (whoever closes it): a deployment's
        call stays in flight for as long as its stream does."""
        self._upstream = _Released(self._upstream, release)

    @property
    def complete(self) -> bool:
        """The answer ended as a whole: its finish came and nothing failed after it."""
        return self._ended and self.finish_reason is not None and not self._failed

    async def receive(self) -> list[StreamChunk]:
        """The next chunks to relay, under the idle timeout; [] once the answer is complete.
        Raises GatewayError when the upstream fails after commit."""
        policy = self._policy
        with trio.CancelScope(
            deadline=min(trio.current_time() + policy.idle_timeout_s, policy.deadline)
        ):
            return await self._next()
        return await self._went_idle()

    async def relay(self, emit: Callable[[list[StreamChunk]], Awaitable[None]]) -> None:
        """Every chunk to `emit` until the answer is complete. Raises GatewayError when the
        upstream fails after commit, and RequestTimeout when `emit` (the client) held the
        stream past the idle timeout: the upstream is not to blame for that.

        One cancel scope for the whole relay: the request's deadline, and the idle timeout
        moved forward at most every `step` (at 60s, a second), so the stall is declared
        between idle_timeout_s and idle_timeout_s + step after the last data. A scope per read
        costs 7us a chunk, a moved deadline 3us (trio 0.35): this costs one clock read (the
        clock itself: `trio.current_time()` and `cancel_called` are three calls each)."""
        policy = self._policy
        idle = policy.idle_timeout_s
        step = min(1.0, idle / 10)
        moved = -math.inf
        reading = False
        clock = trio.lowlevel.current_clock()
        receive = self._upstream.receive
        with trio.CancelScope() as scope:
            while True:
                now = clock.current_time()
                if now >= scope.deadline:  # expired while a shielded send (hypercorn's) waited
                    break
                if now - moved >= step:
                    moved = now
                    scope.deadline = min(now + idle + step, policy.deadline)
                reading = True
                if self._pending or self._ended:  # what was read before commit; or no more
                    chunks = await self._next()
                else:  # `_next`'s common case inlined: one coroutine fewer a chunk
                    try:
                        chunks = await receive()
                    except errors.ProviderError as error:
                        self._fail(error)
                    chunks = self._note(chunks) if chunks else await self._upstream_ended()
                reading = False
                if not chunks:
                    return
                await emit(chunks)
        if not reading:
            self._ended = True
            raise errors.RequestTimeout(
                f"the client read nothing of the stream for {idle:g}s; it was ended"
            )
        await self._went_idle()

    async def _next(self) -> list[StreamChunk]:
        """What the upstream gives next (what was read before commit first); [] once the
        answer is complete; a failure is reported and raised."""
        if self._pending:
            chunks, self._pending = self._pending, []
            return self._note(chunks)
        if self._ended:
            return []
        try:
            chunks = await self._upstream.receive()
        except errors.ProviderError as error:
            self._fail(error)
        return self._note(chunks) if chunks else await self._upstream_ended()

    async def _upstream_ended(self) -> list[StreamChunk]:
        """The upstream's body ended: a complete answer ([]) if it had finished, else a cut."""
        if self.finish_reason is None:
            self._fail(
                errors.UpstreamUnavailable(
                    f"{self.target.resolved} cut the stream before it finished",
                    provider=self.target.provider,
                )
            )
        return await self._complete()

    async def _went_idle(self) -> list[StreamChunk]:
        """The idle timeout (or the request's deadline) passed while reading: a stall, or,
        after the finish, a complete answer ([])."""
        if self.finish_reason is None:
            self._fail(
                errors.UpstreamTimeout(
                    f"{self.target.resolved} stalled mid-stream"
                    f" (no data for {self._policy.idle_timeout_s:g}s)",
                    provider=self.target.provider,
                )
            )
        return await self._complete()

    async def _complete(self) -> list[StreamChunk]:
        # the upstream ended (or went idle) after its finish: the answer is complete
        self._ended = True
        return []

    def _note(self, chunks: list[StreamChunk]) -> list[StreamChunk]:
        for chunk in chunks:
            if chunk.finish_reason is not None:
                self.finish_reason = chunk.finish_reason
            if chunk.usage is not None:
                self.usage = chunk.usage
        return chunks

    def _fail(self, error: GatewayError) -> NoReturn:
        self._ended = self._failed = True
        raise error

    async def aclose(self) -> None:
        self._ended = True
        await self._upstream.aclose()


class _Released:
    """An upstream that calls `release` once when closed; its reads are the upstream's own
    (the same bound method: nothing added on the per-chunk path)."""

    def __init__(self, upstream: ChunkStream, release: Callable[[], None]) -> None:
        self.receive = upstream.receive
        self._upstream = upstream
        self._release: Callable[[], None] | None = release

    async def aclose(self) -> None:
        try:
            await self._upstream.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class _Ended:
    """The upstream of a replayed stream: nothing more to read."""

    async def receive(self) -> list[StreamChunk]:
        return []

    async def aclose(self) -> None:
        pass


async def read_buffered(
    provider: Provider,
    target: Target,
    prepared: Prepared,
    first_token_s: float,
    policy: StreamPolicy,
) -> CommittedStream:
    """One attempt of a buffered alias: the first content within `first_token_s` (as a live
    stream's), then the whole answer under the idle timeout (the walk bounds the total), replayed
    as a stream. A failure after the first content is the attempt's, marked so."""
    committed: CommittedStream | None = None
    with trio.move_on_after(first_token_s):
        committed = await open_committed(provider, target, await prepared.for_provider(provider))
    if committed is None:
        raise errors.FirstTokenTimeout(
            f"{target.resolved} sent no first token within {first_token_s:g}s",
            provider=target.provider,
        )
    return CommittedStream.replay(target, await read_whole(committed.governed(policy)))


async def read_whole(stream: CommittedStream) -> list[StreamChunk]:
    """A committed stream read to its end (a buffered alias). A failure after the first
    content is marked so: the walk moves to the next entry, never retries or splices."""
    chunks: list[StreamChunk] = []
    try:
        while got := await stream.receive():
            chunks.extend(got)
    except errors.ProviderError as error:
        raise error.evolve(after_content=True) from error
    finally:
        await stream.aclose()
    return chunks
