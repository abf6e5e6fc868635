"""Same-target retries: how long to wait before trying a chain entry again, and a budget per
provider so that retries (and hedges) never amplify an outage. Pure: every method takes `now`.

Waits are full-jitter exponential backoff (a uniform draw from 0 to base * 2**n for the n-th
retry), or the upstream's own Retry-After when it says one and it fits `max_wait_s`; a longer
Retry-After means: do not wait, move on.

A budget lets extra calls (retries, hedges) add at most `ratio` on top of the first attempts
made over a sliding `window_s`, with a small `floor` so a quiet gateway can still retry.
"""

from __future__ import annotations

import random
from collections import deque

import attrs


@attrs.frozen
class RetryPolicy:
    base_delay_s: float = 0.2
    max_wait_s: float = 5.0
    rng: random.Random = attrs.field(factory=random.Random, eq=False)

    def wait_s(self, retry_index: int, retry_after_s: float | None) -> float | None:
        """Seconds to wait before retry number `retry_index` (0 for the first); None when the
        upstream asked for longer than `max_wait_s`."""
        if retry_after_s is not None:
            return retry_after_s if retry_after_s <= self.max_wait_s else None
        ceiling = min(self.base_delay_s * 2**retry_index, self.max_wait_s)
        return self.rng.uniform(0.0, ceiling)


@attrs.define(eq=False)
class Budget:
    ratio: float = 0.2
    window_s: float = 10.0
    floor: int = 3  # extra calls allowed per window whatever the traffic
    _firsts: deque[float] = attrs.field(factory=deque)
    _extras: deque[float] = attrs.field(factory=deque)

    def _prune(self, now: float) -> None:
        for times in (self._firsts, self._extras):
            while times and times[0] <= now - self.window_s:
                times.popleft()

    def first_attempt(self, now: float) -> None:
        self._prune(now)
        self._firsts.append(now)

    def try_spend(self, now: float) -> bool:
        """Take one extra call from the budget, if it has one."""
        self._prune(now)
        if len(self._extras) < self.floor + self.ratio * len(self._firsts):
            self._extras.append(now)
            return True
        return False


@attrs.define(eq=False)
class Budgets:
    """One budget per provider."""

    ratio: float
    _by_provider: dict[str, Budget] = attrs.field(factory=dict)

    def __getitem__(self, provider: str) -> Budget:
        budget = self._by_provider.get(provider)
        if budget is None:
            budget = self._by_provider[provider] = Budget(self.ratio)
        return budget
