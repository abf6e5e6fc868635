"""The walk against scripted providers under MockClock: exact attempts and virtual times."""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing

from mana_llm import errors
from mana_llm.domain import ChatRequest, Message
from mana_llm.gateway import Gateway
from mana_llm.health.providers import BreakerPolicy, CircuitState, ProviderHealthCache
from mana_llm.routing.aliases import AliasStore
from mana_llm.settings import Settings
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

ALIASES = """
aliases:
  mana/chain:
    description: three entries
    chain: [a/m1, b/m2, c/m3]
  mana/slow:
    first_token_timeout_s: 1
    attempt_timeout_s: 4
    chain: [a/m1, b/m2]
  mana/hedged:
    hedge_after_s: 2
    chain: [a/m1, b/m2, c/m3]
  mana/buffered:
    buffer: true
    first_token_timeout_s: 10
    attempt_timeout_s: 30
    chain: [a/m1, b/m2]
  mana/live:
    first_token_timeout_s: 10
    attempt_timeout_s: 30
    chain: [a/m1, b/m2]
"""
MSG = (Message("user", "hi"),)
WALL = 1_795_687_200.0  # 2026-11-26 10:00:00 UTC, the wall clock's answer at virtual time 0


def build(
    *providers: FakeProvider,
    request_timeout_s: float = 600.0,
    first_token_s: float = 5.0,
    retries: int = 0,
) -> Gateway:
    settings = Settings(
        first_token_timeout_s=first_token_s,
        stream_idle_timeout_s=3.0,
        request_timeout_s=request_timeout_s,
        retries=retries,
    )
    names = [p.name for p in providers]
    aliases = AliasStore("aliases.yaml", names, lambda: 0.0, lambda path: ALIASES)
    assert aliases.reload()
    health = ProviderHealthCache(BreakerPolicy(failure_threshold=2, backoff_s=60.0))
    return Gateway(
        settings, {p.name: p for p in providers}, health, aliases, wall_clock=lambda: WALL
    )


def chat(model: str = "mana/chain", stream: bool = False) -> ChatRequest:
    return ChatRequest(model=model, messages=MSG, stream=stream)


def trio_time() -> float:
    return trio.current_time()


async def test_429_then_success_on_the_next_entry(autojump_clock: trio.testing.MockClock) -> None:
    a = FakeProvider("a").script_chat(
        Fail(errors.UpstreamRateLimited("slow down", provider="a", retry_after_s=30))
    )
    b, c = FakeProvider("b"), FakeProvider("c")
    gw = build(a, b, c)
    answered = await gw.chat(chat())
    assert answered.target.resolved == "b/m2"
    assert answered.attempts == 2
    assert [r.model for r in answered.failed] == ["a/m1"]
    assert "UpstreamRateLimited" in answered.failed[0].reason
    assert c.calls == []
    assert gw.health.state("a", trio_time()) is CircuitState.OPEN  # Retry-After opens at once
    assert gw.health.reopens_at("a") == 30.0


@pytest.mark.parametrize(
    "error",
    [
        errors.UpstreamUnavailable("503", provider="a"),
        errors.UpstreamUnavailable("connection reset before headers", provider="a"),
        errors.UpstreamAuthFailed("401: bad key", provider="a"),
        errors.UpstreamModelNotFound("no such model", provider="a"),
        errors.ContextLengthExceeded("too long", provider="a"),
    ],
)
async def test_retryable_failures_fall_through(
    autojump_clock: trio.testing.MockClock, error: errors.ProviderError
) -> None:
    a, b = FakeProvider("a").script_chat(Fail(error)), FakeProvider("b")
    gw = build(a, b, FakeProvider("c"))
    answered = await gw.chat(chat())
    assert answered.target.resolved == "b/m2"
    stats = gw.health.statistics("a", trio_time())
    assert stats.consecutive_failures == (1 if error.counts_against_provider else 0)


async def test_a_provider_that_never_answers_ends_at_its_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = FakeProvider("a", timeout_s=10).script_chat(Hang())
    b = FakeProvider("b").script_chat(Sleep(2), Answer("late but fine"))
    gw = build(a, b, FakeProvider("c"))
    answered = await gw.chat(chat())
    assert answered.target.resolved == "b/m2"
    assert b.calls[0][2] == 10.0
    assert trio_time() == 12.0
    assert "no answer within 10s" in answered.failed[0].reason


