"""A streamed answer is stored after the client has its [DONE], off the client's path, by the
cache's writer, exactly once, within CACHE_TIMEOUT: the gateway's stream use case relayed by
the api's SSE body against a slow cache backend (MockClock, exact times)."""

from __future__ import annotations

from typing import Any

import attrs
import trio
import trio.testing

from mana_llm.api.sse import DONE, BodySend, relay
from mana_llm.cache.memory import MemoryBackend
from mana_llm.cache.store import ResponseCache
from mana_llm.domain import ChatRequest, Message
from mana_llm.metrics import RequestTrace
from tests.fakes.providers import Content, End, FakeProvider, Finish, Sleep
from tests.unit.test_walk import build

STORE_S = 0.5  # the slow backend's write
CACHE_TIMEOUT_S = 1.0


@attrs.define(eq=False)
class SlowBackend:
    """An in-memory backend whose writes take STORE_S."""

    inner: MemoryBackend = attrs.field(factory=lambda: MemoryBackend(100, 1 << 20))
    stored_at: list[float] = attrs.field(factory=list)

    @property
    def name(self) -> str:
        return "memory"

    async def get(self, key: str) -> bytes | None:
        return await self.inner.get(key)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await trio.sleep(STORE_S)
        await self.inner.set(key, value, ttl_s)
        self.stored_at.append(trio.current_time())


async def test_done_reaches_the_client_before_the_store_and_the_store_happens_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = FakeProvider("a").script_stream(Content("Hel"), Sleep(1), Content("lo"), Finish(), End())
    gw = build(a, FakeProvider("b"), FakeProvider("c"))
    backend = SlowBackend()
    gw.cache = ResponseCache(backend, ttl_s=60, timeout_s=CACHE_TIMEOUT_S, max_entry_bytes=1 << 20)
    request = ChatRequest("a/m1", (Message("user", "hi"),), stream=True, temperature=0)
    sent: list[tuple[float, bytes]] = []

    async def server(message: dict[str, Any]) -> None:
        sent.append((trio.current_time(), message["body"]))

    async with trio.open_nursery() as nursery:
        await nursery.start(gw.cache.run_writer)
        answered = await gw.chat_stream(request)
        trace = RequestTrace("rid", trio.current_time())
        await relay(BodySend(server, server), answered.result, False, trace)
        done_at = trio.current_time()
        await answered.result.aclose()  # the request scope's cleanup closes it again: no-op
        await trio.sleep(10)  # whatever else may come, comes
        nursery.cancel_scope.cancel()
    assert sent[-1] == (1.0, DONE)  # the answer ended at 1 s, with nothing waiting on the cache
    assert done_at == 1.0
    assert backend.stored_at == [1.0 + STORE_S]  # stored once, after [DONE], off its path
    hit = await gw.chat_stream(request)  # and the cache answers the same request
    assert hit.cached and hit.cache == "hit"
