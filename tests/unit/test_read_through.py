"""One request's use of the cache: the key is hashed once for the lookup and the store."""

from __future__ import annotations

import trio.testing

from mana_llm import read_through
from mana_llm.cache.memory import MemoryBackend
from mana_llm.cache.store import ResponseCache
from mana_llm.domain import CacheControl, Target

TARGET = Target("groq", "m")
ANSWER = {"object": "chat.completion", "choices": [{"finish_reason": "stop"}]}


async def test_the_key_is_computed_once_per_target(autojump_clock: trio.testing.MockClock) -> None:
    computed: list[Target] = []

    def key_of(target: Target) -> str:
        computed.append(target)
        return f"k:{target.resolved}"

    cache = ResponseCache(
        MemoryBackend(10, 1 << 20), ttl_s=60, timeout_s=1, max_entry_bytes=1 << 20
    )
    plan = read_through.plan(cache, CacheControl(), True, key_of, lambda payload: True)
    assert plan is not None
    assert await plan.lookup(TARGET) is None and plan.result == "miss"
    await plan.save(TARGET, ANSWER)
    assert computed == [TARGET]  # the lookup's key served the store
    again = read_through.plan(cache, CacheControl(), True, key_of, lambda payload: True)
    assert again is not None and await again.lookup(TARGET) is not None
    assert again.result == "hit"
