"""One request's use of the cache: the key is hashed once for the lookup and the store; a
streamed answer is recorded on its way to the client and stored by the writer, once."""

from __future__ import annotations

import trio
import trio.testing

from mana_llm.cache import read_through
from mana_llm.cache.memory import MemoryBackend
from mana_llm.cache.store import ResponseCache
from mana_llm.domain import CacheControl, StreamChunk, Target
from tests.fakes.providers import chunk_payload

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


def stream_of(text: str, count: int) -> list[StreamChunk]:
    content = StreamChunk(chunk_payload(TARGET, {"content": text}), commits=True)
    finish = StreamChunk(chunk_payload(TARGET, {}, "stop"), finish_reason="stop")
    return [content] * count + [finish]


async def test_a_recorder_hands_a_small_complete_answer_to_the_writer_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cache = ResponseCache(
        MemoryBackend(10, 1 << 20), ttl_s=60, timeout_s=1, max_entry_bytes=1 << 20
    )
    plan = read_through.plan(
        cache, CacheControl(), True, lambda t: f"k:{t.resolved}", lambda payload: True
    )
    assert plan is not None
    recorder = plan.recorder(10_000)
    assert recorder is not None
    sent: list[list[StreamChunk]] = []

    async def emit(got: list[StreamChunk]) -> None:
        sent.append(got)

    await recorder.recording(emit)(stream_of("hello", 3))  # kept on its way to the client
    assert len(sent) == 1 and len(recorder.payloads or []) == 4
    async with trio.open_nursery() as nursery:
        await nursery.start(cache.run_writer)
        plan.store_streamed(TARGET, recorder)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    entry = await read_through.plan(
        cache, CacheControl(), True, lambda t: f"k:{t.resolved}", lambda payload: True
    ).lookup(TARGET)  # type: ignore[union-attr]
    assert entry is not None
    assert entry.payload["choices"][0]["message"]["content"] == "hellohellohello"


async def test_a_recorder_lets_go_past_its_bound(autojump_clock: trio.testing.MockClock) -> None:
    recorder = read_through.Recorder(2_000)
    recorder.keep(stream_of("x" * 100, 10)[:10])  # about 1.6 kB: still kept
    assert recorder.payloads is not None
    recorder.keep(stream_of("x" * 100, 10)[:10])  # past 2 kB: dropped, and nothing more is kept
    recorder.keep(stream_of("x", 1))
    assert recorder.payloads is None


async def test_nothing_is_stored_without_a_running_writer_and_the_drop_is_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cache = ResponseCache(
        MemoryBackend(10, 1 << 20), ttl_s=60, timeout_s=1, max_entry_bytes=1 << 20
    )
    assert not cache.put_later("k", b"v")
    assert cache.statistics()["writes_dropped"] == 1
