"""The limits' counters in SQLite, for the workers of one host (a file, WAL) or one process
(`:memory:`: the fallback when Redis is unreachable, and the unit tests).

Each worker keeps its own part of every caller's counters in memory (`Part`: its requests in
the window, with their times and tokens, and its open requests with their reservations and
leases) and one row per caller in the shared file (`parts`): its totals, its oldest and newest
request, when it wrote. An admission is one `BEGIN IMMEDIATE` transaction: this worker's row
written anew from its part, the other workers' rows summed, the rules applied, the request
added. Its cost does not grow with the traffic: a few statements on a row per worker. A
worker's row is rewritten when one of its requests leaves the window or its lease expires
(`run` sleeps until then), so what other workers read is late by a few milliseconds at most,
and only ever stricter. A worker that died leaves a row no longer written: it is ignored
`lease_s` after its last write (its open requests' slots are held that long, as a lease).

A settlement is queued and written with the next transaction of this worker (within
`SETTLE_S` by `run`, which also writes what is queued when the service stops).

The transaction runs on the trio loop when the file's lock is free at once (no thread hop:
tens of microseconds), else on a worker thread that waits for the lock.

A process alone on its host (`shared=False`: WORKERS=1, or `:memory:`) needs no transaction
per request: its part is the whole count. Only the periods' spend goes to the file, at most
every `SPENT_S` and when the service stops (read back at the next start: a budget outlives a
restart; a SIGKILL loses at most the last second of it, as it does of the ledger)."""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

import attrs
import trio

from mana_llm.access.counters import Part
from mana_llm.access.limits import (
    Ask,
    Counts,
    Verdict,
    admitted,
    decide,
    free_after,
    period_bounds,
)

SETTLE_S = 0.05
SPENT_S = 1.0  # alone: the period's spend reaches the file at least this often
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS parts (
    caller TEXT NOT NULL, worker TEXT NOT NULL, requests INTEGER NOT NULL,
    tokens INTEGER NOT NULL, first REAL, newest REAL, open INTEGER NOT NULL,
    rtokens INTEGER NOT NULL, rusd REAL NOT NULL, lease REAL NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (caller, worker));
CREATE TABLE IF NOT EXISTS spent (
    caller TEXT NOT NULL, period REAL NOT NULL, tokens INTEGER NOT NULL, usd REAL NOT NULL,
    requests INTEGER NOT NULL, PRIMARY KEY (caller, period));
"""
OTHERS = """
SELECT coalesce(sum(requests), 0), coalesce(sum(tokens), 0), min(first), max(newest),
       coalesce(sum(open), 0), coalesce(sum(rtokens), 0), coalesce(sum(rusd), 0.0)
