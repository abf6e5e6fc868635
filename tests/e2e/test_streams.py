"""The commit rule end to end: failures before the first content are ordinary errors (no stream
is started); after it, the stream ends with an error event and no [DONE]. Client disconnects
close the upstream connection."""

from __future__ import annotations

import json
import re

import httpx
import openai
import pytest
import trio

from tests.e2e.stack import Stack, start_stack
from tests.fakes.server import Cut, Part, Reply, Stall
from tests.fakes.upstreams import ollama_line, ollama_stream, openai_chunk, openai_stream, sse

MSG = [{"role": "user", "content": "hi"}]
GROQ = "groq/llama-3.1-8b-instant"


async def post_stream(stack: Stack, model: str) -> httpx.Response:
    return await stack.chat({"model": model, "messages": MSG, "stream": True})


def events(r: httpx.Response) -> list[str]:
    return [part[len("data: ") :] for part in r.text.split("\n\n") if part.startswith("data: ")]


@pytest.mark.parametrize(
    "reply",
    [
        openai_stream(
            b": OPENROUTER PROCESSING\n\n",
            openai_chunk("", role=True),
            sse({"error": {"message": "overloaded", "code": 502}}),
        ),
        openai_stream(openai_chunk("", role=True), Cut()),
        openai_stream(openai_chunk("", role=True), sse("[DONE]")),
        openai_stream(openai_chunk("", role=True), openai_chunk(finish="stop"), sse("[DONE]")),
        openai_stream(b"data: {broken\n\n"),
    ],
    ids=[
        "in-band-error",
        "cut-before-content",
        "empty-stream",
        "finish-without-content",
        "malformed",
    ],
)
async def test_failure_before_commit_is_a_plain_error_response(
    nursery: trio.Nursery, reply: Reply
) -> None:
    stack = await start_stack(nursery)
    stack.cloud.script("/v1/chat/completions", reply)
    with trio.fail_after(10):
        r = await post_stream(stack, GROQ)
    assert r.status_code == 502
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["attempts"][0]["model"] == GROQ


async def test_first_token_timeout_before_commit(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery, FIRST_TOKEN_TIMEOUT="0.3")
    stack.cloud.script(
        "/v1/chat/completions",
        openai_stream(b": OPENROUTER PROCESSING\n\n", openai_chunk("", role=True), Stall()),
    )
    with trio.fail_after(10):
        r = await post_stream(stack, GROQ)
        await stack.cloud.requests[-1].closed.wait()
    assert r.status_code == 504
    assert "first token" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        ([Cut()], "(cut the stream|closed the connection mid-response)"),
        ([Stall()], "stalled"),
        ([b"data: {broken\n\n"], "not JSON"),
        ([sse({"error": {"message": "upstream exploded", "code": 500}})], "upstream exploded"),
    ],
    ids=["cut", "stall", "malformed", "in-band-error"],
)
async def test_failure_after_commit_ends_with_error_event_and_no_done(
    nursery: trio.Nursery, tail: list[Part], message: str
) -> None:
    stack = await start_stack(nursery, STREAM_IDLE_TIMEOUT="0.3")
    stack.cloud.script(
        "/v1/chat/completions",
        openai_stream(openai_chunk("Hel", role=True), openai_chunk("lo"), *tail),
    )
    with trio.fail_after(10):
        r = await post_stream(stack, GROQ)
    assert r.status_code == 200
    got = events(r)
    assert "[DONE]" not in got
    assert [json.loads(e)["choices"][0]["delta"].get("content") for e in got[:2]] == ["Hel", "lo"]
    error = json.loads(got[-1])["error"]
    assert re.search(message, error["message"])
    assert {"message", "type", "param", "code"} <= error.keys()


