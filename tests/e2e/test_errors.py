"""Bad input never reaches a provider and never yields a 500; upstream failures map to the
taxonomy; every error has the OpenAI shape."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
import openai
import pytest
import trio

from tests.e2e.stack import GATEWAY_KEY, UPSTREAM_KEY, start_stack
from tests.fakes.server import Cut, Reply, Reset, Stall
from tests.fakes.upstreams import openai_error

MSG = [{"role": "user", "content": "hi"}]


def assert_error_shape(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert {"message", "type", "param", "code"} <= error.keys()
    if code is not None:
        assert error["code"] == code
    return dict(error)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "gemma3:4b"}', "messages"),
        (b'{"model": "gemma3:4b", "messages": []}', "messages"),
        (b'{"model": "gemma3:4b", "messages": "hi"}', "messages"),
        (
            b'{"model": "gemma3:4b", "messages": [{"role": "wizard", "content": "x"}]}',
            "messages[0].role",
        ),
        (b'{"model": "gemma3:4b", "messages": [{"role": "user"}]}', "messages[0].content"),
        (
            b'{"model": "gemma3:4b", "messages": [{"role": "user", "content": 3}]}',
            "messages[0].content",
        ),
        (
            b'{"model": "gemma3:4b", "messages": [{"role": "tool", "content": "x"}]}',
            "messages[0].tool_call_id",
        ),
        (
            b'{"model": "gemma3:4b", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}',
            "temperature",
        ),
        (
            b'{"model": "gemma3:4b", "messages": [{"role": "user", "content": "x"}], "temperature": 3}',
            "temperature",
        ),
        (
            b'{"model": "gemma3:4b", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1.5}',
            "max_tokens",
        ),
        (
            b'{"model": "gemma3:4b", "messages": [{"role": "user", "content": "x"}], "stop": [1]}',
            "stop",
        ),
        (
            b'{"model": "gemma3:4b", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
            "stream",
        ),
        (
            b'{"model": "gemma3:4b", "messages": [{"role": "user", "content": "x"}], "seed": true}',
            "seed",
        ),
        (b'{"model": "groq/", "messages": [{"role": "user", "content": "x"}]}', "model"),
    ],
)
async def test_bad_chat_requests_are_400_naming_the_field(
    nursery: trio.Nursery, body: bytes, param: str | None
) -> None:
    stack = await start_stack(nursery)
    with trio.fail_after(10):
        async with stack.client() as client:
            r = await client.post("/v1/chat/completions", content=body)
    error = assert_error_shape(r, 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert stack.ollama.requests == [] and stack.cloud.requests == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"model": "nomic-embed-text"}', "input"),
        (b'{"model": "nomic-embed-text", "input": []}', "input"),
        (b'{"model": "nomic-embed-text", "input": [1.5]}', "input"),
        (
            b'{"model": "nomic-embed-text", "input": "x", "encoding_format": "hex"}',
            "encoding_format",
        ),
        (b'{"model": "nomic-embed-text", "input": "x", "dimensions": 0}', "dimensions"),
    ],
)
async def test_bad_embedding_requests_are_400(
    nursery: trio.Nursery, body: bytes, param: str
) -> None:
    stack = await start_stack(nursery)
    with trio.fail_after(10):
        async with stack.client() as client:
            r = await client.post("/v1/embeddings", content=body)
    assert assert_error_shape(r, 400)["param"] == param


async def test_unknown_route_and_wrong_method(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    with trio.fail_after(10):
        async with stack.client() as client:
            missing = await client.get("/v1/nothing-here")
            wrong = await client.get("/v1/chat/completions")
    assert_error_shape(missing, 404)
    assert_error_shape(wrong, 405)
    assert "POST" in wrong.headers["allow"]


async def test_oversized_body_is_413_without_being_read(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery, MAX_REQUEST_BYTES="4096")
    big = {"model": "gemma3:4b", "messages": [{"role": "user", "content": "x" * 1_000_000}]}
    with trio.fail_after(10):
        async with stack.client() as client:
            r = await client.post("/v1/chat/completions", json=big)
        async with stack.sdk() as sdk:
            with pytest.raises(openai.APIStatusError) as raised:
                await sdk.chat.completions.create(model="gemma3:4b", messages=big["messages"])  # type: ignore[arg-type]
    assert_error_shape(r, 413, "payload_too_large")
    assert raised.value.status_code == 413
    assert stack.ollama.requests == []


async def test_gateway_keys_guard_v1_but_not_health(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery, MANA_LLM_API_KEYS=f"other, {GATEWAY_KEY}")
    with trio.fail_after(10):
        async with stack.client() as client:
            anonymous = await client.get("/v1/models")
            wrong = await client.get("/v1/models", headers={"authorization": "Bearer nope"})
            right = await client.get(
                "/v1/models", headers={"authorization": f"Bearer {GATEWAY_KEY}"}
            )
            health = await client.get("/health")
            metrics = await client.get("/metrics")
        async with stack.sdk("nope") as sdk:
            with pytest.raises(openai.AuthenticationError):
                await sdk.models.list()
    assert_error_shape(anonymous, 401, "invalid_api_key")
    assert_error_shape(wrong, 401)
    assert right.status_code == 200
    assert health.status_code == 200 and metrics.status_code == 200


async def test_unconfigured_provider_names_the_missing_variable(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    with trio.fail_after(10):
        async with stack.client() as client:
            r = await client.post(
                "/v1/chat/completions", json={"model": "together/some-model", "messages": MSG}
            )
    error = assert_error_shape(r, 503, "provider_not_configured")
    assert "TOGETHER_API_KEY" in error["message"]
    assert r.headers["x-should-retry"] == "false"


async def test_unknown_alias_is_404(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    with trio.fail_after(10):
        async with stack.client() as client:
            r = await client.post(
                "/v1/chat/completions", json={"model": "mana/nonexistent", "messages": MSG}
            )
    assert assert_error_shape(r, 404, "model_not_found")["param"] == "model"


@pytest.mark.parametrize(
    ("reply", "status", "code"),
    [
        (openai_error(500, "boom"), 502, "upstream_error"),
        (openai_error(503, "overloaded"), 502, "upstream_error"),
        (
            openai_error(429, "slow down", "rate_limit_exceeded", **{"retry-after": "7"}),
            429,
            "rate_limit_exceeded",
        ),
        (
            openai_error(401, f"Invalid API key provided: Bearer {UPSTREAM_KEY}"),
            502,
            "upstream_auth_failed",
        ),
        (openai_error(402, "no credits"), 502, "upstream_auth_failed"),
        (openai_error(400, "too long", "context_length_exceeded"), 400, "context_length_exceeded"),
        (openai_error(400, "bad param"), 400, "invalid_request"),
        (openai_error(422, "unprocessable"), 422, "invalid_request"),
        (openai_error(504, "gateway timeout"), 504, "upstream_timeout"),
        (
            Reply(502, [b"<html>bad gateway</html>"], {"content-type": "text/html"}),
            502,
            "upstream_error",
        ),
        (Reply(200, [b"not json"]), 502, "upstream_protocol_error"),
        (Reply(200, [Reset()]), 502, "upstream_error"),
        (Reply(200, [b'{"id": 1', Cut()], chunked=True), 502, "upstream_error"),
    ],
)
async def test_upstream_failures_map_to_the_taxonomy(
    nursery: trio.Nursery, reply: Reply, status: int, code: str
) -> None:
    stack = await start_stack(nursery)
    stack.cloud.script("/v1/chat/completions", reply)
    with trio.fail_after(10):
        async with stack.client() as client:
            r = await client.post(
                "/v1/chat/completions", json={"model": "groq/llama-3.1-8b-instant", "messages": MSG}
            )
    error = assert_error_shape(r, status, code)
    assert error["provider"] == "groq"
    assert UPSTREAM_KEY not in r.text
    assert error["attempts"][0]["model"] == "groq/llama-3.1-8b-instant"
    if status == 429:
        assert r.headers["retry-after"] == "7"


async def test_upstream_model_not_found_is_404_for_the_sdk(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    with trio.fail_after(10):
        async with stack.sdk() as sdk:
            with pytest.raises(openai.NotFoundError) as raised:
                await sdk.chat.completions.create(model="ollama/missing:1b", messages=MSG)  # type: ignore[arg-type]
    assert "missing:1b" in str(raised.value)


async def test_unreachable_upstream_is_502(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery, OLLAMA_URL="http://127.0.0.1:1")
    with trio.fail_after(10):
        async with stack.client() as client:
            r = await client.post(
                "/v1/chat/completions", json={"model": "gemma3:4b", "messages": MSG}
            )
    message = assert_error_shape(r, 502, "upstream_error")["message"]
    assert message == "ollama is unreachable (connect failed; check OLLAMA_URL=http://127.0.0.1:1)"


async def test_upstream_that_never_answers_is_bounded_by_its_timeout(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery, OLLAMA_TIMEOUT="0.5")
    stack.ollama.script("/api/chat", Reply(200, [Stall()], chunked=True))
    with trio.fail_after(10):
        async with stack.client() as client:
            r = await client.post(
                "/v1/chat/completions", json={"model": "gemma3:4b", "messages": MSG}
            )
        await stack.ollama.requests[-1].closed.wait()
    assert_error_shape(r, 504, "upstream_timeout")


async def test_an_upstream_answer_larger_than_the_bound_is_a_502(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery, MAX_UPSTREAM_RESPONSE_BYTES="4096")
    big = {"message": {"role": "assistant", "content": "x" * 10_000}, "done": True}
    stack.ollama.script("/api/chat", Reply.json(big))
    stack.ollama.script("/api/embed", Reply.json({"embeddings": [[0.5] * 2000]}))
    with trio.fail_after(10):
        chat = await stack.chat({"model": "gemma3:4b", "messages": MSG})
        async with stack.client() as client:
            embed = await client.post(
                "/v1/embeddings", json={"model": "nomic-embed-text", "input": "a"}
            )
    for r in (chat, embed):
        error = assert_error_shape(r, 502, "upstream_protocol_error")
        assert error["message"] == (
            "ollama sent an answer larger than 4096 bytes (MAX_UPSTREAM_RESPONSE_BYTES)"
        )


async def test_a_compressed_answer_is_decoded_and_its_decoded_size_bounded(
    nursery: trio.Nursery,
) -> None:
    """An upstream that compresses (a proxy in front of it, say) is read decoded: the answer
    arrives whole, and a small compressed body that inflates past the bound is refused."""
    stack = await start_stack(nursery, MAX_UPSTREAM_RESPONSE_BYTES="4096")
    small = {"message": {"role": "assistant", "content": "hi"}, "done": True}
    bomb = {"message": {"role": "assistant", "content": "x" * 100_000}, "done": True}
    gzipped = {"content-type": "application/json", "content-encoding": "gzip"}
    for answer in (small, bomb):
        body = gzip.compress(json.dumps(answer).encode())
        stack.ollama.script("/api/chat", Reply(200, [body], gzipped))
    assert len(gzip.compress(json.dumps(bomb).encode())) < 4096
    with trio.fail_after(10):
        decoded = await stack.chat({"model": "gemma3:4b", "messages": MSG})
        refused = await stack.chat({"model": "gemma3:4b", "messages": MSG})
    assert decoded.status_code == 200
    assert decoded.json()["choices"][0]["message"]["content"] == "hi"
    assert_error_shape(refused, 502, "upstream_protocol_error")


async def test_a_stream_line_without_end_is_a_502_not_a_growing_buffer(
    nursery: trio.Nursery,
) -> None:
    stack = await start_stack(nursery)
    endless = [b'{"message": {"content": "'] + [b"x" * (1 << 20)] * 17  # 17 MiB, no newline
    stack.ollama.script("/api/chat", Reply(200, list(endless), chunked=True))
    with trio.fail_after(10):
        r = await stack.chat({"model": "gemma3:4b", "messages": MSG, "stream": True})
    error = assert_error_shape(r, 502, "upstream_protocol_error")
    assert "longer than" in error["message"]
