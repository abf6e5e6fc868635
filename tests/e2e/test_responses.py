"""POST /v1/responses through the real service and the official `openai` SDK, over the fakes:
answers and every stream event validated against the schemas derived from OpenAI's spec
(tests/fixtures/openai_responses_schemas.json), the SDK's `responses.create`, `.parse` and
`.stream()` helpers consuming them, and the chat path underneath (fallback, commit point, cache,
metrics) seen from the upstreams."""

from __future__ import annotations

import base64
import json
import pathlib
from typing import Any

import httpx
import jsonschema
import openai
import pydantic
import pytest
import trio

from tests.e2e.stack import Stack, start_stack
from tests.e2e.test_callers import APP_KEY, CHAT, bearer, callers_stack, ledger_rows
from tests.e2e.test_fidelity import PNG as PNG_BYTES
from tests.e2e.test_fidelity import WEATHER as CHAT_WEATHER
from tests.fakes.server import Cut
from tests.fakes.upstreams import openai_chunk, openai_completion, openai_error, openai_stream

DEFS = json.loads(
    (pathlib.Path(__file__).parents[1] / "fixtures/openai_responses_schemas.json").read_text()
)["$defs"]
RESPONSE = jsonschema.Draft202012Validator({"$ref": "#/$defs/Response", "$defs": DEFS})
# each event type -> the validator of its schema (the `type` enum of each derived event)
EVENTS = {
    schema["properties"]["type"]["enum"][0]: jsonschema.Draft202012Validator(
        {"$ref": f"#/$defs/{name}", "$defs": DEFS}
    )
    for name, schema in DEFS.items()
    if name.startswith("Response") and name.endswith("Event")
}
# the chat tests' tool and image, as the Responses API takes them (a flat function tool; an
# image as a data URI string)
WEATHER: Any = {"type": "function", **CHAT_WEATHER["function"]}
PNG = base64.b64encode(PNG_BYTES).decode()
GROQ = "groq/llama-3.1-8b-instant"
CHAIN = "mana/fast-text"  # groq/llama-3.1-8b-instant, together (not configured), ollama


async def post(stack: Stack, body: dict[str, Any]) -> httpx.Response:
    async with stack.client() as client:
        return await client.post("/v1/responses", json=body)


def stream_events(text: str) -> list[dict[str, Any]]:
    """The events of a Responses SSE body, each checked: its `event:` line names its type,
    its data validates against that event's schema."""
    out = []
    for block in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" not in lines:
            continue
        event = json.loads(lines["data"])
        assert lines["event"] == event["type"]
        EVENTS[event["type"]].validate(event)
        out.append(event)
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    return out


def ollama_sent(stack: Stack) -> Any:
    return [r for r in stack.ollama.requests if r.path == "/api/chat"][-1].json()


def cloud_sent(stack: Stack) -> Any:
    return [r for r in stack.cloud.requests if r.path == "/v1/chat/completions"][-1].json()


