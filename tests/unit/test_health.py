"""The breaker's whole life with exact times: it is a pure state machine taking `now`."""

from __future__ import annotations

import pytest

from mana_llm.health.providers import BreakerPolicy, CircuitState, ProviderHealthCache, Transition

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
    assert not health.statistics("p", 0.0).checked  # nobody has looked yet: "unknown"
    health.record_failure("p", 5.0, "refused", probe=True)
    stats = health.statistics("p", 6.0)
    assert (stats.last_error, stats.last_failure_at, stats.last_probe_at) == ("refused", 5.0, 5.0)
    assert stats.checked and stats.last_probe_ok is False
    health.record_probe_success("p", 7.0)
    stats = health.statistics("p", 7.0)
    assert (stats.last_probe_at, stats.last_probe_ok, stats.last_success_at) == (7.0, True, None)
    health.record_success("p", 8.0)
    assert health.statistics("p", 8.0).last_success_at == 8.0


def test_a_probe_success_never_shortens_the_backoff_of_a_circuit_requests_opened() -> None:
    health, seen = cache()
    health.record_failure("p", 0.0, "503 overloaded")
    health.record_failure("p", 1.0, "503 overloaded")
    assert health.reopens_at("p") == 61.0
    health.record_probe_success("p", 10.0)  # the model list answers 200: chat may still fail
    assert health.state("p", 10.0) is OPEN and health.reopens_at("p") == 61.0
    assert not health.try_acquire("p", 60.9)
    assert health.try_acquire("p", 61.0)  # the backoff's end: the trial...
    health.record_probe_success("p", 61.5)  # (a probe success closes nothing)
    assert health.state("p", 61.5) is HALF
    health.record_failure("p", 62.0, "503 again")  # ...whose failure re-opens, backoff doubled
    health.record_probe_success("p", 63.0)
    assert health.state("p", 63.0) is OPEN and health.reopens_at("p") == 182.0
    assert seen[-1] == Transition("p", HALF, OPEN, 62.0)


def test_a_probe_success_half_opens_at_once_a_circuit_probes_opened() -> None:
    health, seen = cache()
    health.record_failure("p", 0.0, "refused", probe=True)
    health.record_failure("p", 1.0, "refused", probe=True)  # unreachable: opened by probes
    health.record_probe_success("p", 10.0)  # reachable again: the next real call is the trial
    assert health.state("p", 10.0) is HALF
    assert seen[-1] == Transition("p", OPEN, HALF, 10.0)
    assert health.try_acquire("p", 10.0) and not health.try_acquire("p", 10.0)
    health.record_failure("p", 12.0, "503")  # the trial failed: opened by a request now
    health.record_probe_success("p", 13.0)
    assert health.state("p", 13.0) is OPEN and health.reopens_at("p") == 132.0
    health.record_success("p", 132.0)  # only a real success closes it
    assert health.state("p", 132.0) is CLOSED


def test_failing_probes_hold_an_open_circuit_past_its_backoff() -> None:
    health, _ = cache(backoff_s=5.0, max_backoff_s=5.0)
    health.record_failure("p", 0.0, "503")
    health.record_failure("p", 1.0, "503")  # real calls opened it until 6
    health.record_failure("p", 3.0, "connect refused", probe=True)
    assert health.state("p", 30.0) is OPEN  # held: no caller pays a trial
    assert not health.try_acquire("p", 30.0)
    assert health.reopens_at("p") is None  # not known: the probes decide
    health.record_probe_success("p", 31.0)  # reachable again, backoff long over
    assert health.state("p", 31.0) is HALF and health.try_acquire("p", 31.0)
    health.record_failure("p", 32.0, "503")  # a failed trial ends any hold: 5 s, fixed
    assert health.reopens_at("p") == 37.0 and health.state("p", 37.0) is HALF


def test_a_probe_success_resets_nothing_in_a_closed_circuit() -> None:
    health, _ = cache()
    health.record_failure("p", 0.0, "503")
    health.record_probe_success("p", 1.0)
    assert health.statistics("p", 1.0).consecutive_failures == 1
    health.record_failure("p", 2.0, "503")  # the second real failure still opens it
    assert health.state("p", 2.0) is OPEN


def test_open_circuit_keeps_when_and_why_it_opened() -> None:
    health, _ = cache()
    health.record_failure("p", 3.0, "groq answered 503: overloaded")
    health.record_failure("p", 4.0, "groq answered 503: busy")
    stats = health.statistics("p", 5.0)
    assert (stats.opened_at, stats.opened_because) == (4.0, "groq answered 503: busy")
    health.record_success("p", 70.0)
    assert health.statistics("p", 70.0).opened_at is None


def test_retry_after_sets_the_reopen_time_when_a_half_open_circuit_reopens() -> None:
    health, _ = cache()
    health.record_failure("p", 0.0, "429", retry_after_s=1.0)
    assert health.reopens_at("p") == 1.0
    assert health.try_acquire("p", 1.0)  # the trial
    health.record_failure("p", 1.0, "429", retry_after_s=1.0)
    assert health.reopens_at("p") == 2.0  # not the doubled backoff (121 s)
    assert health.try_acquire("p", 2.0)
    health.record_failure("p", 2.0, "503")  # without Retry-After the backoff doubles as before
    assert health.reopens_at("p") == 122.0


@pytest.mark.parametrize("threshold", [1, 3])
def test_threshold_is_a_setting(threshold: int) -> None:
    health, _ = cache(failure_threshold=threshold)
    for i in range(threshold - 1):
        health.record_failure("p", float(i), "x")
    assert health.state("p", 10.0) is CLOSED
    health.record_failure("p", 10.0, "x")
    assert health.state("p", 10.0) is OPEN
