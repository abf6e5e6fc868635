"""The usage ledger: one row per inference request, in SQLite (USAGE_DB, WAL), written in
batches by one task off the request path (the rows are handed to a worker thread; the trio
loop never waits on the file). Flushed every `FLUSH_S`, on SIGHUP and when the service stops:
a clean shutdown loses no row, a SIGKILL at most the last `FLUSH_S` (and the batch being
written). Every worker of a host may write the same file. The schema is versioned
(`PRAGMA user_version`) and migrated on open.

`summarize` reads one or more ledger files (one per host) for `python -m mana_llm usage`."""

from __future__ import annotations

import functools
import itertools
import logging
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import attrs
import trio

log = logging.getLogger(__name__)

FLUSH_S = 0.5
MAX_PENDING = 100_000  # rows kept while the file cannot be written; beyond, the oldest go
MIGRATIONS = (
    # 1: the first schema
    """CREATE TABLE usage (
        id INTEGER PRIMARY KEY, at REAL NOT NULL, caller TEXT NOT NULL, requested TEXT,
        resolved TEXT, deployment TEXT, endpoint TEXT NOT NULL, stream INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
        estimated INTEGER NOT NULL, cost_usd REAL NOT NULL, cache_hit INTEGER NOT NULL,
        status INTEGER NOT NULL, error_type TEXT, duration_ms REAL NOT NULL, ttft_ms REAL,
        request_id TEXT NOT NULL);
    CREATE INDEX usage_at ON usage (at);""",
)
GROUPS = ("caller", "model", "resolved", "deployment", "endpoint", "day")
_GROUP_SQL = {
    "caller": "caller",
    "model": "requested",
    "resolved": "resolved",
    "deployment": "deployment",
    "endpoint": "endpoint",
    "day": "date(at, 'unixepoch')",
}


class UsageRow(NamedTuple):
    """One request, as the ledger keeps it (a tuple: handed to SQLite as it is)."""

    at: float  # when the request arrived, epoch seconds
    caller: str  # the keys file's name; `anonymous` for a MANA_LLM_API_KEYS key or no key
    requested: str | None  # the model or alias as sent
    resolved: str | None  # provider/model that answered
    deployment: str | None
    endpoint: str  # chat | embeddings
    stream: bool
    prompt_tokens: int
    completion_tokens: int
    estimated: bool  # the upstream gave no count: the gateway's estimate
    cost_usd: float
    cache_hit: bool
    status: int  # 499: the client went away
    error_type: str | None
    duration_ms: float
    ttft_ms: float | None
    request_id: str


COLUMNS = UsageRow._fields
MAX_CHUNK = 200  # rows per INSERT statement


@functools.lru_cache(maxsize=8)
def insert(rows: int) -> str:
    """One INSERT of `rows` rows."""
    one = f"({', '.join('?' * len(COLUMNS))})"
    return f"INSERT INTO usage ({', '.join(COLUMNS)}) VALUES {', '.join([one] * rows)}"


class LedgerError(Exception):
    """A ledger file that cannot be opened or is newer than this gateway."""


def open_db(path: str, *, create: bool = True) -> sqlite3.Connection:
    """A connection to a ledger, its schema migrated to this version."""
    try:
        uri = path if create else f"file:{path}?mode=ro"
        db = sqlite3.connect(
            uri, timeout=10.0, isolation_level=None, uri=not create, check_same_thread=False
        )
        if not create:
            return db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("BEGIN IMMEDIATE")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            db.execute("ROLLBACK")
            raise LedgerError(
                f"{path}: schema version {version} is newer than this gateway's ({len(MIGRATIONS)})"
            )
        for number in range(version, len(MIGRATIONS)):
            for statement in MIGRATIONS[number].split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {number + 1}")
        db.execute("COMMIT")
        return db
    except sqlite3.Error as exc:
        raise LedgerError(f"{path}: {exc}") from None


