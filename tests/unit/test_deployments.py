"""Several deployments of one provider through the walk, on MockClock: a failure on one tries
another at once (not a fallback), a key that answers 429 is cooled alone for its Retry-After,
a refused key opens its own breaker, never the provider's."""

from __future__ import annotations

import random

import trio
import trio.testing

from mana_llm import errors
from mana_llm.domain import ChatRequest, Message
from mana_llm.gateway import Gateway
from mana_llm.health.breaker import BreakerPolicy
from mana_llm.health.providers import CircuitState, ProviderHealthCache
from mana_llm.routing.aliases import AliasStore
from mana_llm.routing.balance import Balancer, Deployment, Deployments
from mana_llm.settings import Settings
from tests.fakes.providers import Fail, FakeProvider

MSG = (Message("user", "hi"),)


def two_keys() -> tuple[Gateway, FakeProvider, FakeProvider]:
    """groq with two keys; the first is the one a request tries first (the other is busier)."""
    key1, key2 = FakeProvider("groq"), FakeProvider("groq")
    health = ProviderHealthCache(BreakerPolicy(failure_threshold=2, backoff_s=5.0))
    first, second = Deployment("groq-1", key1), Deployment("groq-2", key2)
    second.in_flight = 1  # another request's: the first key is the less busy
    balancer = Balancer({"groq": Deployments("groq", [first, second])}, health, random.Random(1))
    aliases = AliasStore("aliases.yaml", ["groq"], lambda: 0.0, lambda path: "aliases: {}\n")
    settings = Settings(retries=1)
    gw = Gateway(settings, {"groq": key1}, health, aliases, balancer=balancer)
    return gw, key1, key2


def chat() -> ChatRequest:
    return ChatRequest("groq/m", MSG)


async def test_a_deployment_down_costs_no_failed_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gw, key1, key2 = two_keys()
    key1.script_chat(Fail(errors.UpstreamUnavailable("groq is unreachable", provider="groq")))
    answered = await gw.chat(chat())
    assert answered.target.resolved == "groq/m" and answered.deployment == "groq-2"
    assert [(f.deployment, f.retry, f.kind) for f in answered.failed] == [
        ("groq-1", "deployment", "UpstreamUnavailable")
    ]
    assert answered.attempts == 2 and len(key2.calls) == 1
    assert trio.current_time() == 0.0  # another deployment at once, no backoff wait


async def test_a_429_with_retry_after_cools_that_key_alone_for_that_long(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gw, key1, _key2 = two_keys()
    limited = errors.UpstreamRateLimited("slow down", provider="groq", retry_after_s=20.0)
    key1.script_chat(Fail(limited))
    assert (await gw.chat(chat())).deployment == "groq-2"  # no client-visible error
    for _ in range(19):  # a request a second: every one to the other key
        await trio.sleep(1)
        assert (await gw.chat(chat())).deployment == "groq-2"
    assert [c[2] for c in key1.calls] == [0.0]  # no request to the cooled key for 20 s
    await trio.sleep(1)  # 20 s: its trial
    assert (await gw.chat(chat())).deployment == "groq-1"
    assert gw.health.state("groq-1", trio.current_time()) is CircuitState.CLOSED


async def test_a_refused_key_opens_its_own_breaker_not_the_providers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gw, key1, _key2 = two_keys()
    refused = errors.UpstreamAuthFailed("groq answered 401: invalid api key", provider="groq")
    key1.script_chat(Fail(refused)).script_chat(Fail(refused))
    for _ in range(2):
        assert (await gw.chat(chat())).deployment == "groq-2"
    now = trio.current_time()
    assert gw.health.state("groq-1", now) is CircuitState.OPEN
    assert gw.health.state("groq-2", now) is CircuitState.CLOSED
    [groq] = [s for s in gw.provider_statuses() if s.name == "groq"]
    assert groq.summary == "healthy"  # healthy while any deployment is
    assert [(d.health.name, d.health.state) for d in groq.deployments] == [
        ("groq-1", "open"),
        ("groq-2", "closed"),
    ]


async def test_every_deployment_failing_is_the_entrys_failure_with_each_named(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gw, key1, key2 = two_keys()
    down = errors.UpstreamUnavailable("groq answered 503", provider="groq")
    key1.script_chat(Fail(down))
    key2.script_chat(Fail(down)).script_chat(Fail(down))
    key1.script_chat(Fail(down))
    try:
        await gw.chat(chat())
    except errors.UpstreamUnavailable as error:
        tried = [(a.deployment, a.retry) for a in error.attempts]
    else:
        raise AssertionError("it answered")
    # key 1, then key 2 at once; then the entry's one same-target retry (RETRIES=1), which
    # again may try each key: four calls, each a retry the budget granted (its floor is 3)
    assert tried == [
        ("groq-1", "deployment"),
        ("groq-2", "sent"),
        ("groq-1", "deployment"),
        ("groq-2", None),
    ]
