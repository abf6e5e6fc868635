"""Golden translation tests, no I/O: domain -> Ollama request, Ollama answers -> OpenAI."""

from __future__ import annotations

import base64
import struct
from typing import Any

import attrs
import pytest

from mana_llm import errors
from mana_llm.domain import ChatRequest, EmbeddingRequest, Message, Target, ToolCall
from mana_llm.providers import ollama_wire as wire

TARGET = Target("ollama", "gemma3:4b")
AT = "2026-11-26T10:00:00.5-07:00"


def clock() -> float:
    return 1234.0


def test_chat_body_maps_roles_and_options() -> None:
    request = ChatRequest(
        model="gemma3:4b",
        messages=(Message("developer", "rules"), Message("user", "hi"), Message("assistant", None)),
        temperature=0.0,
        top_p=0.9,
        max_tokens=12,
        stop=("a", "b"),
        seed=3,
    )
    assert wire.chat_body("gemma3:4b", request, stream=True) == {
        "model": "gemma3:4b",
        "messages": [
            {"role": "system", "content": "rules"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": ""},
        ],
        "stream": True,
        "options": {
            "temperature": 0.0,
            "top_p": 0.9,
            "seed": 3,
            "num_predict": 12,
            "stop": ["a", "b"],
        },
    }


def test_completion_translation() -> None:
    data = {
        "model": "gemma3:4b",
        "created_at": AT,
        "message": {"role": "assistant", "content": "Hi", "thinking": "hmm"},
        "done": True,
        "done_reason": "length",
        "prompt_eval_count": 4,
        "eval_count": 2,
    }
    response = wire.completion(data, TARGET, clock, ValueError)
    payload = response.payload
    assert payload["model"] == "ollama/gemma3:4b"
    assert payload["created"] == 1795687200 + 7 * 3600
    assert payload["choices"] == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Hi",
                "refusal": None,
                "reasoning_content": "hmm",
            },
            "finish_reason": "length",
            "logprobs": None,
        }
    ]
    assert payload["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    assert response.finish_reason == "length"


@pytest.mark.parametrize(
    ("done_reason", "expected"),
    [("stop", "stop"), ("length", "length"), ("load", "stop"), ("", "stop"), (None, "stop")],
)
def test_finish_reason_is_never_null(done_reason: str | None, expected: str) -> None:
    assert wire.finish_reason({"done_reason": done_reason}, saw_tool_calls=False) == expected


def test_missing_created_at_uses_the_wall_clock_and_counts_default_to_zero() -> None:
    response = wire.completion(
        {"message": {"content": "x"}, "done": True}, TARGET, clock, ValueError
    )
    assert response.payload["created"] == 1234
    assert response.payload["usage"] == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
    }


def test_stream_translation_pins_id_and_created_and_ends_with_finish_and_usage() -> None:
    translator = wire.StreamTranslator(TARGET, clock)
    lines = [
        {"created_at": AT, "message": {"role": "assistant", "content": ""}, "done": False},
        {"created_at": "2030-01-01T00:00:00Z", "message": {"content": "A"}, "done": False},
        {"message": {"thinking": "t", "content": "B"}, "done": False},
        {
            "message": {"content": ""},
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 3,
            "eval_count": 2,
        },
    ]
    chunks = [c for line in lines for c in translator.translate(line)]
    payloads = [c.payload for c in chunks]
    assert {p["id"] for p in payloads} == {payloads[0]["id"]}
    assert {p["created"] for p in payloads} == {1795687200 + 7 * 3600}
    assert {p["model"] for p in payloads} == {"ollama/gemma3:4b"}
    assert [p["choices"][0]["delta"] for p in payloads[:-1]] == [
        {"role": "assistant", "content": "A"},
        {"reasoning_content": "t"},
        {"content": "B"},
        {},
    ]
    assert [c.commits for c in chunks] == [True, True, True, False, False]
    assert chunks[-2].finish_reason == "stop"
    assert payloads[-1]["choices"] == [] and payloads[-1]["usage"]["total_tokens"] == 5
    assert chunks[-1].usage_only


def test_stream_error_line_raises() -> None:
    translator = wire.StreamTranslator(TARGET, clock)
    with pytest.raises(errors.UpstreamUnavailable, match="boom"):
        translator.translate({"error": "boom"})


def test_embeddings_base64_is_little_endian_float32() -> None:
    request = EmbeddingRequest("m", ("a", "b"), "base64")
    payload, usage = wire.embeddings(
        {"embeddings": [[0.5, -1.0], [2.0, 0.25]], "prompt_eval_count": 6}, TARGET, request
    )
    decoded = [
        list(struct.unpack("<2f", base64.b64decode(d["embedding"]))) for d in payload["data"]
    ]
    assert decoded == [[0.5, -1.0], [2.0, 0.25]]
    assert payload["usage"] == {"prompt_tokens": 6, "total_tokens": 6}
    assert usage.prompt_tokens == 6


def test_embeddings_count_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="do not match"):
        wire.embeddings({"embeddings": [[1.0]]}, TARGET, EmbeddingRequest("m", ("a", "b")))


