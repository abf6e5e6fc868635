"""Provider fidelity end to end: tools, vision, JSON modes, reasoning, limits, the providers
file; responses and chunks validated against schemas derived from the OpenAI spec."""

from __future__ import annotations

import base64
import json
import pathlib
from typing import Any

import jsonschema
import pytest
import trio

from tests.e2e.stack import Stack, start_stack
from tests.fakes.server import FakeServer, Reply, Request
from tests.fakes.upstreams import CREATED, TEXT_ONLY, openai_stream, sse

DEFS = json.loads((pathlib.Path(__file__).parents[1] / "fixtures/openai_schemas.json").read_text())[
    "$defs"
]
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
MSG: Any = [{"role": "user", "content": "weather in Paris?"}]


# one validator per response shape, built once (jsonschema.validate re-checks the schema itself
# on every call, which cost seconds over this file)
VALIDATORS = {
    name: jsonschema.Draft202012Validator({"$ref": f"#/$defs/{name}", "$defs": DEFS})
    for name in (
        "CreateChatCompletionResponse",
        "CreateChatCompletionStreamResponse",
        "CreateEmbeddingResponse",
        "ListModelsResponse",
        "ErrorResponse",
    )
}


def valid(instance: Any, name: str) -> None:
    VALIDATORS[name].validate(instance)


def events(text: str) -> list[Any]:
    """The JSON events of an SSE body ([DONE] left out)."""
    return [json.loads(e[6:]) for e in text.split("\n\n") if e.startswith("data: {")]


def ollama_body(stack: Stack) -> Any:
    return [r for r in stack.ollama.requests if r.path == "/api/chat"][-1].json()


async def test_tool_call_round_trip_through_the_sdk(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    with trio.fail_after(10):
        async with stack.sdk() as sdk:
            first = await sdk.chat.completions.create(
                model="gemma3:4b", messages=MSG, tools=[WEATHER]
            )
            calls = first.choices[0].message.tool_calls
            assert calls is not None
            call: Any = calls[0]
            assert first.choices[0].finish_reason == "tool_calls"
            assert call.id.startswith("call_") and call.type == "function"
            assert call.function.name == "get_weather"
            assert json.loads(call.function.arguments) == {"city": "Paris", "days": 2}
            messages = [
                *MSG,
                first.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny"}'},
            ]
            second = await sdk.chat.completions.create(
                model="gemma3:4b", messages=messages, tools=[WEATHER]
            )
    assert second.choices[0].message.content == "It is sunny in Paris."
    sent = ollama_body(stack)["messages"]
    assert sent[1]["tool_calls"] == [
        {
            "id": call.id,
            "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}},
        }
    ]
    assert sent[2] == {
        "role": "tool",
        "content": '{"sky": "sunny"}',
        "tool_name": "get_weather",
        "tool_call_id": call.id,
    }
    assert ollama_body(stack)["tools"] == [WEATHER]


async def test_tool_calls_raw_shape_and_streaming(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    with trio.fail_after(10):
        plain = await stack.chat({"model": "gemma3:4b", "messages": MSG, "tools": [WEATHER]})
        streamed = await stack.chat(
            {"model": "gemma3:4b", "messages": MSG, "tools": [WEATHER], "stream": True}
        )
    data = plain.json()
    valid(data, "CreateChatCompletionResponse")
    assert data["choices"][0]["message"]["content"] is None
    chunks = [json.loads(e[6:]) for e in streamed.text.split("\n\n") if e.startswith("data: {")]
    for chunk in chunks:
        valid(chunk, "CreateChatCompletionStreamResponse")
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0]["tool_calls"][0]["index"] == 0
    assert deltas[0]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "tool_calls"


@pytest.mark.parametrize(
    ("choice", "tools_sent"),
    [
        ("none", None),
        ({"type": "function", "function": {"name": "other"}}, ["other"]),
        ("auto", ["get_weather", "other"]),
    ],
)
async def test_tool_choice(
    nursery: trio.Nursery, choice: Any, tools_sent: list[str] | None
) -> None:
    stack = await start_stack(nursery)
    other = {"type": "function", "function": {"name": "other", "parameters": {"type": "object"}}}
    with trio.fail_after(10):
        await stack.chat(
            {
                "model": "gemma3:4b",
                "messages": MSG,
                "tools": [WEATHER, other],
                "tool_choice": choice,
            },
        )
    sent = ollama_body(stack).get("tools")
    assert (None if sent is None else [t["function"]["name"] for t in sent]) == tools_sent


async def test_invalid_tool_call_arguments_are_a_400_naming_the_message(
    nursery: trio.Nursery,
) -> None:
    stack = await start_stack(nursery)
    bad = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}
        ],
    }
    with trio.fail_after(10):
        r = await stack.chat({"model": "gemma3:4b", "messages": [*MSG, bad]})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages[1].tool_calls[0].function.arguments"


