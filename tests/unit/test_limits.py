"""The limits' rules on the counters, at exact times: the same scenarios run on SQLite in
memory here, and on a SQLite file and a real Redis in tests/e2e/test_limit_stores.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from mana_llm.access.keys import Budget, Limits
from mana_llm.access.limits import Ask, LimitStore, period_bounds, period_of
from mana_llm.access.sql_limits import SqlLimits

T0 = 1_780_000_000.0  # a Tuesday, mid-month (UTC)
Scenario = Callable[[LimitStore, str], Awaitable[None]]


def ask(caller: str, limits: Limits, n: int, now: float, tokens: int = 10, usd: float = 0.0) -> Ask:
    return Ask(caller, limits, f"{caller}-{n}", now, tokens, usd, 600.0, period_of(limits, now))


async def rpm_sliding_window(store: LimitStore, caller: str) -> None:
    limits = Limits(rpm=3)
    for n in range(3):
        assert (await store.admit(ask(caller, limits, n, T0 + n))).refused is None
    refused = await store.admit(ask(caller, limits, 9, T0 + 10))
    assert refused.refused == "rpm"
    assert refused.retry_after_s == pytest.approx(50.0)  # the oldest leaves at T0 + 60
    assert (await store.admit(ask(caller, limits, 10, T0 + 59.9))).refused == "rpm"
    ok = await store.admit(ask(caller, limits, 11, T0 + 60.01))
    assert ok.refused is None and ok.counts.requests == 3


async def tpm_counts_reservations_then_usage(store: LimitStore, caller: str) -> None:
    limits = Limits(tpm=100)
    first = ask(caller, limits, 1, T0, tokens=60)
    assert (await store.admit(first)).refused is None
    second = ask(caller, limits, 2, T0 + 1, tokens=60)
    refused = await store.admit(second)
    assert refused.refused == "tpm" and refused.retry_after_s == pytest.approx(59.0)
    await store.settle(first, 20, 0.0)  # it used less than it reserved
    admitted = await store.admit(ask(caller, limits, 3, T0 + 2, tokens=60))
    assert admitted.refused is None and admitted.counts.tokens == 80


async def max_parallel_frees_on_settle(store: LimitStore, caller: str) -> None:
    limits = Limits(max_parallel=2)
    a, b = ask(caller, limits, 1, T0), ask(caller, limits, 2, T0)
    assert (await store.admit(a)).refused is None
    assert (await store.admit(b)).refused is None
    assert (await store.admit(ask(caller, limits, 3, T0))).refused == "max_parallel"
    await store.settle(a, 5, 0.0)
    assert (await store.admit(ask(caller, limits, 4, T0 + 1))).refused is None
    # a lease that expired (its worker died) frees its slot
    assert (await store.admit(ask(caller, limits, 5, T0 + 601))).refused is None


async def budget_spans_the_period(store: LimitStore, caller: str) -> None:
    limits = Limits(budget=Budget(tokens=100, usd=1.0, period="day"))
    first = ask(caller, limits, 1, T0, tokens=50, usd=0.2)
    assert (await store.admit(first)).refused is None
    await store.settle(first, 90, 0.5)
    refused = await store.admit(ask(caller, limits, 2, T0 + 3600, tokens=20))
    _, end = period_bounds(T0, "day")
    assert refused.refused == "budget"
    assert refused.retry_after_s == pytest.approx(end - T0 - 3600)
    assert (await store.admit(ask(caller, limits, 3, T0 + 3600, tokens=10))).refused is None
    usd = await store.admit(ask(caller, limits, 4, T0 + 3601, tokens=0, usd=0.6))
    assert usd.refused == "budget"
    tomorrow = await store.admit(ask(caller, limits, 5, end + 1, tokens=100))
    assert tomorrow.refused is None
    spent = await store.spent(caller, "day", T0 + 3602)
    assert (spent.spent_tokens, spent.spent_requests, spent.open) == (90, 1, 1)
    assert spent.spent_usd == pytest.approx(0.5)


async def callers_are_apart(store: LimitStore, caller: str) -> None:
    limits = Limits(rpm=1)
    assert (await store.admit(ask(caller, limits, 1, T0))).refused is None
    assert (await store.admit(ask(caller + "-b", limits, 1, T0))).refused is None
    assert (await store.admit(ask(caller, limits, 2, T0))).refused == "rpm"


SCENARIOS: list[Scenario] = [
    rpm_sliding_window,
    tpm_counts_reservations_then_usage,
    max_parallel_frees_on_settle,
    budget_spans_the_period,
    callers_are_apart,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
async def test_rules_in_memory(scenario: Scenario) -> None:
    store = SqlLimits(":memory:")
    try:
        await scenario(store, "svc")
    finally:
        await store.aclose()


def test_periods_are_utc() -> None:
    monday = period_bounds(T0, "week")[0]
    assert period_bounds(T0, "day")[1] - period_bounds(T0, "day")[0] == 86400
    assert period_bounds(monday, "week") == (monday, monday + 7 * 86400)
    start, end = period_bounds(T0, "month")
    assert period_bounds(start, "month")[0] == start and period_bounds(end, "month")[0] == end
