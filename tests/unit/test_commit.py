"""The committed stream: its relay pushes chunks under one deadline and tells a stalled
upstream from a stalled client; the winner's one explicit report blames the upstream for a
failure after commit, never for a client that held the stream (MockClock, exact times)."""

from __future__ import annotations

import math

import attrs
import pytest
import trio
import trio.testing

from mana_llm import errors
from mana_llm.domain import StreamChunk, Target
from mana_llm.health.breaker import BreakerPolicy
from mana_llm.health.providers import ProviderHealthCache
from mana_llm.live_answer import LiveAnswer
from mana_llm.routing.commit import CommittedStream, StreamPolicy
from mana_llm.routing.fallback import Walker
from tests.fakes.providers import chunk_payload

TARGET = Target("ollama", "m")


def chunks(text: str, count: int) -> list[StreamChunk]:
    return [StreamChunk(chunk_payload(TARGET, {"content": text}), commits=True)] * count


class Script:
    """A ChunkStream that answers from a list: chunks, or a number of seconds to go silent
    for (inf: for ever), or an error to raise."""

    def __init__(self, *steps: object) -> None:
        self.steps = list(steps)

    async def receive(self) -> list[StreamChunk]:
        while self.steps:
            step = self.steps.pop(0)
            if isinstance(step, float):
                await trio.sleep(step)
                continue
            if isinstance(step, Exception):
                raise step
            assert isinstance(step, list)
            return step
        return []

    async def aclose(self) -> None:
        pass


@attrs.define
class Blamed:
    """What the provider's health heard from the winner's report: the failures blamed on it."""

    health: ProviderHealthCache

    def __eq__(self, other: object) -> bool:
        stats = self.health.statistics(TARGET.provider, trio.current_time())
        heard = [stats.last_error] * stats.consecutive_failures if stats.last_error else []
        return heard == other

    def __len__(self) -> int:
        return self.health.statistics(TARGET.provider, trio.current_time()).consecutive_failures


def committed(upstream: Script, idle_s: float = 10.0) -> tuple[LiveAnswer, Blamed]:
    """A winner as the gateway builds it: a committed stream given its policy after the walk,
    its failures after commit reported to the provider's health."""
    health = ProviderHealthCache(BreakerPolicy(failure_threshold=5))
    walker = Walker({}, health, request_timeout_s=600.0)
    stream = CommittedStream(TARGET, upstream, []).governed(StreamPolicy(idle_s))
    return LiveAnswer(stream, walker, TARGET.provider), Blamed(health)


FINISH = [StreamChunk(chunk_payload(TARGET, {}, "stop"), finish_reason="stop")]


async def test_relay_pushes_every_chunk_and_says_complete(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stream, blamed = committed(Script(chunks("a", 1), 9.5, chunks("b", 2), 9.5, FINISH))
    seen: list[int] = []

    async def emit(got: list[StreamChunk]) -> None:
        seen.append(len(got))

    await stream.relay(emit)
    assert seen == [1, 2, 1] and stream.finish_reason == "stop" and blamed == []
    assert trio.current_time() == 19.0  # silences just under the idle timeout are no stall


async def test_relay_declares_a_stall_after_the_idle_timeout_not_before(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stream, blamed = committed(Script(chunks("a", 1), 4.0, chunks("b", 1), math.inf))

    async def emit(got: list[StreamChunk]) -> None:
        pass

    with pytest.raises(errors.UpstreamTimeout, match="stalled mid-stream"):
        await stream.relay(emit)
    # the last data came at 4.0; the idle timeout is 10s, moved forward at most every 1s
    assert 14.0 <= trio.current_time() <= 15.0
    assert len(blamed) == 1


async def test_relay_idle_after_the_finish_is_a_complete_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stream, blamed = committed(Script(chunks("a", 1), FINISH, math.inf))

    async def emit(got: list[StreamChunk]) -> None:
        pass

    await stream.relay(emit)
    assert blamed == []


async def test_relay_a_client_that_holds_the_stream_is_not_the_upstreams_fault(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stream, blamed = committed(Script(chunks("a", 1), chunks("b", 1), FINISH))

    async def emit(got: list[StreamChunk]) -> None:
        await trio.sleep(math.inf)  # the client stopped reading

    with pytest.raises(errors.RequestTimeout, match="the client read nothing of the stream"):
        await stream.relay(emit)
    assert blamed == [] and 10.0 <= trio.current_time() <= 11.0


async def test_relay_a_client_held_inside_a_shielded_send_is_still_the_clients_fault(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """hypercorn writes under a shielded scope: the deadline passes there, the cancellation
    can only land later (at the next read); the client is still the one to blame."""
    stream, blamed = committed(Script(chunks("a", 1), chunks("b", 1), FINISH))

    async def emit(got: list[StreamChunk]) -> None:
        with trio.CancelScope(shield=True):
            await trio.sleep(15.0)

    with pytest.raises(errors.RequestTimeout):
        await stream.relay(emit)
    assert blamed == [] and trio.current_time() == 15.0


async def test_relay_an_upstream_failure_is_raised_and_blamed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cut = errors.UpstreamUnavailable("groq reset the connection", provider="groq")
    stream, blamed = committed(Script(chunks("a", 1), cut))

    async def emit(got: list[StreamChunk]) -> None:
        pass

    with pytest.raises(errors.UpstreamUnavailable):
        await stream.relay(emit)
    assert blamed == ["groq reset the connection"]