FROM parts WHERE caller = ? AND worker != ? AND updated > ? - lease
"""


@attrs.define(eq=False)
class SqlLimits:
    path: str
    shared: bool = True  # False: this process alone serves the host (WORKERS=1, or :memory:)
    name: str = "sqlite"
    clock: Callable[[], float] = time.time
    worker: str = attrs.field(factory=lambda: f"{os.getpid()}-{secrets.token_hex(4)}")
    _db: sqlite3.Connection = attrs.field(init=False)  # on the loop: never waits for the lock
    _waiting_db: sqlite3.Connection = attrs.field(init=False)  # on a thread: waits for it
    _lock: trio.CapacityLimiter = attrs.field(init=False, factory=lambda: trio.CapacityLimiter(1))
    _parts: dict[str, Part] = attrs.field(init=False, factory=dict)
    _pending: list[tuple[Ask, int, float]] = attrs.field(init=False, factory=list)
    _wake: trio.Event = attrs.field(init=False, factory=trio.Event)
    _current: sqlite3.Connection = attrs.field(init=False)  # the transaction's connection
    _first: float | None = attrs.field(init=False, default=None)  # the window's oldest
    _dirty: dict[str, float] = attrs.field(init=False, factory=dict)  # rows to write: when
    # alone: each period's spend, read once from the file, and what is still to be added to it
    _spent: dict[tuple[str, float], list[float]] = attrs.field(init=False, factory=dict)
    _spent_due: dict[tuple[str, float], list[float]] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        self._db = self._current = self._connect(0.0)
        self._waiting_db = self._db if self.memory else self._connect(5.0)
        if self.memory:
            self.name, self.shared = "local", False
        else:
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def _connect(self, timeout_s: float) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False
        )
        # counters, not records: a power cut may lose the last moments (the ledger keeps usage)
        db.execute("PRAGMA synchronous=OFF")
        return db

    @property
    def memory(self) -> bool:
        return self.path == ":memory:"

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        async with self._lock:  # one transaction of this process at a time
            try:
                return self._in_transaction(self._db, fn, *args)
            except sqlite3.OperationalError as exc:
                if self.memory or "locked" not in str(exc):
                    raise
            # another worker holds the lock: wait for it off the loop
            return await trio.to_thread.run_sync(self._in_transaction, self._waiting_db, fn, *args)

    async def admit(self, ask: Ask) -> Verdict:
        if not self.shared:
            return self._admit(ask)
        return await self._call(self._admit, ask)

    def admit_at_once(self, ask: Ask) -> Verdict | None:
        return None if self.shared else self._admit(ask)

    async def settle(self, ask: Ask, tokens: int, usd: float) -> None:
        self.settle_later(ask, tokens, usd)

    def settle_later(self, ask: Ask, tokens: int, usd: float) -> bool:
        """Never waits: alone, applied now (its spend written within SPENT_S); shared, queued
        for this worker's next transaction (within SETTLE_S)."""
        if not self.shared:
            self._settle(ask, tokens, usd)
        else:
            self._pending.append((ask, tokens, usd))
        self._wake.set()
        return True

    async def spent(self, caller: str, period: str, now: float) -> Counts:
        start, _ = period_bounds(now, period)
        part = self._part(caller, 0.0)
        if not self.shared:
            return self._counts(caller, now, start, part)
        return await self._call(self._counts, caller, now, start, part)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Queued settlements written within SETTLE_S; this worker's rows rewritten when one
        of its requests leaves the window or outlives its lease; the rest when cancelled."""
        task_status.started()
        try:
            while True:
                due = min((c for p in self._parts.values() if (c := p.next_change())), default=None)
                with trio.move_on_after(3600.0 if due is None else max(0.0, due - self.clock())):
                    await self._wake.wait()
                    await trio.sleep(SETTLE_S)  # settlements that come meanwhile go together
                self._wake = trio.Event()
                if self.shared:
                    await self._call(self._refresh, self.clock())
                elif self._spent_due:
                    await self._call(lambda: None)  # the spend, at most once per SPENT_S
                    await trio.sleep(SPENT_S)
        finally:
            with trio.move_on_after(5.0, shield=True):
                if self._pending or self._spent_due:
                    await self._call(lambda: None)

    async def aclose(self) -> None:
        self._db.close()
        if self._waiting_db is not self._db:
            self._waiting_db.close()

    def _in_transaction(self, db: sqlite3.Connection, fn: Callable[..., T], *args: object) -> T:
        """`fn` in one write transaction, after the settlements queued until now."""
        db.execute("BEGIN IMMEDIATE")
        pending, self._pending = self._pending, []
        due: dict[tuple[str, float], list[float]] = {}
        try:
            self._current = db
            for ask, tokens, usd in pending:
                self._settle(ask, tokens, usd)
            result = fn(*args)
            due, self._spent_due = self._spent_due, {}
            for (caller, start), (spent_tokens, spent_usd, count) in due.items():
                self._add_spent(caller, start, int(spent_tokens), spent_usd, int(count))
            for caller, now in self._dirty.items():  # each changed row written once
                db.execute(
                    "INSERT OR REPLACE INTO parts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (caller, self.worker, *self._parts[caller].row(), self._parts[caller].lease_s,
                     now),
                )  # fmt: skip
            self._dirty.clear()
            db.execute("COMMIT")
        except BaseException:
            self._dirty.clear()
            db.execute("ROLLBACK")
            self._pending[:0] = pending  # written with the next transaction
            for key, values in due.items():
                self._spent_due.setdefault(key, [0, 0.0, 0])
                self._spent_due[key] = [
                    a + b for a, b in zip(self._spent_due[key], values, strict=True)
                ]
            raise
        return result

    def _part(self, caller: str, lease_s: float) -> Part:
        part = self._parts.get(caller)
        if part is None:
            part = self._parts[caller] = Part(lease_s=lease_s)
        elif lease_s > part.lease_s:
            part.lease_s = lease_s
        return part

    def _write(self, caller: str, part: Part, now: float) -> None:
        """This worker's row of `caller` is written before the transaction commits (shared:
        alone, nobody reads it)."""
        if self.shared:
            self._dirty[caller] = max(now, self._dirty.get(caller, now))

    def _refresh(self, now: float) -> None:
        for caller, part in self._parts.items():
            if part.expire(now):
                self._write(caller, part, now)

    def _admit(self, ask: Ask) -> Verdict:
        part = self._parts.get(ask.caller)
        if part is None or part.lease_s < ask.lease_s:
            part = self._part(ask.caller, ask.lease_s)
        start, end = ask.period
        counts = self._counts(ask.caller, ask.now, start, part, ask.limits.budget is not None)
        refused = decide(ask, counts)
        if refused is not None:
            return self._refusal(ask, counts, refused, end)
        part.add(ask.ticket, ask.now, ask.tokens, ask.usd)
        if self.shared:
            self._write(ask.caller, part, ask.now)
        return admitted(counts, ask)

    def _counts(
        self, caller: str, now: float, start: float, part: Part, with_spent: bool = True
    ) -> Counts:
        """The caller's counters at `now`: this worker's part (its row written anew when it
        changed) and, shared, the other workers' rows."""
        if part.expire(now) and self.shared:
            self._write(caller, part, now)
        # a budget's, or /v1/usage's
        spent = self._spent_at(caller, start) if with_spent else (0, 0.0, 0)
        if not self.shared:  # this worker's part is the whole count
            times, head = part.times, part.head
            self._first = times[head] if head < len(times) else None
            return part.counts(spent)
        mine = part.row()
        others = self._current.execute(OTHERS, (caller, self.worker, now)).fetchone()
        firsts = [t for t in (mine[2], others[2]) if t is not None]
        newest = max((t for t in (mine[3], others[3]) if t is not None), default=None)
        self._first = min(firsts, default=None)
        return Counts(
            mine[0] + others[0], mine[1] + others[1], newest, mine[4] + others[4],
            mine[5] + others[5], max(0.0, mine[6] + others[6]), *spent,
        )  # fmt: skip

    def _refusal(self, ask: Ask, counts: Counts, refused: str, end: float) -> Verdict:
        if refused in ("rpm", "tpm") and self._first is not None:
            wait = free_after([(self._first, 1)], 1, ask.now)  # the oldest leaves the window
        elif refused == "max_parallel":
            wait = 1.0  # when a request ends is not known: come back soon
        else:
            wait = end - ask.now
        return Verdict(refused, retry_after_s=wait, counts=counts, period_end=end)

    def _settle(self, ask: Ask, tokens: int, usd: float) -> None:
        part = self._parts.get(ask.caller) or self._part(ask.caller, ask.lease_s)
        part.settle(ask.ticket, tokens)
        start = ask.period[0]
        if self.shared:
            self._write(ask.caller, part, ask.now)
            self._add_spent(ask.caller, start, tokens, usd, 1)
            return
        key = (ask.caller, start)
        if key not in self._spent:
            self._spent_at(ask.caller, start)  # known before it grows
        for table in (self._spent, self._spent_due):
            values = table.get(key)
            if values is None:
                values = table[key] = [0, 0.0, 0]
            values[0] += tokens
            values[1] += usd
            values[2] += 1

    def _spent_at(self, caller: str, start: float) -> tuple[int, float, int]:
        """The period's spend: shared, from the file; alone, as this process keeps it (read
        from the file once: what earlier runs spent)."""
        if self.shared:
            row = self._current.execute(
                "SELECT tokens, usd, requests FROM spent WHERE caller = ? AND period = ?",
                (caller, start),
            ).fetchone()
            return (row[0], row[1], row[2]) if row else (0, 0.0, 0)
        known = self._spent.get((caller, start))
        if known is None:
            row = self._db.execute(
                "SELECT tokens, usd, requests FROM spent WHERE caller = ? AND period = ?",
                (caller, start),
            ).fetchone() or (0, 0.0, 0)
            known = self._spent[(caller, start)] = [row[0], row[1], row[2]]
        return int(known[0]), known[1], int(known[2])

    def _add_spent(self, caller: str, start: float, tokens: int, usd: float, n: int) -> None:
        self._current.execute(
            "INSERT INTO spent VALUES (?, ?, ?, ?, ?) ON CONFLICT (caller, period) DO UPDATE"
            " SET tokens = tokens + excluded.tokens, usd = usd + excluded.usd,"
            " requests = requests + excluded.requests",
            (caller, start, tokens, usd, n),
        )
