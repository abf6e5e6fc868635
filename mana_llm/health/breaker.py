"""One circuit breaker, pure: state and policy, every method takes `now`. Provider health
(health/providers.py) keeps one per provider; the response cache (cache/store.py) keeps one for
its backend.

Closed: calls flow; `failure_threshold` consecutive failures open the circuit for the current
backoff. Open: calls are refused until the backoff ends. Half-open: one call is let through as
a trial (a trial with no outcome after one backoff is considered lost and granted again); its
success closes the circuit and resets the backoff, its failure re-opens it with the backoff
doubled up to `max_backoff_s` (equal to `backoff_s`: a fixed cool-down). A failure that says
when to come back (Retry-After) opens the circuit for at least that long, and a failed trial
for exactly that long. An outside check (provider health's probes) may hold an open circuit
open past its backoff while it says the service is unreachable (`hold`, `release_hold`).
"""

from __future__ import annotations

from enum import StrEnum

import attrs


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@attrs.frozen
class BreakerPolicy:
    failure_threshold: int = 2
    backoff_s: float = 60.0
    max_backoff_s: float = 600.0


@attrs.define(eq=False)
class Breaker:
    policy: BreakerPolicy = attrs.field(factory=BreakerPolicy)
    failures: int = 0  # consecutive
    backoff_s: float = attrs.field()
    open_until: float | None = None  # None: closed
    trial_since: float | None = None  # half-open: when the running trial was granted
    held: bool = False  # open past the backoff until an outside check says otherwise

    @backoff_s.default
    def _first_backoff(self) -> float:
        return self.policy.backoff_s

    def state(self, now: float) -> CircuitState:
        if self.open_until is None:
            return CircuitState.CLOSED
        if now < self.open_until or self.held:
            return CircuitState.OPEN
        return CircuitState.HALF_OPEN

    def reopens_at(self, now: float) -> float | None:
        """When an open circuit lets a trial through; None when not open, or held past it."""
        if self.state(now) is not CircuitState.OPEN or now >= (self.open_until or 0.0):
            return None
        return self.open_until

    def try_acquire(self, now: float) -> bool:
        """May a call go now? In half-open, grants the single trial."""
        state = self.state(now)
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.OPEN:
            return False
        if self.trial_since is None or now - self.trial_since >= self.backoff_s:
            self.trial_since = now
            return True
        return False

    def release_trial(self) -> None:
        """The granted call ended without an outcome: the trial goes to the next call."""
        self.trial_since = None

    def half_open(self, now: float) -> None:
        """Let the next call be a trial now (an open circuit only; otherwise nothing)."""
        if self.state(now) is CircuitState.OPEN:
            self.open_until = now
            self.trial_since = None
            self.held = False

    def hold(self) -> None:
        """An open circuit stays open past its backoff until `release_hold` (a closed one is
        not touched)."""
        if self.open_until is not None:
            self.held = True

    def release_hold(self) -> None:
        self.held = False

    def record_success(self) -> None:
        self.failures = 0
        self.backoff_s = self.policy.backoff_s
        self.open_until = None
        self.trial_since = None
        self.held = False

    def record_failure(self, now: float, retry_after_s: float | None = None) -> bool:
        """Count a failure; True when it (re)opened the circuit."""
        state = self.state(now)
        self.failures += 1
        if state is CircuitState.HALF_OPEN:
            if retry_after_s:  # the upstream said when to come back: that, not a guess
                return self._open(now, 0.0, retry_after_s)
            self.backoff_s = min(self.backoff_s * 2, self.policy.max_backoff_s)
            return self._open(now, self.backoff_s, None)
        if state is CircuitState.CLOSED:
            if self.failures >= self.policy.failure_threshold:
                return self._open(now, self.backoff_s, retry_after_s)
            if retry_after_s:
                return self._open(now, 0.0, retry_after_s)
            return False
        if retry_after_s and self.open_until is not None:  # open: a longer wait extends it
            self.open_until = max(self.open_until, now + retry_after_s)
        return False

    def _open(self, now: float, backoff_s: float, retry_after_s: float | None) -> bool:
        self.open_until = now + max(backoff_s, retry_after_s or 0.0)
        self.trial_since = None
        self.held = False
        return True
