"""ResponseCache: the backend behind a deadline and a small circuit breaker.

A cache is an optimisation, so its trouble never reaches a request: every command runs under
`timeout_s` (tens of milliseconds) and any failure or timeout is counted and reported as a
miss the caller serves normally. `failure_threshold` consecutive failures switch the cache off
for `cooldown_s` (lookups and stores are skipped, costing nothing); then one command is let
through as a trial: its success switches the cache back on, its failure starts another
cool-down.

`put_later` stores off the caller's path: a bounded queue that `run_writer` (a task of the root
nursery) empties, WRITERS puts at a time, each under the same deadline. A full queue, or no
writer running, drops the entry (counted in `statistics()`): a cache may always forget.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import TypeVar

import attrs
import trio

from mana_llm.cache.protocol import CacheBackend
from mana_llm.health.breaker import Breaker, BreakerPolicy, CircuitState

log = logging.getLogger(__name__)

T = TypeVar("T")

WRITE_QUEUE = 256  # entries waiting for the writer; more are dropped
WRITERS = 4  # puts the writer runs at once


class Lookup(StrEnum):
    """A lookup's outcome; also the `result` label of the cache request counter."""

    HIT = "hit"
    MISS = "miss"
    BYPASS = (
        "bypass"  # not asked: not cacheable, the caller said no-cache/no-store, or switched off
    )
    ERROR = "error"  # asked and failed (or timed out): served as a miss


@attrs.define(eq=False)
class ResponseCache:
    backend: CacheBackend
    ttl_s: float
    timeout_s: float
    max_entry_bytes: int
    failure_threshold: int = 3
    cooldown_s: float = 30.0
    clock: Callable[[], float] = trio.current_time
    on_error: Callable[[str], None] = lambda backend: None  # called with the backend's name
    _breaker: Breaker = attrs.field(init=False)
    last_error: str | None = attrs.field(init=False, default=None)
    _writes: trio.MemorySendChannel[tuple[str, bytes]] | None = attrs.field(
        init=False, default=None
    )
    writes_dropped: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        # a fixed cool-down: max_backoff_s == backoff_s
        policy = BreakerPolicy(self.failure_threshold, self.cooldown_s, self.cooldown_s)
        self._breaker = Breaker(policy)

    def state(self) -> CircuitState:
        return self._breaker.state(self.clock())

    def statistics(self) -> dict[str, object]:
        return {
            "backend": self.backend.name,
            "state": self.state().value,
            "consecutive_failures": self._breaker.failures,
            "last_error": self.last_error,
            "writes_dropped": self.writes_dropped,
        }

    async def get(self, key: str) -> tuple[Lookup, bytes | None]:
        if not self._breaker.try_acquire(self.clock()):
            return Lookup.BYPASS, None
        ok, value = await self._run(self.backend.get(key))
        if not ok:
            return Lookup.ERROR, None
        return (Lookup.MISS, None) if value is None else (Lookup.HIT, value)

    async def put(self, key: str, value: bytes) -> bool:
        """Store one entry; False when it was not stored (too large, switched off, failed)."""
        if len(value) > self.max_entry_bytes or not self._breaker.try_acquire(self.clock()):
            return False
        ok, _ = await self._run(self.backend.set(key, value, self.ttl_s))
        return ok

    def put_later(self, key: str, value: bytes) -> bool:
        """Queue one entry for the writer (never waits); False when it was dropped."""
        try:
            if self._writes is None:
                raise trio.WouldBlock
            self._writes.send_nowait((key, value))
        except trio.WouldBlock:
            self.writes_dropped += 1
            return False
        return True

    async def run_writer(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Store what `put_later` queued, WRITERS at a time, until cancelled."""
        send, receive = trio.open_memory_channel[tuple[str, bytes]](WRITE_QUEUE)
        async with send, receive, trio.open_nursery() as nursery:
            for _ in range(WRITERS):
                nursery.start_soon(self._write_from, receive.clone())
            self._writes = send
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._writes = None

    async def _write_from(self, queue: trio.MemoryReceiveChannel[tuple[str, bytes]]) -> None:
        async with queue:
            async for key, value in queue:
                await self.put(key, value)

    async def _run(self, command: Awaitable[T]) -> tuple[bool, T | None]:
        settled = False
        try:
            with trio.move_on_after(self.timeout_s):
                try:
                    result = await command
                except Exception as exc:  # any backend trouble is a miss, never a failed request
                    settled = True
                    self._failed(f"{type(exc).__name__}: {exc}")
                    return False, None
                settled = True
                self._succeeded()
                return True, result
            settled = True
            self._failed(f"no answer within {self.timeout_s * 1000:g} ms")
            return False, None
        finally:
            if not settled:  # the caller went away: a trial goes to the next command
                self._breaker.release_trial()

    def _failed(self, reason: str) -> None:
        self.last_error = reason
        self.on_error(self.backend.name)
        was_open = self._breaker.open_until is not None
        if self._breaker.record_failure(self.clock()) and not was_open:
            log.warning(
                "cache (%s) switched off for %gs after %d failures: %s",
                self.backend.name,
                self.cooldown_s,
                self._breaker.failures,
                reason,
            )
        elif not was_open:
            log.info("cache (%s) command failed: %s", self.backend.name, reason)

    def _succeeded(self) -> None:
        if self._breaker.open_until is not None:
            log.warning("cache (%s) back on", self.backend.name)
        self._breaker.record_success()
