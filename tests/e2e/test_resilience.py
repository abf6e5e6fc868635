"""Resilience through the real service: same-target retries for a 429 with Retry-After and a
single 500 (the two failoverbench scenarios that used to fall back at once), buffered aliases
that rescue a broken stream without splicing, hedged first tokens."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
import trio

from tests.e2e.stack import aliases_file, start_stack
from tests.fakes.server import Cut, Part, Reply, Stall
from tests.fakes.upstreams import openai_chunk, openai_error, openai_stream, sse

MSG = [{"role": "user", "content": "hi"}]
GROQ = "groq/llama-3.1-8b-instant"
CHAIN = f"""
aliases:
  mana/fast:
    chain: [{GROQ}, ollama/gemma3:4b]
"""


@pytest.fixture
def chain(tmp_path: pathlib.Path) -> str:
    return aliases_file(tmp_path, CHAIN)


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (openai_error(429, "slow down", **{"retry-after-ms": "300"}), "UpstreamRateLimited"),
        (openai_error(500, "oops"), "UpstreamUnavailable"),
    ],
)
async def test_a_transient_failure_is_retried_on_the_primary(
    nursery: trio.Nursery, chain: str, failure: Any, reason: str
) -> None:
    stack = await start_stack(nursery, ALIASES_PATH=chain, RETRIES="1")
    stack.cloud.script("/v1/chat/completions", failure)
    with trio.fail_after(10):
        started = trio.current_time()
        r = await stack.chat({"model": "mana/fast", "messages": MSG})
        took = trio.current_time() - started
    assert r.status_code == 200
    assert r.headers["x-mana-llm-resolved"] == GROQ  # the primary, not the fallback
    assert r.headers["x-mana-llm-attempts"] == "2"
    assert stack.cloud_calls() == 2
    assert [q.path for q in stack.ollama.requests] == []
    labels = {"provider": "groq", "reason": reason, "outcome": "sent"}
    assert stack.metric("mana_llm_retries_total", **labels) == 1
    if reason == "UpstreamRateLimited":
        assert took >= 0.3  # the Retry-After was honoured


async def test_retries_off_falls_back_at_once(nursery: trio.Nursery, chain: str) -> None:
    stack = await start_stack(nursery, ALIASES_PATH=chain, RETRIES="0")
    stack.cloud.script("/v1/chat/completions", openai_error(500, "oops"))
    with trio.fail_after(10):
        r = await stack.chat({"model": "mana/fast", "messages": MSG})
    assert r.headers["x-mana-llm-resolved"] == "ollama/gemma3:4b"
    assert stack.cloud_calls() == 1


async def test_a_direct_request_retried_in_vain_tells_the_sdk_not_to_resend(
    nursery: trio.Nursery,
) -> None:
    stack = await start_stack(nursery, RETRIES="1")
    stack.cloud.script("/v1/chat/completions", *[openai_error(503, "busy")] * 2)
    with trio.fail_after(10):
        r = await stack.chat({"model": GROQ, "messages": MSG})
    assert r.status_code == 502
    assert r.headers["x-should-retry"] == "false"  # the gateway already retried
    assert r.headers["x-mana-llm-attempts"] == "2"
    assert len(json.loads(r.text)["error"]["attempts"]) == 2


BUFFERED = f"""
aliases:
  mana/json:
    buffer: true
    chain: [{GROQ}, ollama/gemma3:4b]
  mana/live:
    chain: [{GROQ}, ollama/gemma3:4b]
