"""The walk over a chain of targets.

A plain loop: skip entries whose provider is not configured or whose circuit is open, run each
remaining attempt inside its own cancel scope with its deadline, fall through on retryable
failures, return on the first answer. The whole walk runs under one overall deadline.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

import attrs
import trio

from mana_llm import errors
from mana_llm.domain import Answered, Target
from mana_llm.errors import AttemptRecord, GatewayError
from mana_llm.providers.protocol import Provider
from mana_llm.routing.health import CircuitState, ProviderHealthCache
from mana_llm.routing.retry import Budget, Budgets, RetryPolicy

T = TypeVar("T")

# The Retry-After an all-failed 503 advertises when some circuit reopens within this long.
RETRY_AFTER_HORIZON_S = 120.0


Attempt = Callable[[Provider, Target], Awaitable[T]]


@attrs.define(eq=False)
class Walker:
    providers: Mapping[str, Provider]
    health: ProviderHealthCache
    request_timeout_s: float
    clock: Callable[[], float] = trio.current_time
    wall_clock: Callable[[], float] = time.time
    retry_policy: RetryPolicy = attrs.field(factory=RetryPolicy)
    retry_budgets: Budgets = attrs.field(factory=lambda: Budgets(0.2))

    def report(self, provider: str, error: GatewayError | None) -> None:
        """Feed one outcome to the health cache: success, or a failure that says something about
        the provider. A provider that answered with a model-scoped or caller error is alive."""
        now = self.clock()
        if error is not None and not error.contacted:  # refused before contact: no evidence
            self.health.release_trial(provider)
            return
        if error is None or not error.counts_against_provider:
            if error is None or isinstance(error, errors.ProviderError):
                self.health.record_success(provider, now)
            return
        self.health.record_failure(provider, now, error.message, retry_after_s=error.retry_after_s)

    async def walk(
        self,
        targets: Sequence[Target],
        attempt: Attempt[T],
        deadline_s: Callable[[Provider], float],
        waiting_for: str,
        *,
        direct: bool = False,
        retries: int = 0,
    ) -> Answered[T]:
        """`direct`: a `provider/model` request, whose one failure is reported as itself;
        an alias chain where nothing answered is a 503 listing every attempt. `retries`: how
        often an entry is tried again after a transient failure before moving on."""
        failures: list[Failure] = []
        current: Target | None = None
        with trio.move_on_after(self.request_timeout_s) as overall:
            for target in targets:
                current = target
                provider = self.providers.get(target.provider)
                if provider is None:  # targets are validated against the providers on input
                    unknown = f"unknown provider {target.provider!r}"
                    failures.append(Failure(target, errors.InvalidRequest(unknown, param="model")))
                    continue
                skipped = self._skip_reason(provider)
                if skipped is not None:
                    failures.append(Failure(target, skipped))
                    continue
                seconds = deadline_s(provider)
                found = await self._entry(
                    provider, target, attempt, seconds, waiting_for, retries, failures
                )
                if found is not None:
                    result, started_at = found
                    return Answered(result, target, _records(failures), started_at)
        if overall.cancelled_caught and current is not None:
            error = errors.UpstreamTimeout(
                f"the request deadline of {self.request_timeout_s:g}s passed",
                provider=current.provider,
            )
            failures.append(Failure(current, error))
            self.report(current.provider, error)
        raise self._exhausted(failures, direct)

    async def _entry(
        self,
        provider: Provider,
        target: Target,
        attempt: Attempt[T],
        seconds: float,
        waiting_for: str,
        retries: int,
        failures: list[Failure],
    ) -> tuple[T, float] | None:
        """One chain entry: its attempt and its same-target retries, all under the entry's
        deadline. Returns the answer and when its try began; appends each failure; raises the
        last one when the chain may not go on after it."""
        budget = self.retry_budgets[target.provider]
        budget.first_attempt(self.clock())
        error: GatewayError | None = None
        with trio.move_on_after(seconds) as scope:
            for index in range(retries + 1):
                started_at = self.clock()
                outcome = await self._once(provider, target, attempt)
                if not isinstance(outcome, GatewayError):
                    return outcome, started_at
                error = outcome
                retry, wait_s = self._retry(error, index, retries, budget)
                failures.append(Failure(target, error, retry))
                if retry != "sent":
                    break
                await trio.sleep(wait_s)
        if scope.cancelled_caught:
            error = errors.UpstreamTimeout(
                f"{target.resolved} sent no {waiting_for} within {seconds:g}s",
                provider=target.provider,
            )
            failures.append(Failure(target, error))
            self.report(target.provider, error)
        assert error is not None
        if not error.retryable:
            error.attempts = _records(failures)
            error.retried = any(f.retry == "sent" for f in failures)
            raise error
        return None

    async def _once(
        self, provider: Provider, target: Target, attempt: Attempt[T]
    ) -> T | GatewayError:
        """One try, its outcome reported to the provider's health."""
        answered = False
        error: GatewayError | None = None
        try:
            result = await attempt(provider, target)
            answered = True
            self.report(target.provider, None)
            return result
        except errors.ProviderError as exc:
            error = exc
            self.report(target.provider, exc)
            return exc
        finally:
            if not answered and error is None:
                # no outcome: the caller left, the deadline passed, or the request was refused
                # before any contact (a bad image URL); a half-open trial goes to the next call
                self.health.release_trial(target.provider)

    def _retry(
        self, error: GatewayError, index: int, retries: int, budget: Budget
    ) -> tuple[str | None, float]:
        """Try the same entry again? ("sent", the wait) when the failure is transient, the wait
        fits the upstream's Retry-After cap and the deadlines, and the provider's budget has
        room; ("budget_exhausted", 0) when only the budget said no; (None, 0) otherwise."""
        if index >= retries or not error.retry_same_target or error.after_content:
            return None, 0.0
        wait_s = self.retry_policy.wait_s(index, error.retry_after_s)
        now = self.clock()
        if wait_s is None or now + wait_s >= trio.current_effective_deadline():
            return None, 0.0  # the upstream asked for longer than RETRY_MAX_WAIT, or no time
        if not budget.try_spend(now):
            return "budget_exhausted", 0.0
        return "sent", wait_s

    def first_candidate(self, targets: Sequence[Target]) -> Target:
        """The entry a walk starting now would try first (its provider configured, its circuit
        not open), without taking a half-open circuit's trial; the first of all when none is."""
        now = self.clock()
        for target in targets:
            provider = self.providers.get(target.provider)
            if (
                provider is not None
                and provider.configured
                and self.health.state(target.provider, now) is not CircuitState.OPEN
            ):
                return target
        return targets[0]

    def _skip_reason(self, provider: Provider) -> GatewayError | None:
        if not provider.configured:
            return errors.ProviderNotConfigured(
                f"provider {provider.name!r} is not configured: set {provider.key_env}",
                provider=provider.name,
            )
        now = self.clock()
        if not self.health.try_acquire(provider.name, now):
            return self._circuit_open(provider.name, now)
        return None

    def _circuit_open(self, name: str, now: float) -> errors.CircuitOpen:
        """The refusal, with the failure that opened the circuit, when, and when to retry:
        `groq is unavailable: its circuit opened at 12:00:03 UTC after groq answered 503:
        overloaded; retry in 57s`. Half-open: another request holds the one trial call."""
        stats = self.health.statistics(name, now)
        retry = 1.0 if stats.reopens_at is None else max(1.0, math.ceil(stats.reopens_at - now))
        cause = ""
        if stats.opened_at is not None:
            wall = self.wall_clock() - (now - stats.opened_at)
            cause = f": its circuit opened at {time.strftime('%H:%M:%S', time.gmtime(wall))} UTC"
            if stats.opened_because:
                cause += f" after {stats.opened_because}"
        if stats.reopens_at is None:
            cause += " (a trial call is under way)"
        return errors.CircuitOpen(
            f"{name} is unavailable{cause}; retry in {retry:g}s",
            provider=name,
            retry_after_s=retry,
        )

    def _exhausted(self, failures: list[Failure], direct: bool) -> GatewayError:
        error = self._last_word(failures, direct)
        error.retried = any(f.retry == "sent" for f in failures)
        return error

    def _last_word(self, failures: list[Failure], direct: bool) -> GatewayError:
        records = _records(failures)
        errs = [f.error for f in failures]
        if direct and errs:
            errs[-1].attempts = records
            return errs[-1]
        kinds = {(type(e), e.code) for e in errs}
        if len(kinds) == 1 and errors.is_caller_fixable(errs[0]):
            errs[0].attempts = records
            return errs[0]
        retry_after = min((e.retry_after_s for e in errs if e.retry_after_s), default=None)
        if retry_after is not None and retry_after > RETRY_AFTER_HORIZON_S:
            retry_after = None
        return errors.AllProvidersFailed(
            f"all {len(failures)} entries of the chain failed",
            attempts=records,
            retry_after_s=retry_after,
        )


@attrs.frozen
class Failure:
    """One chain entry's failed try, or its skip, and whether it was tried again."""

    target: Target
    error: GatewayError
    retry: str | None = None  # "sent" or "budget_exhausted"


def _records(failures: list[Failure]) -> tuple[AttemptRecord, ...]:
    return tuple(
        AttemptRecord(
            f.target.resolved, f.error.reason, f.error.kind, f.retry, f.error.after_content
        )
        for f in failures
    )
