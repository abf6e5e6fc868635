"""Same-target retries on MockClock, with exact times: backoff bounds, Retry-After honoured and
capped, the budget's exhaustion and refill, deadlines cutting a wait short, what is never
retried."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from mana_llm import errors
from mana_llm.routing.retry import Budget, RetryPolicy
from tests.fakes.providers import Answer, Fail, FakeProvider, Sleep
from tests.unit.test_walk import build, chat, trio_time


def rate_limited(provider: str, after_s: float) -> errors.UpstreamRateLimited:
    return errors.UpstreamRateLimited("429", provider=provider, retry_after_s=after_s)


def server_error(provider: str) -> errors.UpstreamUnavailable:
    return errors.UpstreamUnavailable(f"{provider} answered 500", provider=provider)


def test_full_jitter_backoff_stays_within_its_bounds() -> None:
    policy = RetryPolicy(base_delay_s=0.2, max_wait_s=5.0, rng=random.Random(1))
    for index, ceiling in [(0, 0.2), (1, 0.4), (2, 0.8), (5, 5.0), (9, 5.0)]:
        waits = [policy.wait_s(index, None) for _ in range(200)]
        assert all(w is not None and 0 <= w <= ceiling for w in waits)
        assert max(w for w in waits if w is not None) > ceiling * 0.9  # the whole range is used


def test_retry_after_is_honoured_when_it_fits_and_refused_when_not() -> None:
    policy = RetryPolicy(max_wait_s=5.0)
    assert policy.wait_s(0, 2.0) == 2.0
    assert policy.wait_s(3, 5.0) == 5.0
    assert policy.wait_s(0, 5.1) is None


def test_the_budget_has_a_floor_a_ratio_and_a_window() -> None:
    budget = Budget(ratio=0.2, window_s=10.0, floor=3)
    assert [budget.try_spend(0.0) for _ in range(4)] == [True, True, True, False]
    for _ in range(10):
        budget.first_attempt(1.0)  # 10 first attempts earn 2 more
    assert [budget.try_spend(1.0) for _ in range(3)] == [True, True, False]
    assert not budget.try_spend(9.9)
    assert budget.try_spend(10.0)  # the first three retries left the window at 10.0


async def test_a_429_with_retry_after_is_retried_on_the_same_entry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = FakeProvider("a").script_chat(Fail(rate_limited("a", 2.0)))
    b = FakeProvider("b")
    gw = build(a, b, FakeProvider("c"), retries=1)
    answered = await gw.chat(chat())
    assert answered.target.resolved == "a/m1" and answered.attempts == 2
    assert [c[2] for c in a.calls] == [0.0, 2.0]  # exactly the Retry-After
    assert b.calls == []
    assert answered.failed[0].retry == "sent" and answered.failed[0].kind == "UpstreamRateLimited"


async def test_a_500_is_retried_after_a_jittered_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = FakeProvider("a").script_chat(Fail(server_error("a")))
    gw = build(a, FakeProvider("b"), FakeProvider("c"), retries=1)
    answered = await gw.chat(chat())
    assert answered.target.resolved == "a/m1"
    first, second = (c[2] for c in a.calls)
    assert first == 0.0 and 0.0 <= second <= 0.2


async def test_a_retry_after_longer_than_the_cap_moves_on_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = FakeProvider("a").script_chat(Fail(rate_limited("a", 30.0)))
    b = FakeProvider("b")
    gw = build(a, b, FakeProvider("c"), retries=3)
    answered = await gw.chat(chat())
    assert answered.target.resolved == "b/m2" and trio_time() == 0.0
    assert len(a.calls) == 1 and answered.failed[0].retry is None


async def test_a_wait_that_would_pass_the_entry_deadline_is_not_taken(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """mana/slow gives each entry 4 s: a Retry-After of 3 s after 1.5 s of work does not fit."""
    a = FakeProvider("a").script_chat(Sleep(1.5), Fail(rate_limited("a", 3.0)))
    b = FakeProvider("b")
    gw = build(a, b, FakeProvider("c"), retries=1)
    answered = await gw.chat(chat("mana/slow"))
    assert answered.target.resolved == "b/m2"
    assert trio_time() == 1.5 and len(a.calls) == 1


@pytest.mark.parametrize(
    "error",
    [
        errors.UpstreamAuthFailed("401", provider="a"),
        errors.UpstreamModelNotFound("404", provider="a"),
        errors.ContextLengthExceeded("too long", provider="a"),
        errors.UpstreamProtocolError("garbage", provider="a"),
    ],
)
async def test_failures_a_retry_cannot_fix_move_on_at_once(
    autojump_clock: trio.testing.MockClock, error: errors.ProviderError
) -> None:
    a = FakeProvider("a").script_chat(Fail(error))
    gw = build(a, FakeProvider("b"), FakeProvider("c"), retries=2)
    answered = await gw.chat(chat())
    assert answered.target.resolved == "b/m2" and len(a.calls) == 1


async def test_a_caller_error_is_never_retried_or_shopped_around(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = FakeProvider("a").script_chat(Fail(errors.UpstreamBadRequest("bad", provider="a")))
    gw = build(a, FakeProvider("b"), FakeProvider("c"), retries=2)
    with pytest.raises(errors.UpstreamBadRequest):
        await gw.chat(chat())
    assert len(a.calls) == 1


async def test_an_exhausted_budget_moves_on_and_says_so(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Per 10 s window a provider may be retried 3 times (the floor) plus a fifth of its first
    attempts: with five requests that is four; the fifth request's failure moves on at once,
    and the window's end refills the budget."""
    a = FakeProvider("a")
    gw = build(a, FakeProvider("b"), FakeProvider("c"), retries=1)

    async def one_request() -> tuple[str, str | None]:
        a.chat_steps.clear()
        a.script_chat(Fail(server_error("a"))).script_chat(Answer())  # a 500, then an answer
        answered = await gw.chat(chat())
        return answered.target.provider, answered.failed[0].retry

    served = [await one_request() for _ in range(5)]
    assert served == [("a", "sent")] * 4 + [("b", "budget_exhausted")]
    await trio.sleep(10)
    # the fifth request's failure was a's last word: a success in between keeps the next
    # failure from opening a's circuit (an open circuit is never retried, tested below)
    gw.health.record_success("a", trio_time())
    assert await one_request() == ("a", "sent")


async def test_a_direct_failure_after_retries_says_do_not_resend(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = FakeProvider("a").script_chat(Fail(server_error("a")))
    a.script_chat(Fail(server_error("a")))
    gw = build(a, FakeProvider("b"), FakeProvider("c"), retries=1)
    with pytest.raises(errors.UpstreamUnavailable) as raised:
        await gw.chat(chat("a/m1"))
    assert raised.value.retried and len(raised.value.attempts) == 2


async def test_a_failure_that_opens_the_circuit_is_not_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two failures in a row open a's circuit: the second is not retried, however many retries
    the entry has; a failed trial likewise (one failed call per backoff, not two)."""
    a = FakeProvider("a")
    for _ in range(4):
        a.script_chat(Fail(server_error("a")))
    gw = build(a, FakeProvider("b"), FakeProvider("c"), retries=3)
    answered = await gw.chat(chat())
    assert answered.target.provider == "b"
    assert [c[1] for c in a.calls] == ["a/m1", "a/m1"]  # the one retry, then the circuit opened
    assert [f.retry for f in answered.failed] == ["sent", None]
    await trio.sleep(60)  # the backoff: the next request's call to a is the trial
    answered = await gw.chat(chat())
    assert answered.target.provider == "b" and len(a.calls) == 3
    assert [f.retry for f in answered.failed] == [None]
