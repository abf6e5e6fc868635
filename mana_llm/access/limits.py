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
use beyond their reservation (ARCHITECTURE.md, "Admission"); settling replaces a reservation by
the real usage, so it never lasts past the request.

`SqlLimits` keeps the counters in SQLite (one file shared by the workers of a host, WAL mode,
each admission one `BEGIN IMMEDIATE` transaction, run on a worker thread); `":memory:"` gives
per-process counters (the fallback when Redis is unreachable, and the unit tests).
`access/redis_limits.py` runs the same rules as one Lua script in Redis.
"""

from __future__ import annotations

import calendar
import datetime
import sqlite3
from typing import Protocol

import attrs
import trio

from mana_llm.access.keys import Limits

WINDOW_S = 60.0


@attrs.frozen
class Ask:
    """One request asking to be admitted."""

    caller: str
    limits: Limits
    ticket: str  # unique per request
    now: float  # wall-clock seconds (shared by processes and hosts)
    tokens: int  # reserved: the prompt estimate and max_tokens (or the estimate)
    usd: float  # reserved: those tokens at the dearest price the request may reach
    lease_s: float  # an open request holds its slot at most this long

    @property
    def period(self) -> tuple[float, float]:
        budget = self.limits.budget
        return period_bounds(self.now, budget.period if budget is not None else "month")


@attrs.frozen
class Counts:
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


@attrs.frozen
class Verdict:
    refused: str | None  # None: admitted; else rpm | tpm | max_parallel | budget
    retry_after_s: float = 0.0
    too_large: bool = False  # the request alone passes the limit: it can never be admitted
    counts: Counts = Counts()  # as they stand after this admission (when admitted)
    reset_requests_s: float = 0.0  # until the request window is empty
    reset_tokens_s: float = 0.0
    period_end: float = 0.0


def period_bounds(now: float, period: str) -> tuple[float, float]:
    """The UTC period holding `now`: its start and its end, in epoch seconds."""
    day = datetime.datetime.fromtimestamp(now, datetime.UTC).date()
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


def after(counts: Counts, ask: Ask) -> Counts:
    """The counters with `ask` admitted."""
    return attrs.evolve(
        counts,
        requests=counts.requests + 1,
        tokens=counts.tokens + ask.tokens,
        newest=ask.now,
        open=counts.open + 1,
        reserved_tokens=counts.reserved_tokens + ask.tokens,
        reserved_usd=counts.reserved_usd + ask.usd,
    )


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

    async def settle(self, ask: Ask, tokens: int, usd: float) -> None: ...

    async def spent(self, caller: str, period: str, now: float) -> Counts: ...

    async def aclose(self) -> None: ...


SCHEMA = """
CREATE TABLE IF NOT EXISTS hits (
    ticket TEXT PRIMARY KEY, caller TEXT NOT NULL, t REAL NOT NULL, tokens INTEGER NOT NULL,
    usd REAL NOT NULL, open INTEGER NOT NULL, expires REAL NOT NULL);
CREATE INDEX IF NOT EXISTS hits_by_caller ON hits (caller, t);
CREATE TABLE IF NOT EXISTS spent (
    caller TEXT NOT NULL, period REAL NOT NULL, tokens INTEGER NOT NULL, usd REAL NOT NULL,
    requests INTEGER NOT NULL, PRIMARY KEY (caller, period));
"""
COUNTS = """
SELECT count(*) FILTER (WHERE t > :w), coalesce(sum(tokens) FILTER (WHERE t > :w), 0),
       max(t) FILTER (WHERE t > :w),
       count(*) FILTER (WHERE open AND expires > :now),
       coalesce(sum(tokens) FILTER (WHERE open AND expires > :now), 0),
       coalesce(sum(usd) FILTER (WHERE open AND expires > :now), 0.0)
