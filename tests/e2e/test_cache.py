"""The response cache (in-memory backend) through the real service: what is cached, what is
not, replay in both forms, the caller's directives, namespaces, and the metrics."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
import trio

from tests.e2e.stack import GATEWAY_KEY, Stack, start_stack
from tests.fakes.server import Cut
from tests.fakes.upstreams import (
    WORDS,
    openai_chunk,
    openai_completion,
    openai_error,
    openai_stream,
)

GROQ = "groq/llama-3.1-8b-instant"
OLLAMA = "ollama/gemma3:4b"
MSG = [{"role": "user", "content": "Tag this: trio"}]
DETERMINISTIC: dict[str, Any] = {"model": GROQ, "messages": MSG, "temperature": 0}
CHAT = "/v1/chat/completions"


def cache_count(stack: Stack, result: str) -> float:
    return stack.metric("mana_llm_cache_requests_total", result=result)


async def test_a_deterministic_answer_is_answered_once_then_from_the_cache(
    nursery: trio.Nursery,
) -> None:
    stack = await start_stack(nursery)
    stack.cloud.script(CHAT, openai_completion("llama-3.1-8b-instant", "trio, async"))
    with trio.fail_after(10):
        first = await stack.chat(DETERMINISTIC)
        second = await stack.chat({**DETERMINISTIC, "user": "someone-else", "temperature": 0.0})
    assert stack.cloud_calls() == 1
    assert first.headers["x-mana-llm-cache"] == "MISS"
    assert second.headers["x-mana-llm-cache"] == "HIT"
    assert second.headers["x-mana-llm-resolved"] == GROQ
    assert second.headers["x-mana-llm-attempts"] == "0"
    a, b = first.json(), second.json()
    assert b["choices"] == a["choices"]
    assert b["choices"][0]["message"]["content"] == "trio, async"  # the stored answer
    assert b["model"] == GROQ and b["usage"] == a["usage"]
    assert b["id"] != a["id"] and b["id"].startswith("chatcmpl-")
    assert b["created"] >= a["created"]
    assert cache_count(stack, "miss") == 1 and cache_count(stack, "hit") == 1
    tokens = {"provider": "groq", "model": GROQ, "kind": "completion"}
    assert stack.metric("mana_llm_tokens_total", **tokens) == len(WORDS)


async def test_sampled_answers_pass_by_unless_the_caller_opts_in(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    sampled = {"model": GROQ, "messages": MSG, "temperature": 0.8}
    with trio.fail_after(10):
        plain = [await stack.chat(sampled) for _ in range(2)]
        opted = [await stack.chat(sampled, {"x-mana-llm-cache": "on"}) for _ in range(2)]
        many = [await stack.chat({**DETERMINISTIC, "n": 2}) for _ in range(2)]
    assert [r.headers["x-mana-llm-cache"] for r in plain] == ["BYPASS", "BYPASS"]
    assert [r.headers["x-mana-llm-cache"] for r in opted] == ["MISS", "HIT"]
    assert [r.headers["x-mana-llm-cache"] for r in many] == ["BYPASS", "BYPASS"]
    assert stack.cloud_calls() == 5
    assert cache_count(stack, "bypass") == 4


async def test_no_cache_answers_anew_and_stores_no_store_does_neither(
    nursery: trio.Nursery,
) -> None:
    stack = await start_stack(nursery)
    stack.cloud.script(
        CHAT,
        openai_completion("llama-3.1-8b-instant", "one"),
        openai_completion("llama-3.1-8b-instant", "two"),
        openai_completion("llama-3.1-8b-instant", "three"),
    )
    with trio.fail_after(10):
        await stack.chat(DETERMINISTIC)  # "one" is stored
        fresh = await stack.chat(DETERMINISTIC, {"cache-control": "no-cache"})  # "two" replaces
        hit = await stack.chat(DETERMINISTIC)
        private = await stack.chat(DETERMINISTIC, {"cache-control": "private, no-store"})
        again = await stack.chat(DETERMINISTIC)
    assert fresh.headers["x-mana-llm-cache"] == "BYPASS"
    assert fresh.json()["choices"][0]["message"]["content"] == "two"
    assert hit.json()["choices"][0]["message"]["content"] == "two"
    assert private.headers["x-mana-llm-cache"] == "BYPASS"
    assert private.json()["choices"][0]["message"]["content"] == "three"
    assert again.headers["x-mana-llm-cache"] == "HIT"
    assert again.json()["choices"][0]["message"]["content"] == "two"  # three was not kept
    assert stack.cloud_calls() == 3


@pytest.mark.parametrize(
    "request_body",
    [DETERMINISTIC, {**DETERMINISTIC, "model": OLLAMA, "reasoning_effort": "low"}],
    ids=["openai-sse", "ollama-ndjson-thinking"],
)
async def test_a_stream_is_stored_once_complete_and_replayed_through_the_sdk(
    nursery: trio.Nursery, request_body: dict[str, Any]
) -> None:
    stack = await start_stack(nursery)
    sdk = stack.sdk()
    model = request_body["model"]
    with trio.fail_after(10):
        live = [
            c
            async for c in await sdk.chat.completions.create(
                **request_body, stream=True, stream_options={"include_usage": True}
            )
        ]
        replayed = [
            c
            async for c in await sdk.chat.completions.create(
                **request_body, stream=True, stream_options={"include_usage": True}
            )
        ]
        raw = await stack.chat({**request_body, "stream": True})  # no usage asked
        whole = await stack.chat(request_body)  # the stream's answer, as one object
    calls = stack.cloud_calls() + sum(1 for r in stack.ollama.requests if r.path == "/api/chat")
    assert calls == 1
    provider = model.split("/")[0]
    tokens = {"provider": provider, "model": model, "kind": "completion"}
    assert stack.metric("mana_llm_tokens_total", **tokens) == len(WORDS)
    if provider == "ollama":  # the reasoning is replayed too, before the answer
        assert whole.json()["choices"][0]["message"]["reasoning_content"] == "Let me think."
        assert raw.text.index('"reasoning_content":"Let me think."') < raw.text.index(WORDS[0])

    def text(chunks: list[Any]) -> str:
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    assert text(replayed) == text(live) == "".join(WORDS)
    assert {c.model for c in replayed} == {model}
    assert len({c.id for c in replayed}) == 1 and replayed[0].id != live[0].id
    assert replayed[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in replayed if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert replayed[-1].choices == [] and replayed[-1].usage == live[-1].usage
    assert replayed[-1].usage is not None and replayed[-1].usage.completion_tokens == len(WORDS)

    assert raw.headers["x-mana-llm-cache"] == "HIT"
    assert raw.headers["x-mana-llm-resolved"] == model
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.endswith("data: [DONE]\n\n") and '"usage":{' not in raw.text
    assert whole.headers["x-mana-llm-cache"] == "HIT"
    message = whole.json()["choices"][0]
    assert message["message"]["content"] == "".join(WORDS) and message["finish_reason"] == "stop"
    assert whole.json()["usage"]["completion_tokens"] == len(WORDS)


async def test_a_cut_stream_is_not_stored(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    stack.cloud.script(CHAT, openai_stream(openai_chunk("", role=True), openai_chunk("Hal"), Cut()))
    body = {**DETERMINISTIC, "stream": True}
    with trio.fail_after(10):
        cut = await stack.chat(body)
        whole = await stack.chat(body)
        hit = await stack.chat(body)
    assert cut.status_code == 200 and "[DONE]" not in cut.text and '"error"' in cut.text
    assert whole.headers["x-mana-llm-cache"] == "MISS"  # the cut answer was not kept
    assert whole.text.endswith("data: [DONE]\n\n")
    assert hit.headers["x-mana-llm-cache"] == "HIT"
    assert stack.cloud_calls() == 2


async def test_tool_calls_are_not_replayed(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    reply = openai_completion("llama-3.1-8b-instant", None, "tool_calls", tool_calls=[call])
    stack.cloud.script(CHAT, reply, reply)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    with trio.fail_after(10):
        answers = [await stack.chat({**DETERMINISTIC, "tools": tools}) for _ in range(2)]
    assert [r.headers["x-mana-llm-cache"] for r in answers] == ["MISS", "MISS"]
    assert answers[1].json()["choices"][0]["message"]["tool_calls"][0]["id"] == "call_1"
    assert stack.cloud_calls() == 2


async def test_callers_with_different_keys_never_share_an_answer(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery, MANA_LLM_API_KEYS=f"{GATEWAY_KEY},other-key")
    stack.cloud.script(
        CHAT,
        openai_completion("llama-3.1-8b-instant", "for the first caller"),
        openai_completion("llama-3.1-8b-instant", "for the second caller"),
    )

    def auth(key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"}

    with trio.fail_after(10):
        first = await stack.chat(DETERMINISTIC, auth(GATEWAY_KEY))
        second = await stack.chat(DETERMINISTIC, auth("other-key"))
        first_again = await stack.chat(DETERMINISTIC, auth(GATEWAY_KEY))
        second_again = await stack.chat(DETERMINISTIC, auth("other-key"))
    assert [r.headers["x-mana-llm-cache"] for r in (first, second)] == ["MISS", "MISS"]
    content = [r.json()["choices"][0]["message"]["content"] for r in (first_again, second_again)]
    assert content == ["for the first caller", "for the second caller"]
    assert stack.cloud_calls() == 2


async def test_embeddings_are_cached_per_encoding(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    sdk = stack.sdk()
    model = "groq/embed-small"
    with trio.fail_after(10):
        b64 = [await sdk.embeddings.create(model=model, input=["a", "b"]) for _ in range(2)]
        floats = [
            await sdk.embeddings.create(model=model, input=["a", "b"], encoding_format="float")
            for _ in range(2)
        ]
        async with stack.client() as client:
            r = await client.post("/v1/embeddings", json={"model": model, "input": ["a", "b"]})
    assert stack.cloud_calls("/v1/embeddings") == 2  # one per encoding
    assert b64[1].data[0].embedding == b64[0].data[0].embedding == floats[1].data[0].embedding
    assert b64[1].model == model
    assert r.headers["x-mana-llm-cache"] == "HIT"
    assert r.headers["x-mana-llm-resolved"] == model


async def test_a_hit_serves_while_the_preferred_entry_is_down(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    """Stored under the entry that answered; looked up under the entry the walk would try
    first now. With groq's circuit open that is ollama, whose answer is then a hit."""
    aliases = tmp_path / "aliases.yaml"
    aliases.write_text(
        "aliases:\n  mana/fast-text:\n    chain: [groq/llama-3.1-8b-instant, ollama/gemma3:4b]\n"
    )
    stack = await start_stack(nursery, ALIASES_PATH=str(aliases), BREAKER_FAILURES="1")
    stack.cloud.script(CHAT, openai_error(500, "down"))  # one failure opens groq's circuit
    body = {**DETERMINISTIC, "model": "mana/fast-text"}
    with trio.fail_after(10):
        first = await stack.chat(body)
        second = await stack.chat(body)
    assert first.headers["x-mana-llm-resolved"] == "ollama/gemma3:4b"
    assert first.headers["x-mana-llm-cache"] == "MISS"
    assert second.headers["x-mana-llm-cache"] == "HIT"
    assert second.headers["x-mana-llm-resolved"] == "ollama/gemma3:4b"
    assert second.json()["model"] == "ollama/gemma3:4b"
    assert stack.cloud_calls() == 1
    assert sum(1 for r in stack.ollama.requests if r.path == "/api/chat") == 1


async def test_switched_off_the_cache_takes_no_part(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery, CACHE_ENABLED="0")
    with trio.fail_after(10):
        answers = [await stack.chat(DETERMINISTIC) for _ in range(2)]
        async with stack.client() as client:
            health = (await client.get("/v1/health")).json()
    assert all("x-mana-llm-cache" not in r.headers for r in answers)
    assert stack.cloud_calls() == 2
    assert health["cache"] == {"backend": None, "state": "off"}
