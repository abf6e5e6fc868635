"""Recovery after an outage, at every phase of the probe loop (failoverbench S15's shape, on
MockClock): the primary answers 503 for 60 s, then is healthy again; a request every 4 s for
76 s. With default settings, requests must reach the primary within 10 s of its recovery
whatever the phase, and while it is down it costs callers at most one failed trial per backoff.

The outage comes in the two shapes a provider has: its chat fails while its model list still
answers (S15's mock: probes succeed throughout), or it is unreachable (probes fail too)."""

from __future__ import annotations

import itertools
from collections import deque

import attrs
import pytest
import trio
import trio.testing

from mana_llm import errors
from mana_llm.domain import ChatRequest, ChatResponse, Message, Target, Usage
from mana_llm.gateway import Gateway
from mana_llm.health.providers import BreakerPolicy, ProviderHealthCache
from mana_llm.routing.aliases import AliasStore
from mana_llm.routing.probe import run_probe_loop
from mana_llm.settings import Settings
from tests.fakes.providers import Content, End, FakeProvider, FakeStream, Finish

ALIASES = """
aliases:
  mana/live:
    chain: [primary/m, backup/m]
  mana/buffered:
    buffer: true
    chain: [primary/m, backup/m]
"""
EVERY_S = 4.0
AFTER_S = 16.0  # requests go on this long after the outage (S15: 60 s down, 76 s of requests)
RECOVERY_BOUND_S = 10.0


@attrs.define(eq=False)
class OutageProvider(FakeProvider):
    """Fails every call with a 503 (or a refused connection, probes included, when
    `unreachable`) from `down_at` for `outage_s`, then answers."""

    down_at: float = 0.0
    outage_s: float = 60.0
    unreachable: bool = False
    outcomes: list[tuple[float, bool]] = attrs.field(factory=list)  # (when, answered)

    def _down(self) -> bool:
        return self.down_at <= trio.current_time() < self.down_at + self.outage_s

    def _check(self) -> None:
        down = self._down()
        self.outcomes.append((trio.current_time(), not down))
        if down and self.unreachable:
            raise errors.UpstreamUnavailable("connect failed", provider=self.name)
        if down:
            raise errors.UpstreamUnavailable(f"{self.name} answered 503", provider=self.name)

    async def chat(self, target: Target, request: ChatRequest) -> ChatResponse:
        self._check()
        payload = {"model": target.resolved, "choices": [{"index": 0, "message": {}}]}
        return ChatResponse(payload, "stop", Usage(1, 1))

    async def open_stream(self, target: Target, request: ChatRequest) -> FakeStream:
        self._check()
        return FakeStream(target, deque([Content("ok"), Finish(), End()]))

    async def probe(self) -> None:
        if self.unreachable and self._down():
            raise errors.UpstreamUnavailable("connect failed", provider=self.name)


def gateway(primary: OutageProvider, backup: FakeProvider, settings: Settings) -> Gateway:
    aliases = AliasStore("aliases.yaml", ["primary", "backup"], lambda: 0.0, lambda p: ALIASES)
    assert aliases.reload()
    policy = BreakerPolicy(
        settings.breaker_failures, settings.breaker_backoff_s, settings.breaker_max_backoff_s
    )
    providers = {"primary": primary, "backup": backup}
    return Gateway(settings, providers, ProviderHealthCache(policy), aliases)


async def run_s15(
    phase_s: float, outage_s: float, alias: str, unreachable: bool
) -> tuple[float, OutageProvider]:
    """The probe loop starts now; S15 starts `phase_s` later. Returns when it started and the
    primary, which kept every call's time and outcome."""
    settings = Settings()  # the defaults are what is under test
    start = trio.current_time() + phase_s
    primary = OutageProvider("primary", down_at=start, outage_s=outage_s, unreachable=unreachable)
    gw = gateway(primary, FakeProvider("backup"), settings)
    stream = alias == "mana/buffered"
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: run_probe_loop(
                [primary],
                gw.health,
                settings.probe_interval_s,
                settings.probe_timeout_s,
                open_interval_s=settings.probe_interval_open_s,
                task_status=task_status,
            )
        )
        for index in range(int((outage_s + AFTER_S) / EVERY_S) + 1):
            await trio.sleep_until(start + index * EVERY_S)
            request = ChatRequest(alias, (Message("user", "hi"),), stream=stream)
            if stream:
                answered_stream = await gw.chat_stream(request)
                await answered_stream.result.aclose()
            else:
                await gw.chat(request)  # the backup answers whenever the primary cannot
        nursery.cancel_scope.cancel()
    return start, primary


@pytest.mark.parametrize("outage_s", [60.0, 90.0], ids=["S15", "longer"])
@pytest.mark.parametrize("unreachable", [False, True], ids=["chat-fails", "unreachable"])
@pytest.mark.parametrize("alias", ["mana/live", "mana/buffered"])
async def test_recovery_is_bounded_at_every_probe_phase(
    autojump_clock: trio.testing.MockClock, alias: str, unreachable: bool, outage_s: float
) -> None:
    settings = Settings()
    for phase in range(30):  # one per second of the 30 s probe interval
        start, primary = await run_s15(phase + 0.5, outage_s, alias, unreachable)
        recovered_at = start + outage_s
        back = [t for t, answered in primary.outcomes if answered and t >= recovered_at]
        assert back, f"phase {phase}: the primary was never used again"
        assert back[0] - recovered_at <= RECOVERY_BOUND_S, f"phase {phase}: {back[0]}"
        failed = [t for t, answered in primary.outcomes if not answered]
        assert failed[:2] == [start, pytest.approx(start, abs=0.2)]
        # the first request's failure and its retry opened the circuit; after that every
        # failed call is a trial, at most one per backoff
        trials = failed[2:]
        gaps = [b - a for a, b in itertools.pairwise(failed[1:])]
        assert all(gap >= settings.breaker_backoff_s for gap in gaps), f"phase {phase}: {failed}"
        if unreachable:  # failing probes hold the circuit open: no caller pays a trial
            assert trials == [], f"phase {phase}: {failed}"
