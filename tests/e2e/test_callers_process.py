"""Callers' limits and the ledger as real processes: two workers share one window exactly,
two gateways share one through a real Redis, a budget reached under load overshoots within
its bound, a reload revokes a key on every worker within a second, SIGTERM under load keeps
every row, SIGKILL loses at most the last second, a stopped Redis neither hangs nor admits
silently; and hostile keys files are one line and exit 2."""

from __future__ import annotations

import contextlib
import hashlib
import pathlib
import re
import signal
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

from tests.e2e.redis_server import RedisServer
from tests.e2e.stack import stack_env
from tests.e2e.test_process import Gateway, gateway_process, one_line_exit_2
from tests.e2e.test_workers import fakes
from tests.fakes.server import Delay, FakeServer
from tests.fakes.upstreams import WORDS, ollama_line, ollama_stream

APP_KEY = "sk-chat-app-0123456789"
CHAT: Any = {"model": "gemma3:4b", "messages": [{"role": "user", "content": "hi"}]}


def keys_yaml(app: str, *, other: bool = True) -> str:
    digest = hashlib.sha256(APP_KEY.encode()).hexdigest()
    text = f"keys:\n  chat-app:\n    key_sha256: {digest}\n"
    text += "".join(f"    {line}\n" for line in app.splitlines())
    if other:
        text += f"  other:\n    key_sha256: {hashlib.sha256(b'sk-other-0123456').hexdigest()}\n"
    return text


async def caller_env(
    nursery: trio.Nursery, tmp_path: pathlib.Path, app: str, **extra: str
) -> dict[str, str]:
    return (await caller_stack(nursery, tmp_path, app, **extra))[0]


async def caller_stack(
    nursery: trio.Nursery, tmp_path: pathlib.Path, app: str, **extra: str
) -> tuple[dict[str, str], FakeServer]:
    """A gateway's environment with a keys file, a ledger and counters in `tmp_path`; the
    fake Ollama it calls."""
    ollama, cloud = await fakes(nursery)
    keys = tmp_path / "keys.yaml"
    keys.write_text(keys_yaml(app))
    env = stack_env(
        ollama,
        cloud,
        KEYS_PATH=str(keys),
        USAGE_DB=str(tmp_path / "usage.sqlite"),
        LIMITS_DB=str(tmp_path / "limits.sqlite"),
        LOG_FORMAT="json",
        **extra,
    )
    return env, ollama


@asynccontextmanager
async def running(env: dict[str, str]) -> AsyncIterator[Gateway]:
    """The gateway as a process, its log read all along (a full pipe would stall it)."""
    async with gateway_process(env) as gw, trio.open_nursery() as nursery:
        nursery.start_soon(drain, gw)
        try:
            with trio.fail_after(20):  # every worker started: /readyz says so
                async with httpx.AsyncClient(base_url=gw.base_url) as client:
                    while (await client.get("/readyz")).status_code != 200:  # noqa: ASYNC110
                        await trio.sleep(0.01)
            yield gw
        finally:
            if gw.proc.returncode is None:  # a failed test: its workers go too, not orphaned
                gw.proc.send_signal(signal.SIGTERM)
                with trio.move_on_after(15):
                    await gw.proc.wait()
            nursery.cancel_scope.cancel()


async def drain(gw: Gateway) -> None:
    assert gw.proc.stderr is not None
    while data := await gw.proc.stderr.receive_some():
        gw.log.extend(data)


async def logged(gw: Gateway, pattern: bytes, start: int = 0, count: int = 1) -> None:
    """Until the log (read by `drain`) holds `count` matches of `pattern` after `start`."""
    # a poll of what the drain task read, as an operator's tail would; bounded by the caller
    while len(re.findall(pattern, gw.log[start:])) < count:  # noqa: ASYNC110
        await trio.sleep(0.01)


async def fresh_chat(base_url: str, body: Any = CHAT, key: str = APP_KEY) -> httpx.Response:
    """One request on a connection of its own: the kernel picks the worker anew."""
    async with httpx.AsyncClient(base_url=base_url, timeout=20) as client:
        headers = {"authorization": f"Bearer {key}", "connection": "close"}
        return await client.post("/v1/chat/completions", json=body, headers=headers)


