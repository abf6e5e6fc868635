"""The drain deadline through the real service: after SIGTERM (here the stack's shutdown
event) every exchange still open at GRACEFUL_TIMEOUT is cut and told so: a stream's final
error event (no [DONE]), a 503 for an answer not started; counted and logged as the
gateway's own cut (`server_shutting_down`), never as the client leaving (499)."""

from __future__ import annotations

import json
import logging

import httpx
import openai
import pytest
import trio

from tests.e2e.stack import start_stack
from tests.fakes.server import Reply, Stall
from tests.fakes.upstreams import ollama_line, ollama_stream

MSG = [{"role": "user", "content": "hi"}]


async def test_the_drain_deadline_ends_open_requests_with_their_reason(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    stack = await start_stack(nursery, GRACEFUL_TIMEOUT="1", STREAM_IDLE_TIMEOUT="30")
    stack.ollama.script("/api/chat", ollama_stream(ollama_line("Hi"), Stall()))
    stack.ollama.script("/api/chat", Reply(200, [Stall()]))  # a whole answer that never comes
    caplog.set_level(logging.INFO, logger="mana_llm.request")
    plain: list[httpx.Response] = []

    async def ask_plain() -> None:
        plain.append(await stack.chat({"model": "ollama/gemma3:4b", "messages": MSG}))

    with trio.fail_after(10):
        async with stack.client() as client:
            body = {"model": "ollama/gemma3:4b", "messages": MSG, "stream": True}
            async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                lines = r.aiter_lines()
                assert "Hi" in await anext(lines)
                async with trio.open_nursery() as requests:
                    requests.start_soon(ask_plain)
                    await stack.ollama.wait_requests(2)
                    stopped = trio.current_time()
                    stack.shutdown.set()
                    rest = [line async for line in lines if line.startswith("data: ")]
                    took = trio.current_time() - stopped
    assert rest != [] and rest[-1] != "data: [DONE]"
    error = json.loads(rest[-1][6:])["error"]
    assert error["code"] == "server_shutting_down" and error["type"] == "server_error"
    assert "GRACEFUL_TIMEOUT" in error["message"]
    assert 1.0 <= took < 2.0  # at the gateway's deadline, before hypercorn's own
    [answer] = plain
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "server_shutting_down"
    assert answer.headers.get("x-should-retry") != "false"  # another gateway will answer
    assert stack.metric("mana_llm_errors_total", error_type="server_shutting_down") == 2
    assert stack.metric("mana_llm_errors_total", error_type="client_disconnected") == 0
    logged = [r.__dict__["fields"] for r in caplog.records if r.msg == "request"]
    assert sorted((f["stream"], f["status"], f["error_type"]) for f in logged) == [
        (False, 503, "server_shutting_down"),
        (True, 503, "server_shutting_down"),
    ]


async def test_the_sdk_sees_the_shutdown_not_a_bare_connection_error(
    nursery: trio.Nursery,
) -> None:
    stack = await start_stack(nursery, GRACEFUL_TIMEOUT="1", STREAM_IDLE_TIMEOUT="30")
    stack.ollama.script("/api/chat", ollama_stream(ollama_line("Hi"), Stall()))
    with trio.fail_after(10):
        async with stack.sdk() as sdk:
            stream = await sdk.chat.completions.create(
                model="ollama/gemma3:4b", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            first = await anext(aiter(stream))
            assert first.choices[0].delta.content == "Hi"
            stack.shutdown.set()
            with pytest.raises(openai.APIError, match="shutting down"):
                async for _ in stream:
                    pass