def image_message(url: str) -> list[dict[str, Any]]:
    parts = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    return [{"role": "user", "content": parts}]


async def test_vision_data_uri(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    b64 = base64.b64encode(PNG).decode()
    with trio.fail_after(10):
        ok = await stack.chat(
            {"model": "gemma3:4b", "messages": image_message(f"data:image/png;base64,{b64}")}
        )
        broken = await stack.chat(
            {"model": "gemma3:4b", "messages": image_message("data:image/png;base64,@@@")}
        )
    assert ok.status_code == 200
    assert ollama_body(stack)["messages"][0] == {
        "role": "user",
        "content": "what is this?",
        "images": [b64],
    }
    assert broken.status_code == 400
    assert broken.json()["error"]["param"] == "messages[0].content[1]"


async def images_server(nursery: trio.Nursery) -> FakeServer:
    def serve(request: Request) -> Reply:
        if request.path == "/cat.png":
            return Reply(200, [PNG], {"content-type": "image/png"})
        return Reply(200, [b"<html>"], {"content-type": "text/html"})

    server: FakeServer = await nursery.start(FakeServer(serve).serve)
    return server


async def test_vision_fetched_url_allowed_for_loopback_in_settings(nursery: trio.Nursery) -> None:
    images = await images_server(nursery)
    stack = await start_stack(nursery, IMAGE_FETCH_ALLOW_NETWORKS="127.0.0.0/8")
    with trio.fail_after(10):
        ok = await stack.chat(
            {"model": "gemma3:4b", "messages": image_message(f"{images.url}/cat.png")}
        )
        html = await stack.chat(
            {"model": "gemma3:4b", "messages": image_message(f"{images.url}/page")}
        )
    assert ok.status_code == 200
    assert ollama_body(stack)["messages"][0]["images"] == [base64.b64encode(PNG).decode()]
    assert html.status_code == 400 and "not an image" in html.json()["error"]["message"]


async def test_an_image_url_is_fetched_once_per_request_whatever_the_attempts(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    images = await images_server(nursery)
    aliases = tmp_path / "aliases.yaml"
    # the first entry refuses images (a model-scoped refusal: the walk moves on)
    chain = f"chain: [ollama/{TEXT_ONLY}, ollama/gemma3:4b]"
    aliases.write_text(f"aliases:\n  mana/see:\n    {chain}\n")
    stack = await start_stack(
        nursery, IMAGE_FETCH_ALLOW_NETWORKS="127.0.0.0/8", ALIASES_PATH=str(aliases)
    )
    with trio.fail_after(10):
        r = await stack.chat(
            {"model": "mana/see", "messages": image_message(f"{images.url}/cat.png")}
        )
    assert r.status_code == 200 and r.headers["x-mana-llm-attempts"] == "2"
    chats = [q for q in stack.ollama.requests if q.path == "/api/chat"]
    assert len(chats) == 2  # both entries got the image...
    assert all(q.json()["messages"][0]["images"] == [base64.b64encode(PNG).decode()] for q in chats)
    assert [q.path for q in images.requests] == ["/cat.png"]  # ...fetched once


async def test_more_image_urls_than_allowed_is_a_400(nursery: trio.Nursery) -> None:
    images = await images_server(nursery)
    stack = await start_stack(
        nursery, IMAGE_FETCH_ALLOW_NETWORKS="127.0.0.0/8", IMAGE_FETCH_MAX_COUNT="2"
    )
    part = {"type": "image_url", "image_url": {"url": f"{images.url}/cat.png"}}
    message = {"role": "user", "content": [{"type": "text", "text": "?"}, part, part, part]}
    with trio.fail_after(10):
        r = await stack.chat({"model": "gemma3:4b", "messages": [message]})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages[0].content[3]"
    assert images.requests == []


async def test_vision_private_url_refused_by_default(nursery: trio.Nursery) -> None:
    images = await images_server(nursery)
    stack = await start_stack(nursery)
    with trio.fail_after(10):
        r = await stack.chat(
            {"model": "gemma3:4b", "messages": image_message(f"{images.url}/cat.png")}
        )
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == "messages[0].content[1]" and "private" in error["message"]
    assert images.requests == []  # refused before any connection


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        ({"type": "json_object"}, "json"),
        (
            {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
            {"type": "object"},
        ),
        ({"type": "text"}, None),
    ],
)
async def test_json_modes(nursery: trio.Nursery, response_format: Any, expected: Any) -> None:
    stack = await start_stack(nursery)
    with trio.fail_after(10):
        r = await stack.chat(
            {"model": "gemma3:4b", "messages": MSG, "response_format": response_format}
        )
    assert r.status_code == 200
    assert ollama_body(stack).get("format") == expected


async def test_reasoning_both_ways(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    with trio.fail_after(10):
        plain = await stack.chat(
            {"model": "gemma3:4b", "messages": MSG, "reasoning_effort": "xhigh"}
        )
        assert ollama_body(stack)["think"] == "max"
        streamed = await stack.chat(
            {"model": "gemma3:4b", "messages": MSG, "reasoning_effort": "none", "stream": True},
        )
        assert ollama_body(stack)["think"] is False
        thought = await stack.chat(
            {"model": "gemma3:4b", "messages": MSG, "reasoning_effort": "low", "stream": True},
        )
    assert plain.json()["choices"][0]["message"]["reasoning_content"] == "Let me think."
    assert "reasoning_content" not in streamed.text
    chunks = [json.loads(e[6:]) for e in thought.text.split("\n\n") if e.startswith("data: {")]
    assert chunks[0]["choices"][0]["delta"] == {
        "role": "assistant",
        "reasoning_content": "Let me think.",
    }


async def test_length_limited_answer_and_parameters(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    body = {
        "model": "gemma3:4b",
        "messages": MSG,
        "max_completion_tokens": 2,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "options": {"num_ctx": 16384, "top_k": 20},
        "keep_alive": "10m",
    }
    with trio.fail_after(10):
        r = await stack.chat(body)
        n2 = await stack.chat({"model": "gemma3:4b", "messages": MSG, "n": 2})
    data = r.json()
    valid(data, "CreateChatCompletionResponse")
    assert data["choices"][0]["finish_reason"] == "length"
    sent = ollama_body(stack)
    assert sent["options"] == {
        "num_predict": 2,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "num_ctx": 16384,
        "top_k": 20,
    }
    assert sent["keep_alive"] == "10m"
    assert n2.status_code == 400 and n2.json()["error"]["param"] == "n"


# OpenRouter passes nulls through where the spec has none (`system_fingerprint: null`, usage
# details null) and adds fields of its own (`provider`, `native_finish_reason`, `reasoning`)
def openrouter_completion() -> Reply:
    return Reply.json(
        {
            "id": "gen-1",
            "provider": "Groq",
            "model": "meta-llama/llama-3.1-8b-instruct",
            "object": "chat.completion",
            "created": CREATED,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "logprobs": None,
                    "finish_reason": "stop",
                    "native_finish_reason": "stop",
                    "message": {
                        "role": "assistant",
                        "content": "Hi.",
                        "refusal": None,
                        "reasoning": None,
                        "tool_calls": None,
                        "function_call": None,
                    },
                }
            ],
            "usage": {
                "prompt_tokens": 7,
                "completion_tokens": 2,
                "total_tokens": 9,
                "prompt_tokens_details": None,
                "completion_tokens_details": None,
            },
        }
    )


def openrouter_chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {
        "id": "gen-1",
        "provider": "Groq",
        "model": "meta-llama/llama-3.1-8b-instruct",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": None, "tool_calls": None, **delta},
                "finish_reason": finish,
                "native_finish_reason": finish,
                "logprobs": None,
            }
        ],
    }
    return sse(chunk)


