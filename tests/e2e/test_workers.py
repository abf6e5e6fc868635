"""WORKERS=2 as real processes: a supervisor, two workers on one SO_REUSEPORT address, metrics
summed exactly, SIGHUP and the file watch reaching every worker, a killed worker replaced,
SIGTERM draining every worker."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
from typing import Any

import httpx
import trio

from tests.e2e.stack import stack_env
from tests.e2e.test_process import Gateway, gateway_process, one_line_exit_2
from tests.fakes.server import FakeServer, Reply, WaitFor
from tests.fakes.upstreams import (
    CREATED_AT,
    FakeOllama,
    FakeOpenAI,
    ollama_line,
    ollama_stream,
)

ALIASES_A = "aliases:\n  mana/a:\n    chain: [ollama/gemma3:4b]\n"
ALIASES_B = "aliases:\n  mana/b:\n    chain: [ollama/gemma3:4b]\n"
CHAT: Any = {"model": "gemma3:4b", "messages": [{"role": "user", "content": "x"}]}


async def fakes(nursery: trio.Nursery) -> tuple[FakeServer, FakeServer]:
    ollama: FakeServer = await nursery.start(FakeServer(FakeOllama()).serve)
    cloud: FakeServer = await nursery.start(FakeServer(FakeOpenAI()).serve)
    return ollama, cloud


async def two_workers(
    nursery: trio.Nursery, tmp_path: pathlib.Path, **extra: str
) -> tuple[pathlib.Path, dict[str, str]]:
    """Fakes, an alias file, and the environment of a two-worker gateway with JSON logs."""
    ollama, cloud = await fakes(nursery)
    path = tmp_path / "aliases.yaml"
    path.write_text(ALIASES_A)
    env = stack_env(ollama, cloud, WORKERS="2", LOG_FORMAT="json", ALIASES_PATH=str(path), **extra)
    return path, env


async def fresh(base_url: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request on a connection of its own: the kernel picks the worker anew."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        return await client.request(method, path, headers={"connection": "close"}, **kwargs)


async def every_worker_logs(gw: Gateway, what: bytes, start: int = 0) -> None:
    """Until both workers logged a JSON line containing `what` (after offset `start`)."""
    for worker in (1, 2):
        tag = b'"worker": %d' % worker
        await gw.wait_log(tag + rb"[^\n]*" + what + b"|" + what + rb"[^\n]*" + tag, start)


def json_lines(log: bytearray) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.decode().splitlines() if line.startswith("{")]


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


async def test_two_workers_serve_one_port_and_every_scrape_counts_exactly(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    path, env = await two_workers(nursery, tmp_path)  # no file watch: SIGHUP alone reloads
    with trio.fail_after(40):
        async with gateway_process(env) as gw:
            await every_worker_logs(gw, b"listening on")
            for _ in range(40):
                assert (
                    await fresh(gw.base_url, "POST", "/v1/chat/completions", json=CHAT)
                ).status_code == 200
            scrapes = [(await fresh(gw.base_url, "GET", "/metrics")).text for _ in range(6)]
            # SIGHUP reaches every worker
            mark = len(gw.log)
            path.write_text(ALIASES_B)
            gw.proc.send_signal(signal.SIGHUP)
            await every_worker_logs(gw, b"aliases loaded from", mark)
            aliases = [
                (await fresh(gw.base_url, "GET", "/v1/aliases")).json()["data"][0]["name"]
                for _ in range(6)
            ]
            after = [(await fresh(gw.base_url, "GET", "/metrics")).text for _ in range(4)]
            gw.proc.send_signal(signal.SIGTERM)
            assert await gw.proc.wait() == 0
    requests = [line for line in json_lines(gw.log) if line["message"] == "request"]
    assert {line["worker"] for line in requests if line["endpoint"] == "chat"} == {1, 2}
    needle = 'mana_llm_llm_requests_total{model="ollama/gemma3:4b",provider="ollama",status="requested"} 40.0'
    for text in scrapes:
        assert needle in text.splitlines()  # every scrape, from either worker, counts all 40
    assert set(aliases) == {"mana/b"}
    for text in after:  # both workers reloaded; the one reload is counted once
        assert 'mana_llm_alias_reloads_total{result="success"} 1.0' in text.splitlines()


async def test_the_file_watch_reaches_every_worker(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    path, env = await two_workers(nursery, tmp_path, ALIASES_WATCH_INTERVAL="0.2")
    with trio.fail_after(40):
        async with gateway_process(env) as gw:
            await every_worker_logs(gw, b"listening on")
            mark = len(gw.log)
            path.write_text(ALIASES_B)  # as a ConfigMap changes: nobody sends SIGHUP
            await every_worker_logs(gw, b"aliases loaded from", mark)
            gw.proc.send_signal(signal.SIGTERM)
            assert await gw.proc.wait() == 0


async def test_a_killed_worker_is_replaced_and_sigterm_drains_every_worker(
    nursery: trio.Nursery,
) -> None:
    ollama, cloud = await fakes(nursery)
    release = trio.Event()
    held = ollama_stream(ollama_line("Hi"), WaitFor(release), ollama_line(done=True))
    ollama.script("/api/chat", *[held] * 4)
    env = stack_env(ollama, cloud, WORKERS="2", LOG_FORMAT="json", GRACEFUL_TIMEOUT="10")
    stream: Any = {**CHAT, "stream": True}
    with trio.fail_after(40):
        async with gateway_process(env) as gw:
            await every_worker_logs(gw, b"listening on")
            workers = children(gw.proc.pid)
            assert len(workers) == 2
            mark = len(gw.log)
            os.kill(workers[0], signal.SIGKILL)
            await gw.wait_log(rb"exited with -9; restarting", mark)
            await gw.wait_log(rb"listening on", mark)
            assert len(children(gw.proc.pid)) == 2
            assert (await fresh(gw.base_url, "GET", "/livez")).status_code == 200
            # streams in flight on fresh connections, then SIGTERM: every worker drains
            bodies: list[str] = []

            async def one_stream() -> None:
                async with httpx.AsyncClient(base_url=gw.base_url, timeout=20) as client:
                    r = await client.post("/v1/chat/completions", json=stream)
                    bodies.append(r.text)

            async with trio.open_nursery() as streams:
                for _ in range(4):
                    streams.start_soon(one_stream)
                while len([q for q in ollama.requests if q.path == "/api/chat"]) < 4:
                    await ollama.wait_requests(len(ollama.requests) + 1)
                mark = len(gw.log)
                gw.proc.send_signal(signal.SIGTERM)
                await every_worker_logs(gw, b"SIGTERM: draining", mark)
                release.set()
            assert await gw.proc.wait() == 0
    assert len(bodies) == 4 and all(b.endswith("data: [DONE]\n\n") for b in bodies)


def test_a_taken_port_with_workers_is_one_line_and_exit_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line_exit_2(PORT=str(port), WORKERS="2")
    assert line == f"mana-llm: cannot listen on 127.0.0.1:{port}: Address already in use"


def test_a_bad_alias_file_with_workers_is_one_line_and_exit_2(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "aliases.yaml"
    path.write_text("aliases:\n  fast:\n    chain: [ollama/x]\n")
    line = one_line_exit_2(PORT="0", WORKERS="2", ALIASES_PATH=str(path))
    assert line == f"mana-llm: aliases: {path}:2: alias 'fast' must be named mana/<class>"


async def test_readyz_waits_for_every_worker(nursery: trio.Nursery, tmp_path: pathlib.Path) -> None:
    """One worker's first probe round is held: no /readyz answer, from either worker, is 200
    until it is over; then every one is."""
    ollama, cloud = await fakes(nursery)
    release = trio.Event()
    tags = json.dumps({"models": [{"name": "gemma3:4b", "modified_at": CREATED_AT}]}).encode()
    ollama.script("/api/tags", Reply.json(json.loads(tags)), Reply(200, [WaitFor(release), tags]))
    env = stack_env(ollama, cloud, WORKERS="2", LOG_FORMAT="json", PROBE_TIMEOUT="20")
    with trio.fail_after(40):
        async with gateway_process(env) as gw:
            await every_worker_logs(gw, b"listening on")
            await ollama.wait_requests(2)  # each worker's first probe: one answered, one held
            starting = [(await fresh(gw.base_url, "GET", "/readyz")) for _ in range(12)]
            release.set()
            ready = 0
            while ready < 6:  # then every answer, from either worker, says ready
                r = await fresh(gw.base_url, "GET", "/readyz")
                ready = ready + 1 if r.status_code == 200 else 0
            gw.proc.send_signal(signal.SIGTERM)
            assert await gw.proc.wait() == 0
    assert {(r.status_code, r.json()["status"]) for r in starting} == {(503, "starting")}
