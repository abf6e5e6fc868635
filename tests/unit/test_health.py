"""The breaker's whole life with exact times: it is a pure state machine taking `now`."""

from __future__ import annotations

import pytest

from mana_llm.routing.health import BreakerPolicy, CircuitState, ProviderHealthCache, Transition

CLOSED, OPEN, HALF = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


def cache(**policy: float) -> tuple[ProviderHealthCache, list[Transition]]:
    seen: list[Transition] = []
    health = ProviderHealthCache(BreakerPolicy(**policy))  # type: ignore[arg-type]
    health.add_listener(seen.append)
    return health, seen


def test_one_failure_stays_closed_two_open_for_the_backoff() -> None:
    health, seen = cache()
    health.record_failure("p", 10.0, "boom")
    assert health.state("p", 10.0) is CLOSED
    assert health.try_acquire("p", 10.0)
    health.record_failure("p", 11.0, "boom again")
    assert health.state("p", 11.0) is OPEN
    assert health.reopens_at("p") == 71.0
    assert not health.try_acquire("p", 70.999)
    assert health.state("p", 71.0) is HALF
    assert seen == [Transition("p", CLOSED, OPEN, 11.0), Transition("p", OPEN, HALF, 71.0)]


def test_a_success_between_failures_resets_the_count() -> None:
    health, _ = cache()
    health.record_failure("p", 0.0, "x")
    health.record_success("p", 1.0)
    health.record_failure("p", 2.0, "x")
    assert health.state("p", 2.0) is CLOSED
    assert health.statistics("p", 2.0).consecutive_failures == 1


def test_half_open_grants_one_trial_success_closes_and_resets_backoff() -> None:
    health, seen = cache()
    health.record_failure("p", 0.0, "x")
    health.record_failure("p", 0.0, "x")
    assert health.try_acquire("p", 60.0)  # the trial
    assert not health.try_acquire("p", 60.0)  # everyone else keeps skipping
    assert not health.try_acquire("p", 119.9)
    health.record_success("p", 61.0)
    assert health.state("p", 61.0) is CLOSED
    assert health.try_acquire("p", 61.0)
    assert seen[-1] == Transition("p", HALF, CLOSED, 61.0)
    health.record_failure("p", 70.0, "x")
    health.record_failure("p", 70.0, "x")
    assert health.reopens_at("p") == 130.0  # backoff back to 60


def test_failed_trials_double_the_backoff_up_to_the_cap() -> None:
    health, _ = cache(backoff_s=60.0, max_backoff_s=200.0)
    health.record_failure("p", 0.0, "x")
    health.record_failure("p", 0.0, "x")
    opened = []
    now = 0.0
    for _ in range(4):
        now = health.reopens_at("p") or 0.0
        assert health.try_acquire("p", now)
        health.record_failure("p", now, "still down")
        opened.append((now, health.reopens_at("p")))
    assert opened == [(60.0, 180.0), (180.0, 380.0), (380.0, 580.0), (580.0, 780.0)]


def test_a_lost_trial_is_granted_again_after_one_backoff() -> None:
    health, _ = cache()
    health.record_failure("p", 0.0, "x")
    health.record_failure("p", 0.0, "x")
    assert health.try_acquire("p", 60.0)
    assert not health.try_acquire("p", 100.0)
    assert health.try_acquire("p", 120.0)


def test_retry_after_opens_at_once_for_at_least_that_long() -> None:
    health, _ = cache()
    health.record_failure("p", 0.0, "429", retry_after_s=30.0)
    assert health.state("p", 0.0) is OPEN
    assert health.reopens_at("p") == 30.0
    assert health.state("p", 30.0) is HALF
    health, _ = cache()
    health.record_failure("p", 0.0, "x")
    health.record_failure("p", 0.0, "429", retry_after_s=90.0)
    assert health.reopens_at("p") == 90.0  # longer than the 60 s backoff
    health.record_failure("p", 1.0, "429", retry_after_s=200.0)
    assert health.reopens_at("p") == 201.0  # already open: extended


def test_listener_sees_transitions_only_and_a_failing_one_breaks_nothing() -> None:
    health, seen = cache()

    def broken(transition: Transition) -> None:
        raise RuntimeError("listener bug")

    health.add_listener(broken)
    later: list[Transition] = []
    health.add_listener(later.append)
    health.record_success("p", 0.0)  # closed -> closed: no transition
    health.record_failure("p", 1.0, "x")
    health.record_failure("p", 2.0, "x")
    health.record_failure("p", 3.0, "x")  # open -> open: none
    assert seen == later == [Transition("p", CLOSED, OPEN, 2.0)]
    assert health.state("p", 2.0) is OPEN


def test_statistics_and_probe_time() -> None:
    health, _ = cache()
    health.record_failure("p", 5.0, "refused", probe=True)
    stats = health.statistics("p", 6.0)
    assert (stats.last_error, stats.last_failure_at, stats.last_probe_at) == ("refused", 5.0, 5.0)
    health.record_success("p", 7.0, probe=True)
    assert health.statistics("p", 7.0).last_success_at == 7.0


@pytest.mark.parametrize("threshold", [1, 3])
def test_threshold_is_a_setting(threshold: int) -> None:
    health, _ = cache(failure_threshold=threshold)
    for i in range(threshold - 1):
        health.record_failure("p", float(i), "x")
    assert health.state("p", 10.0) is CLOSED
    health.record_failure("p", 10.0, "x")
    assert health.state("p", 10.0) is OPEN
