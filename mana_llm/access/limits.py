"""The limits of a caller, decided on counters every worker (and, with Redis, every host)
shares. One admission is one atomic step: the counters read, the rules applied (`decide`),
the request recorded, or refused with when to come back.

What is counted, per caller, as one record per admitted request (its ticket):
- requests in the last `WINDOW_S` (rpm: exact, a sliding window: at most rpm in any 60 s);
- tokens in the last `WINDOW_S` (tpm): a request counts its reservation until it is settled,
  then what it really used;
- requests open (max_parallel: exact): admitted, not settled, lease not expired (a worker that
  died cannot hold a slot longer than `lease_s`);
- the period's spend (budget tokens, usd; UTC day, ISO week from Monday, month): what settled
  requests used, plus what open requests reserved.
A request is admitted when every limit still holds with its reservation counted: the sum of
what is used and reserved never passes a limit at admission. The overshoot is what requests
use beyond their reservation (docs/ARCHITECTURE.md section 7, "Admission"); settling replaces
a reservation by the real usage, so it never lasts past the request.

`access/sql_limits.py` keeps the counters in SQLite (one file shared by the workers of a host;
`:memory:`: per-process counters, the fallback when Redis is unreachable, and the unit tests);
`access/redis_limits.py` runs the same rules as one Lua script in Redis.
"""

from __future__ import annotations

import calendar
import datetime
import functools
from typing import NamedTuple, Protocol

import trio

from mana_llm.access.keys import Limits

WINDOW_S = 60.0


class Ask(NamedTuple):  # a tuple: built in one call per admission
    """One request asking to be admitted."""

    caller: str
    limits: Limits
    ticket: str  # unique per request
    now: float  # wall-clock seconds (shared by processes and hosts)
    tokens: int  # reserved: the prompt estimate and max_tokens (or the estimate)
    usd: float  # reserved: those tokens at the dearest price the request may reach
    lease_s: float  # an open request holds its slot at most this long
    period: tuple[float, float]  # the budget's period holding `now` (`period_of`)


class Counts(NamedTuple):  # a tuple: built in one call per admission
    """The counters one admission reads."""

    requests: int = 0  # in the window
    tokens: int = 0  # in the window
    newest: float | None = None  # the newest request in the window
    open: int = 0
    reserved_tokens: int = 0  # by open requests
    reserved_usd: float = 0.0
    spent_tokens: int = 0  # settled, this period
    spent_usd: float = 0.0
    spent_requests: int = 0  # settled, this period


class Verdict(NamedTuple):  # a tuple: built in one call per admission
    refused: str | None  # None: admitted; else rpm | tpm | max_parallel | budget
    retry_after_s: float = 0.0
    counts: Counts = Counts()  # as they stand after this admission (when admitted)
    reset_requests_s: float = 0.0  # until the request window is empty
    reset_tokens_s: float = 0.0
    period_end: float = 0.0


def period_of(limits: Limits, now: float) -> tuple[float, float]:
    """The period a caller's spend is counted in at `now` (a month when it has no budget)."""
    budget = limits.budget
    return period_bounds(now, budget.period if budget is not None else "month")


def period_bounds(now: float, period: str) -> tuple[float, float]:
    """The UTC period holding `now`: its start and its end, in epoch seconds."""
    return _bounds(int(now // 86400), period)


@functools.lru_cache(maxsize=64)
def _bounds(days: int, period: str) -> tuple[float, float]:
    day = datetime.date(1970, 1, 1) + datetime.timedelta(days=days)
    if period == "day":
        start = day
        end = day + datetime.timedelta(days=1)
    elif period == "week":
        start = day - datetime.timedelta(days=day.weekday())
        end = start + datetime.timedelta(days=7)
    else:
        start = day.replace(day=1)
        end = (start + datetime.timedelta(days=32)).replace(day=1)
    return float(calendar.timegm(start.timetuple())), float(calendar.timegm(end.timetuple()))


def decide(ask: Ask, counts: Counts) -> str | None:
    """Which limit refuses `ask` given `counts` (rpm first, then tpm, max_parallel, budget)."""
    limits = ask.limits
    if limits.rpm is not None and counts.requests + 1 > limits.rpm:
        return "rpm"
    if limits.tpm is not None and counts.tokens + ask.tokens > limits.tpm:
        return "tpm"
    if limits.max_parallel is not None and counts.open + 1 > limits.max_parallel:
        return "max_parallel"
    budget = limits.budget
    if budget is not None:
        if budget.tokens is not None and (
            counts.spent_tokens + counts.reserved_tokens + ask.tokens > budget.tokens
        ):
            return "budget"
        if budget.usd is not None and (
            counts.spent_usd + counts.reserved_usd + ask.usd > budget.usd + 1e-12
        ):
            return "budget"
    return None


def too_large(ask: Ask, limit: str) -> bool:
    """The request alone passes `limit`: waiting will never admit it."""
    limits, budget = ask.limits, ask.limits.budget
    if limit == "tpm":
        return limits.tpm is not None and ask.tokens > limits.tpm
    if limit == "budget" and budget is not None:
        return (budget.tokens is not None and ask.tokens > budget.tokens) or (
            budget.usd is not None and ask.usd > budget.usd
        )
    return False


def admitted(counts: Counts, ask: Ask) -> Verdict:
    """`ask` admitted on `counts`: the counters with it added. The windows are empty again
    (OpenAI's `x-ratelimit-reset-*`) a minute after the newest request in them: this one."""
    counts = Counts(
        counts.requests + 1,
        counts.tokens + ask.tokens,
        ask.now,
        counts.open + 1,
        counts.reserved_tokens + ask.tokens,
        counts.reserved_usd + ask.usd,
        counts.spent_tokens,
        counts.spent_usd,
        counts.spent_requests,
    )
    return Verdict(None, 0.0, counts, WINDOW_S, WINDOW_S, ask.period[1])


def free_after(times: list[tuple[float, int]], need: int, now: float) -> float:
    """How long until `need` (requests or tokens) of the window's records, oldest first as
    (time, amount), have left the window."""
    freed = 0
    for t, amount in times:
        freed += amount
        if freed >= need:
            return max(0.0, t + WINDOW_S - now)
    return WINDOW_S


class LimitStore(Protocol):
    name: str

    async def admit(self, ask: Ask) -> Verdict: ...

    def admit_at_once(self, ask: Ask) -> Verdict | None:
        """The verdict when the store can give it without waiting (counters in memory); None:
        `admit` must be awaited."""
        ...

    async def settle(self, ask: Ask, tokens: int, usd: float) -> None: ...

    def settle_later(self, ask: Ask, tokens: int, usd: float) -> bool:
        """Settle without waiting when the store can (queued, or in memory): whether it did;
        else `settle` must be awaited."""
        ...

    async def spent(self, caller: str, period: str, now: float) -> Counts: ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """What the store does in the background for the service's life (started once)."""
        ...

    async def aclose(self) -> None: ...
