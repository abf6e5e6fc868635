"""The shared cache on a real redis-server: two gateway instances share answers, a stream hit
replays through the SDK, a cut stream is not stored, and Redis trouble (killed, hung, down at
start-up) never fails a request and costs at most one command deadline per request."""

from __future__ import annotations

from typing import Any

import httpx
import trio

from tests.e2e.redis_server import RedisServer, free_port
from tests.e2e.stack import Stack, start_stack
from tests.fakes.server import Cut
from tests.fakes.upstreams import WORDS, openai_chunk, openai_completion, openai_stream

GROQ = "groq/llama-3.1-8b-instant"
CHAT = "/v1/chat/completions"
BODY: dict[str, Any] = {
    "model": GROQ,
    "messages": [{"role": "user", "content": "Tag this: redis"}],
    "temperature": 0,
}


async def test_two_instances_share_answers_and_streams_replay_through_the_sdk(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    a = await start_stack(nursery, REDIS_URL=redis.url)
    b = await start_stack(nursery, REDIS_URL=redis.url)
    a.cloud.script(CHAT, openai_completion("llama-3.1-8b-instant", "answered by a"))
    stream_body = {**BODY, "messages": [{"role": "user", "content": "stream this"}]}
    with trio.fail_after(10):
        first = await a.chat(BODY)
        shared = await b.chat(BODY)
        live = await a.chat({**stream_body, "stream": True})
        chunks = [
            c
            async for c in await b.sdk().chat.completions.create(
                **stream_body, stream=True, stream_options={"include_usage": True}
            )
        ]
        async with b.client() as client:
            health = (await client.get("/v1/health")).json()
    assert first.headers["x-mana-llm-cache"] == "MISS"
    assert shared.headers["x-mana-llm-cache"] == "HIT"
    assert shared.headers["x-mana-llm-resolved"] == GROQ
    assert shared.json()["choices"][0]["message"]["content"] == "answered by a"
    assert live.headers["x-mana-llm-cache"] == "MISS"
    assert a.cloud_calls() == 2 and b.cloud_calls() == 0  # b never asked its upstream
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(WORDS)
    assert {c.model for c in chunks} == {GROQ}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == len(WORDS)
    assert health["cache"]["backend"] == "redis" and health["cache"]["state"] == "closed"
    assert b.metric("mana_llm_cache_requests_total", result="hit") == 2


async def test_a_cut_stream_is_not_stored(nursery: trio.Nursery, redis: RedisServer) -> None:
    a = await start_stack(nursery, REDIS_URL=redis.url)
    b = await start_stack(nursery, REDIS_URL=redis.url)
    a.cloud.script(CHAT, openai_stream(openai_chunk("", role=True), openai_chunk("Hal"), Cut()))
    body = {**BODY, "stream": True}
    with trio.fail_after(10):
        cut = await a.chat(body)
        after = await b.chat(body)
    assert "[DONE]" not in cut.text and '"error"' in cut.text
    assert after.headers["x-mana-llm-cache"] == "MISS"
    assert after.text.endswith("data: [DONE]\n\n")
    assert b.cloud_calls() == 1


async def fragile_stack(
    nursery: trio.Nursery, redis: RedisServer, deadline_s: float, cooldown_s: float
) -> Stack:
    """A gateway on `redis` whose breaker opens after two failures; one answer is stored."""
    stack = await start_stack(
        nursery,
        REDIS_URL=redis.url,
        CACHE_TIMEOUT=str(deadline_s),
        CACHE_BREAKER_FAILURES="2",
        CACHE_BREAKER_COOLDOWN=str(cooldown_s),
    )
    with trio.fail_after(10):
        assert (await stack.chat(BODY)).headers["x-mana-llm-cache"] == "MISS"
    return stack


async def timed_posts(stack: Stack, count: int) -> list[tuple[httpx.Response, float]]:
    """`count` requests in turn, each with how long it took; every one must be answered."""
    out = []
    for _ in range(count):
        started = trio.current_time()
        r = await stack.chat(BODY)
        out.append((r, trio.current_time() - started))
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
    return out


async def test_a_killed_redis_fails_no_request_and_the_cache_recovers(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    deadline_s = 0.5  # generous: a loaded CI machine must not turn a fast request into a failure
    stack = await fragile_stack(nursery, redis, deadline_s, cooldown_s=0.3)
    with trio.fail_after(20):
        assert (await stack.chat(BODY)).headers["x-mana-llm-cache"] == "HIT"
        await redis.kill()
        answers = await timed_posts(stack, 4)
        assert [r.headers["x-mana-llm-cache"] for r, _ in answers] == ["BYPASS"] * 4
        # a refused connection fails at once: no wait, never a hang
        assert all(took < deadline_s for _, took in answers)
        # two failed lookups open the cache's breaker; after that Redis is not asked
        assert stack.metric("mana_llm_cache_errors_total", backend="redis") == 2
        assert stack.metric("mana_llm_cache_requests_total", result="error") == 2
        assert stack.cloud_calls() == 5
        await redis.start()  # same port, empty
        seen: list[str] = []
        while seen[-1:] != ["HIT"]:  # bypassed until the cool-down ends, then stored, then a hit
            r = await stack.chat(BODY)
            assert r.status_code == 200
            seen.append(r.headers["x-mana-llm-cache"])
    # the answer that stored it: a trial lookup (MISS), or a request whose lookup was bypassed
    # and whose store came after the cool-down ended (a slow machine)
    assert set(seen[:-2]) <= {"BYPASS"} and seen[-2] in ("MISS", "BYPASS")


async def test_a_hung_redis_costs_one_deadline_per_request_then_none(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    deadline_s = 0.4
    stack = await fragile_stack(nursery, redis, deadline_s, cooldown_s=60)
    with trio.fail_after(20):
        redis.pause()
        answers = await timed_posts(stack, 3)
        assert [r.headers["x-mana-llm-cache"] for r, _ in answers] == ["BYPASS"] * 3
        took = [t for _, t in answers]
    # the lookup waited its deadline (and the request did not store: one deadline, not two)
    assert all(deadline_s <= t < 2 * deadline_s for t in took[:2]), took
    assert took[2] < deadline_s, took  # the breaker is open: Redis is not asked at all
    assert stack.metric("mana_llm_cache_errors_total", backend="redis") == 2
    async with stack.client() as client:
        cache = (await client.get("/v1/health")).json()["cache"]
    assert cache["state"] == "open"
    assert cache["last_error"] == "no answer within 400 ms"


async def test_redis_down_at_start_up_is_only_a_slower_cache(
    nursery: trio.Nursery, redis_binary: str
) -> None:
    stack = await start_stack(nursery, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    with trio.fail_after(10):
        answers = [await stack.chat(BODY) for _ in range(2)]
    assert [r.status_code for r in answers] == [200, 200]
    assert [r.headers["x-mana-llm-cache"] for r in answers] == ["BYPASS", "BYPASS"]
    assert stack.metric("mana_llm_cache_requests_total", result="error") == 2
