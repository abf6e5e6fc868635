"""The walk over a chain of targets.

A plain loop: skip entries whose provider is not configured or whose circuit is open, run each
remaining attempt inside its own cancel scope with its deadline, fall through on retryable
failures, return on the first answer. The whole walk runs under one overall deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TypeVar

import attrs
import trio

from mana_llm import errors
from mana_llm.domain import Answered, Target
from mana_llm.errors import GatewayError
from mana_llm.health.providers import CircuitState, ProviderHealthCache
from mana_llm.providers.protocol import Provider
from mana_llm.routing.attempts import (
    Attempt,
    AttemptObserver,
    Failure,
    Found,
    Race,
    Walk,
    last_word,
    records,
)
from mana_llm.routing.balance import Balancer, Deployment, Deployments
from mana_llm.routing.commit import CommittedStream
from mana_llm.routing.missing import MissingModels
from mana_llm.routing.retry import Budget, Budgets, RetryPolicy

T = TypeVar("T")


@attrs.define(eq=False)
class Walker:
    providers: Mapping[str, Provider]
    health: ProviderHealthCache
    request_timeout_s: float
    clock: Callable[[], float] = trio.current_time
    wall_clock: Callable[[], float] = time.time
    retry_policy: RetryPolicy = attrs.field(factory=RetryPolicy)
    retry_budgets: Budgets = attrs.field(factory=lambda: Budgets(0.2))
    hedge_budgets: Budgets = attrs.field(factory=lambda: Budgets(0.1))
    missing: MissingModels = attrs.field(factory=MissingModels)
    balancer: Balancer = attrs.field()
    observer: AttemptObserver | None = None  # the traces' attempt spans (None: off)

    @balancer.default
    def _one_deployment_each(self) -> Balancer:
        return one_deployment_each(self.providers, self.health)

    def report(self, provider: str, error: GatewayError | None) -> None:
        """Feed one outcome to the health cache of a deployment (`provider`: its name):
        success, or a failure that says something about it. One that answered with a
        model-scoped or caller error is alive."""
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
        hedge_after_s: float | None = None,
    ) -> Answered[T]:
        """`direct`: a `provider/model` request, whose one failure is reported as itself;
        an alias chain where nothing answered is a 503 listing every attempt. `retries`: how
        often an entry is tried again after a transient failure before moving on.
        `hedge_after_s`: an entry silent that long gets the next one started beside it."""
        failures: list[Failure] = []
        walk = Walk(attempt, deadline_s, waiting_for, retries, failures, not direct)
        current: Target | None = None
        index = 0
        with trio.move_on_after(self.request_timeout_s) as overall:
            while index < len(targets):
                target = current = targets[index]
                index += 1
                provider = self.providers.get(target.provider)
                if provider is None:  # targets are validated against the providers on input
                    unknown = f"unknown provider {target.provider!r}"
                    failures.append(Failure(target, errors.InvalidRequest(unknown, param="model")))
                    continue
                skipped: GatewayError | None = None
                if walk.chain:  # a model its provider recently said it does not have
                    skipped = self.missing.refusal(target, self.clock())
                skipped = skipped or self._skip_reason(provider, target)
                if skipped is not None:
                    failures.append(Failure(target, skipped))
                    if self.observer is not None:
                        self.observer.skipped(target, skipped)
                    continue
                partner = self._partner(targets, index) if hedge_after_s else None
                if partner is None or hedge_after_s is None:
                    found = await self._entry(provider, target, walk)
                    hedge = None
                else:
                    found, hedge = await self._race(provider, target, partner, hedge_after_s, walk)
                    if hedge in ("won", "lost", "started"):
                        index = targets.index(partner, index) + 1  # both ran
                if found is not None:
                    hedged = None if hedge == "started" else hedge
                    tried = records(failures)
                    return Answered(
                        found.result,
                        found.target,
                        tried,
                        found.started_at,
                        hedge=hedged,
                        deployment=found.deployment,
                    )
        if overall.cancelled_caught and current is not None:
            error = errors.UpstreamTimeout(
                f"the request deadline of {self.request_timeout_s:g}s passed",
                provider=current.provider,
            )
            failures.append(Failure(current, error, deployment=walk.busy))
            if walk.busy is not None:
                self.report(walk.busy, error)
        raise last_word(failures, direct)

    def _partner(self, targets: Sequence[Target], start: int) -> Target | None:
        """The next entry a hedge could start: configured, its circuit not open."""
        now = self.clock()
        return next((t for t in targets[start:] if self._eligible(t, now)), None)

    def _eligible(self, target: Target, now: float) -> bool:
        """Configured, its circuit not open (a half-open trial is not taken here), and not a
        model its provider recently said it does not have."""
        provider = self.providers.get(target.provider)
        return (
            provider is not None
            and provider.configured
            and bool(self.balancer.candidates(target.provider, target.model, now))
            and self.missing.until(target, now) is None
        )

    async def _race(
        self,
        provider: Provider,
        target: Target,
        partner: Target,
        hedge_after_s: float,
        walk: Walk[T],
    ) -> tuple[Found[T] | None, str | None]:
        """The entry, and after `hedge_after_s` without an answer its partner beside it: the
        first to answer (for a stream: its first content) wins and the other is cancelled,
        its upstream connection closed. A failure of one waits for the other. The outcome:
        won (the partner answered), lost (the entry did), started (both failed),
        budget_exhausted, or None (the entry was done before the hedge time)."""
        race = Race[T]()
        hedge: str | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(race.run, self._entry(provider, target, walk), target, nursery)
            with trio.move_on_after(hedge_after_s):
                await race.first_done.wait()
            if not race.first_done.is_set():
                hedge = self._start_hedge(partner, walk, race, nursery)
        if race.errors and race.winner is None:
            raise race.errors[0]
        if race.winner is None:
            return None, hedge
        if hedge == "started":
            hedge = "won" if race.winner.target is partner else "lost"
        return race.winner, hedge

    def _start_hedge(
        self, partner: Target, walk: Walk[T], race: Race[T], nursery: trio.Nursery
    ) -> str | None:
        provider = self.providers[partner.provider]
        if not self.hedge_budgets[partner.provider].try_spend(self.clock()):
            return "budget_exhausted"
        if self._skip_reason(provider, partner) is not None:  # its circuit opened meanwhile
            return None
        entry = self._entry(provider, partner, walk, hedge=True)
        nursery.start_soon(race.run, entry, partner, nursery)
        return "started"

    async def _entry(
        self, provider: Provider, target: Target, walk: Walk[T], *, hedge: bool = False
    ) -> Found[T] | None:
        """One chain entry: its attempt, on another of the provider's deployments after a
        failure one of them may not share, and its same-target retries, all under the entry's
        deadline. Returns the answer; appends each failure; raises the last one when the
        chain may not go on after it."""
        seconds = walk.deadline_s(provider)
        budget = self.retry_budgets[target.provider]
        if not hedge:  # a hedge is an extra call: it earns no budget
            budget.first_attempt(self.clock())
            self.hedge_budgets[target.provider].first_attempt(self.clock())
        error: GatewayError | None = None
        tried: frozenset[str] = frozenset()
        last: str | None = None  # the deployment tried last: this entry's deadline blames it
        index = 0
        with trio.move_on_after(seconds) as scope:
            while True:
                deployment = self.balancer.choose(
                    target.provider, target.model, self.clock(), tried
                )
                if deployment is None:  # every deployment failed or refuses: the entry is over
                    if error is None:  # refused before any try (a trial is another request's)
                        error = self._refusal(provider, target)
                        walk.failures.append(Failure(target, error))
                        if self.observer is not None:
                            self.observer.skipped(target, error)
                    break
                started_at, last = self.clock(), deployment.name
                outcome = await self._once(deployment, target, walk, hedge)
                if not isinstance(outcome, GatewayError):
                    return Found(outcome, started_at, target, deployment.name)
                error = outcome
                tried |= {deployment.name}
                retry, wait_s = self._next_deployment(target, error, tried, budget)
                if retry is None:
                    retry, wait_s = self._retry(deployment.name, error, index, walk.retries, budget)
                    tried = frozenset()  # the same entry again: any of its deployments
                    index += 1
                walk.failures.append(Failure(target, error, retry, deployment.name))
                if retry not in ("sent", "deployment"):
                    break
                await trio.sleep(wait_s)
        if scope.cancelled_caught:
            error = errors.UpstreamTimeout(
                f"{target.resolved} sent no {walk.waiting_for} within {seconds:g}s",
                provider=target.provider,
            )
            walk.failures.append(Failure(target, error, deployment=last))
            if last is not None:
                self.report(last, error)
        assert error is not None
        if isinstance(error, errors.UpstreamModelNotFound) and error.contacted:
            self.missing.note(target, self.clock())
        if not error.retryable:
            retried = any(f.retry in ("sent", "deployment") for f in walk.failures)
            raise error.evolve(attempts=records(walk.failures), retried=retried) from error
        return None

    async def _once(
        self, deployment: Deployment, target: Target, walk: Walk[T], hedge: bool
    ) -> T | GatewayError:
        """One try on one deployment, inside the observer's span when traces are on."""
        if self.observer is None:
            return await self._try(deployment, target, walk)
        with self.observer.trying(walk.attempt, deployment, target, hedge) as tried:
            outcome = await self._try(deployment, target, walk)
            tried.ended(outcome)
            return outcome

    async def _try(self, deployment: Deployment, target: Target, walk: Walk[T]) -> T | GatewayError:
        """One try on one deployment, counted in flight, its outcome reported to its health."""
        answered = False
        error: GatewayError | None = None
        walk.busy = deployment.name
        try:
            with self.balancer.running(deployment):
                started_at = self.clock()
                result = await walk.attempt(deployment.provider, target)
                if isinstance(result, CommittedStream) and result.live:
                    # a stream keeps its deployment busy until it is closed
                    self.balancer.start(deployment)
                    result.hold(partial(self.balancer.finish, deployment))
            answered = True
            self.report(deployment.name, None)
            self.balancer.answered(deployment, target.model, self.clock() - started_at)
            return result
        except errors.ProviderError as exc:
            error = exc
            self.report(deployment.name, exc)
            return exc
        finally:
            if not answered and error is None:
                # no outcome: the caller left, the deadline passed, or the request was refused
                # before any contact (a bad image URL); a half-open trial goes to the next call
                self.health.release_trial(deployment.name)

    def _next_deployment(
        self, target: Target, error: GatewayError, tried: frozenset[str], budget: Budget
    ) -> tuple[str | None, float]:
        """Try another of the provider's deployments at once? ("deployment", 0) when the
        failure was that deployment's (its reachability, load, key) or, on a local server, a
        model another host may hold, another deployment can serve and the budget has room;
        ("budget_exhausted", 0) when only the budget said no; (None, 0) otherwise: the
        same-target retry rules decide."""
        if not error.retryable or error.after_content:
            return None, 0.0
        local = self.balancer.groups[target.provider].local
        if not error.counts_against_provider and not (
            local and isinstance(error, errors.UpstreamModelNotFound)
        ):
            return None, 0.0
        now = self.clock()
        if not self.balancer.candidates(target.provider, target.model, now, tried):
            return None, 0.0
        if not budget.try_spend(now):
            return "budget_exhausted", 0.0
        return "deployment", 0.0

    def _retry(
        self, deployment: str, error: GatewayError, index: int, retries: int, budget: Budget
    ) -> tuple[str | None, float]:
        """Try the same entry again? ("sent", the wait) when the failure is transient, the
        provider's circuit did not open on it (a failed trial is one failed call, not two),
        the wait fits the upstream's Retry-After cap and the deadlines, and the provider's
        budget has room; ("budget_exhausted", 0) when only the budget said no; (None, 0)
        otherwise."""
        if index >= retries or not error.retry_same_target or error.after_content:
            return None, 0.0
        now = self.clock()
        wait_s = self.retry_policy.wait_s(index, error.retry_after_s)
        if self.health.state(deployment, now) is CircuitState.OPEN:
            reopens_at = self.health.reopens_at(deployment)  # a Retry-After may end first
            if reopens_at is None or wait_s is None or reopens_at > now + wait_s:
                return None, 0.0
        if wait_s is None or now + wait_s >= trio.current_effective_deadline():
            return None, 0.0  # the upstream asked for longer than RETRY_MAX_WAIT, or no time
        if not budget.try_spend(now):
            return "budget_exhausted", 0.0
        return "sent", wait_s

    def first_candidate(self, targets: Sequence[Target]) -> Target:
        """The entry a walk starting now would try first (its provider configured, its circuit
        not open, its model not recently missing), without taking a half-open circuit's trial;
        the first of all when none is."""
        now = self.clock()
        return next((t for t in targets if self._eligible(t, now)), targets[0])

    def _skip_reason(self, provider: Provider, target: Target) -> GatewayError | None:
        """Why an entry is skipped without contact: its provider has no key here, or every
        deployment that may serve the model has its circuit open."""
        if not provider.configured:
            return errors.ProviderNotConfigured(
                f"provider {provider.name!r} is not configured: set {provider.key_env}",
                provider=provider.name,
            )
        if self.balancer.candidates(target.provider, target.model, self.clock()):
            return None
        return self._refusal(provider, target)

    def _refusal(self, provider: Provider, target: Target) -> GatewayError:
        """Why no deployment of the entry takes a call now: the first one's circuit refusal."""
        serving = [d for d in self.balancer.deployments(target.provider) if d.serves(target.model)]
        name = serving[0].name if serving else provider.name
        label = self.balancer.describe(name)
        return self.health.refusal(name, self.clock(), self.wall_clock(), label, provider.name)


def one_deployment_each(providers: Mapping[str, Provider], health: ProviderHealthCache) -> Balancer:
    """Without deployments configured: each provider is its own one deployment (its health
    keyed by the provider's name)."""
    groups = {name: Deployments(name, [Deployment(name, p)]) for name, p in providers.items()}
    return Balancer(groups, health)
