"""LiveAnswer: what a streamed chat request gets once the walk has a winner.

The winner (a committed stream, or a buffered answer replayed) is given its policy after the
walk, once: the idle timeout and the request's deadline (routing/commit.py). What happens at
its end is said here, in two explicit calls and no callback: a failure after commit is reported
to the provider's health (`Walker.report`), and a complete answer is handed to the cache's
writer once the client has its last event (`aclose`, which the api calls after it), off the
client's path. The api relays it as any AnswerStream: `emit`, the one function that writes to
the client, is the only thing passed in (wrapped by the cache's recorder when the answer is to
be kept).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs

from mana_llm import errors
from mana_llm.cache.read_through import Plan, Recorder
from mana_llm.domain import StreamChunk, Target, Usage
from mana_llm.routing.commit import CommittedStream
from mana_llm.routing.fallback import Walker


@attrs.define(eq=False)
class LiveAnswer:
    stream: CommittedStream
    walker: Walker  # hears a failure after commit...
    deployment: str  # ...of the deployment that answered
    plan: Plan | None = None  # stores a complete answer, with...
    recorder: Recorder | None = None  # ...what this kept of it
    _handed: bool = False  # to the cache: once

    @property
    def target(self) -> Target:
        return self.stream.target

    @property
    def usage(self) -> Usage | None:
        return self.stream.usage

    @property
    def finish_reason(self) -> str | None:
        return self.stream.finish_reason

    async def receive(self) -> list[StreamChunk]:
        try:
            chunks = await self.stream.receive()
        except errors.ProviderError as error:
            self._blame(error)
            raise
        if self.recorder is not None:
            self.recorder.keep(chunks)
        return chunks

    async def relay(self, emit: Callable[[list[StreamChunk]], Awaitable[None]]) -> None:
        if self.recorder is not None:
            emit = self.recorder.recording(emit)
        try:
            await self.stream.relay(emit)
        except errors.ProviderError as error:
            self._blame(error)
            raise

    def _blame(self, error: errors.ProviderError) -> None:
        """The one report of a failure after commit (a client that held the stream is not
        the upstream's failure: RequestTimeout is no ProviderError)."""
        self.walker.report(self.deployment, error)

    async def aclose(self) -> None:
        """Close the upstream; a complete answer goes to the cache's writer, once."""
        await self.stream.aclose()
        if self._handed or self.plan is None or self.recorder is None:
            return
        if self.stream.complete:
            self._handed = True
            self.plan.store_streamed(self.stream.target, self.recorder)