async def burst(base_urls: list[str], count: int, body: Any = CHAT) -> list[httpx.Response]:
    """`count` requests at once, over fresh connections, spread over `base_urls`."""
    answers: list[httpx.Response] = []

    async def one(n: int) -> None:
        answers.append(await fresh_chat(base_urls[n % len(base_urls)], body))

    async with trio.open_nursery() as nursery:
        for n in range(count):
            nursery.start_soon(one, n)
    return answers


def ledger(tmp_path: pathlib.Path) -> list[tuple[int, int, int]]:
    """(status, prompt, completion) of every row of the test's ledger."""
    with sqlite3.connect(tmp_path / "usage.sqlite") as db:
        query = "SELECT status, prompt_tokens, completion_tokens FROM usage ORDER BY id"
        return [(r[0], r[1], r[2]) for r in db.execute(query)]


async def stop(gw: Gateway) -> None:
    gw.proc.send_signal(signal.SIGTERM)
    with trio.fail_after(20):
        assert await gw.proc.wait() == 0


async def test_two_workers_share_one_rpm_exactly_and_keep_every_row(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    env = await caller_env(nursery, tmp_path, "rpm: 60", WORKERS="2")
    async with running(env) as gw:
        with trio.fail_after(60):
            answers = await burst([gw.base_url], 100)
            await stop(gw)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 60 + [429] * 40
    refused = [a for a in answers if a.status_code == 429]
    assert all(1 <= int(a.headers["retry-after"]) <= 60 for a in refused)
    assert all(a.json()["error"]["code"] == "rate_limit_exceeded" for a in refused)
    rows = ledger(tmp_path)
    assert sorted(r[0] for r in rows) == statuses  # one row per answer: none lost, none twice


async def test_two_gateways_share_one_rpm_through_redis(
    nursery: trio.Nursery, tmp_path: pathlib.Path, redis: RedisServer
) -> None:
    env = await caller_env(nursery, tmp_path, "rpm: 60", LIMITS_REDIS_URL=redis.url)
    async with running(env) as one, running(env) as two:
        with trio.fail_after(60):
            answers = await burst([one.base_url, two.base_url], 100)
    by_host: dict[str, list[int]] = {}
    for answer in answers:
        by_host.setdefault(str(answer.url.port), []).append(answer.status_code)
    assert sorted(a.status_code for a in answers) == [200] * 60 + [429] * 40
    assert all(200 in statuses for statuses in by_host.values())  # both hosts answered


async def test_a_budget_reached_under_load_overshoots_within_its_bound(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    """Each request reserves 4 (its prompt's estimate) + 5 (max_tokens) and uses 7 + 5: 3 over.
    The documented bound: the limit, plus what each request in flight at once used beyond its
    reservation (here at most 10 at once: 30)."""
    env = await caller_env(nursery, tmp_path, "budget: {tokens: 200, period: day}", WORKERS="2")
    body = {**CHAT, "max_tokens": 5}
    async with running(env) as gw:
        with trio.fail_after(60):
            answers: list[httpx.Response] = []
            for _ in range(4):  # 40 requests, 10 at a time
                answers += await burst([gw.base_url], 10, body)
            await stop(gw)
    answered = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert len(answered) + len(refused) == 40 and refused
    assert all(a.json()["error"]["code"] == "insufficient_quota" for a in refused)
    spent = sum(p + c for status, p, c in ledger(tmp_path) if status == 200)
    assert spent == len(answered) * (7 + len(WORDS))
    assert 200 - 9 < spent <= 200 + 10 * 3


async def test_a_reload_revokes_a_key_on_every_worker_within_a_second(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    env = await caller_env(nursery, tmp_path, "rpm: 100000", WORKERS="2")
    async with running(env) as gw:
        with trio.fail_after(60):
            assert (await fresh_chat(gw.base_url)).status_code == 200
            (tmp_path / "keys.yaml").write_text(
                "keys:\n  other:\n    key_sha256: "
                + hashlib.sha256(b"sk-other-0123456").hexdigest()
                + "\n"
            )
            start = len(gw.log)
            gw.proc.send_signal(signal.SIGHUP)
            sent = trio.current_time()
            await logged(gw, rb"\(reloaded\)", start, count=2)  # both workers
            last_accepted = sent
            answers = []
            for _ in range(20):  # fresh connections: both workers are asked
                answer = await fresh_chat(gw.base_url)
                answers.append(answer.status_code)
                if answer.status_code == 200:
                    last_accepted = trio.current_time()
    assert answers == [401] * 20
    assert last_accepted - sent < 1.0


async def test_sigterm_under_load_keeps_a_row_for_every_answer(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    env, ollama = await caller_stack(
        nursery, tmp_path, "rpm: 100000", WORKERS="2", GRACEFUL_TIMEOUT="10"
    )
    # each stream takes 0.3 s: SIGTERM lands while most are in flight
    ollama.script("/api/chat", ollama_stream(ollama_line("Hi"), Delay(0.3), ollama_line(done=True)))
    done: list[httpx.Response] = []
    async with running(env) as gw:
        with trio.fail_after(60):
            async with trio.open_nursery() as load:

                async def one() -> None:
                    # after the listener closed: never answered, never a row
                    with contextlib.suppress(httpx.HTTPError):
                        done.append(await fresh_chat(gw.base_url, {**CHAT, "stream": True}))

                for _ in range(30):
                    load.start_soon(one)
                while len(done) < 5:  # noqa: ASYNC110  (a poll of the load, bounded above)
                    await trio.sleep(0.01)
                gw.proc.send_signal(signal.SIGTERM)
            assert await gw.proc.wait() == 0
    assert len(ledger(tmp_path)) == len(done) >= 5
    assert all(a.status_code == 200 for a in done)


async def test_sigkill_loses_at_most_the_last_second(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    env = await caller_env(nursery, tmp_path, "rpm: 100000")
    finished: list[float] = []
    async with running(env) as gw:
        with trio.fail_after(60):
            start = trio.current_time()
            while trio.current_time() - start < 2.5:
                answer = await fresh_chat(gw.base_url)
                assert answer.status_code == 200
                finished.append(trio.current_time())
            gw.proc.kill()
            killed = trio.current_time()
            await gw.proc.wait()
    kept = len(ledger(tmp_path))
    before_last_second = sum(1 for t in finished if t < killed - 1.0)
    assert before_last_second <= kept <= len(finished)
    assert before_last_second > 0


@pytest.mark.parametrize("mode", ["local", "deny"])
async def test_a_stopped_redis_neither_hangs_nor_admits_silently(
    nursery: trio.Nursery, tmp_path: pathlib.Path, redis: RedisServer, mode: str
) -> None:
    env = await caller_env(
        nursery,
        tmp_path,
        "rpm: 1000",
        LIMITS_REDIS_URL=redis.url,
        LIMITS_TIMEOUT="0.3",
        LIMITS_ON_STORE_FAILURE=mode,
    )
    async with running(env) as gw:
        with trio.fail_after(60):
            assert (await fresh_chat(gw.base_url)).status_code == 200
            redis.pause()
            try:
                with trio.fail_after(10):  # ten requests, each at most one deadline late
                    answers = await burst([gw.base_url], 10)
            finally:
                redis.resume()
            async with httpx.AsyncClient(base_url=gw.base_url) as client:
                metrics = (await client.get("/metrics")).text
            await logged(gw, b"limits store redis failed")
    expected = 200 if mode == "local" else 503
    assert [a.status_code for a in answers] == [expected] * 10
    assert 'mana_llm_limits_store_failures_total{store="redis"}' in metrics


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("keys:\n  " + "x" * 1_100_000 + ":\n    key_env: K\n", "larger than"),
        ("keys:\n  caf\u00e9:\n    key_env: K\n", "caller name 'caf\u00e9'"),
        ("keys:\n  a:\n    key_env: K\n    rpn: 5\n", "unknown field 'rpn'"),
        ("keys:\n  a:\n    key_env: K\n  b:\n    key_env: K\n", "have the same key"),
        ("keys:\n  a:\n    key_env: K\n    budget: {usd: -1}\n", "usd must be a positive"),
        ("keys: [1, 2", "not valid YAML"),
    ],
)
@pytest.mark.parametrize("workers", ["1", "2"])  # 2: the supervisor says it, once
def test_a_bad_keys_file_is_one_line_and_exit_2(
    tmp_path: pathlib.Path, text: str, says: str, workers: str
) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(text, encoding="utf-8")
    line = one_line_exit_2(
        KEYS_PATH=str(path), K="sk-key-0123456789", USAGE_DB="off", WORKERS=workers
    )
    assert line.startswith(f"mana-llm: KEYS_PATH='{path}': ")
    assert says in line and len(line) < 400
    assert "sk-key-0123456789" not in line
