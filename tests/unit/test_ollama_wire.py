"""Golden translation tests, no I/O: domain -> Ollama request, Ollama answers -> OpenAI."""

from __future__ import annotations

import base64
import struct

import pytest

from mana_llm import errors
from mana_llm.domain import ChatRequest, EmbeddingRequest, Message, Target
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