async def test_every_answer_shape_validates(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    stack.cloud.script("/v1/chat/completions", openrouter_completion())
    usage = {"stream_options": {"include_usage": True}}
    with trio.fail_after(10):
        async with stack.client() as client:
            answers = [
                await client.post(
                    "/v1/chat/completions", json={"model": "openrouter/x", "messages": MSG}
                ),
                await client.post(
                    "/v1/chat/completions", json={"model": "gemma3:4b", "messages": MSG}
                ),
                await client.post(
                    "/v1/chat/completions",
                    json={"model": "groq/llama-3.1-8b-instant", "messages": MSG},
                ),
            ]
            stack.cloud.script(
                "/v1/chat/completions",
                openai_stream(
                    openrouter_chunk({"content": "Hi"}),
                    openrouter_chunk({"content": "."}),
                    openrouter_chunk({}, "stop"),
                    sse("[DONE]"),
                ),
            )
            streams = [
                await client.post(
                    "/v1/chat/completions",
                    json={"model": "openrouter/x", "messages": MSG, "stream": True},
                ),
                await client.post(
                    "/v1/chat/completions",
                    json={"model": "gemma3:4b", "messages": MSG, "stream": True, **usage},
                ),
                await client.post(
                    "/v1/chat/completions",
                    json={"model": "groq/llama-3.1-8b-instant", "messages": MSG, "stream": True},
                ),
            ]
            embeddings = [
                await client.post(
                    "/v1/embeddings", json={"model": "nomic-embed-text", "input": ["a", "b"]}
                ),
                await client.post(
                    "/v1/embeddings", json={"model": "groq/embed-small", "input": "a"}
                ),
            ]
            models = await client.get("/v1/models")
            error = await client.post("/v1/chat/completions", json={"model": "gemma3:4b"})
    for answer in answers:
        assert answer.status_code == 200
        valid(answer.json(), "CreateChatCompletionResponse")
    passthrough = answers[0].json()
    assert "system_fingerprint" not in passthrough  # null is not allowed there: dropped
    assert passthrough["provider"] == "Groq"  # unknown fields pass through
    assert passthrough["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    # OpenRouter: 3 chunks; Ollama: 5 words + finish + usage; the fake cloud: role + 5 + finish
    for stream, count in zip(streams, (3, 7, 7), strict=True):
        assert stream.status_code == 200 and stream.text.endswith("data: [DONE]\n\n")
        chunks = events(stream.text)
        assert len(chunks) == count
        for chunk in chunks:
            valid(chunk, "CreateChatCompletionStreamResponse")
    assert all("system_fingerprint" not in c for c in events(streams[0].text))
    for embedding in embeddings:
        assert embedding.status_code == 200
        valid(embedding.json(), "CreateEmbeddingResponse")
    assert models.status_code == 200
    valid(models.json(), "ListModelsResponse")
    assert error.status_code == 400
    valid(error.json(), "ErrorResponse")


async def test_providers_file(nursery: trio.Nursery, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "providers.yaml"
    stack0 = await start_stack(nursery)  # only for the fake cloud's URL
    path.write_text(
        "providers:\n"
        f"  vllm:\n    base_url: {stack0.cloud.url}/v1\n    api_key_env: VLLM_KEY\n    headers: {{X-Title: mana-llm}}\n"
        "  openrouter:\n    headers: {HTTP-Referer: https://mana.example}\n"
        "ollama:\n  models:\n    gemma3:4b: {num_ctx: 8192, keep_alive: 30m}\n"
    )
    stack = await start_stack(
        nursery,
        PROVIDERS_PATH=str(path),
        VLLM_KEY="sk-upstream-secret",
        OPENROUTER_BASE_URL=stack0.cloud.url + "/v1",
    )
    with trio.fail_after(10):
        extra = await stack.chat({"model": "vllm/llama-3.1-8b-instant", "messages": MSG})
        await stack.chat({"model": "openrouter/llama-3.1-8b-instant", "messages": MSG})
        await stack.chat({"model": "gemma3:4b", "messages": MSG})
    assert extra.status_code == 200 and extra.json()["model"] == "vllm/llama-3.1-8b-instant"
    cloud = stack0.cloud.requests
    assert cloud[-2].headers["x-title"] == "mana-llm"
    assert cloud[-1].headers["http-referer"] == "https://mana.example"
    sent = ollama_body(stack)
    assert sent["options"] == {"num_ctx": 8192} and sent["keep_alive"] == "30m"
