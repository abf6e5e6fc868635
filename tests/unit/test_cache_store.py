"""The in-memory LRU with TTL, and ResponseCache's deadline and breaker, on MockClock with exact
virtual times."""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing

from mana_llm.cache.memory import MemoryBackend
from mana_llm.cache.store import Lookup, ResponseCache
from mana_llm.health.breaker import CircuitState

HIT, MISS, BYPASS, ERROR = Lookup.HIT, Lookup.MISS, Lookup.BYPASS, Lookup.ERROR


async def test_entries_expire_at_their_ttl(autojump_clock: trio.testing.MockClock) -> None:
    memory = MemoryBackend(max_entries=10, max_bytes=1000)
    await memory.set("a", b"1", 60)
    await trio.sleep(59.999)
    assert await memory.get("a") == b"1"
    await trio.sleep(0.001)
    assert trio.current_time() == 60.0
    assert await memory.get("a") is None
    assert len(memory) == 0 and memory.size_bytes == 0


async def test_a_rewrite_renews_the_ttl(autojump_clock: trio.testing.MockClock) -> None:
    memory = MemoryBackend(max_entries=10, max_bytes=1000)
    await memory.set("a", b"1", 60)
    await trio.sleep(30)
    await memory.set("a", b"22", 60)
    await trio.sleep(59)
    assert await memory.get("a") == b"22"
    assert memory.size_bytes == 2


async def test_the_least_recently_used_entry_goes_first() -> None:
    memory = MemoryBackend(max_entries=3, max_bytes=1000)
    for key in "abc":
        await memory.set(key, key.encode(), 60)
    assert await memory.get("a") == b"a"  # a is now the most recently used
    await memory.set("d", b"d", 60)
    assert [await memory.get(k) for k in "abcd"] == [b"a", None, b"c", b"d"]


async def test_the_byte_bound_evicts_and_an_oversized_value_is_not_kept() -> None:
    memory = MemoryBackend(max_entries=100, max_bytes=10)
    await memory.set("a", b"12345", 60)
    await memory.set("b", b"12345", 60)
    await memory.set("c", b"1", 60)  # 11 bytes: a goes
    assert await memory.get("a") is None
    assert memory.size_bytes == 6
    await memory.set("huge", b"x" * 11, 60)
    assert await memory.get("huge") is None
    assert memory.size_bytes == 6


@attrs.define
class FlakyBackend:
    """Answers, raises or hangs, as told."""

    mode: str = "ok"  # ok | raise | hang
    calls: int = 0
    data: dict[str, bytes] = attrs.field(factory=dict)

    @property
    def name(self) -> str:
        return "flaky"

    async def _act(self) -> None:
        self.calls += 1
        if self.mode == "raise":
            raise ConnectionError("connection refused")
        if self.mode == "hang":
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()

    async def get(self, key: str) -> bytes | None:
        await self._act()
        return self.data.get(key)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._act()
        self.data[key] = value


def guarded(backend: FlakyBackend, errors: list[str] | None = None) -> ResponseCache:
    return ResponseCache(
        backend,
        ttl_s=60,
        timeout_s=0.05,
        max_entry_bytes=100,
        failure_threshold=3,
        cooldown_s=30,
        on_error=(errors if errors is not None else []).append,
    )


async def test_hit_miss_and_the_size_limit() -> None:
    backend = FlakyBackend()
    cache = guarded(backend)
    assert await cache.get("k") == (MISS, None)
    assert await cache.put("k", b"v")
    assert await cache.get("k") == (HIT, b"v")
    assert not await cache.put("big", b"x" * 101)
    assert "big" not in backend.data


async def test_a_hung_backend_costs_one_deadline_then_the_breaker_opens(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FlakyBackend("hang")
    errors: list[str] = []
    cache = guarded(backend, errors)
    for i in range(3):
        started = trio.current_time()
        assert await cache.get("k") == (ERROR, None)
        assert trio.current_time() - started == pytest.approx(0.05)
        assert cache.state() is (CircuitState.OPEN if i == 2 else CircuitState.CLOSED)
    assert errors == ["flaky"] * 3
    assert cache.statistics()["last_error"] == "no answer within 50 ms"
    opened_at = trio.current_time()
    # open: nothing is asked and nothing is waited for, lookups and stores alike
    assert await cache.get("k") == (BYPASS, None)
    assert not await cache.put("k", b"v")
    assert trio.current_time() == opened_at
    assert backend.calls == 3
    await trio.sleep(29.999)
    assert cache.state() is CircuitState.OPEN
    await trio.sleep(0.001)
    assert cache.state() is CircuitState.HALF_OPEN
    backend.mode = "ok"
    assert await cache.get("k") == (MISS, None)  # the trial, and it worked
    assert cache.state() is CircuitState.CLOSED
    assert cache.statistics()["consecutive_failures"] == 0


async def test_a_failed_trial_opens_for_another_cooldown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FlakyBackend("raise")
    cache = guarded(backend)
    for _ in range(3):
        assert await cache.get("k") == (ERROR, None)
    await trio.sleep(30)
    assert await cache.get("k") == (ERROR, None)  # the trial, immediately refused
    assert cache.state() is CircuitState.OPEN
    assert "ConnectionError" in str(cache.statistics()["last_error"])
    await trio.sleep(29.999)
    assert await cache.get("k") == (BYPASS, None)
    assert backend.calls == 4


async def test_one_trial_at_a_time_and_a_cancelled_trial_frees_the_slot(
    mock_clock: trio.testing.MockClock,  # time moves only when told: the trial stays out
) -> None:
    backend = FlakyBackend("raise")
    cache = guarded(backend)
    for _ in range(3):
        await cache.get("k")
    mock_clock.jump(30)
    backend.mode = "hang"
    async with trio.open_nursery() as nursery:
        trial = trio.CancelScope()

        async def first() -> None:
            with trial:
                await cache.get("k")

        nursery.start_soon(first)
        await trio.testing.wait_all_tasks_blocked()
        assert backend.calls == 4
        assert await cache.get("k") == (BYPASS, None)  # a trial is already out
        trial.cancel()  # its caller went away before the deadline
    backend.mode = "ok"
    assert await cache.get("k") == (MISS, None)  # the next request is the trial
    assert cache.state() is CircuitState.CLOSED


async def test_a_success_resets_the_failure_count() -> None:
    backend = FlakyBackend("raise")
    cache = guarded(backend)
    await cache.get("k")
    await cache.get("k")
    backend.mode = "ok"
    await cache.get("k")
    backend.mode = "raise"
    await cache.get("k")
    await cache.get("k")
    assert cache.state() is CircuitState.CLOSED
