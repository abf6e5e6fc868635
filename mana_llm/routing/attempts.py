"""What one walk over a chain keeps while it runs: what every entry shares (Walk), each
failed try or skip (Failure, as AttemptRecords for callers), two entries racing (Race)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any, Generic, Protocol, TypeVar

import attrs
import trio

from mana_llm import errors
from mana_llm.domain import Target
from mana_llm.errors import AttemptRecord, GatewayError
from mana_llm.providers.protocol import Provider

T = TypeVar("T")
Attempt = Callable[[Provider, Target], Awaitable[T]]
CLEANUP_S = 1.0


class Tried(Protocol):
    """One try as an observer sees it end: its answer, or the failure the walk records."""

    def ended(self, outcome: object) -> None: ...


class AttemptObserver(Protocol):
    """Watches a walk's tries (the traces' attempt spans, `telemetry/`): `trying` is entered
    around each try on one deployment, in the try's own task (a hedge's too); `skipped` hears
    an entry passed over without contact (not configured, every circuit open)."""

    def trying(
        self, attempt: Attempt[Any], deployment: Any, target: Target, hedge: bool
    ) -> AbstractContextManager[Tried]: ...

    def skipped(self, target: Target, error: GatewayError) -> None: ...


@attrs.frozen
class Found(Generic[T]):
    """An entry's answer: the result, when its try began, the entry and the deployment."""

    result: T
    started_at: float
    target: Target
    deployment: str


@attrs.define(eq=False)
class Walk(Generic[T]):
    """What every entry of one walk shares."""

    attempt: Attempt[T]
    deadline_s: Callable[[Provider], float]
    waiting_for: str
    retries: int
    failures: list[Failure]
    chain: bool = True  # an alias's chain (not one direct `provider/model`)
    busy: str | None = None  # the deployment tried last: the request's deadline blames it


@attrs.define(eq=False)
class Race(Generic[T]):
    """Two entries racing (a hedge): the first answer, the failures, when the first is done."""

    winner: Found[T] | None = None
    errors: list[GatewayError] = attrs.field(factory=list)
    first_done: trio.Event = attrs.field(factory=trio.Event)

    async def run(
        self,
        entry: Awaitable[Found[T] | None],
        target: Target,
        nursery: trio.Nursery,
    ) -> None:
        try:
            found = await entry
        except GatewayError as error:  # this entry's final word; the other may still answer
            self.errors.append(error)
            found = None
        finally:
            self.first_done.set()
        if found is None:
            return
        if self.winner is None:
            self.winner = found
            nursery.cancel_scope.cancel()  # the other entry: cancelled, its upstream closed
        else:  # both answered at once: the late one's open stream is closed, not leaked
            close = getattr(found.result, "aclose", None)
            if close is not None:
                with trio.move_on_after(CLEANUP_S, shield=True):  # the late answer's upstream
                    await close()


@attrs.frozen
class Failure:
    """One chain entry's failed try, or its skip, and whether it was tried again."""

    target: Target
    error: GatewayError
    retry: str | None = (
        None  # "sent", "deployment" (another of its deployments), "budget_exhausted"
    )
    deployment: str | None = None  # the deployment that failed; None: skipped before any


def records(failures: list[Failure]) -> tuple[AttemptRecord, ...]:
    return tuple(
        AttemptRecord(
            f.target.resolved,
            f.error.reason,
            f.error.kind,
            f.retry,
            f.error.after_content,
            f.deployment,
        )
        for f in failures
    )


# The Retry-After an all-failed 503 advertises when some circuit reopens within this long.
RETRY_AFTER_HORIZON_S = 120.0


def last_word(failures: list[Failure], direct: bool) -> GatewayError:
    """A walk's last word when nothing answered, built whole: a direct request's own failure,
    the one reason every entry gave when the caller can fix it, else 503
    all_providers_failed; each with every attempt and whether the gateway already retried."""
    tried = records(failures)
    retried = any(f.retry in ("sent", "deployment") for f in failures)
    errs = [f.error for f in failures]
    if direct and errs:
        return errs[-1].evolve(attempts=tried, retried=retried)
    kinds = {(type(e), e.code) for e in errs}
    if len(kinds) == 1 and errors.is_caller_fixable(errs[0]):
        return errs[0].evolve(attempts=tried, retried=retried)
    retry_after = min((e.retry_after_s for e in errs if e.retry_after_s), default=None)
    if retry_after is not None and retry_after > RETRY_AFTER_HORIZON_S:
        retry_after = None
    return errors.AllProvidersFailed(
        f"all {len(failures)} entries of the chain failed",
        attempts=tried,
        retry_after_s=retry_after,
        retried=retried,
    )
