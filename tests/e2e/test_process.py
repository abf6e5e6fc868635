"""`python -m mana_llm` as a real process: start-up errors, signals, graceful drain."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import httpx
import pytest
import trio

from mana_llm.server_config import read_hypercorn_toml
from tests.e2e.stack import UPSTREAM_KEY, stack_env
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


@attrs.define
class Gateway:
    """`python -m mana_llm` as a child process, with its stderr log watched."""

    proc: trio.Process
    base_url: str = ""
    log: bytearray = attrs.field(factory=bytearray)

    async def wait_log(self, pattern: bytes, start: int = 0) -> re.Match[bytes]:
        """The first match of pattern in the log from offset start, waiting for it."""
        assert self.proc.stderr is not None
        while (found := re.compile(pattern).search(self.log, start)) is None:
            data = await self.proc.stderr.receive_some()
            assert data, self.log.decode()
            self.log.extend(data)
        return found


@asynccontextmanager
async def gateway_process(env: dict[str, str], *args: str) -> AsyncIterator[Gateway]:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "mana_llm", *args], env={**os.environ, **env}, stderr=subprocess.PIPE
    )
    try:
        gateway = Gateway(proc)
        gateway.base_url = (
            (await gateway.wait_log(rb"listening on (http://[^\s\",]+)")).group(1).decode()
        )
        yield gateway
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


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
    env = stack_env(ollama, cloud, GRACEFUL_TIMEOUT="10")
    with trio.fail_after(20):
        async with gateway_process(env, "--config", "hypercorn.toml") as gw:
            async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
                body = {
                    "model": "gemma3:4b",
                    "messages": [{"role": "user", "content": "x"}],
                    "stream": True,
                }
                async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                    lines = r.aiter_lines()
                    assert "Hi" in await anext(lines)
                    gw.proc.send_signal(signal.SIGTERM)
                    await gw.wait_log(rb"SIGTERM: draining")
                    assert gw.proc.poll() is None, "exited with a stream still in flight"
                    release.set()
                    rest = [line async for line in lines if line.startswith("data: ")]
            assert rest[-1] == "data: [DONE]"
            assert json.loads(rest[0][6:])["choices"][0]["delta"]["content"] == " there"
            assert await gw.proc.wait() == 0


GOOD = "aliases:\n  mana/a:\n    chain: [ollama/gemma3:4b]\n"
BETTER = "aliases:\n  mana/a:\n    chain: [ollama/gemma3:4b]\n  mana/b:\n    chain: [groq/x]\n"
BAD = "aliases:\n  mana/a:\n    chain: [nowhere/x]\n"


async def test_sighup_swaps_the_alias_table_and_a_bad_file_keeps_it(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    ollama: FakeServer = await nursery.start(FakeServer(FakeOllama()).serve)
    cloud: FakeServer = await nursery.start(FakeServer(FakeOpenAI()).serve)
    path = tmp_path / "aliases.yaml"
    path.write_text(GOOD)
    with trio.fail_after(20):
        async with gateway_process(stack_env(ollama, cloud, ALIASES_PATH=str(path))) as gw:
            async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
                first = (await client.get("/v1/aliases")).json()
                path.write_text(BETTER)
                mark = len(gw.log)
                gw.proc.send_signal(signal.SIGHUP)
                await gw.wait_log(rb"aliases loaded from", mark)
                second = (await client.get("/v1/aliases")).json()
                path.write_text(BAD)
                mark = len(gw.log)
                gw.proc.send_signal(signal.SIGHUP)
                found = await gw.wait_log(rb"alias reload failed[^\n]*", mark)
                third = (await client.get("/v1/aliases")).json()
                metrics = (await client.get("/metrics")).text
                answered = await client.post(
                    "/v1/chat/completions",
                    json={"model": "mana/b", "messages": [{"role": "user", "content": "x"}]},
                )
            assert gw.proc.poll() is None  # SIGHUP never stops the service
    assert [a["name"] for a in first["data"]] == ["mana/a"]
    assert [a["name"] for a in second["data"]] == ["mana/a", "mana/b"]
    assert second["hash"] != first["hash"] and second["loaded_at"] >= first["loaded_at"]
    assert third["hash"] == second["hash"]
    assert "line 3" in third["last_reload_error"] or ":3:" in third["last_reload_error"]
    assert b"unknown provider 'nowhere'" in found.group(0)
    assert 'mana_llm_alias_reloads_total{result="success"} 1.0' in metrics
    assert 'mana_llm_alias_reloads_total{result="error"} 1.0' in metrics
    # mana/b survived the bad reload: it still resolves, to groq/x, which the fake does not have
    assert answered.status_code == 503
    assert answered.json()["error"]["attempts"][0]["model"] == "groq/x"


def test_a_bad_alias_file_stops_startup_with_exit_2(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "aliases.yaml"
    path.write_text("aliases:\n  fast:\n    chain: [ollama/x]\n")
    result = run_cli(ALIASES_PATH=str(path), PORT="0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"mana-llm: aliases: {path}:2: alias 'fast' must be named mana/<class>"
    ]
    assert run_cli(ALIASES_PATH=str(tmp_path / "missing.yaml"), PORT="0").returncode == 2


async def test_json_logs_carry_the_fields_and_never_prompts_or_keys(nursery: trio.Nursery) -> None:
    ollama: FakeServer = await nursery.start(FakeServer(FakeOllama()).serve)
    cloud: FakeServer = await nursery.start(FakeServer(FakeOpenAI(key="sk-other-key")).serve)
    env = stack_env(ollama, cloud, LOG_FORMAT="json")
    prompt = "the secret plan is PROMPT-TEXT-4711"
    messages = [{"role": "user", "content": prompt}]
    with trio.fail_after(20):
        async with gateway_process(env) as gw:
            async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
                ok = await client.post(
                    "/v1/chat/completions",
                    json={"model": "gemma3:4b", "messages": messages, "stream": True},
                    headers={"x-request-id": "req-ok-1"},
                )
                # the fake refuses our key and echoes it back; the start-up probe already
                # failed once, so this second failure opens groq's circuit, inside the request
                refused = await client.post(
                    "/v1/chat/completions",
                    json={"model": "groq/llama-3.1-8b-instant", "messages": messages},
                    headers={"x-request-id": "req-bad-2"},
                )
                await client.get("/health")  # a later line, so the ones before it are complete
            await gw.wait_log(
                rb'"request_id": "req-bad-2"[^\n]*"message": "request"|"message": "request"[^\n]*"request_id": "req-bad-2"'
            )
    assert ok.status_code == 200 and refused.status_code == 502
    lines = [json.loads(line) for line in gw.log.decode().splitlines()]  # every line is JSON
    assert [line["logger"] for line in lines if "listening on" in line["message"]] == [
        "mana_llm.service"
    ]  # said once: hypercorn's own "Running on" is not repeated
    assert not [line for line in lines if "Running on" in line["message"]]
    requests = {line["request_id"]: line for line in lines if line["message"] == "request"}
    first = requests["req-ok-1"]
    assert first["endpoint"] == "chat" and first["stream"] is True and first["status"] == 200
    assert first["model"] == "gemma3:4b" and first["resolved"] == "ollama/gemma3:4b"
    assert (
        first["attempts"] == [] and first["prompt_tokens"] == 7 and first["completion_tokens"] == 5
    )
    assert first["duration_ms"] >= first["ttft_ms"] > 0
    second = requests["req-bad-2"]
    assert second["status"] == 502 and second["error_type"] == "upstream_error"
    assert second["attempts"][0]["model"] == "groq/llama-3.1-8b-instant"
    circuit = [line for line in lines if line["message"].startswith("circuit of groq")]
    assert circuit and circuit[0]["request_id"] == "req-bad-2"  # every line of the request
    text = gw.log.decode()
    assert "PROMPT-TEXT-4711" not in text
    assert UPSTREAM_KEY not in text and "sk-other-key" not in text
    assert "Hello" not in text  # the answer is not logged either


def one_line_exit_2(*args: str, **env: str) -> str:
    """Run the CLI expecting a start-up failure: exit code 2 and exactly one line on stderr."""
    result = run_cli(*args, LOG_LEVEL="WARNING", HOST="127.0.0.1", **env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_port_in_use_is_one_line_and_exit_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line_exit_2(PORT=str(port))
    assert line == f"mana-llm: cannot listen on 127.0.0.1:{port}: Address already in use"


@pytest.mark.parametrize(
    ("toml", "says"),
    [
        ("keep_alive_timeout = [", "not valid TOML"),
        (
            "keep_alive_timout = 75",
            "unknown key 'keep_alive_timout' (did you mean 'keep_alive_timeout'?)",
        ),
        ('bind = ["0.0.0.0:80"]', "bind is set by the gateway; use HOST and PORT"),
        ("graceful_timeout = 5", "graceful_timeout is set by the gateway; use GRACEFUL_TIMEOUT"),
        ('accesslog = "-"', "accesslog is set by the gateway; use LOG_LEVEL and LOG_FORMAT"),
        ("workers = 0", "workers must be a whole number from 1 to 256"),
        ("use_reloader = true", "use_reloader is read only by the hypercorn command line"),
        ('keep_alive_timeout = "long"', "keep_alive_timeout must be a number, not 'long'"),
    ],
)
def test_a_bad_hypercorn_toml_is_one_line_and_exit_2(
    tmp_path: pathlib.Path, toml: str, says: str
) -> None:
    path = tmp_path / "hypercorn.toml"
    path.write_text(toml + "\n")
    line = one_line_exit_2("--config", str(path), PORT="0")
    assert line.startswith(f"mana-llm: --config {path}: ") and says in line, line


def test_the_shipped_hypercorn_toml_is_accepted() -> None:
    root = pathlib.Path(__file__).parents[2]
    assert read_hypercorn_toml(str(root / "hypercorn.toml"))["keep_alive_timeout"] == 75


async def test_readyz_turns_503_on_sigterm_while_a_stream_completes(nursery: trio.Nursery) -> None:
    """DRAIN_DELAY: after SIGTERM /readyz says 503 at once, new requests are still served for
    the delay (load balancers stop sending), and the stream in flight completes."""
    ollama: FakeServer = await nursery.start(FakeServer(FakeOllama()).serve)
    cloud: FakeServer = await nursery.start(FakeServer(FakeOpenAI()).serve)
    release = trio.Event()
    ollama.script(
        "/api/chat",
        ollama_stream(ollama_line("Hi"), WaitFor(release), ollama_line(done=True)),
    )
    env = stack_env(ollama, cloud, GRACEFUL_TIMEOUT="10", DRAIN_DELAY="2")
    body = {"model": "gemma3:4b", "messages": [{"role": "user", "content": "x"}], "stream": True}
    with trio.fail_after(20):
        async with gateway_process(env) as gw:
            async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
                while (await client.get("/readyz")).status_code != 200:  # noqa: ASYNC110
                    await trio.sleep(0.01)  # start-up: the first probe round, bounded above
                async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                    lines = r.aiter_lines()
                    assert "Hi" in await anext(lines)
                    gw.proc.send_signal(signal.SIGTERM)
                    await gw.wait_log(rb"SIGTERM: draining")
                    async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as fresh:
                        ready = await fresh.get("/readyz")
                        live = await fresh.get("/livez")
                        served = await fresh.post(
                            "/v1/chat/completions", json={**body, "stream": False}
                        )
                    release.set()
                    rest = [line async for line in lines if line.startswith("data: ")]
            assert await gw.proc.wait() == 0
    assert ready.status_code == 503 and ready.json() == {"status": "draining"}
    assert live.status_code == 200
    assert served.status_code == 200  # still accepting during the drain delay
    assert rest[-1] == "data: [DONE]"


async def test_sigterm_is_not_held_by_a_connection_answered_before_its_body(
    nursery: trio.Nursery,
) -> None:
    ollama: FakeServer = await nursery.start(FakeServer(FakeOllama()).serve)
    cloud: FakeServer = await nursery.start(FakeServer(FakeOpenAI()).serve)
    env = stack_env(ollama, cloud, GRACEFUL_TIMEOUT="10")
    with trio.fail_after(20):
        async with gateway_process(env) as gw:
            host, port = gw.base_url.removeprefix("http://").rsplit(":", 1)
            stream = await trio.open_tcp_stream(host, int(port))
            await stream.send_all(b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n")
            assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 404")
            # the body never comes and the client keeps the connection open
            gw.proc.send_signal(signal.SIGTERM)
            stopping = trio.current_time()
            assert await gw.proc.wait() == 0
            took = trio.current_time() - stopping
            await stream.aclose()
    assert took < 3  # not the 10 s graceful timeout


async def test_debug_logging_never_prints_upstream_headers(nursery: trio.Nursery) -> None:
    ollama: FakeServer = await nursery.start(FakeServer(FakeOllama()).serve)
    cloud: FakeServer = await nursery.start(FakeServer(FakeOpenAI(key=UPSTREAM_KEY)).serve)
    env = stack_env(ollama, cloud, LOG_LEVEL="DEBUG")
    with trio.fail_after(20):
        async with gateway_process(env) as gw:
            async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
                body = {
                    "model": "groq/llama-3.1-8b-instant",
                    "messages": [{"role": "user", "content": "x"}],
                }
                assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
                await client.get("/health")
            await gw.wait_log(rb"GET /health|endpoint[^\n]*other")
    text = gw.log.decode()
    assert UPSTREAM_KEY not in text and "authorization" not in text.lower()
    assert " httpcore" not in text and " httpx" not in text  # LOG_LEVEL=DEBUG is not theirs


async def test_an_env_file_is_read_and_the_environment_wins(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    ollama: FakeServer = await nursery.start(FakeServer(FakeOllama()).serve)
    cloud: FakeServer = await nursery.start(FakeServer(FakeOpenAI()).serve)
    env_file = tmp_path / "gateway.env"
    env_file.write_text(
        "# the quick start's file\nLOG_FORMAT=json\nCORS_ORIGINS=https://from-the-file.example\n"
    )
    env = stack_env(ollama, cloud, CORS_ORIGINS="https://from-the-env.example")
    with trio.fail_after(20):
        async with gateway_process(env, "--env-file", str(env_file)) as gw:
            async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
                origin = {"origin": "https://from-the-env.example"}
                allowed = await client.get("/v1/models", headers=origin)
            gw.proc.send_signal(signal.SIGTERM)
            assert await gw.proc.wait() == 0
    first = json.loads(gw.log.decode().splitlines()[0])  # JSON: the file's LOG_FORMAT
    assert first["message"] == f"settings from {env_file} (the environment wins over it)"
    assert allowed.headers["access-control-allow-origin"] == "https://from-the-env.example"


def test_a_missing_env_file_is_one_line_and_exit_2(tmp_path: pathlib.Path) -> None:
    line = one_line_exit_2("--env-file", str(tmp_path / "nope.env"))
    assert line == f"mana-llm: --env-file '{tmp_path / 'nope.env'}' does not exist"


async def test_sighup_reloads_the_deployments_and_a_bad_file_keeps_them(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    first: FakeServer = await nursery.start(FakeServer(FakeOllama()).serve)
    second: FakeServer = await nursery.start(FakeServer(FakeOllama()).serve)
    cloud: FakeServer = await nursery.start(FakeServer(FakeOpenAI()).serve)
    one = f'providers:\n  ollama:\n    deployments:\n      - {{name: gpu-a, base_url: "{first.url}"}}\n'
    two = one + f'      - {{name: gpu-b, base_url: "{second.url}"}}\n'
    path = tmp_path / "providers.yaml"
    path.write_text(one)
    env = stack_env(first, cloud, PROVIDERS_PATH=str(path))
    with trio.fail_after(20):
        async with gateway_process(env) as gw:
            async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
                path.write_text(two)
                mark = len(gw.log)
                gw.proc.send_signal(signal.SIGHUP)
                await gw.wait_log(rb"deployments: gpu-b added", mark)
                await second.wait_requests(1)  # gpu-b is probed
                health = (await client.get("/v1/health")).json()["providers"]["ollama"]
                path.write_text("providers: [not, a, mapping]\n")
                mark = len(gw.log)
                gw.proc.send_signal(signal.SIGHUP)
                await gw.wait_log(rb"deployments not reloaded[^\n]*", mark)
                kept = (await client.get("/v1/health")).json()["providers"]["ollama"]
            assert gw.proc.poll() is None
    assert [d["name"] for d in health["deployments"]] == ["gpu-a", "gpu-b"]
    assert [d["name"] for d in kept["deployments"]] == ["gpu-a", "gpu-b"]
