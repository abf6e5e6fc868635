"""The one circuit breaker, as a pure state machine over `now`."""

from __future__ import annotations

from mana_llm.health.breaker import Breaker, BreakerPolicy, CircuitState

CLOSED, OPEN, HALF = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


def test_a_fixed_cool_down_never_grows() -> None:
    breaker = Breaker(BreakerPolicy(failure_threshold=3, backoff_s=30.0, max_backoff_s=30.0))
    assert not breaker.record_failure(0.0) and not breaker.record_failure(1.0)
    assert breaker.record_failure(2.0)
    assert breaker.state(31.9) is OPEN and breaker.state(32.0) is HALF
    assert breaker.try_acquire(32.0)
    assert breaker.record_failure(32.0)  # the failed trial: another 30 s, not 60
    assert breaker.reopens_at(32.0) == 62.0


def test_one_trial_at_a_time_a_lost_one_is_granted_again_after_a_backoff() -> None:
    breaker = Breaker(BreakerPolicy(failure_threshold=1, backoff_s=10.0))
    breaker.record_failure(0.0)
    assert breaker.try_acquire(10.0)
    assert not breaker.try_acquire(15.0)
    assert breaker.try_acquire(20.0)  # the first trial never reported: lost
    breaker.release_trial()
    assert breaker.try_acquire(20.0)  # released: the next call has it at once


def test_half_open_only_moves_an_open_circuit() -> None:
    breaker = Breaker(BreakerPolicy(failure_threshold=1, backoff_s=10.0))
    breaker.half_open(0.0)
    assert breaker.state(0.0) is CLOSED
    breaker.record_failure(1.0)
    breaker.half_open(2.0)
    assert breaker.state(2.0) is HALF and breaker.try_acquire(2.0)
    breaker.record_success()
    assert breaker.state(2.0) is CLOSED and breaker.failures == 0
