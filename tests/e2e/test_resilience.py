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
from tests.fakes.upstreams import openai_error

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
