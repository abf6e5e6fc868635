"""Hedged first tokens on MockClock: the next entry starts exactly at hedge_after_s, the first
real content wins, the loser's upstream is closed, a loser's failure never fails the request,
no hedge when the first entry answers in time, and the budget."""

from __future__ import annotations

import trio
import trio.testing

from mana_llm import errors
from tests.fakes.providers import (
    Answer,
    Content,
    End,
    Fail,
    FakeProvider,
    Finish,
    Hang,
    RoleOnly,
    Sleep,
    unavailable,
)
from tests.unit.test_walk import build, chat, trio_time


def calls(provider: FakeProvider) -> list[float]:
    return [t for _, _, t in provider.calls]


async def test_the_hedge_starts_at_hedge_after_s_and_the_first_content_wins(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = FakeProvider("a").script_stream(RoleOnly(), Sleep(10), Content("late"), Finish(), End())
    b = FakeProvider("b").script_stream(Sleep(1), RoleOnly(), Content("quick"), Finish(), End())
    c = FakeProvider("c")
    gw = build(a, b, c)
    answered = await gw.chat_stream(chat("mana/hedged", stream=True))
    assert answered.target.resolved == "b/m2" and answered.hedge == "won"
    assert calls(a) == [0.0] and calls(b) == [2.0] and trio_time() == 3.0
    assert a.streams[0].closed  # the loser's upstream connection was closed at once
    chunks = await answered.result.receive()
    assert [ch.payload["choices"][0]["delta"].get("content") for ch in chunks] == ["", "quick"]
    assert c.calls == []  # never more than two in flight


async def test_no_hedge_when_the_first_entry_answers_in_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = FakeProvider("a").script_chat(Sleep(1.9), Answer("in time"))
    b = FakeProvider("b")
    gw = build(a, b, FakeProvider("c"))
    answered = await gw.chat(chat("mana/hedged"))
    assert answered.target.resolved == "a/m1" and answered.hedge is None
    assert b.calls == [] and trio_time() == 1.9


async def test_a_whole_answer_races_too_and_the_primary_can_win(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = FakeProvider("a").script_chat(Sleep(3), Answer("primary"))
    b = FakeProvider("b").script_chat(Sleep(5), Answer("hedge"))
    gw = build(a, b, FakeProvider("c"))
    answered = await gw.chat(chat("mana/hedged"))
    assert answered.target.resolved == "a/m1" and answered.hedge == "lost"
    assert trio_time() == 3.0 and calls(b) == [2.0]


async def test_a_losers_failure_never_fails_the_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = FakeProvider("a").script_chat(Sleep(6), Answer("slow but sure"))
    b = FakeProvider("b").script_chat(Sleep(1), Fail(unavailable("b")))
    c = FakeProvider("c")
    gw = build(a, b, c)
    answered = await gw.chat(chat("mana/hedged"))
    assert answered.target.resolved == "a/m1" and trio_time() == 6.0
    assert [r.model for r in answered.failed] == ["b/m2"]
    assert c.calls == []


async def test_both_failing_moves_past_both(autojump_clock: trio.testing.MockClock) -> None:
    a = FakeProvider("a").script_chat(Sleep(3), Fail(unavailable("a")))
    b = FakeProvider("b").script_chat(Sleep(4), Fail(unavailable("b")))
    c = FakeProvider("c")
    gw = build(a, b, c)
    answered = await gw.chat(chat("mana/hedged"))
    assert answered.target.resolved == "c/m3"
    assert calls(c) == [6.0]  # after both failed; b was not tried a second time
    assert len(b.calls) == 1


async def test_a_caller_error_from_the_first_entry_before_the_hedge_returns_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = FakeProvider("a").script_chat(
        Sleep(1), Fail(errors.UpstreamBadRequest("bad", provider="a"))
    )
    b = FakeProvider("b")
    gw = build(a, b, FakeProvider("c"))
    try:
        await gw.chat(chat("mana/hedged"))
    except errors.UpstreamBadRequest:
        pass
    else:
        raise AssertionError("a caller error is the caller's")
    assert b.calls == [] and trio_time() == 1.0


async def test_hedges_are_budgeted(autojump_clock: trio.testing.MockClock) -> None:
    """Per 10 s window a provider may be hedged 3 times (the floor) plus a tenth of its own
    first attempts (none here): the fourth slow request within 10 s is not hedged."""
    a, b = FakeProvider("a"), FakeProvider("b")
    gw = build(a, b, FakeProvider("c"))
    outcomes = []
    for _ in range(4):
        a.script_chat(Sleep(2.5), Answer())
        b.script_chat(Hang())  # the hedge never answers: the primary wins at 2.5 s
        outcomes.append((await gw.chat(chat("mana/hedged"))).hedge)
    assert outcomes == ["lost", "lost", "lost", "budget_exhausted"]


async def test_an_entrys_deadline_blames_its_own_provider_not_the_hedge_beside_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """a never sends a first token (its 5 s deadline passes at 5 s) while the hedge b, started
    at 2 s, is still silent until 6 s: a's timeout is a's failure, not b's."""
    a = FakeProvider("a").script_stream(Hang())
    b = FakeProvider("b").script_stream(Sleep(4), Content("late but fine"), Finish(), End())
    gw = build(a, b, FakeProvider("c"), first_token_s=5)
    answered = await gw.chat_stream(chat("mana/hedged", stream=True))
    assert answered.target.resolved == "b/m2" and trio_time() == 6.0
    assert gw.health.statistics("a", 6.0).consecutive_failures == 1
    assert gw.health.statistics("b", 6.0).last_success_at == 6.0  # b's success, no failure
