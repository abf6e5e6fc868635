"""The Responses translation on its own: every field and item field given every hostile value
is a 400 naming a field or a clean chat request (never another exception); items map onto
chat messages as the chat API wants them; a chat stream's chunks become events in the order
the SDK's accumulator needs, parallel tool calls included."""

from __future__ import annotations

import itertools
import json
import pathlib
from typing import Any

import jsonschema
import pytest

from mana_llm import errors
from mana_llm.api.responses_answer import Answer, from_completion
from mana_llm.api.responses_request import parse_responses_request
from mana_llm.api.responses_stream import ResponsesFrames
from mana_llm.domain import StreamChunk, Usage
from tests.fields import ITEM_FIELDS, RESPONSES_FIELDS

DEFS = json.loads(
    (pathlib.Path(__file__).parents[1] / "fixtures/openai_responses_schemas.json").read_text()
)["$defs"]
EVENTS = {
    schema["properties"]["type"]["enum"][0]: jsonschema.Draft202012Validator(
        {"$ref": f"#/$defs/{name}", "$defs": DEFS}
    )
    for name, schema in DEFS.items()
    if name.startswith("Response") and name.endswith("Event")
}
HOSTILE: list[Any] = [
    None,
    True,
    0,
    -1,
    2**64,
    1.5,
    "",
    "x",
    [],
    [None],
    [{}],
    [{"type": 1}],
    {},
    {"type": None},
    {"type": "function"},
    {"format": []},
    {"effort": []},
]


def refusal(body: dict[str, Any]) -> errors.InvalidRequest | None:
    """The 400 a body gets, or None when it became a chat request (any other exception fails)."""
    try:
        parse_responses_request(body)
    except errors.InvalidRequest as refused:
        return refused
    return None


def item() -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}


@pytest.mark.parametrize(("field", "value"), list(itertools.product(RESPONSES_FIELDS, HOSTILE)))
def test_a_hostile_field_is_a_400_or_a_chat_request(field: str, value: Any) -> None:
    refused = refusal({"model": "m", "input": [item()], field: value})
    assert refused is None or refused.param, refused


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    list(
        itertools.product(
            ["message", "function_call", "function_call_output"], ITEM_FIELDS, HOSTILE
        )
    ),
)
def test_a_hostile_item_field_is_a_400_naming_the_item(kind: str, field: str, value: Any) -> None:
    given: dict[str, Any] = {
        "message": item(),
        "function_call": {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        "function_call_output": {"type": "function_call_output", "call_id": "c", "output": "x"},
    }[kind]
    given[field] = value
    refused = refusal({"model": "m", "input": [item(), given]})
    assert refused is None or (refused.param or "").startswith("input"), refused


def test_items_become_chat_messages() -> None:
    asked = parse_responses_request(
        {
            "model": "m",
            "instructions": "Be brief.",
            "input": [
                {"role": "user", "content": "weather in Paris and Rome?"},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "function_call", "call_id": "a", "name": "w", "arguments": '{"c":"P"}'},
                {"type": "function_call", "call_id": "b", "name": "w", "arguments": '{"c":"R"}'},
                {"type": "function_call_output", "call_id": "a", "output": "sunny"},
                {
                    "type": "function_call_output",
                    "call_id": "b",
                    "output": [{"type": "input_text", "text": "rain"}],
                },
            ],
            "tools": [{"type": "function", "name": "w", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "w"},
            "max_output_tokens": 50,
        }
    )
    chat = asked.chat
    assert [m.role for m in chat.messages] == ["system", "user", "assistant", "tool", "tool"]
    assert [c.id for c in chat.messages[2].tool_calls] == ["a", "b"]  # one message, two calls
    assert chat.messages[4].content == "rain" and chat.messages[4].tool_call_id == "b"
    assert chat.tools[0]["function"]["name"] == "w"
    assert chat.tool_choice == {"type": "function", "function": {"name": "w"}}
    assert chat.max_tokens == 50
    assert chat.body["max_completion_tokens"] == 50 and "input" not in chat.body
    assert asked.echo["tools"][0] == {
        "type": "function",
        "name": "w",
        "parameters": {"type": "object"},
        "strict": None,
    }


def chunk(delta: dict[str, Any], finish: str | None = None) -> StreamChunk:
    payload = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "groq/m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return StreamChunk(payload, commits=True, finish_reason=finish)


def decode(body: bytes) -> list[dict[str, Any]]:
    events = []
    for block in body.decode().split("\n\n"):
        if block:
            event = json.loads(block.split("\ndata: ", 1)[1])
            EVENTS[event["type"]].validate(event)
            events.append(event)
    return events


def test_interleaved_parallel_tool_calls_stream_as_two_items() -> None:
    frames = ResponsesFrames(Answer("resp_1", ECHO, 1), "mana/x")
    call = {"type": "function", "function": {"name": "w", "arguments": ""}}
    body = frames.chunks(
        [
            chunk({"role": "assistant", "content": "Checking."}),
            chunk({"tool_calls": [{"index": 0, "id": "a", **call}]}),
            chunk({"tool_calls": [{"index": 1, "id": "b", **call}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"c":'}}]}),
            chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"c":"R"}'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"P"}'}}]}),
            chunk({}, "tool_calls"),
        ]
    )
    usage = StreamChunk(
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}},
        usage=Usage(3, 4),
    )
    body += frames.chunks([usage]) + frames.done()
    events = decode(body)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    added = [e["item"]["type"] for e in events if e["type"] == "response.output_item.added"]
    assert added == ["message", "function_call", "function_call"]
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed" and final["model"] == "groq/m"
    message, first, second = final["output"]
    assert message["content"][0]["text"] == "Checking."
    assert (first["call_id"], first["arguments"]) == ("a", '{"c":"P"}')
    assert (second["call_id"], second["arguments"]) == ("b", '{"c":"R"}')
    assert final["usage"]["total_tokens"] == 7
    # the message was closed when the calls began, each call when the answer ended
    done_at = [e["output_index"] for e in events if e["type"] == "response.output_item.done"]
    assert done_at == [0, 1, 2]


def test_an_answer_with_no_words_is_one_empty_message() -> None:
    frames = ResponsesFrames(Answer("resp_1", ECHO, 1), "m")
    events = decode(frames.chunks([chunk({}, "stop")]) + frames.done())
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == ""
    completion = {
        "model": "m",
        "choices": [{"message": {"content": None}, "finish_reason": "stop"}],
    }
    assert from_completion(Answer("resp_2", ECHO, 1), completion)["output"][0]["content"] == [
        {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    ]


ECHO: dict[str, Any] = parse_responses_request({"model": "m", "input": "hi"}).echo
