"""Chat completions through the real service, both provider families, httpx and the SDK."""

from __future__ import annotations

import json

import trio

from tests.e2e.stack import UPSTREAM_KEY, start_stack
from tests.fakes.upstreams import CREATED, WORDS

ANSWER = "".join(WORDS)


def parse_sse(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.split("\n\n") if line.startswith("data: ")]


async def test_ollama_non_streaming_translates_both_ways(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    body = {
        "model": "gemma3:4b",
        "messages": [
            {"role": "developer", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "there"}],
            },
        ],
        "temperature": 0.2,
        "max_completion_tokens": 50,
        "max_tokens": 10,
        "stop": "END",
        "seed": 7,
    }
    with trio.fail_after(10):
        async with stack.client() as client:
            r = await client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["x-mana-llm-resolved"] == "ollama/gemma3:4b"
    data = r.json()
    assert data["model"] == "ollama/gemma3:4b"
    assert data["object"] == "chat.completion"
    assert data["created"] == CREATED
    assert data["id"].startswith("chatcmpl-")
    assert data["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": ANSWER, "refusal": None},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert data["usage"] == {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
    sent = stack.ollama.requests[-1].json()
    assert sent == {
        "model": "gemma3:4b",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi\nthere"},
        ],
        "stream": False,
        "options": {"temperature": 0.2, "seed": 7, "num_predict": 50, "stop": ["END"]},
    }