@attrs.define(eq=False)
class Ledger:
    """Rows in memory until the writer hands them to SQLite."""

    path: str
    _rows: list[UsageRow] = attrs.field(factory=list)
    _wake: trio.Event = attrs.field(factory=trio.Event)
    _db: sqlite3.Connection | None = None
    written: int = 0
    _failing: bool = False
    _chunk: int = 1

    def open(self) -> None:
        self._db = open_db(self.path)
        # as many rows as the SQLite build allows variables in one statement (999 before 3.32)
        variables = self._db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self._chunk = max(1, min(MAX_CHUNK, variables // len(COLUMNS)))

    def record(self, row: UsageRow) -> None:
        self._rows.append(row)

    def flush_soon(self) -> None:
        """SIGHUP: write what is buffered now."""
        self._wake.set()

    async def run_writer(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Every FLUSH_S (or when woken), the buffered rows in one transaction; when cancelled
        (the service stops), the last of them, shielded and bounded."""
        task_status.started()
        try:
            while True:
                with trio.move_on_after(FLUSH_S):
                    await self._wake.wait()
                self._wake = trio.Event()
                await self.flush()
        finally:
            with trio.move_on_after(10.0, shield=True):
                await self.flush()
            if self._db is not None:
                self._db.close()
                self._db = None

    async def flush(self) -> None:
        rows, self._rows = self._rows, []
        if not rows or self._db is None:
            return
        try:
            await trio.to_thread.run_sync(self._write, rows)
        except sqlite3.Error as exc:  # a full disk, a locked file: kept for the next round
            if not self._failing:
                log.error("usage ledger: %d row(s) not written yet: %s", len(rows), exc)
            self._failing = True
            self._rows[:0] = rows
            if len(self._rows) > MAX_PENDING:
                lost = len(self._rows) - MAX_PENDING
                del self._rows[:lost]
                log.error("usage ledger: %d row(s) dropped (the file is still failing)", lost)
            return
        if self._failing:
            self._failing = False
            log.warning("usage ledger: writing again")

    def _write(self, rows: Sequence[UsageRow]) -> None:
        """The rows in INSERTs of up to `_chunk` rows each, values bound as they are: SQLite
        runs each in one step, so this thread lets go of the GIL once per chunk, not once per
        row (executemany made the loop's thread and this one trade the GIL per row: 100us a
        request; rows as one JSON array through `json_each` cost twice these per row)."""
        assert self._db is not None
        chunk = self._chunk
        with self._db:
            self._db.execute("BEGIN")
            for start in range(0, len(rows), chunk):
                part = rows[start : start + chunk]
                self._db.execute(insert(len(part)), tuple(itertools.chain.from_iterable(part)))
        self.written += len(rows)


def summarize(paths: Iterable[str], since: float, by: Sequence[str]) -> list[dict[str, Any]]:
    """Requests, tokens, cost and errors since `since`, grouped by `by`, over every file."""
    keys = [_GROUP_SQL[name] for name in by]
    select = ", ".join(
        [
            *keys,
            "count(*)",
            "sum(prompt_tokens)",
            "sum(completion_tokens)",
            "sum(cost_usd)",
            "sum(error_type IS NOT NULL)",
            "sum(estimated)",
        ]
    )
    group = f" GROUP BY {', '.join(keys)}" if keys else ""
    totals: dict[tuple[Any, ...], list[float]] = {}
    for path in paths:
        db = open_db(path, create=False)
        try:
            rows = db.execute(f"SELECT {select} FROM usage WHERE at >= ?{group}", (since,))
            for row in rows:
                if row[len(keys)] == 0:
                    continue
                key, numbers = tuple(row[: len(keys)]), row[len(keys) :]
                sums = totals.setdefault(key, [0, 0, 0, 0.0, 0, 0])
                for i, value in enumerate(numbers):
                    sums[i] += value or 0
        except sqlite3.Error as exc:
            raise LedgerError(f"{path}: {exc}") from None
        finally:
            db.close()
    out = []
    for key, sums in sorted(totals.items(), key=lambda kv: [str(k) for k in kv[0]]):
        out.append(
            dict(zip(by, key, strict=True))
            | {
                "requests": int(sums[0]),
                "prompt_tokens": int(sums[1]),
                "completion_tokens": int(sums[2]),
                "cost_usd": round(sums[3], 6),
                "errors": int(sums[4]),
                "estimated": int(sums[5]),
            }
        )
    return out