"""
STREAM: Any = {"model": "mana/json", "messages": MSG, "stream": True}
BROKEN: dict[str, list[Part]] = {
    "cut": [Cut()],
    "stall": [Stall()],
    "malformed": [b"data: {not json\n\n"],
    "in-band error": [sse({"error": {"message": "overloaded", "code": 503}})],
}


def events(text: str) -> list[Any]:
    return [json.loads(e[6:]) for e in text.split("\n\n") if e.startswith("data: {")]


@pytest.mark.parametrize("how", list(BROKEN))
async def test_a_buffered_stream_broken_after_content_is_answered_whole_by_the_next_entry(
    nursery: trio.Nursery, tmp_path: pathlib.Path, how: str
) -> None:
    stack = await start_stack(nursery, ALIASES_PATH=aliases_file(tmp_path, BUFFERED))
    head = [openai_chunk("", role=True), openai_chunk("Half an ans")]
    stack.cloud.script("/v1/chat/completions", openai_stream(*head, *BROKEN[how]))
    with trio.fail_after(10):
        r = await stack.chat({**STREAM, "stream_options": {"include_usage": True}})
    assert r.status_code == 200
    assert r.text.endswith("data: [DONE]\n\n")
    chunks = events(r.text)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello from the fake."  # one whole answer, from one provider
    assert "Half an ans" not in r.text  # never spliced
    assert {c["model"] for c in chunks} == {"ollama/gemma3:4b"}
    assert chunks[-1]["usage"]["completion_tokens"] == 5
    assert r.headers["x-mana-llm-resolved"] == "ollama/gemma3:4b"
    # the fallback was asked the original request, not a prefill of the partial answer
    asked = [q.json() for q in stack.ollama.requests if q.path == "/api/chat"]
    assert [m["role"] for m in asked[0]["messages"]] == ["user"]
    rescued = sum(
        s.value
        for f in stack.registry.collect()
        for s in f.samples
        if s.name == "mana_llm_stream_rescues_total" and s.labels["alias"] == "mana/json"
    )
    assert rescued == 1


async def test_a_live_alias_keeps_the_never_splice_rule(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    stack = await start_stack(nursery, ALIASES_PATH=aliases_file(tmp_path, BUFFERED))
    head = [openai_chunk("", role=True), openai_chunk("Half an ans")]
    stack.cloud.script("/v1/chat/completions", openai_stream(*head, Cut()))
    with trio.fail_after(10):
        r = await stack.chat({**STREAM, "model": "mana/live"})
    assert "Half an ans" in r.text
    assert not r.text.endswith("data: [DONE]\n\n")
    assert events(r.text)[-1]["error"]["code"] == "upstream_error"
    assert [q for q in stack.ollama.requests if q.path == "/api/chat"] == []


async def test_a_buffered_stream_that_succeeds_is_replayed_from_its_provider(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    stack = await start_stack(nursery, ALIASES_PATH=aliases_file(tmp_path, BUFFERED))
    with trio.fail_after(10):
        r = await stack.chat(STREAM)
    chunks = events(r.text)
    assert r.headers["x-mana-llm-resolved"] == GROQ and r.text.endswith("data: [DONE]\n\n")
    assert {c["model"] for c in chunks} == {GROQ}
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == (
        "Hello from the fake."
    )


HEDGED = f"""
aliases:
  mana/quick:
    hedge_after_s: 0.2
    chain: [{GROQ}, ollama/gemma3:4b]
"""


@pytest.mark.parametrize("stream", [True, False])
async def test_a_silent_entry_is_hedged_and_the_loser_connection_closed(
    nursery: trio.Nursery, tmp_path: pathlib.Path, stream: bool
) -> None:
    stack = await start_stack(nursery, ALIASES_PATH=aliases_file(tmp_path, HEDGED))
    # the stream sends its role chunk (no content) and then nothing until the gateway hangs up
    silent = (
        openai_stream(openai_chunk("", role=True), Stall()) if stream else Reply(200, [Stall()])
    )
    stack.cloud.script("/v1/chat/completions", silent)
    with trio.fail_after(10):
        r = await stack.chat({"model": "mana/quick", "messages": MSG, "stream": stream})
        assert r.status_code == 200
        assert r.headers["x-mana-llm-resolved"] == "ollama/gemma3:4b"
        await stack.cloud.requests[0].closed.wait()  # the loser stops spending tokens
    labels = {"alias": "mana/quick", "outcome": "won"}
    assert stack.metric("mana_llm_hedges_total", **labels) == 1
