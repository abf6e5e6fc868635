"""Provider health against upstreams that answer in their real shapes: Together's bare model
list, Ollama's capability refusals, probes that judge the status only, circuit-open refusals
that fail fast with their cause, and the health endpoints an orchestrator reads."""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any

import openai
import pytest
import trio

from tests.e2e.stack import UPSTREAM_KEY, aliases_file, closed_port_url, open_stack, start_stack
from tests.fakes.server import FakeServer, Reply, WaitFor
from tests.fakes.upstreams import CREATED_AT, TEXT_ONLY, FakeOpenAI, openai_error

MSG = [{"role": "user", "content": "hi"}]
PNG_URI = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
IMAGE_MSG = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": PNG_URI}},
        ],
    }
]
TOGETHER_MODEL = "meta-llama/Llama-3.2-3B-Instruct-Turbo"


@pytest.mark.parametrize("shape", ["together", "models", "openai"])
async def test_every_model_list_shape_keeps_the_provider_healthy(
    nursery: trio.Nursery, shape: str
) -> None:
    """Together answers GET /models with a bare array: probes judge the status, and the model
    list reads every shape, so Together stays on however often it is probed."""
    fake = FakeOpenAI(key=UPSTREAM_KEY, models=(TOGETHER_MODEL,), list_shape=shape)
    together: FakeServer = await nursery.start(FakeServer(fake).serve)
    stack = await start_stack(
        nursery,
        TOGETHER_API_KEY=UPSTREAM_KEY,
        TOGETHER_BASE_URL=together.url + "/v1",
        PROBE_INTERVAL="0.05",
    )
    with trio.fail_after(10):
        await together.wait_requests(4)  # the start-up probe and three more rounds
        async with stack.client() as client:
            details = (await client.get("/v1/health")).json()["providers"]["together"]
            summary = await client.get("/health")
            models = (await client.get("/v1/models")).json()["data"]
            chat = await client.post(
                "/v1/chat/completions",
                json={"model": f"together/{TOGETHER_MODEL}", "messages": MSG},
            )
    assert details["state"] == "closed" and details["consecutive_failures"] == 0
    assert details["last_probe_ok"] is True and details["last_error"] is None
    assert summary.status_code == 200
    assert summary.json() == {
        "status": "ok",
        "providers": {
            "ollama": "healthy",
            "openrouter": "healthy",
            "groq": "healthy",
            "together": "healthy",
        },
    }
    assert f"together/{TOGETHER_MODEL}" in [m["id"] for m in models]
    assert chat.status_code == 200


async def test_a_probe_judges_the_status_never_the_body(nursery: trio.Nursery) -> None:
    html = Reply(200, [b"<html>models</html>"], {"content-type": "text/html"})
    stack = await open_stack(
        nursery, {}, prepare=lambda ollama, cloud: cloud.script("/v1/models", html, html)
    )
    with trio.fail_after(10):
        async with stack.client() as client:
            groq = (await client.get("/v1/health")).json()["providers"]["groq"]
    assert groq["state"] == "closed" and groq["last_probe_ok"] is True


async def test_a_refused_key_fails_the_probe(nursery: trio.Nursery) -> None:
    refused = openai_error(401, "Invalid API key")
    stack = await open_stack(
        nursery, {}, prepare=lambda ollama, cloud: cloud.script("/v1/models", refused, refused)
    )
    with trio.fail_after(10):
        async with stack.client() as client:
            groq = (await client.get("/v1/health")).json()["providers"]["groq"]
    assert groq["last_probe_ok"] is False and groq["consecutive_failures"] == 1
    assert groq["last_error"] == "probe: groq answered 401: Invalid API key"


async def test_readyz_waits_for_the_first_probe_round_and_unchecked_is_unknown(
    nursery: trio.Nursery,
) -> None:
    release = trio.Event()
    tags = json.dumps({"models": [{"name": "gemma3:4b", "modified_at": CREATED_AT}]}).encode()
    held = Reply(200, [WaitFor(release), tags], chunked=True)
    stack = await open_stack(
        nursery, {}, ready=False, prepare=lambda ollama, cloud: ollama.script("/api/tags", held)
    )
    with trio.fail_after(10):
        async with stack.client() as client:
            await stack.cloud.wait_requests(2)  # groq and openrouter were probed
            live = await client.get("/livez")
            starting = await client.get("/readyz")
            summary = (await client.get("/health")).json()
            details = (await client.get("/v1/health")).json()["providers"]["ollama"]
            release.set()
            await stack.wait_ready()
            after = (await client.get("/health")).json()
    assert live.status_code == 200 and live.json() == {"status": "alive"}
    assert starting.status_code == 503 and starting.json() == {"status": "starting"}
    assert summary["providers"]["ollama"] == "unknown" and summary["status"] == "degraded"
    assert details["state"] == "unknown" and details["last_probe_at"] is None
    assert after["providers"]["ollama"] == "healthy" and after["status"] == "ok"


async def test_health_is_503_when_every_configured_provider_is_down(
    nursery: trio.Nursery,
) -> None:
    stack = await start_stack(nursery)
    stack.ollama.script("/api/chat", *[Reply.json({"error": "runner crashed"}, 500)] * 2)
    stack.cloud.script("/v1/chat/completions", *[openai_error(503, "overloaded")] * 4)
    with trio.fail_after(10):
        async with stack.client() as client:
            one_left = None
            for model in ("ollama/gemma3:4b", "groq/llama-3.1-8b-instant", "openrouter/x"):
                for _ in range(2):
                    await client.post(
                        "/v1/chat/completions", json={"model": model, "messages": MSG}
                    )
                if one_left is None:
                    one_left = await client.get("/health")
            down = await client.get("/health")
    assert one_left is not None and one_left.status_code == 200
    assert one_left.json()["status"] == "degraded"
    assert down.status_code == 503
    assert down.json()["status"] == "down"
    assert set(down.json()["providers"].values()) == {"unhealthy", "unconfigured"}


