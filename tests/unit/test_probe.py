"""The probe loop on MockClock: a first round at start-up, then a fixed cadence; each probe
under its deadline; results as weaker evidence than requests."""

from __future__ import annotations

from functools import partial

import trio
import trio.testing

from mana_llm.health.providers import BreakerPolicy, CircuitState, ProviderHealthCache
from mana_llm.routing.probe import ProbeTargets, run_probe_loop
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


async def test_an_open_circuit_is_probed_often_from_the_moment_it_opens(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Closed: every 30 s from start-up. A request failure opens the circuit at 5 s: a probe at
    once, then every 2 s while it is open (the probes succeed, but real calls opened it: it
    waits out its 10 s backoff), then the closed cadence again."""
    a = FakeProvider("a")
    health = ProviderHealthCache(BreakerPolicy(failure_threshold=1, backoff_s=10.0))
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(run_probe_loop, [a], health, 30.0, 3.0, open_interval_s=2.0))
        await trio.sleep(5)
        health.record_failure("a", trio.current_time(), "a answered 503")
        await trio.sleep(61 - 5)
        nursery.cancel_scope.cancel()
    probes = [c[2] for c in a.calls if c[0] == "probe"]
    assert probes == [0.0, 5.0, 7.0, 9.0, 11.0, 13.0, 15.0, 30.0, 60.0]
    assert health.state("a", 15.0) is CircuitState.HALF_OPEN  # by its backoff, not a probe


async def test_a_provider_whose_probes_fail_stays_open_until_one_succeeds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Unreachable until 8 s: its probes fail at 0, 2, 4 and 6 s and hold the circuit open
    past its 1 s backoff; the probe at 8 s succeeds and, probes having opened it, half-opens
    it at once; then the closed cadence."""
    a = FakeProvider("a")
    for _ in range(4):
        a.script_chat(Fail(unavailable("a", "connect failed")))
    health = ProviderHealthCache(BreakerPolicy(failure_threshold=1, backoff_s=1.0))
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(run_probe_loop, [a], health, 30.0, 3.0, open_interval_s=2.0))
        await trio.sleep(7.5)
        assert health.state("a", trio.current_time()) is CircuitState.OPEN  # held past 1 s
        assert not health.try_acquire("a", trio.current_time())
        await trio.sleep(1)
        assert health.state("a", trio.current_time()) is CircuitState.HALF_OPEN
        await trio.sleep(30)
        nursery.cancel_scope.cancel()
    assert [c[2] for c in a.calls if c[0] == "probe"] == [0.0, 2.0, 4.0, 6.0, 8.0, 30.0]


async def test_a_reload_starts_and_stops_probe_loops(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """ProbeTargets.update: a new deployment is probed at once, a rebuilt one (same name, a
    new client) through its new client only, a removed one no more."""
    a, b, b2 = FakeProvider("a"), FakeProvider("b"), FakeProvider("b")
    targets = ProbeTargets({"a": a})
    health = ProviderHealthCache(BreakerPolicy())
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(run_probe_loop, targets, health, 10.0, 3.0))
        await trio.sleep(1)
        targets.update({"a": a, "b": b})  # added at 1 s
        await trio.sleep(4)
        targets.update({"b": b2})  # a removed, b rebuilt, at 5 s
        await trio.sleep(11)
        nursery.cancel_scope.cancel()

    def probes(provider: FakeProvider) -> list[float]:
        return [c[2] for c in provider.calls if c[0] == "probe"]

    assert probes(a) == [0.0]  # gone at 5 s, before its 10 s round
    assert probes(b) == [1.0]  # its client replaced at 5 s
    assert probes(b2) == [5.0, 15.0]  # its own cadence, from when it began