def test_models_from_tags() -> None:
    tags = {
        "models": [
            {"name": "gemma3:4b", "modified_at": AT},
            {"model": "org/x:1b", "modified_at": AT},
            {"size": 1},
        ]
    }
    models = wire.models(tags, "ollama", clock)
    assert [(m.id, m.owned_by) for m in models] == [
        ("ollama/gemma3:4b", "library"),
        ("ollama/org/x:1b", "org"),
    ]


def test_golden_request_with_every_fidelity_field() -> None:
    from mana_llm.domain import Image

    weather = {
        "type": "function",
        "function": {"name": "weather", "parameters": {"type": "object"}},
    }
    other = {"type": "function", "function": {"name": "other"}}
    request = ChatRequest(
        model="m",
        messages=(
            Message(
                "user",
                "look",
                images=(
                    Image("messages[0].content[1]", data="QUJD"),
                    Image("messages[0].content[2]", data="REVG"),  # a fetched URL, inlined
                ),
            ),
            Message(
                "assistant",
                None,
                tool_calls=(ToolCall("call_1", "weather", '{"city": "Oslo"}'),),
                reasoning="hm",
            ),
            Message("tool", "rainy", tool_call_id="call_1"),
            Message("function", "x", name="legacy"),
        ),
        tools=(weather, other),
        tool_choice={"type": "function", "function": {"name": "weather"}},
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "s", "schema": {"type": "object"}},
        },
        reasoning_effort="minimal",
        presence_penalty=0.1,
        options={"num_ctx": 4096},
        keep_alive=0,
    )
    defaults = wire.ModelDefaults({"num_ctx": 2048, "top_k": 5}, "30m")
    body = wire.chat_body("m", request, stream=False, defaults=defaults)
    assert body == {
        "model": "m",
        "messages": [
            {"role": "user", "content": "look", "images": ["QUJD", "REVG"]},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "call_1", "function": {"name": "weather", "arguments": {"city": "Oslo"}}}
                ],
                "thinking": "hm",
            },
            {"role": "tool", "content": "rainy", "tool_name": "weather", "tool_call_id": "call_1"},
            {"role": "tool", "content": "x", "tool_name": "legacy"},
        ],
        "stream": False,
        "options": {"num_ctx": 4096, "top_k": 5, "presence_penalty": 0.1},
        "tools": [weather],
        "format": {"type": "object"},
        "think": "low",
        "keep_alive": 0,
    }


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"n": 2}, "n"),
        (
            {"messages": (Message("user", None, unsupported=("messages[0].content[0]",)),)},
            "messages[0].content[0]",
        ),
        (
            {"messages": (Message("assistant", None, tool_calls=(ToolCall("c", "f", "[1]"),)),)},
            "messages[0].tool_calls[0].function.arguments",
        ),
    ],
)
def test_requests_ollama_cannot_take(change: dict[str, Any], param: str) -> None:
    request = attrs.evolve(ChatRequest("m", (Message("user", "x"),)), **change)
    with pytest.raises(errors.GatewayError) as raised:
        wire.chat_body("m", request, stream=False)
    assert raised.value.param == param


def test_tool_calls_come_back_in_openai_shape() -> None:
    calls = [
        {"function": {"name": "weather", "arguments": {"city": "Oslo"}}},
        {"id": "call_x", "function": {"name": "t", "arguments": {}}},
    ]
    data = {
        "message": {"role": "assistant", "content": "", "tool_calls": calls},
        "done": True,
        "done_reason": "stop",
    }
    response = wire.completion(data, TARGET, clock, ValueError)
    message = response.payload["choices"][0]["message"]
    assert message["content"] is None and response.finish_reason == "tool_calls"
    assert (
        message["tool_calls"][0]["id"].startswith("call_")
        and len(message["tool_calls"][0]["id"]) == 29
    )
    assert message["tool_calls"][0]["function"] == {
        "name": "weather",
        "arguments": '{"city":"Oslo"}',
    }
    assert message["tool_calls"][1] == {
        "id": "call_x",
        "type": "function",
        "function": {"name": "t", "arguments": "{}"},
    }
    translator = wire.StreamTranslator(TARGET, clock)
    chunks = translator.translate({"message": {"tool_calls": calls[:1]}, "done": False})
    chunks += translator.translate({"message": {"tool_calls": calls[1:]}, "done": False})
    chunks += translator.translate({"message": {}, "done": True, "done_reason": "stop"})
    indexes = [c.payload["choices"][0]["delta"]["tool_calls"][0]["index"] for c in chunks[:2]]
    assert indexes == [0, 1] and all(c.commits for c in chunks[:2])
    assert chunks[2].finish_reason == "tool_calls"


def test_embed_body() -> None:
    request = EmbeddingRequest("m", ("a",), dimensions=8, truncate=False, keep_alive="1m")
    assert wire.embed_body("m", request, wire.ModelDefaults({"num_ctx": 512})) == {
        "model": "m",
        "input": ["a"],
        "dimensions": 8,
        "truncate": False,
        "options": {"num_ctx": 512},
        "keep_alive": "1m",
    }
    with pytest.raises(errors.UnsupportedCapability):
        wire.embed_body("m", EmbeddingRequest("m", (), tokens=True))
