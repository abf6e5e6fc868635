"""ProviderHealthCache: a circuit breaker per provider, fed by the request path and the probes.

Closed: calls flow; `failure_threshold` consecutive failures open the circuit for the current
backoff. Open: calls are skipped until the backoff ends. Half-open: the next call is a trial
(others keep skipping); its success closes the circuit and resets the backoff, its failure
re-opens it with the backoff doubled up to `max_backoff_s`. A rate limit with Retry-After opens
the circuit for at least that long. Pure state: every method takes `now`.

Probes are weaker evidence than requests: a model list answering 200 says nothing about chat.
A probe success moves an open circuit to half-open at most (the next real call is the trial)
and resets nothing in a closed one; a probe failure counts like a request failure. Until the
first probe or request outcome, nobody has checked the provider (`checked` is False).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum

import attrs

log = logging.getLogger(__name__)


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@attrs.frozen
class Transition:
    provider: str
    old: CircuitState
    new: CircuitState
    at: float


@attrs.frozen
class ProviderHealth:
    state: CircuitState
    consecutive_failures: int
    last_error: str | None
    last_failure_at: float | None
    last_success_at: float | None
    reopens_at: float | None
    last_probe_at: float | None
    last_probe_ok: bool | None = None
    opened_at: float | None = None  # when the circuit last opened (open or half-open)...
    opened_because: str | None = None  # ...and the failure that opened it
    checked: bool = False  # any probe or request outcome seen yet


@attrs.frozen
class BreakerPolicy:
    failure_threshold: int = 2
    backoff_s: float = 60.0
    max_backoff_s: float = 600.0


@attrs.define(eq=False)
class _Circuit:
    state: CircuitState = CircuitState.CLOSED
    failures: int = 0
    backoff_s: float = 0.0
    open_until: float = 0.0
    trial_since: float | None = None
    last_error: str | None = None
    last_failure_at: float | None = None
    last_success_at: float | None = None
    last_probe_at: float | None = None
    last_probe_ok: bool | None = None
    opened_at: float | None = None
    opened_because: str | None = None
    checked: bool = False


Listener = Callable[[Transition], None]


@attrs.define(eq=False)
class ProviderHealthCache:
    _policy: BreakerPolicy = attrs.field(factory=BreakerPolicy)
    _circuits: dict[str, _Circuit] = attrs.field(factory=dict)
    _listeners: list[Listener] = attrs.field(factory=list)

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _circuit(self, provider: str) -> _Circuit:
        circuit = self._circuits.get(provider)
        if circuit is None:
            circuit = self._circuits[provider] = _Circuit(backoff_s=self._policy.backoff_s)
        return circuit

    def _move(self, provider: str, circuit: _Circuit, new: CircuitState, now: float) -> None:
        old, circuit.state = circuit.state, new
        if old is new:
            return
        transition = Transition(provider, old, new, now)
        for listener in tuple(self._listeners):
            try:
                listener(transition)
            except Exception:
                log.exception("health listener failed on %s", transition)

    def _refresh(self, provider: str, circuit: _Circuit, now: float) -> None:
        if circuit.state is CircuitState.OPEN and now >= circuit.open_until:
            circuit.trial_since = None
            self._move(provider, circuit, CircuitState.HALF_OPEN, now)

    def state(self, provider: str, now: float) -> CircuitState:
        circuit = self._circuit(provider)
        self._refresh(provider, circuit, now)
        return circuit.state

    def try_acquire(self, provider: str, now: float) -> bool:
        """May a call go to this provider now? In half-open, grants the single trial call
        (a trial with no outcome after one backoff is considered lost and granted again)."""
        circuit = self._circuit(provider)
        self._refresh(provider, circuit, now)
        if circuit.state is CircuitState.CLOSED:
            return True
        if circuit.state is CircuitState.OPEN:
            return False
        if circuit.trial_since is None or now - circuit.trial_since >= circuit.backoff_s:
            circuit.trial_since = now
            return True
        return False

    def release_trial(self, provider: str) -> None:
        """The granted call made no contact: a half-open circuit's trial goes to the next call."""
        self._circuit(provider).trial_since = None

    def reopens_at(self, provider: str) -> float | None:
        circuit = self._circuit(provider)
        return circuit.open_until if circuit.state is CircuitState.OPEN else None

    def record_success(self, provider: str, now: float) -> None:
        """A real call succeeded: the circuit closes and the backoff resets."""
        circuit = self._circuit(provider)
        circuit.checked = True
        circuit.failures = 0
        circuit.last_success_at = now
        circuit.trial_since = None
        circuit.backoff_s = self._policy.backoff_s
        self._move(provider, circuit, CircuitState.CLOSED, now)

    def record_probe_success(self, provider: str, now: float) -> None:
        """The provider is reachable: an open circuit may try a real call now (half-open);
        a half-open or closed one is left as it is."""
        circuit = self._circuit(provider)
        circuit.checked = True
        circuit.last_probe_at, circuit.last_probe_ok = now, True
        self._refresh(provider, circuit, now)
        if circuit.state is CircuitState.OPEN:
            circuit.open_until = now
            self._refresh(provider, circuit, now)

    def record_failure(
        self,
        provider: str,
        now: float,
        reason: str,
        *,
        retry_after_s: float | None = None,
        probe: bool = False,
    ) -> None:
        circuit = self._circuit(provider)
        self._refresh(provider, circuit, now)
        circuit.checked = True
        circuit.failures += 1
        circuit.last_error = reason
        circuit.last_failure_at = now
        if probe:
            circuit.last_probe_at, circuit.last_probe_ok = now, False
        if circuit.state is CircuitState.HALF_OPEN:
            if retry_after_s:  # the upstream said when to come back: that, not a guess
                self._open(provider, circuit, now, 0.0, retry_after_s)
            else:
                circuit.backoff_s = min(circuit.backoff_s * 2, self._policy.max_backoff_s)
                self._open(provider, circuit, now, circuit.backoff_s, None)
        elif circuit.state is CircuitState.CLOSED:
            if circuit.failures >= self._policy.failure_threshold:
                self._open(provider, circuit, now, circuit.backoff_s, retry_after_s)
            elif retry_after_s:
                self._open(provider, circuit, now, 0.0, retry_after_s)
        elif retry_after_s:  # already open: a longer Retry-After extends it
            circuit.open_until = max(circuit.open_until, now + retry_after_s)

    def _open(
        self,
        provider: str,
        circuit: _Circuit,
        now: float,
        backoff_s: float,
        retry_after_s: float | None,
    ) -> None:
        circuit.open_until = now + max(backoff_s, retry_after_s or 0.0)
        circuit.trial_since = None
        circuit.opened_at, circuit.opened_because = now, circuit.last_error
        self._move(provider, circuit, CircuitState.OPEN, now)

    def statistics(self, provider: str, now: float) -> ProviderHealth:
        circuit = self._circuit(provider)
        self._refresh(provider, circuit, now)
        return ProviderHealth(
            state=circuit.state,
            consecutive_failures=circuit.failures,
            last_error=circuit.last_error,
            last_failure_at=circuit.last_failure_at,
            last_success_at=circuit.last_success_at,
            reopens_at=circuit.open_until if circuit.state is CircuitState.OPEN else None,
            last_probe_at=circuit.last_probe_at,
            last_probe_ok=circuit.last_probe_ok,
            opened_at=None if circuit.state is CircuitState.CLOSED else circuit.opened_at,
            opened_because=None if circuit.state is CircuitState.CLOSED else circuit.opened_because,
            checked=circuit.checked,
        )