async def test_the_whole_walk_has_one_deadline(autojump_clock: trio.testing.MockClock) -> None:
    providers = [FakeProvider(n, timeout_s=100).script_chat(Hang()) for n in "abc"]
    gw = build(*providers, request_timeout_s=150)
    with pytest.raises(errors.AllProvidersFailed) as raised:
        await gw.chat(chat())
    assert trio_time() == 150.0
    assert [(r.model, r.reason.split(":")[0]) for r in raised.value.attempts] == [
        ("a/m1", "UpstreamTimeout"),
        ("b/m2", "UpstreamTimeout"),
    ]
    assert "request deadline of 150s" in raised.value.attempts[-1].reason
    assert providers[2].calls == []


async def test_first_token_later_than_the_timeout_falls_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = FakeProvider("a").script_stream(RoleOnly(), Sleep(7), Content("too late"), Finish(), End())
    b = FakeProvider("b")
    gw = build(a, b, FakeProvider("c"), first_token_s=5)
    answered = await gw.chat_stream(chat(stream=True))
    assert answered.target.resolved == "b/m2"
    assert b.calls[0][2] == 5.0
    assert a.streams[0].closed
    assert answered.attempts == 2


@pytest.mark.parametrize("alias", ["mana/live", "mana/buffered"])
@pytest.mark.parametrize(
    "steps",
    [(RoleOnly(), Sleep(21), Content("too late"), Finish(), End()), (Hang(),)],
    ids=["S07-slow-first-token", "S06-no-response"],
)
async def test_a_silent_primary_falls_back_at_its_first_token_deadline(
    autojump_clock: trio.testing.MockClock, steps: tuple[object, ...], alias: str
) -> None:
    """failoverbench S07 (first token after 21 s) and S06 (no response), live and with
    `buffer: true`: the fallback answers at the entry's first-token deadline (10 s), not at
    its attempt deadline (30 s)."""
    a = FakeProvider("a").script_stream(*steps)  # type: ignore[arg-type]
    b = FakeProvider("b")
    gw = build(a, b, FakeProvider("c"), first_token_s=60)
    answered = await gw.chat_stream(chat(alias, stream=True))
    assert answered.target.resolved == "b/m2"
    assert b.calls[0][2] == 10.0
    assert [(f.model, f.kind) for f in answered.failed] == [("a/m1", "UpstreamTimeout")]
    assert answered.failed[0].reason.endswith("a/m1 sent no first token within 10s")
    assert all(stream.closed for stream in a.streams)
    assert gw.health.statistics("a", trio_time()).consecutive_failures == 1  # not retried