async def test_sdk_raises_on_a_cut_after_commit(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    stack.ollama.script("/api/chat", ollama_stream(ollama_line("Hel"), ollama_line("lo"), Cut()))
    received: list[str] = []
    with trio.fail_after(10):
        async with stack.sdk() as sdk:
            stream = await sdk.chat.completions.create(
                model="gemma3:4b",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
            )

            async def consume() -> None:
                async for chunk in stream:
                    received.append(chunk.choices[0].delta.content or "")

            with pytest.raises(openai.APIError, match=r"cut the stream|closed the connection mid-"):
                await consume()
    assert "".join(received) == "Hello"


async def test_ollama_in_band_error_after_commit(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    stack.ollama.script(
        "/api/chat", ollama_stream(ollama_line("Hi"), b'{"error":"out of memory"}\n')
    )
    with trio.fail_after(10):
        r = await post_stream(stack, "gemma3:4b")
    got = events(r)
    assert "[DONE]" not in got
    assert "out of memory" in json.loads(got[-1])["error"]["message"]


async def test_finish_then_close_without_done_is_a_complete_answer(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    stack.cloud.script(
        "/v1/chat/completions",
        openai_stream(openai_chunk("Hi", role=True), openai_chunk(finish="stop")),
    )
    with trio.fail_after(10):
        r = await post_stream(stack, GROQ)
    got = events(r)
    assert got[-1] == "[DONE]"
    assert json.loads(got[-2])["choices"][0]["finish_reason"] == "stop"


async def test_ollama_done_with_length_and_content_on_the_final_line(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    stack.ollama.script(
        "/api/chat",
        ollama_stream(ollama_line(""), ollama_line("Hi", done=True, done_reason="length")),
    )
    with trio.fail_after(10):
        r = await post_stream(stack, "gemma3:4b")
    chunks = [json.loads(e) for e in events(r)[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hi"}
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "length"}


NO_TIMEOUTS = {"FIRST_TOKEN_TIMEOUT": "30", "STREAM_IDLE_TIMEOUT": "30", "OLLAMA_TIMEOUT": "30"}


async def wait_closed_soon_after(stack: Stack, left_at: float) -> None:
    """Only the client's disconnect can close the upstream here (every gateway timeout is 30 s)."""
    await stack.ollama.requests[-1].closed.wait()
    assert trio.current_time() - left_at < 1.0


async def test_client_disconnect_mid_stream_closes_the_upstream(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery, **NO_TIMEOUTS)
    stack.ollama.script("/api/chat", ollama_stream(ollama_line("Hi"), Stall()))
    with trio.fail_after(10):
        async with stack.client() as client:
            body = {"model": "gemma3:4b", "messages": MSG, "stream": True}
            async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                async for line in r.aiter_lines():
                    if "Hi" in line:
                        break
        left_at = trio.current_time()
        await wait_closed_soon_after(stack, left_at)


@pytest.mark.parametrize("stream", [True, False])
async def test_client_disconnect_before_the_first_byte_closes_the_upstream(
    nursery: trio.Nursery, stream: bool
) -> None:
    stack = await start_stack(nursery, **NO_TIMEOUTS)
    stack.ollama.script("/api/chat", Reply(200, [Stall()]))
    with trio.fail_after(10):
        async with stack.client() as client:
            with trio.move_on_after(0.5):  # the client gives up; its connection closes
                body = {"model": "gemma3:4b", "messages": MSG, "stream": stream}
                await client.post("/v1/chat/completions", json=body)
        left_at = trio.current_time()
        assert stack.ollama.requests, "the gateway never reached the upstream"
        await wait_closed_soon_after(stack, left_at)


async def test_a_finished_stream_gives_its_upstream_connection_back(nursery: trio.Nursery) -> None:
    """[DONE] is followed by the end of the chunked body: read it, so the next request reuses
    the connection instead of paying for a new one."""
    stack = await start_stack(nursery)
    opened = stack.cloud.connections  # by the start-up probes, which give theirs back too
    with trio.fail_after(10):
        for model in (GROQ, GROQ, "ollama/gemma3:4b", "ollama/gemma3:4b"):
            r = await post_stream(stack, model)
            assert r.text.endswith("data: [DONE]\n\n")
    chats = [r for r in stack.cloud.requests if r.path == "/v1/chat/completions"]
    assert len({r.connection for r in chats}) == 1
    assert stack.cloud.connections == opened  # no connection was opened for the chats
    ollama = [r for r in stack.ollama.requests if r.path == "/api/chat"]
    assert len({r.connection for r in ollama}) == 1


async def test_a_client_that_stops_reading_has_its_stream_ended_not_the_upstream_blamed(
    nursery: trio.Nursery,
) -> None:
    """The client reads the head, then nothing for longer than STREAM_IDLE_TIMEOUT while the
    upstream keeps sending: the gateway's sends back up, the stream is ended with a final 408
    event (no [DONE]) once the client reads again, and the provider stays healthy."""
    stack = await start_stack(nursery, STREAM_IDLE_TIMEOUT="0.3", FIRST_TOKEN_TIMEOUT="5")
    word = "w" * 400
    parts: list[Part] = [openai_chunk(word, role=True)]
    parts += [openai_chunk(word)] * 20_000
    stack.cloud.script("/v1/chat/completions", openai_stream(*parts, openai_chunk(finish="stop")))
    body = json.dumps(
        {"model": "groq/llama-3.1-8b-instant", "messages": MSG, "stream": True}
    ).encode()
    host, port = stack.base_url.removeprefix("http://").split(":")
    with trio.fail_after(20):
        sock = trio.socket.socket()
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
        await sock.connect((host, int(port)))
        stream = trio.SocketStream(sock)
        await stream.send_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%b" % (len(body), body)
        )
        received = await stream.receive_some(1024)
        assert received.startswith(b"HTTP/1.1 200")
        await trio.sleep(1.5)  # reads nothing: every buffer fills, the gateway's sends wait
        while not received.endswith(b"0\r\n\r\n"):
            part = await stream.receive_some(1 << 16)
            assert part, "the connection closed before the stream ended"
            received += part
        await stream.aclose()
        async with stack.client() as client:
            health = (await client.get("/v1/health")).json()
    tail = received[-2000:].decode("latin-1")
    assert '"code":"request_timeout"' in tail and "read nothing of the stream" in tail
    assert "[DONE]" not in tail
    assert len(received) < 20_000 * 400  # ended early, not relayed to the end
    groq = health["providers"]["groq"]
    assert groq["state"] == "closed" and groq["consecutive_failures"] == 0
