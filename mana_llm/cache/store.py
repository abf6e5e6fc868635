"""ResponseCache: the backend behind a deadline and a small circuit breaker.

A cache is an optimisation, so its trouble never reaches a request: every command runs under
`timeout_s` (tens of milliseconds) and any failure or timeout is counted and reported as a
miss the caller serves normally. `failure_threshold` consecutive failures switch the cache off
for `cooldown_s` (lookups and stores are skipped, costing nothing); then one command is let
through as a trial: its success switches the cache back on, its failure starts another
cool-down.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import TypeVar

import attrs
import trio

from mana_llm.cache.protocol import CacheBackend

log = logging.getLogger(__name__)

T = TypeVar("T")


class Lookup(StrEnum):
    """A lookup's outcome; also the `result` label of the cache request counter."""

    HIT = "hit"
    MISS = "miss"
    BYPASS = (
        "bypass"  # not asked: not cacheable, the caller said no-cache/no-store, or switched off
    )
    ERROR = "error"  # asked and failed (or timed out): served as a miss


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


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
    _failures: int = attrs.field(init=False, default=0)
    _open_until: float | None = attrs.field(init=False, default=None)
    _trial_running: bool = attrs.field(init=False, default=False)
    last_error: str | None = attrs.field(init=False, default=None)

    def state(self) -> BreakerState:
        if self._open_until is None:
            return BreakerState.CLOSED
        if self.clock() < self._open_until:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def statistics(self) -> dict[str, object]:
        return {
            "backend": self.backend.name,
            "state": self.state().value,
            "consecutive_failures": self._failures,
            "last_error": self.last_error,
        }

    async def get(self, key: str) -> tuple[Lookup, bytes | None]:
        if not self._admit():
            return Lookup.BYPASS, None
        ok, value = await self._run(self.backend.get(key))
        if not ok:
            return Lookup.ERROR, None
        return (Lookup.MISS, None) if value is None else (Lookup.HIT, value)

    async def put(self, key: str, value: bytes) -> bool:
        """Store one entry; False when it was not stored (too large, switched off, failed)."""
        if len(value) > self.max_entry_bytes or not self._admit():
            return False
        ok, _ = await self._run(self.backend.set(key, value, self.ttl_s))
        return ok

    def _admit(self) -> bool:
        state = self.state()
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN or self._trial_running:
            return False
        self._trial_running = True  # half-open: this command is the trial
        return True

    async def _run(self, command: Awaitable[T]) -> tuple[bool, T | None]:
        trial = self._trial_running
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
            if trial and not settled:  # the trial's request went away: let the next one try
                self._trial_running = False

    def _failed(self, reason: str) -> None:
        self.last_error = reason
        self._failures += 1
        self.on_error(self.backend.name)
        was_open = self._open_until is not None
        if self._trial_running or self._failures >= self.failure_threshold:
            self._trial_running = False
            self._open_until = self.clock() + self.cooldown_s
            if not was_open:
                log.warning(
                    "cache (%s) switched off for %gs after %d failures: %s",
                    self.backend.name,
                    self.cooldown_s,
                    self._failures,
                    reason,
                )
        else:
            log.info("cache (%s) command failed: %s", self.backend.name, reason)

    def _succeeded(self) -> None:
        if self._open_until is not None:
            log.warning("cache (%s) back on", self.backend.name)
        self._failures = 0
        self._open_until = None
        self._trial_running = False
