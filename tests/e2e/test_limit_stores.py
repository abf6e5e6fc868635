"""The limits' rules on the real stores: the scenarios of tests/unit/test_limits.py on a SQLite
file (two connections: two workers) and on a real redis-server (one Lua script per admission;
two stores: two hosts); and a Redis that stops answering (SIGSTOP): no hang, per-process
counters or a 503 as configured."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from mana_llm.access.keys import Budget, Limits
from mana_llm.access.redis_limits import Fallback, RedisLimits
from mana_llm.access.refusals import LimitsUnavailable
from mana_llm.access.sql_limits import SqlLimits
from tests.e2e.redis_server import RedisServer
from tests.unit.test_limits import SCENARIOS, T0, Scenario, ask


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
async def test_sqlite_file_rules(scenario: Scenario, tmp_path: Path) -> None:
    store = SqlLimits(str(tmp_path / "limits.sqlite"))
    try:
        await scenario(store, "svc")
    finally:
        await store.aclose()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
async def test_sqlite_file_alone_rules(scenario: Scenario, tmp_path: Path) -> None:
    store = SqlLimits(str(tmp_path / "limits.sqlite"), shared=False)
    try:
        await scenario(store, "svc")
    finally:
        await store.aclose()


async def test_alone_the_spend_outlives_a_restart(tmp_path: Path) -> None:
    """WORKERS=1 counts in memory; the period's spend reaches the file (at the latest when the
    service stops) and the next start reads it back."""
    path = str(tmp_path / "limits.sqlite")
    limits = Limits(budget=Budget(tokens=100, usd=None, period="day"))
    first = SqlLimits(path, shared=False)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(first.run)
            admitted = ask("svc", limits, 1, T0, tokens=10)
            assert (await first.admit(admitted)).refused is None
            await first.settle(admitted, 95, 0.0)
            nursery.cancel_scope.cancel()  # the service stops: the spend is written
    await first.aclose()
    again = SqlLimits(path, shared=False)
    assert (await again.admit(ask("svc", limits, 2, T0 + 1, tokens=10))).refused == "budget"
    assert (await again.spent("svc", "day", T0 + 1)).spent_tokens == 95
    await again.aclose()


async def test_two_connections_share_one_file(tmp_path: Path) -> None:
    """Two workers of a host: two connections to one file see one window."""
    path = str(tmp_path / "limits.sqlite")
    one, two = SqlLimits(path), SqlLimits(path)
    limits = Limits(rpm=2)
    assert (await one.admit(ask("svc", limits, 1, T0))).refused is None
    assert (await two.admit(ask("svc", limits, 2, T0))).refused is None
    assert (await one.admit(ask("svc", limits, 3, T0))).refused == "rpm"
    assert (await two.admit(ask("svc", limits, 4, T0))).refused == "rpm"
    await one.aclose()
    await two.aclose()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
async def test_redis_rules(scenario: Scenario, redis: RedisServer) -> None:
    store = RedisLimits(redis.url, connect_timeout_s=2.0)
    async with store.client:
        with trio.fail_after(20):
            await scenario(store, "svc")


async def test_two_hosts_share_one_window(redis: RedisServer) -> None:
    one = RedisLimits(redis.url, connect_timeout_s=2.0)
    two = RedisLimits(redis.url, connect_timeout_s=2.0)
    limits = Limits(rpm=3)
    async with one.client, two.client:
        with trio.fail_after(20):
            verdicts = [
                await (one if n % 2 else two).admit(ask("svc", limits, n, T0)) for n in range(6)
            ]
    assert [v.refused for v in verdicts] == [None, None, None, "rpm", "rpm", "rpm"]


@pytest.mark.parametrize("mode", ["local", "deny"])
async def test_a_hung_redis_neither_hangs_nor_admits_silently(
    redis: RedisServer,
    mode: str,
) -> None:
    failures: list[str] = []
    store = Fallback(
        RedisLimits(redis.url, connect_timeout_s=0.2),
        SqlLimits(":memory:"),
        mode,
        0.2,
        failures.append,
    )
    limits = Limits(rpm=2)
    primary = store.primary
    assert isinstance(primary, RedisLimits)
    async with primary.client:
        with trio.fail_after(20):
            assert (await store.admit(ask("svc", limits, 1, T0))).refused is None
            redis.pause()
            try:
                if mode == "deny":
                    with pytest.raises(LimitsUnavailable):
                        await store.admit(ask("svc", limits, 2, T0))
                else:  # per-process counters from here: the limit still holds in this one
                    assert (await store.admit(ask("svc", limits, 2, T0))).refused is None
                    assert (await store.admit(ask("svc", limits, 3, T0))).refused is None
                    assert (await store.admit(ask("svc", limits, 4, T0))).refused == "rpm"
            finally:
                redis.resume()
            assert failures and set(failures) == {"redis"}
