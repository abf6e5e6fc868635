"""ProviderHealthCache: a circuit breaker per provider (breaker.py), fed by the request path and
the probes, with what operators need to see beside it: the last error, when and why the circuit
opened, the last success and the last probe. Every method takes `now`.

Probes are weaker evidence than requests: a model list answering 200 says nothing about chat.
A probe failure counts like a request failure, and while the circuit is open it holds it open
past its backoff: no caller pays a trial against a provider that does not even list its models.
A probe success releases that hold and resets nothing else. It half-opens the circuit at once
(the next real call is the trial) only when probes opened it: the provider was unreachable and
is reachable again. A circuit that real calls opened waits out its backoff whatever the probes
say, so a provider that lists its models but fails every call costs callers at most one failed
trial per backoff (docs/ARCHITECTURE.md, "Recovery"). Until the first probe or request outcome,
nobody has checked the provider (`checked` is False). The most recent outcome, probe or
request, is kept (`failing`: it was a failure). Listeners hear every state change (closed,
open, half-open), whenever it is first seen.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import attrs

from mana_llm import errors
from mana_llm.domain import DeploymentStatus, ProviderStatus
from mana_llm.health.breaker import Breaker, BreakerPolicy, CircuitState

__all__ = ["BreakerPolicy", "CircuitState", "ProviderHealth", "ProviderHealthCache", "Transition"]

log = logging.getLogger(__name__)


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
    failing: bool = False  # the most recent probe or request outcome was a failure


@attrs.define(eq=False)
class _Circuit:
    breaker: Breaker
    seen: CircuitState = CircuitState.CLOSED  # the state listeners last heard
    last_error: str | None = None
    last_failure_at: float | None = None
    last_success_at: float | None = None
    last_probe_at: float | None = None
    last_probe_ok: bool | None = None
    opened_at: float | None = None
    opened_because: str | None = None
    opened_by_probe: bool = False  # the failure that last (re)opened it was a probe's
    checked: bool = False
    failing: bool = False


Listener = Callable[[Transition], None]


@attrs.define(eq=False)
class ProviderHealthCache:
    _policy: BreakerPolicy = attrs.field(factory=BreakerPolicy)
    _circuits: dict[str, _Circuit] = attrs.field(factory=dict)
    _listeners: list[Listener] = attrs.field(factory=list)

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _circuit(self, provider: str, now: float) -> _Circuit:
        circuit = self._circuits.get(provider)
        if circuit is None:
            circuit = self._circuits[provider] = _Circuit(Breaker(self._policy))
        self._notice(provider, circuit, now)
        return circuit

    def _notice(self, provider: str, circuit: _Circuit, now: float) -> CircuitState:
        """The breaker's state now; listeners hear it if it changed since they last did."""
        new = circuit.breaker.state(now)
        if new is not circuit.seen:
            transition = Transition(provider, circuit.seen, new, now)
            circuit.seen = new
            for listener in tuple(self._listeners):
                try:
                    listener(transition)
                except Exception:
                    log.exception("health listener failed on %s", transition)
        return new

    def state(self, provider: str, now: float) -> CircuitState:
        return self._circuit(provider, now).seen

    def try_acquire(self, provider: str, now: float) -> bool:
        """May a call go to this provider now? In half-open, grants the single trial call
        (a trial with no outcome after one backoff is considered lost and granted again)."""
        return self._circuit(provider, now).breaker.try_acquire(now)

    def release_trial(self, provider: str) -> None:
        """The granted call made no contact: a half-open circuit's trial goes to the next call."""
        circuit = self._circuits.get(provider)
        if circuit is not None:
            circuit.breaker.release_trial()

    def reopens_at(self, provider: str) -> float | None:
        """When an open circuit (as last seen) lets a trial through."""
        circuit = self._circuits.get(provider)
        if circuit is None or circuit.seen is not CircuitState.OPEN or circuit.breaker.held:
            return None
        return circuit.breaker.open_until

    def record_success(self, provider: str, now: float) -> None:
        """A real call succeeded: the circuit closes and the backoff resets."""
        circuit = self._circuit(provider, now)
        circuit.checked, circuit.failing = True, False
        circuit.last_success_at = now
        circuit.breaker.record_success()
        self._notice(provider, circuit, now)

    def record_probe_success(self, provider: str, now: float) -> None:
        """The provider is reachable: a hold by failed probes ends; a circuit that probes
        opened may try a real call now (half-open); one that real calls opened keeps its
        backoff; a half-open or closed one is left as it is."""
        circuit = self._circuit(provider, now)
        circuit.checked, circuit.failing = True, False
        circuit.last_probe_at, circuit.last_probe_ok = now, True
        circuit.breaker.release_hold()
        if circuit.opened_by_probe:
            circuit.breaker.half_open(now)
        self._notice(provider, circuit, now)

    def record_failure(
        self,
        provider: str,
        now: float,
        reason: str,
        *,
        retry_after_s: float | None = None,
        probe: bool = False,
    ) -> None:
        circuit = self._circuit(provider, now)
        circuit.checked, circuit.failing = True, True
        circuit.last_error = reason
        circuit.last_failure_at = now
        if circuit.breaker.record_failure(now, retry_after_s):
            circuit.opened_at, circuit.opened_because = now, reason
            circuit.opened_by_probe = probe
        if probe:
            circuit.last_probe_at, circuit.last_probe_ok = now, False
            circuit.breaker.hold()  # an open circuit stays open while probes fail
        self._notice(provider, circuit, now)

    def statistics(self, provider: str, now: float) -> ProviderHealth:
        circuit = self._circuit(provider, now)
        closed = circuit.seen is CircuitState.CLOSED
        return ProviderHealth(
            state=circuit.seen,
            consecutive_failures=circuit.breaker.failures,
            last_error=circuit.last_error,
            last_failure_at=circuit.last_failure_at,
            last_success_at=circuit.last_success_at,
            reopens_at=circuit.breaker.reopens_at(now),
            last_probe_at=circuit.last_probe_at,
            last_probe_ok=circuit.last_probe_ok,
            opened_at=None if closed else circuit.opened_at,
            opened_because=None if closed else circuit.opened_because,
            checked=circuit.checked,
            failing=circuit.failing,
        )

    def status(self, provider: str, now: float, wall: float) -> ProviderStatus:
        """A configured provider's health as operators read it (/health, /v1/health), its
        times as unix seconds (`wall` is the wall clock's reading at `now`)."""
        stats = self.statistics(provider, now)

        def at(t: float | None) -> float | None:
            return None if t is None else round(wall - (now - t), 3)

        return ProviderStatus(
            provider,
            stats.state.value if stats.checked else "unknown",
            consecutive_failures=stats.consecutive_failures,
            last_error=stats.last_error,
            last_failure_at=at(stats.last_failure_at),
            last_success_at=at(stats.last_success_at),
            opened_at=at(stats.opened_at),
            opened_because=stats.opened_because,
            reopens_at=at(stats.reopens_at),
            last_probe_at=at(stats.last_probe_at),
            last_probe_ok=stats.last_probe_ok,
            failing=stats.failing,
        )

    def refusal(
        self,
        provider: str,
        now: float,
        wall: float,
        label: str | None = None,
        owner: str | None = None,
    ) -> errors.CircuitOpen:
        """Why a call to `provider` is refused now, with the failure that opened its circuit,
        when, and when to retry: `groq is unavailable: its circuit opened at 12:00:03 UTC after
        groq answered 503: overloaded; retry in 57s`. Half-open: another request holds the
        one trial call; held: its probes fail. `provider`: the health key (a deployment);
        `label`: how the message names it (the provider, and the deployment among several);
        `owner`: the provider it belongs to (the error's `provider`)."""
        stats = self.statistics(provider, now)
        retry = 1.0 if stats.reopens_at is None else max(1.0, math.ceil(stats.reopens_at - now))
        cause = ""
        if stats.opened_at is not None:
            opened = wall - (now - stats.opened_at)
            cause = f": its circuit opened at {time.strftime('%H:%M:%S', time.gmtime(opened))} UTC"
            if stats.opened_because:
                cause += f" after {stats.opened_because}"
        if stats.reopens_at is None:  # held open by failing probes, or half-open
            probes_fail = stats.last_probe_ok is False
            cause += " (its probes fail)" if probes_fail else " (a trial call is under way)"
        label = label or provider
        return errors.CircuitOpen(
            f"{label} is unavailable{cause}; retry in {retry:g}s",
            provider=owner or provider,
            retry_after_s=retry,
        )

    def combined(self, provider: str, deployments: list[DeploymentStatus]) -> ProviderStatus:
        """A provider's health from its deployments': the first healthy one's (any healthy
        deployment makes the provider healthy), else the first closed one's, else the first's;
        with every deployment beside it."""
        if not deployments:
            return ProviderStatus(provider, "unknown")
        statuses = [d.health for d in deployments]
        best = next((s for s in statuses if s.summary == "healthy"), None)
        best = best or next((s for s in statuses if s.state == "closed"), statuses[0])
        return attrs.evolve(best, name=provider, deployments=tuple(deployments))
