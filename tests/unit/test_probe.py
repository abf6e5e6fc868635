"""The probe loop on MockClock: a first round at start-up, then a fixed cadence; each probe
under its deadline; results as weaker evidence than requests."""

from __future__ import annotations

from functools import partial

import trio
import trio.testing

from mana_llm.routing.health import BreakerPolicy, CircuitState, ProviderHealthCache
from mana_llm.routing.probe import run_probe_loop
from tests.fakes.providers import Answer, Fail, FakeProvider, Hang, Sleep, unavailable


async def test_first_round_at_start_then_every_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = FakeProvider("a").script_chat(Sleep(0.5), Answer())
    b = FakeProvider("b").script_chat(Hang())
    off = FakeProvider("off", configured=False)
    health = ProviderHealthCache(BreakerPolicy(failure_threshold=1))
    rounds: list[float] = []
    seen: list[tuple[str, bool, float]] = []
    loop = partial(
        run_probe_loop,
        [a, b, off],
        health,
        10.0,
        2.0,
        trio.current_time,
        lambda name, ok: seen.append((name, ok, trio.current_time())),
        lambda: rounds.append(trio.current_time()),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(loop)
        await trio.sleep(25)
        nursery.cancel_scope.cancel()
    # round 1 at 0: a answers after 0.5 s, b hangs and is cut at its 2 s deadline
    assert rounds == [2.0]
    assert sorted(seen, key=lambda probe: (probe[2], probe[0])) == [
        ("a", True, 0.5),
        ("b", False, 2.0),
        ("a", True, 10.0),
        ("b", True, 10.0),
        ("a", True, 20.0),
        ("b", True, 20.0),
    ]
    assert [c for c in a.calls if c[0] == "probe"] == [
        ("probe", "a", 0.0),
        ("probe", "a", 10.0),
        ("probe", "a", 20.0),
    ]
    assert off.calls == []  # an unconfigured provider is never probed
    stats = health.statistics("b", 20.0)
    assert stats.last_error == "probe: no answer within 2s" and stats.opened_at == 2.0
    # b's later probes succeeded: reachable again, so half-open, waiting for a real call
    assert stats.state is CircuitState.HALF_OPEN and stats.last_probe_ok


async def test_a_failed_probe_counts_like_a_failed_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = FakeProvider("a").script_chat(Fail(unavailable("a", "a answered 503: busy")))
    health = ProviderHealthCache(BreakerPolicy(failure_threshold=2, backoff_s=60.0))
    health.record_failure("a", 0.0, "a answered 503: busy")  # one real failure first
    async with trio.open_nursery() as nursery:
        await nursery.start(run_probe_loop, [a], health, 30.0, 3.0)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    stats = health.statistics("a", 1.0)
    assert stats.state is CircuitState.OPEN and stats.reopens_at == 60.0
    assert stats.opened_because == "probe: a answered 503: busy"