async def test_unset_sampling_parameters_stay_unset_for_ollama(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    with trio.fail_after(10):
        async with stack.client() as client:
            r = await client.post(
                "/v1/chat/completions",
                json={"model": "ollama/gemma3:4b", "messages": [{"role": "user", "content": "x"}]},
            )
    assert r.status_code == 200
    assert "options" not in stack.ollama.requests[-1].json()


async def test_ollama_stream_through_sdk_with_usage(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    with trio.fail_after(10):
        async with stack.sdk() as sdk:
            stream = await sdk.chat.completions.create(
                model="gemma3:4b",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]
    assert {c.model for c in chunks} == {"ollama/gemma3:4b"}
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 12
    assert all(c.usage is None for c in chunks[:-1])
    assert stack.ollama.requests[-1].json()["stream"] is True


async def test_stream_without_include_usage_has_no_usage_and_ends_with_done(
    nursery: trio.Nursery,
) -> None:
    stack = await start_stack(nursery)
    with trio.fail_after(10):
        async with stack.client() as client:
            r = await client.post(
                "/v1/chat/completions",
                json={
                    "model": "groq/llama-3.1-8b-instant",
                    "messages": [{"role": "user", "content": "x"}],
                    "stream": True,
                },
            )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-mana-llm-resolved"] == "groq/llama-3.1-8b-instant"
    events = parse_sse(r.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["model"] == "groq/llama-3.1-8b-instant" for c in chunks)
    assert all(c.get("usage") is None for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == ANSWER
    assert [
        c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]
    ] == ["stop"]
    # the gateway asks the upstream for usage anyway (accounting), and says so only upstream
    assert stack.cloud.requests[-1].json()["stream_options"] == {"include_usage": True}


async def test_cloud_passthrough_keeps_unknown_fields_and_rewrites_model(
    nursery: trio.Nursery,
) -> None:
    stack = await start_stack(nursery)
    body = {
        "model": "openrouter/meta-llama/llama-3.1-8b-instruct",
        "messages": [{"role": "user", "content": "x"}],
        "logit_bias": {"42": 1},
        "some_future_field": {"nested": [1, 2]},
        "temperature": 0,
    }
    with trio.fail_after(10):
        async with stack.client() as client:
            r = await client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["x-mana-llm-resolved"] == "openrouter/meta-llama/llama-3.1-8b-instruct"
    assert r.json()["model"] == "openrouter/meta-llama/llama-3.1-8b-instruct"
    assert r.json()["system_fingerprint"] == "fp_fake"
    upstream = stack.cloud.requests[-1]
    assert upstream.path == "/v1/chat/completions"
    assert upstream.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert upstream.json() == {**body, "model": "meta-llama/llama-3.1-8b-instruct", "stream": False}


async def test_sdk_plain_and_streaming_against_a_cloud(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    with trio.fail_after(10):
        async with stack.sdk() as sdk:
            completion = await sdk.chat.completions.create(
                model="groq/llama-3.1-8b-instant", messages=[{"role": "user", "content": "hi"}]
            )
            stream = await sdk.chat.completions.create(
                model="groq/llama-3.1-8b-instant",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [c async for c in stream]
    assert completion.choices[0].message.content == ANSWER
    assert completion.model == "groq/llama-3.1-8b-instant"
    assert completion.usage is not None and completion.usage.total_tokens == 12
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 7


async def test_cors_lets_allowed_origins_send_and_read_the_gateway_headers(
    nursery: trio.Nursery,
) -> None:
    stack = await start_stack(nursery, CORS_ORIGINS="https://app.example")
    messages = [{"role": "user", "content": "hi"}]
    body = {"model": "groq/llama-3.1-8b-instant", "messages": messages, "temperature": 0}
    with trio.fail_after(10):
        async with stack.client() as client:
            preflight = await client.options(
                "/v1/chat/completions",
                headers={
                    "origin": "https://app.example",
                    "access-control-request-method": "POST",
                    "access-control-request-headers": "authorization, cache-control",
                },
            )
            allowed = await client.post(
                "/v1/chat/completions", json=body, headers={"origin": "https://app.example"}
            )
            other = await client.post(
                "/v1/chat/completions", json=body, headers={"origin": "https://evil.example"}
            )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    allow = preflight.headers["access-control-allow-headers"].lower()
    assert {"authorization", "cache-control", "x-mana-llm-cache"} <= {
        h.strip() for h in allow.split(",")
    }
    exposed = allowed.headers["access-control-expose-headers"].lower()
    assert "x-mana-llm-resolved" in exposed and "x-mana-llm-cache" in exposed
    assert allowed.headers["x-mana-llm-cache"] == "MISS"
    assert "access-control-allow-origin" not in other.headers


async def test_cors_and_the_request_id_on_streams_and_errors_of_the_inference_routes(
    nursery: trio.Nursery,
) -> None:
    """The inference routes are served in front of Quart: their streams, their errors and a
    refused key carry the same CORS headers and request id as Quart's routes."""
    stack = await start_stack(nursery, CORS_ORIGINS="https://app.example", MANA_LLM_API_KEYS="k-1")
    origin = {"origin": "https://app.example", "authorization": "Bearer k-1"}
    stream = {
        "model": "groq/llama-3.1-8b-instant",
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    with trio.fail_after(10):
        async with stack.client() as client:
            async with client.stream(
                "POST", "/v1/chat/completions", json=stream, headers=origin
            ) as streamed:
                events = [line async for line in streamed.aiter_lines() if line]
            invalid = await client.post("/v1/embeddings", content=b"[", headers=origin)
            refused = await client.post(
                "/v1/chat/completions",
                json=stream,
                headers={"origin": "https://app.example", "x-request-id": "rid-7"},
            )
    assert events[-1] == "data: [DONE]"
    for response in (streamed, invalid, refused):
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        assert "x-mana-llm-resolved" in response.headers["access-control-expose-headers"].lower()
        assert response.headers["x-request-id"]
    assert streamed.headers["content-type"] == "text/event-stream"
    assert streamed.headers["x-mana-llm-resolved"] == "groq/llama-3.1-8b-instant"
    assert invalid.status_code == 400 and invalid.json()["error"]["type"] == "invalid_request_error"
    assert refused.status_code == 401 and refused.headers["x-request-id"] == "rid-7"
