"""SSE keep-alives while waiting for the first token: headers go out at once, comments do not
commit, fallback still happens behind them, and a chain that fails ends with an error event."""

from __future__ import annotations

import json
import pathlib

import trio

from tests.e2e.stack import Stack, start_stack
from tests.fakes.server import Reply, Stall, WaitFor
from tests.fakes.upstreams import ollama_line, ollama_stream, openai_chunk, openai_stream, sse

ALIASES = "aliases:\n  mana/x:\n    chain: [groq/llama-3.1-8b-instant, ollama/gemma3:4b]\n"


async def stream_lines(stack: Stack, model: str, on_keepalive: trio.Event) -> list[str]:
    body = {"model": model, "messages": [{"role": "user", "content": "x"}], "stream": True}
    lines: list[str] = []
    async with (
        stack.client() as client,
        client.stream("POST", "/v1/chat/completions", json=body) as r,
    ):
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line == ": keep-alive":
                on_keepalive.set()
            lines.append(line)
    return [line for line in lines if line]


async def test_keepalives_then_content(nursery: trio.Nursery, tmp_path: pathlib.Path) -> None:
    stack = await start_stack(nursery, STREAM_KEEPALIVE="0.05")
    seen = trio.Event()
    stack.ollama.script(
        "/api/chat",
        ollama_stream(ollama_line(""), WaitFor(seen), ollama_line("Hi"), ollama_line(done=True)),
    )
    with trio.fail_after(10):
        lines = await stream_lines(stack, "gemma3:4b", seen)
    assert lines[0] == ": keep-alive"
    data = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert data[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hi"}
    assert {d["model"] for d in data} == {"ollama/gemma3:4b"}
    assert lines[-1] == "data: [DONE]"


async def test_fallback_behind_keepalives(nursery: trio.Nursery, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "aliases.yaml"
    path.write_text(ALIASES)
    stack = await start_stack(nursery, STREAM_KEEPALIVE="0.05", ALIASES_PATH=str(path))
    seen = trio.Event()
    failing = openai_stream(
        openai_chunk("", role=True),
        WaitFor(seen),
        sse({"error": {"message": "overloaded", "code": 503}}),
    )
    stack.cloud.script("/v1/chat/completions", failing)
    with trio.fail_after(10):
        lines = await stream_lines(stack, "mana/x", seen)
    data = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert {d["model"] for d in data} == {"ollama/gemma3:4b"}  # the failed voice never shows
    assert lines[-1] == "data: [DONE]"


async def test_nothing_answered_behind_keepalives_is_an_error_event(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "aliases.yaml"
    path.write_text(ALIASES)
    stack = await start_stack(nursery, STREAM_KEEPALIVE="0.05", ALIASES_PATH=str(path))
    seen = trio.Event()
    stack.cloud.script(
        "/v1/chat/completions", Reply(200, [WaitFor(seen), b"data: {broken\n\n"], chunked=True)
    )
    stack.ollama.script("/api/chat", Reply(500, [b'{"error": "no GPU"}']))
    with trio.fail_after(10):
        lines = await stream_lines(stack, "mana/x", seen)
    assert lines[0] == ": keep-alive"
    error = json.loads(lines[-1][6:])["error"]
    assert error["code"] == "all_providers_failed"
    assert [a["model"] for a in error["attempts"]] == [
        "groq/llama-3.1-8b-instant",
        "ollama/gemma3:4b",
    ]
    assert "data: [DONE]" not in lines


async def test_disconnect_while_waiting_cancels_the_walk(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery, STREAM_KEEPALIVE="0.05", FIRST_TOKEN_TIMEOUT="30")
    stack.ollama.script("/api/chat", ollama_stream(ollama_line(""), Stall()))
    body = {"model": "gemma3:4b", "messages": [{"role": "user", "content": "x"}], "stream": True}
    with trio.fail_after(10):
        async with (
            stack.client() as client,
            client.stream("POST", "/v1/chat/completions", json=body) as r,
        ):
            async for line in r.aiter_lines():
                if line == ": keep-alive":
                    break
        left = trio.current_time()
        await stack.ollama.requests[-1].closed.wait()
        assert trio.current_time() - left < 1.0
