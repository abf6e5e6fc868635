"""`python -m mana_llm` as a real process: start-up errors, signals, graceful drain."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import httpx
import trio

from tests.e2e.stack import stack_env
from tests.fakes.server import FakeServer, WaitFor
from tests.fakes.upstreams import FakeOllama, FakeOpenAI, ollama_line, ollama_stream


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mana_llm", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_malformed_setting_stops_startup_with_one_line_and_exit_2() -> None:
    result = run_cli(PORT="eighty")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["mana-llm: PORT='eighty' is not a whole number"]


def test_bad_url_and_bad_timeout_are_named() -> None:
    assert "OLLAMA_URL" in run_cli(OLLAMA_URL="localhost:11434").stderr
    assert "OLLAMA_TIMEOUT" in run_cli(OLLAMA_TIMEOUT="-1").stderr


def test_help() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "--port" in result.stdout and "--config" in result.stdout


async def test_sigterm_drains_an_in_flight_stream_then_exits_0(nursery: trio.Nursery) -> None:
    ollama: FakeServer = await nursery.start(FakeServer(FakeOllama()).serve)
    cloud: FakeServer = await nursery.start(FakeServer(FakeOpenAI()).serve)
    release = trio.Event()
    ollama.script(
        "/api/chat",
        ollama_stream(
            ollama_line("Hi"), WaitFor(release), ollama_line(" there"), ollama_line(done=True)
        ),
    )
    env = {**os.environ, **stack_env(ollama, cloud, GRACEFUL_TIMEOUT="10")}
    with trio.fail_after(20):
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "mana_llm", "--config", "hypercorn.toml"],
            env=env,
            stderr=subprocess.PIPE,
        )
        try:
            assert proc.stderr is not None
            stderr = proc.stderr
            log = bytearray()

            async def wait_log(pattern: bytes) -> re.Match[bytes]:
                while (found := re.search(pattern, log)) is None:
                    data = await stderr.receive_some()
                    assert data, log.decode()
                    log.extend(data)
                return found

            base = (await wait_log(rb"listening on (http://\S+)")).group(1).decode()
            async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                body = {
                    "model": "gemma3:4b",
                    "messages": [{"role": "user", "content": "x"}],
                    "stream": True,
                }
                async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                    lines = r.aiter_lines()
                    first = await anext(lines)
                    assert "Hi" in first
                    proc.send_signal(signal.SIGTERM)
                    await wait_log(rb"SIGTERM: draining")
                    assert proc.poll() is None, "exited with a stream still in flight"
                    release.set()
                    rest = [line async for line in lines if line.startswith("data: ")]
            assert rest[-1] == "data: [DONE]"
            assert json.loads(rest[0][6:])["choices"][0]["delta"]["content"] == " there"
            assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