async def test_text_answer_is_a_valid_response(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    body = {"model": "gemma3:4b", "input": "Say hello", "instructions": "Be brief."}
    with trio.fail_after(10):
        r = await post(stack, body | {"metadata": {"team": "a"}, "store": True})
        async with stack.sdk() as sdk:
            answer = await sdk.responses.create(model="gemma3:4b", input="Say hello")
    assert r.status_code == 200, r.text
    payload = r.json()
    RESPONSE.validate(payload)
    assert payload["id"].startswith("resp_") and payload["object"] == "response"
    assert payload["status"] == "completed" and payload["store"] is False
    assert payload["model"] == r.headers["x-mana-llm-resolved"] == "ollama/gemma3:4b"
    assert payload["instructions"] == "Be brief." and payload["metadata"] == {"team": "a"}
    assert payload["usage"] == {
        "input_tokens": 7,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 12,
    }
    [message] = payload["output"]
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["content"][0]["text"] == "Hello from the fake."
    assert answer.output_text == "Hello from the fake."
    assert answer.usage is not None and answer.usage.total_tokens == 12
    sent = ollama_sent(stack)["messages"]
    assert sent[-1] == {"role": "user", "content": "Say hello"}


async def test_tools_round_trip_with_function_call_output(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    question: Any = [{"role": "user", "content": "weather in Paris?"}]
    with trio.fail_after(10):
        async with stack.sdk() as sdk:
            first = await sdk.responses.create(model="gemma3:4b", input=question, tools=[WEATHER])
            [call] = [item for item in first.output if item.type == "function_call"]
            assert call.name == "get_weather"
            assert json.loads(call.arguments) == {"city": "Paris", "days": 2}
            assert call.call_id.startswith("call_") and call.id and call.id.startswith("fc_")
            result = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}
            items: Any = [*question, call.model_dump(exclude_none=True), result]
            second = await sdk.responses.create(
                model="gemma3:4b",
                input=items,
                tools=[WEATHER],
            )
    assert second.output_text == "It is sunny in Paris."
    sent = ollama_sent(stack)
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["messages"][1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert sent["messages"][2] == {
        "role": "tool",
        "content": "sunny",
        "tool_name": "get_weather",
        "tool_call_id": call.call_id,
    }


class Weather(pydantic.BaseModel):
    city: str
    days: int


async def test_json_schema_through_responses_parse(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    stack.cloud.script(
        "/v1/chat/completions", openai_completion(GROQ, '{"city": "Paris", "days": 2}')
    )
    with trio.fail_after(10):
        async with stack.sdk() as sdk:
            parsed = await sdk.responses.parse(model=GROQ, input="weather?", text_format=Weather)
    assert parsed.output_parsed == Weather(city="Paris", days=2)
    fmt = cloud_sent(stack)["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Weather"
    assert fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"]["required"] == ["city", "days"]


async def test_an_image_reaches_ollama(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    content: Any = [
        {"type": "input_text", "text": "What is this?"},
        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "auto"},
    ]
    with trio.fail_after(10):
        async with stack.sdk() as sdk:
            answer = await sdk.responses.create(
                model="gemma3:4b", input=[{"role": "user", "content": content}]
            )
    assert answer.output_text == "Hello from the fake."
    message = ollama_sent(stack)["messages"][-1]
    assert message["content"] == "What is this?"
    assert message["images"] == [PNG]
    assert base64.b64decode(message["images"][0])


async def test_stream_through_the_sdk_helper(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    with trio.fail_after(10):
        async with stack.client() as client:
            r = await client.post(
                "/v1/responses", json={"model": GROQ, "input": "hi", "stream": True}
            )
        async with stack.sdk() as sdk, sdk.responses.stream(model=GROQ, input="hi") as stream:
            deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
            final = await stream.get_final_response()
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-mana-llm-resolved"] == GROQ
    events = stream_events(r.text)
    kinds = [e["type"] for e in events]
    assert kinds[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    completed = events[-1]["response"]
    RESPONSE.validate(completed)
    assert completed["model"] == GROQ and completed["status"] == "completed"
    assert completed["usage"]["input_tokens"] == 7 and completed["usage"]["output_tokens"] == 5
    assert "".join(deltas) == final.output_text == "Hello from the fake."
    assert final.usage is not None and final.usage.total_tokens == 12
    assert cloud_sent(stack)["stream_options"] == {"include_usage": True}


async def test_streamed_tool_call(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    body = {"model": "gemma3:4b", "input": "weather?", "tools": [WEATHER], "stream": True}
    with trio.fail_after(10):
        r = await post(stack, body)
        async with (
            stack.sdk() as sdk,
            sdk.responses.stream(model="gemma3:4b", input="weather?", tools=[WEATHER]) as stream,
        ):
            final = await stream.get_final_response()
    events = stream_events(r.text)
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert json.loads(done[0]["arguments"]) == {"city": "Paris", "days": 2}
    [call] = [item for item in final.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments)["city"] == "Paris"


async def test_an_alias_falls_back_before_the_commit_point(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    stack.cloud.script(
        "/v1/chat/completions",
        openai_error(503, "overloaded"),
        openai_stream(openai_chunk("", role=True), Cut()),  # cut before any content
    )
    with trio.fail_after(10):
        r = await post(stack, {"model": CHAIN, "input": "hi"})
        async with stack.sdk() as sdk, sdk.responses.stream(model=CHAIN, input="hi") as stream:
            final = await stream.get_final_response()
    assert r.status_code == 200
    assert r.json()["model"] == r.headers["x-mana-llm-resolved"] == "ollama/gemma3:4b"
    assert r.headers["x-mana-llm-attempts"] == "3"  # groq failed, together not configured
    assert final.model == "ollama/gemma3:4b" and final.output_text == "Hello from the fake."


async def test_a_cut_after_the_commit_point_ends_in_response_failed(
    nursery: trio.Nursery,
) -> None:
    stack = await start_stack(nursery)
    cut = openai_stream(openai_chunk("", role=True), openai_chunk("Hel"), Cut())
    stack.cloud.script("/v1/chat/completions", cut, cut)
    with trio.fail_after(10):
        r = await post(stack, {"model": GROQ, "input": "hi", "stream": True})
        async with stack.sdk() as sdk, sdk.responses.stream(model=GROQ, input="hi") as stream:
            seen = [event.type async for event in stream]
            with pytest.raises(RuntimeError, match=r"response\.completed"):
                await stream.get_final_response()
    events = stream_events(r.text)
    assert events[-1]["type"] == seen[-1] == "response.failed"
    assert "response.completed" not in seen
    assert not any(e["type"].endswith(".done") for e in events)
    failed = events[-1]["response"]
    RESPONSE.validate(failed)
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    assert failed["output"][0]["content"][0]["text"] == "Hel"
    assert failed["output"][0]["status"] == "incomplete"


async def test_a_length_limited_answer_is_incomplete(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    body = {"model": "gemma3:4b", "input": "hi", "max_output_tokens": 2}
    with trio.fail_after(10):
        plain = await post(stack, body)
        streamed = await post(stack, body | {"stream": True})
    assert plain.json()["status"] == "incomplete"
    assert plain.json()["incomplete_details"] == {"reason": "max_output_tokens"}
    assert ollama_sent(stack)["options"]["num_predict"] == 2
    last = stream_events(streamed.text)[-1]
    assert last["type"] == "response.incomplete"
    assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


async def test_reasoning_becomes_a_summary_item(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    body = {"model": "gemma3:4b", "input": "hi", "reasoning": {"effort": "low"}}
    with trio.fail_after(10):
        plain = await post(stack, body)
        streamed = await post(stack, body | {"stream": True})
    RESPONSE.validate(plain.json())
    thought, message = plain.json()["output"]
    assert thought["type"] == "reasoning"
    assert thought["summary"] == [{"type": "summary_text", "text": "Let me think."}]
    assert message["content"][0]["text"] == "Hello from the fake."
    assert ollama_sent(stack)["think"] == "low"
    events = stream_events(streamed.text)
    done = [e for e in events if e["type"] == "response.reasoning_summary_text.done"]
    assert done[0]["text"] == "Let me think."
    assert [i["type"] for i in events[-1]["response"]["output"]] == ["reasoning", "message"]


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        (
            {"input": [{"type": "web_search_call", "id": "ws_1"}]},
            "input[0].type",
            "web_search_call",
        ),
        ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type", "web_search"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0].type",
            "input_file",
        ),
        ({"input": "hi", "previous_response_id": "resp_1"}, "previous_response_id", "whole"),
        ({"input": "hi", "background": True}, "background", "background"),
        ({"input": "hi", "frobnicate": 1}, "frobnicate", "unknown parameter"),
        ({"input": []}, "input", "input"),
        ({"input": "hi", "max_output_tokens": 0}, "max_output_tokens", "max_output_tokens"),
        ({"input": "hi", "reasoning": {"effort": "huge"}}, "reasoning.effort", "reasoning"),
        (
            {
                "input": [
                    {"role": "user", "content": [{"type": "input_image", "image_url": "ftp://x"}]}
                ]
            },
            "input[0].content[0]",
            "input[0].content[0]",
        ),
        (
            {"input": [{"type": "function_call_output", "output": "x"}]},
            "input[0].call_id",
            "call_id",
        ),
    ],
)
async def test_bad_input_is_a_400_naming_the_field(
    nursery: trio.Nursery, body: dict[str, Any], param: str, words: str
) -> None:
    stack = await start_stack(nursery)
    with trio.fail_after(10):
        r = await post(stack, {"model": "gemma3:4b", **body})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and words in error["message"]
    assert error["type"] == "invalid_request_error"
    assert not stack.ollama.requests


async def test_the_sdk_raises_on_a_bad_item_type(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    bad: Any = [{"type": "computer_call", "id": "c"}]
    with trio.fail_after(10):
        async with stack.sdk() as sdk:
            with pytest.raises(openai.BadRequestError, match="computer_call"):
                await sdk.responses.create(model="gemma3:4b", input=bad)


async def test_cache_and_metrics_see_the_chat_request(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery, CACHE="memory")
    with trio.fail_after(10):
        first = await post(stack, {"model": GROQ, "input": "hi", "temperature": 0})
        chat = await stack.chat(
            {"model": GROQ, "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
        )
        again = await post(stack, {"model": GROQ, "input": "hi", "temperature": 0})
    assert first.headers["x-mana-llm-cache"] == "MISS"
    assert chat.headers["x-mana-llm-cache"] == again.headers["x-mana-llm-cache"] == "HIT"
    assert stack.cloud_calls() == 1
    assert again.json()["output"][0]["content"][0]["text"] == "Hello from the fake."
    assert again.json()["id"] != first.json()["id"]
    assert (
        stack.metric("mana_llm_request_duration_seconds_count", endpoint="chat", stream="false")
        == 3
    )


async def test_a_walk_that_fails_behind_keepalives_ends_in_response_failed(
    nursery: trio.Nursery,
) -> None:
    stack = await start_stack(nursery, STREAM_KEEPALIVE="0.05")
    stack.cloud.script("/v1/chat/completions", openai_error(500, "boom"))
    with trio.fail_after(10):
        r = await post(stack, {"model": GROQ, "input": "hi", "stream": True})
        ok = await post(stack, {"model": GROQ, "input": "hi", "stream": True})
    events = stream_events(r.text)
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.failed",
    ]
    assert events[-1]["response"]["error"]["code"] == "server_error"
    assert stream_events(ok.text)[-1]["type"] == "response.completed"


async def test_limits_allow_list_and_ledger_treat_it_as_chat(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    db = tmp_path / "usage.sqlite"
    app = 'rpm: 3\nmodels: ["ollama/*", "gemma3:4b"]'
    stack = await callers_stack(nursery, tmp_path, app, USAGE_DB=str(db))
    key = bearer(APP_KEY)
    body = {"model": "gemma3:4b", "input": "hi"}
    with trio.fail_after(15):
        async with stack.client() as client:
            first = await client.post("/v1/responses", json=body, headers=key)
            streamed = await client.post("/v1/responses", json=body | {"stream": True}, headers=key)
            chat = await stack.chat(CHAT, key)
            over = await client.post("/v1/responses", json=body, headers=key)
            barred = await client.post(
                "/v1/responses", json={"model": GROQ, "input": "hi"}, headers=key
            )
        rows = await ledger_rows(db, 5)
    assert first.status_code == streamed.status_code == chat.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "3"
    assert first.headers["x-ratelimit-remaining-requests"] == "2"
    assert over.status_code == 429 and over.json()["error"]["code"] == "rate_limit_exceeded"
    assert barred.status_code == 403 and barred.json()["error"]["code"] == "model_not_allowed"
    assert not stack.cloud_calls()
    assert [(r["caller"], r["endpoint"], r["stream"], r["status"]) for r in rows] == [
        ("chat-app", "chat", 0, 200),
        ("chat-app", "chat", 1, 200),
        ("chat-app", "chat", 0, 200),
        ("chat-app", "chat", 0, 429),
        ("chat-app", "chat", 0, 403),
    ]
    assert [(r["prompt_tokens"], r["completion_tokens"]) for r in rows[:2]] == [(7, 5), (7, 5)]
