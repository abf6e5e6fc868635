"""The usage ledger on real files: rows written in batches by its writer, the last ones when
it stops, a schema version migrated (and a newer one refused), several files summed, and
`python -m mana_llm usage` printing them."""

from __future__ import annotations

import json
import pathlib
import sqlite3
import subprocess
import sys

import pytest
import trio

from mana_llm.access.ledger import (
    COLUMNS,
    MAX_CHUNK,
    Ledger,
    LedgerError,
    UsageRow,
    open_db,
    summarize,
)

NOW = 1_780_000_000.0


def row(caller: str, model: str, n: int, *, error: str | None = None, at: float = NOW) -> UsageRow:
    return UsageRow(
        at=at, caller=caller, requested=model, resolved=model, deployment=None,
        endpoint="chat", stream=False, prompt_tokens=10 * n, completion_tokens=n,
        estimated=False, cost_usd=0.001 * n, cache_hit=False, status=500 if error else 200,
        error_type=error, duration_ms=1.0, ttft_ms=None, request_id=f"r{n}",
    )  # fmt: skip


async def test_the_writer_writes_batches_and_the_rest_when_it_stops(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "usage.sqlite")
    ledger = Ledger(path)
    ledger.open()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(ledger.run_writer)
            ledger.record(row("a", "m", 1))
            ledger.flush_soon()  # as SIGHUP does
            # a poll of what the writer's thread did; bounded above
            while ledger.written < 1:  # noqa: ASYNC110
                await trio.sleep(0.01)
            ledger.record(row("a", "m", 2))
            ledger.record(row("b", "m", 3))
            nursery.cancel_scope.cancel()  # the service stops: the last rows are written
    assert ledger.written == 3
    assert summarize([path], 0, ["caller"]) == [
        {"caller": "a", "requests": 2, "prompt_tokens": 30, "completion_tokens": 3,
         "cost_usd": 0.003, "errors": 0, "estimated": 0},
        {"caller": "b", "requests": 1, "prompt_tokens": 30, "completion_tokens": 3,
         "cost_usd": 0.003, "errors": 0, "estimated": 0},
    ]  # fmt: skip


def test_a_batch_longer_than_a_statement_keeps_every_row_and_value(
    tmp_path: pathlib.Path,
) -> None:
    rows = [row(f"c{n % 3}", "m", n, error="upstream_error" if n % 5 == 0 else None)
            for n in range(2 * MAX_CHUNK + 7)]  # fmt: skip
    rows[1] = rows[1]._replace(deployment="gpu-a", stream=True, estimated=True, ttft_ms=12.5)
    write(tmp_path / "usage.sqlite", rows)
    with sqlite3.connect(tmp_path / "usage.sqlite") as db:
        stored = db.execute(f"SELECT {', '.join(COLUMNS)} FROM usage ORDER BY id").fetchall()
    assert stored == [tuple(r) for r in rows]  # bools stored as 0/1, which compare equal


def test_the_schema_is_versioned(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "usage.sqlite")
    open_db(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        db.execute("PRAGMA user_version = 9")
    with pytest.raises(LedgerError, match="schema version 9 is newer"):
        open_db(path)


def write(path: pathlib.Path, rows: list[UsageRow]) -> None:
    ledger = Ledger(str(path))
    ledger.open()
    ledger._write(rows)


def test_the_report_merges_hosts_and_groups(tmp_path: pathlib.Path) -> None:
    one, two = tmp_path / "host1.sqlite", tmp_path / "host2.sqlite"
    write(one, [row("a", "mana/fast", 1), row("a", "groq/x", 2, error="upstream_error")])
    write(two, [row("a", "mana/fast", 3), row("b", "mana/fast", 4, at=NOW - 30 * 86400)])
    assert summarize([str(one), str(two)], NOW - 86400, ["caller", "model"]) == [
        {"caller": "a", "model": "groq/x", "requests": 1, "prompt_tokens": 20,
         "completion_tokens": 2, "cost_usd": 0.002, "errors": 1, "estimated": 0},
        {"caller": "a", "model": "mana/fast", "requests": 2, "prompt_tokens": 40,
         "completion_tokens": 4, "cost_usd": 0.004, "errors": 0, "estimated": 0},
    ]  # fmt: skip
    cli = [sys.executable, "-m", "mana_llm", "usage", "--db", str(one), "--db", str(two)]
    shown = subprocess.run([*cli, "--since", "all", "--by", "caller"], capture_output=True,
                           text=True, timeout=30, check=True)  # fmt: skip
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["caller", *REPORT_COLUMNS]
    assert lines[1].split() == ["a", "3", "60", "6", "0.006", "1", "0"]
    assert lines[2].split() == ["b", "1", "40", "4", "0.004", "0", "0"]
    assert lines[3].split() == ["total", "4", "100", "10", "0.01", "1", "0"]
    as_json = subprocess.run([*cli, "--since", "all", "--by", "day", "--json"],
                             capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
    days = [json.loads(line)["day"] for line in as_json.stdout.splitlines()]
    assert len(days) == 2 and days == sorted(days)
    bad = subprocess.run([*cli, "--by", "colour"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "--by 'colour'" in bad.stderr
    missing = subprocess.run([*cli[:4], "--db", str(tmp_path / "none")], capture_output=True,
                             text=True, timeout=30)  # fmt: skip
    assert missing.returncode == 2 and "no ledger at" in missing.stderr


REPORT_COLUMNS = [
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "errors",
    "estimated",
]
