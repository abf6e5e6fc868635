"""Alias chains, /v1/aliases, /v1/health and the probe loop through the real service."""

from __future__ import annotations

import json
import pathlib

import openai
import pytest
import trio

from tests.e2e.stack import aliases_file as write_aliases
from tests.e2e.stack import start_stack
from tests.fakes.server import Reply, Reset, WaitFor
from tests.fakes.upstreams import CREATED_AT, openai_error

ALIASES = """
aliases:
  mana/fast-text:
    description: quick text
    chain: [groq/no-such-model, together/anything, ollama/gemma3:4b]
  mana/doomed:
    description: nothing answers
    chain: [groq/llama-3.1-8b-instant, openrouter/meta-llama/llama-3.1-8b-instruct]
"""
MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture
def aliases_file(tmp_path: pathlib.Path) -> str:
    return write_aliases(tmp_path, ALIASES)


async def test_alias_walks_its_chain_and_names_who_answered(
    nursery: trio.Nursery, aliases_file: str
) -> None:
    stack = await start_stack(nursery, ALIASES_PATH=aliases_file)
    with trio.fail_after(10):
        async with stack.client() as client:
            r = await client.post(
                "/v1/chat/completions", json={"model": "mana/fast-text", "messages": MSG}
            )
            s = await client.post(
                "/v1/chat/completions",
                json={"model": "mana/fast-text", "messages": MSG, "stream": True},
            )
    assert r.status_code == 200
    assert r.headers["x-mana-llm-resolved"] == "ollama/gemma3:4b"
    assert r.headers["x-mana-llm-attempts"] == "3"  # model not found, not configured, answered
    assert r.json()["model"] == "ollama/gemma3:4b"
    assert s.headers["x-mana-llm-resolved"] == "ollama/gemma3:4b"
    assert '"model":"ollama/gemma3:4b"' in s.text and s.text.endswith("data: [DONE]\n\n")


async def test_all_failed_is_503_with_attempts_and_the_sdk_does_not_retry(
    nursery: trio.Nursery, aliases_file: str
) -> None:
    stack = await start_stack(nursery, ALIASES_PATH=aliases_file)
    stack.cloud.script("/v1/chat/completions", *[openai_error(500, "down")] * 10)
    sdk = openai.AsyncOpenAI(
        base_url=stack.base_url + "/v1", api_key="x", max_retries=2, timeout=10
    )
    with trio.fail_after(10):
        async with sdk:
            with pytest.raises(openai.InternalServerError) as raised:
                await sdk.chat.completions.create(model="mana/doomed", messages=MSG)  # type: ignore[arg-type]
    response = raised.value.response
    assert response.status_code == 503
    assert response.headers["x-should-retry"] == "false"
    body = response.json()["error"]
    assert body["code"] == "all_providers_failed"
    assert [a["model"] for a in body["attempts"]] == [
        "groq/llama-3.1-8b-instant",
        "openrouter/meta-llama/llama-3.1-8b-instruct",
    ]
    assert len(stack.cloud.requests) == 2  # one per entry, no SDK retries
    fallbacks = [
        (s.labels["from_model"], s.labels["to_model"])
        for family in stack.registry.collect()
        for s in family.samples
        if s.name == "mana_llm_fallback_total"
    ]
    # one real move down the chain; the last entry's failure moved nowhere
    assert fallbacks == [
        ("groq/llama-3.1-8b-instant", "openrouter/meta-llama/llama-3.1-8b-instruct")
    ]


async def test_aliases_endpoint_shows_chains_load_time_and_hash(
    nursery: trio.Nursery, aliases_file: str
) -> None:
    stack = await start_stack(nursery, ALIASES_PATH=aliases_file)
    with trio.fail_after(10):
        async with stack.client() as client:
            r = await client.get("/v1/aliases")
    data = r.json()
    assert [a["name"] for a in data["data"]] == ["mana/fast-text", "mana/doomed"]
    assert data["data"][0]["chain"] == [
        "groq/no-such-model",
        "together/anything",
        "ollama/gemma3:4b",
    ]
    assert data["data"][0]["description"] == "quick text"
    assert len(data["hash"]) == 16 and data["loaded_at"] > 1.7e9
    assert data["last_reload_error"] is None


async def test_v1_health_reports_circuit_state_after_failures(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    stack.cloud.script(
        "/v1/chat/completions", openai_error(503, "overloaded"), openai_error(503, "overloaded")
    )
    with trio.fail_after(10):
        async with stack.client() as client:
            for _ in range(2):
                await client.post(
                    "/v1/chat/completions",
                    json={"model": "groq/llama-3.1-8b-instant", "messages": MSG},
                )
            details = (await client.get("/v1/health")).json()["providers"]
            terse = (await client.get("/health")).json()
    groq = details["groq"]
    assert groq["state"] == "open"
    assert groq["consecutive_failures"] == 2
    assert "overloaded" in groq["last_error"]
    assert groq["reopens_at"] > groq["last_failure_at"]
    assert details["together"] == {"state": "unconfigured", "missing": "TOGETHER_API_KEY"}
    assert terse["providers"]["groq"] == "unhealthy"
    assert terse["status"] == "degraded"


async def test_probe_loop_opens_a_dead_upstream_and_a_revived_one_waits_for_a_real_call(
    nursery: trio.Nursery,
) -> None:
    stack = await start_stack(nursery, PROBE_INTERVAL="0.1", PROBE_TIMEOUT="5")
    revive = trio.Event()
    tags = json.dumps({"models": [{"name": "gemma3:4b", "modified_at": CREATED_AT}]}).encode()
    held = Reply(200, [WaitFor(revive), tags], chunked=True)
    stack.ollama.script("/api/tags", Reply(200, [Reset()]), Reply(200, [Reset()]), held)
    with trio.fail_after(10):
        async with stack.client() as client:
            await stack.ollama.wait_requests(3)  # two failed probes; the third is held open
            dead = (await client.get("/v1/health")).json()["providers"]["ollama"]
            revive.set()
            await stack.ollama.wait_requests(5)  # the third succeeded (its /api/ps too), and
            probed = (await client.get("/v1/health")).json()["providers"]["ollama"]  # round 4
            paths = {r.path for r in stack.ollama.requests}
            assert paths == {"/api/tags", "/api/ps"}  # model lists only: no tokens spent
            assert {r.path for r in stack.cloud.requests} == {"/v1/models"}
            answered = await client.post(  # the trial call
                "/v1/chat/completions", json={"model": "ollama/gemma3:4b", "messages": MSG}
            )
            alive = (await client.get("/v1/health")).json()["providers"]["ollama"]
    assert dead["state"] == "open" and "probe" in dead["last_error"]
    assert dead["last_probe_at"] is not None and dead["last_probe_ok"] is False
    assert dead["opened_because"].startswith("probe: ollama connection failed (ReadError; check")
    # a model list answering 200 says nothing about chat: half-open, never closed by a probe
    assert probed["state"] == "half_open" and probed["last_probe_ok"] is True
    assert answered.status_code == 200
    assert alive["state"] == "closed" and alive["consecutive_failures"] == 0