async def test_a_direct_request_to_an_open_circuit_fails_fast_with_its_cause(
    nursery: trio.Nursery,
) -> None:
    stack = await start_stack(nursery, BREAKER_BACKOFF="60")  # a wait worth advertising
    stack.cloud.script("/v1/chat/completions", *[openai_error(503, "overloaded")] * 2)
    body: Any = {"model": "groq/llama-3.1-8b-instant", "messages": MSG}
    sdk = openai.AsyncOpenAI(base_url=stack.base_url + "/v1", api_key="x", max_retries=2)
    with trio.fail_after(10):  # an SDK that slept on Retry-After (60 s) would not finish
        for _ in range(2):
            await stack.chat(body)
        async with sdk:
            with pytest.raises(openai.InternalServerError) as raised:
                await sdk.chat.completions.create(**body)
    response = raised.value.response
    assert response.status_code == 503
    assert response.headers["x-should-retry"] == "false"
    assert 58 <= int(response.headers["retry-after"]) <= 60
    error = response.json()["error"]
    assert error["code"] == "provider_unavailable" and error["type"] == "server_error"
    assert re.fullmatch(
        r"groq is unavailable: its circuit opened at \d\d:\d\d:\d\d UTC after groq answered"
        r" 503: overloaded; retry in (58|59|60)s",
        error["message"],
    ), error["message"]
    assert stack.cloud_calls() == 2  # the refusal made no upstream call
    assert stack.metric("mana_llm_errors_total", error_type="upstream_error") == 3  # no resend


CAPABILITY_ALIASES = f"""
aliases:
  mana/see:
    chain: [ollama/{TEXT_ONLY}, groq/llama-3.1-8b-instant]
"""


@pytest.fixture
def capability_aliases(tmp_path: pathlib.Path) -> str:
    return aliases_file(tmp_path, CAPABILITY_ALIASES)


async def test_capability_refusals_move_an_alias_on_and_never_open_ollamas_circuit(
    nursery: trio.Nursery, capability_aliases: str
) -> None:
    stack = await start_stack(nursery, ALIASES_PATH=capability_aliases)
    image: Any = {"model": "mana/see", "messages": IMAGE_MSG}
    direct = {"model": f"ollama/{TEXT_ONLY}"}
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with trio.fail_after(10):
        answered = [await stack.chat(image) for _ in range(2)]
        answered.append(await stack.chat({**image, "stream": True}))
        refusals = [
            await stack.chat({**direct, "messages": IMAGE_MSG}),
            await stack.chat({**direct, "messages": MSG, "tools": [tool]}),
            await stack.chat({**direct, "messages": MSG, "reasoning_effort": "high"}),
        ]
        async with stack.client() as client:
            ollama = (await client.get("/v1/health")).json()["providers"]["ollama"]
    for r in answered:
        assert r.status_code == 200
        assert r.headers["x-mana-llm-resolved"] == "groq/llama-3.1-8b-instant"
        assert r.headers["x-mana-llm-attempts"] == "2"
    texts = (
        "this model is missing data required for image input",
        f"registry.ollama.ai/library/{TEXT_ONLY} does not support tools",
        f'"{TEXT_ONLY}" does not support thinking',
    )
    for r, text in zip(refusals, texts, strict=True):
        assert r.status_code == 400
        error = r.json()["error"]
        assert error["code"] == "unsupported_capability"
        assert text in error["message"] and f"(model ollama/{TEXT_ONLY})" in error["message"]
        assert r.headers["x-should-retry"] == "false"
    assert ollama["state"] == "closed" and ollama["consecutive_failures"] == 0
    moves = stack.metric(
        "mana_llm_fallback_total",
        from_model=f"ollama/{TEXT_ONLY}",
        to_model="groq/llama-3.1-8b-instant",
        reason="UnsupportedCapability",
    )
    assert moves == 3


async def test_liveness_and_readiness_need_no_api_key(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery, MANA_LLM_API_KEYS="gw-key")
    with trio.fail_after(10):
        async with stack.client() as client:
            live, ready, health = [await client.get(p) for p in ("/livez", "/readyz", "/health")]
            details = await client.get("/v1/health")
    assert (live.status_code, ready.status_code, health.status_code) == (200, 200, 200)
    assert details.status_code == 401


async def test_cold_start_with_the_only_provider_down_is_never_healthy(
    nursery: trio.Nursery,
) -> None:
    """No Ollama running and no cloud key: from the first probe on (one failure, below the
    circuit's threshold) /health says `failing` and `down`, never `ok`."""
    stack = await start_stack(
        nursery, OLLAMA_URL=closed_port_url(), GROQ_API_KEY="", OPENROUTER_API_KEY=""
    )
    with trio.fail_after(10):
        async with stack.client() as client:
            terse = await client.get("/health")
            details = (await client.get("/v1/health")).json()["providers"]["ollama"]
    assert terse.status_code == 503
    assert terse.json() == {
        "status": "down",
        "providers": {
            "ollama": "failing",
            "openrouter": "unconfigured",
            "groq": "unconfigured",
            "together": "unconfigured",
        },
    }
    assert details["state"] == "closed" and details["consecutive_failures"] == 1
    assert details["failing"] is True and details["last_probe_ok"] is False