async def test_a_buffered_answer_after_its_first_token_has_the_idle_and_attempt_deadlines(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """After the first content the rest may take longer than the first-token deadline (each
    gap within the idle timeout, 3 s here), but not longer than the attempt's 30 s."""
    slow = [Content("x"), *[step for _ in range(7) for step in (Sleep(2.5), Content("y"))]]
    a = FakeProvider("a").script_stream(Sleep(9), *slow, Finish(), End())  # done at 26.5 s
    b = FakeProvider("b")
    gw = build(a, b, FakeProvider("c"))
    answered = await gw.chat_stream(chat("mana/buffered", stream=True))
    assert answered.target.resolved == "a/m1" and trio_time() == 26.5
    a.script_stream(Sleep(9), *slow, *slow, Finish(), End())  # would end at 44 s
    answered = await gw.chat_stream(chat("mana/buffered", stream=True))
    assert answered.target.resolved == "b/m2"
    assert b.calls[0][2] == 26.5 + 30.0


async def test_alias_overrides_the_first_token_and_attempt_deadlines(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = FakeProvider("a").script_stream(Sleep(2), Content("x"))
    b = FakeProvider("b").script_chat(Hang())
    gw = build(a, b, FakeProvider("c"), first_token_s=30)
    answered = await gw.chat_stream(chat("mana/slow", stream=True))
    assert answered.target.resolved == "b/m2"
    assert trio_time() == 1.0
    a.script_chat(Hang())
    with pytest.raises(errors.AllProvidersFailed):
        await gw.chat(chat("mana/slow"))
    assert trio_time() == 1.0 + 4.0 + 4.0


@pytest.mark.parametrize(
    "steps",
    [
        (RoleOnly(), Fail(unavailable("a", "in-band error"))),
        (RoleOnly(), End()),
        (End(),),
        (RoleOnly(), Finish(), End()),
        (Fail(unavailable("a", "reset before headers")),),
    ],
    ids=[
        "in-band-error-before-content",
        "cut-before-content",
        "empty",
        "finish-without-content",
        "reset",
    ],
)
async def test_stream_failures_before_commit_fall_back_unseen(
    autojump_clock: trio.testing.MockClock, steps: tuple[object, ...]
) -> None:
    a = FakeProvider("a").script_stream(*steps)  # type: ignore[arg-type]
    b = FakeProvider("b")
    gw = build(a, b, FakeProvider("c"))
    answered = await gw.chat_stream(chat(stream=True))
    stream = answered.result
    assert answered.target.resolved == "b/m2"
    chunks = await stream.receive()
    assert {c.payload["model"] for c in chunks} == {"b/m2"}
    assert all(s.closed for s in a.streams)


@pytest.mark.parametrize(
    ("tail", "kind", "at"),
    [
        ((End(),), errors.UpstreamUnavailable, 0.0),
        ((Sleep(100),), errors.UpstreamTimeout, 3.0),
        (
            (Fail(errors.UpstreamProtocolError("malformed chunk", provider="a")),),
            errors.UpstreamProtocolError,
            0.0,
        ),
        ((Fail(unavailable("a", "in-band error")),), errors.UpstreamUnavailable, 0.0),
    ],
    ids=["cut", "stall", "malformed", "in-band-error"],
)
async def test_failures_after_commit_end_the_stream_without_fallback(
    autojump_clock: trio.testing.MockClock,
    tail: tuple[object, ...],
    kind: type[Exception],
    at: float,
) -> None:
    a = FakeProvider("a").script_stream(Content("Hel"), Content("lo"), *tail)  # type: ignore[arg-type]
    b = FakeProvider("b")
    gw = build(a, b, FakeProvider("c"))
    answered = await gw.chat_stream(chat(stream=True))
    stream = answered.result
    assert [c.payload["choices"][0]["delta"]["content"] for c in await stream.receive()] == ["Hel"]
    assert [c.payload["choices"][0]["delta"]["content"] for c in await stream.receive()] == ["lo"]
    with pytest.raises(kind):
        await stream.receive()
    assert trio_time() == at
    assert b.calls == []  # two voices are never spliced
    assert await stream.receive() == []
    assert gw.health.statistics("a", trio_time()).consecutive_failures == 1


async def test_finish_then_stall_is_a_complete_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = FakeProvider("a").script_stream(Content("Hi"), Finish(), Hang())
    gw = build(a, FakeProvider("b"), FakeProvider("c"))
    answered = await gw.chat_stream(chat(stream=True))
    stream = answered.result
    await stream.receive()
    assert (await stream.receive())[0].finish_reason == "stop"
    assert await stream.receive() == []
    assert trio_time() == 3.0


async def test_non_retryable_400_returns_at_once_and_leaves_health_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = FakeProvider("a").script_chat(
        Fail(errors.UpstreamBadRequest("bad tool schema", provider="a"))
    )
    b = FakeProvider("b")
    gw = build(a, b, FakeProvider("c"))
    with pytest.raises(errors.UpstreamBadRequest) as raised:
        await gw.chat(chat())
    assert b.calls == []
    assert [r.model for r in raised.value.attempts] == ["a/m1"]
    stats = gw.health.statistics("a", trio_time())
    assert (stats.consecutive_failures, stats.last_error) == (0, None)


async def test_a_bug_is_not_disguised_as_a_fallback(autojump_clock: trio.testing.MockClock) -> None:
    a, b = FakeProvider("a").script_chat(Fail(KeyError("bug"))), FakeProvider("b")
    gw = build(a, b, FakeProvider("c"))
    with pytest.raises(KeyError):
        await gw.chat(chat())
    assert b.calls == []


async def test_all_entries_failing_lists_every_attempt_skipped_ones_included(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = FakeProvider("a").script_chat(Fail(unavailable("a")))
    b = FakeProvider("b", configured=False, key_env="B_API_KEY")
    c = FakeProvider("c").script_chat(Fail(errors.UpstreamTimeout("slow", provider="c")))
    gw = build(a, b, c)
    with pytest.raises(errors.AllProvidersFailed) as raised:
        await gw.chat(chat())
    error = raised.value
    assert error.status == 503
    assert [r.model for r in error.attempts] == ["a/m1", "b/m2", "c/m3"]
    assert "B_API_KEY" in error.attempts[1].reason
    assert b.calls == []


async def test_all_failing_for_the_same_caller_fixable_reason_returns_that_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    providers = [
        FakeProvider(n).script_chat(Fail(errors.ContextLengthExceeded("too long", provider=n)))
        for n in "abc"
    ]
    gw = build(*providers)
    with pytest.raises(errors.ContextLengthExceeded) as raised:
        await gw.chat(chat())
    assert raised.value.status == 400 and raised.value.code == "context_length_exceeded"
    assert len(raised.value.attempts) == 3


async def test_a_flapping_primary(autojump_clock: trio.testing.MockClock) -> None:
    a = FakeProvider("a").script_chat(Fail(unavailable("a"))).script_chat(Fail(unavailable("a")))
    b = FakeProvider("b")
    gw = build(a, b, FakeProvider("c"))
    assert (await gw.chat(chat())).target.provider == "b"
    assert (await gw.chat(chat())).target.provider == "b"
    assert gw.health.state("a", trio_time()) is CircuitState.OPEN
    for _ in range(3):  # served by the fallback while the circuit is open, primary untouched
        answered = await gw.chat(chat())
        assert answered.target.provider == "b"
        assert answered.failed[0].reason == (
            "CircuitOpen: a is unavailable: its circuit opened at 10:00:00 UTC after boom;"
            " retry in 60s"
        )
    assert len(a.calls) == 2
    await trio.sleep(60)
    answered = await gw.chat(chat())  # half-open: the trial goes to the primary, and succeeds
    assert answered.target.provider == "a"
    assert gw.health.state("a", trio_time()) is CircuitState.CLOSED
    assert (await gw.chat(chat())).target.provider == "a"


async def test_open_circuit_on_a_direct_request_gives_retry_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = FakeProvider("a").script_chat(Fail(unavailable("a"))).script_chat(Fail(unavailable("a")))
    gw = build(a, FakeProvider("b"), FakeProvider("c"))
    for _ in range(2):
        with pytest.raises(errors.UpstreamUnavailable):
            await gw.chat(chat("a/m1"))
    await trio.sleep(15)
    with pytest.raises(errors.UpstreamUnavailable) as raised:
        await gw.chat(chat("a/m1"))
    assert raised.value.retry_after_s == 45
    assert len(a.calls) == 2


async def test_a_reload_does_not_change_a_chain_mid_walk(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = FakeProvider("a").script_chat(Sleep(1), Fail(unavailable("a")))
    b, c = FakeProvider("b"), FakeProvider("c")
    gw = build(a, b, c)
    gw.aliases.read_text = lambda path: "aliases:\n  mana/chain:\n    chain: [c/m3]\n"
    async with trio.open_nursery() as nursery:
        results = []

        async def call() -> None:
            results.append(await gw.chat(chat()))

        nursery.start_soon(call)
        await trio.sleep(0.5)
        assert gw.aliases.reload()
    assert results[0].target.resolved == "b/m2"  # the old chain, taken when the walk began
    assert (await gw.chat(chat())).target.resolved == "c/m3"


async def test_all_circuits_open_gives_retry_after_of_the_earliest_reopening(
    autojump_clock: trio.testing.MockClock,
) -> None:
    providers = [FakeProvider(n) for n in "abc"]
    gw = build(*providers)
    gw.health.record_failure("a", 0.0, "x", retry_after_s=90)
    gw.health.record_failure("b", 0.0, "x", retry_after_s=20)
    gw.health.record_failure("c", 0.0, "x", retry_after_s=300)
    await trio.sleep(5)
    with pytest.raises(errors.AllProvidersFailed) as raised:
        await gw.chat(chat())
    assert raised.value.retry_after_s == 15
    assert all("is unavailable: its circuit opened at" in r.reason for r in raised.value.attempts)
    assert all(p.calls == [] for p in providers)


async def test_the_request_deadline_bounds_a_stream_walk_included(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = FakeProvider("a", timeout_s=100).script_stream(
        Sleep(40), Content("late"), *[Content("x")] * 3, Sleep(200)
    )
    gw = build(a, FakeProvider("b"), FakeProvider("c"), request_timeout_s=100, first_token_s=60)
    gw.settings = attrs.evolve(gw.settings, stream_idle_timeout_s=1000)
    answered = await gw.chat_stream(chat("a/m1", stream=True))
    stream = answered.result
    for _ in range(4):
        await stream.receive()
    with pytest.raises(errors.UpstreamTimeout):
        await stream.receive()
    assert trio_time() == 100.0  # 40 s to commit + 60 s more, not 40 + 100


async def test_a_refusal_before_contact_says_nothing_about_health(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A half-open provider whose trial is refused before any upstream contact (a request it
    cannot express) stays half-open, and the next call is its trial: no contact, no evidence."""
    refusal = errors.UnsupportedCapability("n must be 1", provider="a", contacted=False)
    a = FakeProvider("a").script_chat(Fail(refusal)).script_chat(Fail(unavailable("a")))
    gw = build(a, FakeProvider("b"), FakeProvider("c"))
    gw.health.record_failure("a", 0.0, "down")
    gw.health.record_failure("a", 0.0, "down")
    await trio.sleep(60)
    assert gw.health.state("a", trio_time()) is CircuitState.HALF_OPEN
    assert (await gw.chat(chat())).target.resolved == "b/m2"
    assert gw.health.state("a", trio_time()) is CircuitState.HALF_OPEN  # not closed by it
    assert (await gw.chat(chat())).target.resolved == "b/m2"
    assert len(a.calls) == 2  # the second call was the trial again, not skipped
    assert gw.health.state("a", trio_time()) is CircuitState.OPEN  # and its real failure counts


async def test_a_walk_that_ends_without_an_outcome_releases_the_trial(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A half-open provider's trial taken by a request that is refused before any contact
    (a bad image URL) or whose caller goes away goes to the next call at once, not after a
    backoff of every caller being told the circuit is open."""
    a = FakeProvider("a")
    a.prepare_steps.append((Fail(errors.InvalidRequest("bad image URL", param="messages[0]")),))
    a.script_chat(Hang())
    gw = build(a, FakeProvider("b"), FakeProvider("c"))
    gw.health.record_failure("a", 0.0, "down")
    gw.health.record_failure("a", 0.0, "down")
    await trio.sleep(60)
    with pytest.raises(errors.InvalidRequest):
        await gw.chat(chat("a/m1"))
    with trio.move_on_after(1):  # the caller goes away mid-trial
        await gw.chat(chat("a/m1"))
    answered = await gw.chat(chat("a/m1"))  # the trial again, at once: it succeeds
    assert answered.target.resolved == "a/m1"
    assert [c[2] for c in a.calls if c[0] == "chat"] == [60.0, 61.0]
    assert gw.health.state("a", trio_time()) is CircuitState.CLOSED


async def test_a_missing_model_is_skipped_in_chains_for_a_minute(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A model-not-found answer is believed for MISSING_MODEL_S (60 s): an alias skips that
    entry without contact until then, then asks again; a direct request always asks."""
    missing = errors.UpstreamModelNotFound("a answered 404: no such model", provider="a")
    a = FakeProvider("a").script_chat(Fail(missing))
    gw = build(a, FakeProvider("b"), FakeProvider("c"))
    assert (await gw.chat(chat())).target.resolved == "b/m2"
    await trio.sleep(59.9)
    answered = await gw.chat(chat())
    assert answered.target.resolved == "b/m2" and len(a.calls) == 1  # skipped, no contact
    assert answered.failed[0].reason == (
        "UpstreamModelNotFound: a/m1 answered that it has no such model; skipped for 1s more"
    )
    a.script_chat(Fail(missing))
    with pytest.raises(errors.UpstreamModelNotFound):
        await gw.chat(chat("a/m1"))  # direct: asked, not skipped
    assert len(a.calls) == 2
    await trio.sleep(60)  # the memory (renewed by the direct answer) has passed
    assert (await gw.chat(chat())).target.resolved == "a/m1"  # a has pulled it meanwhile