FROM hits WHERE caller = :caller
"""


@attrs.define(eq=False)
class SqlLimits:
    """The counters in SQLite: a file every worker of the host opens, or `:memory:`."""

    path: str
    name: str = "sqlite"
    _db: sqlite3.Connection = attrs.field(init=False)
    _lock: trio.CapacityLimiter = attrs.field(init=False, factory=lambda: trio.CapacityLimiter(1))

    def __attrs_post_init__(self) -> None:
        self._db = sqlite3.connect(
            self.path, timeout=5.0, isolation_level=None, check_same_thread=False
        )
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        if self.path == ":memory:":
            self.name = "local"

    async def _run(self, fn: object, *args: object) -> object:
        if self.path == ":memory:":  # no file, no lock to wait for: on the loop
            return fn(*args)  # type: ignore[operator]
        return await trio.to_thread.run_sync(fn, *args, limiter=self._lock)  # type: ignore[arg-type]

    async def admit(self, ask: Ask) -> Verdict:
        verdict = await self._run(self.admit_now, ask)
        assert isinstance(verdict, Verdict)
        return verdict

    async def settle(self, ask: Ask, tokens: int, usd: float) -> None:
        await self._run(self.settle_now, ask, tokens, usd)

    async def spent(self, caller: str, period: str, now: float) -> Counts:
        counts = await self._run(self.spent_now, caller, period, now)
        assert isinstance(counts, Counts)
        return counts

    def admit_now(self, ask: Ask) -> Verdict:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            start, end = ask.period
            w = ask.now - WINDOW_S
            db.execute(
                "DELETE FROM hits WHERE caller = ? AND t <= ? AND (NOT open OR expires <= ?)",
                (ask.caller, w, ask.now),
            )
            counts = self._counts(ask.caller, w, ask.now, start)
            refused = decide(ask, counts)
            if refused is not None:
                verdict = self._refusal(ask, counts, refused, w, end)
            else:
                db.execute(
                    "INSERT INTO hits VALUES (?, ?, ?, ?, ?, 1, ?)",
                    (ask.ticket, ask.caller, ask.now, ask.tokens, ask.usd, ask.now + ask.lease_s),
                )
                counts = after(counts, ask)
                verdict = Verdict(None, counts=counts, period_end=end)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return with_resets(verdict, ask)

    def _counts(self, caller: str, w: float, now: float, start: float) -> Counts:
        row = self._db.execute(COUNTS, {"w": w, "now": now, "caller": caller}).fetchone()
        spent = self._db.execute(
            "SELECT tokens, usd, requests FROM spent WHERE caller = ? AND period = ?",
            (caller, start),
        ).fetchone() or (0, 0.0, 0)
        return Counts(*row, *spent)

    def _refusal(self, ask: Ask, counts: Counts, refused: str, w: float, end: float) -> Verdict:
        if too_large(ask, refused):
            return Verdict(refused, too_large=True, counts=counts, period_end=end)
        if refused in ("rpm", "tpm"):
            rows = self._db.execute(
                "SELECT t, tokens FROM hits WHERE caller = ? AND t > ? ORDER BY t",
                (ask.caller, w),
            ).fetchall()
            if refused == "rpm":
                need = counts.requests + 1 - (ask.limits.rpm or 0)
                wait = free_after([(t, 1) for t, _ in rows], need, ask.now)
            else:
                need = counts.tokens + ask.tokens - (ask.limits.tpm or 0)
                wait = free_after([(t, n) for t, n in rows], need, ask.now)
        elif refused == "max_parallel":
            wait = 1.0  # when a request ends is not known: come back soon
        else:
            wait = end - ask.now
        return Verdict(refused, retry_after_s=wait, counts=counts, period_end=end)

    def settle_now(self, ask: Ask, tokens: int, usd: float) -> None:
        start, _ = ask.period
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "UPDATE hits SET tokens = ?, usd = ?, open = 0 WHERE ticket = ?",
                (tokens, usd, ask.ticket),
            )
            db.execute(
                "INSERT INTO spent VALUES (?, ?, ?, ?, 1) ON CONFLICT (caller, period) DO UPDATE"
                " SET tokens = tokens + excluded.tokens, usd = usd + excluded.usd,"
                " requests = requests + 1",
                (ask.caller, start, tokens, usd),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def spent_now(self, caller: str, period: str, now: float) -> Counts:
        start, _ = period_bounds(now, period)
        return self._counts(caller, now - WINDOW_S, now, start)

    async def aclose(self) -> None:
        self._db.close()


def with_resets(verdict: Verdict, ask: Ask) -> Verdict:
    """When the windows are empty again (OpenAI's `x-ratelimit-reset-*`): a minute after the
    newest request in them."""
    newest = verdict.counts.newest
    reset = 0.0 if newest is None else max(0.0, newest + WINDOW_S - ask.now)
    return attrs.evolve(verdict, reset_requests_s=reset, reset_tokens_s=reset)
