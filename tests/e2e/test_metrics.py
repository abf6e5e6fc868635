"""Metrics asserted by value after real requests through the service, on a per-test registry."""

from __future__ import annotations

import pathlib
import random
import string

import trio

from tests.e2e.stack import Stack, start_stack
from tests.fakes.server import Stall
from tests.fakes.upstreams import ollama_line, ollama_stream, openai_error

ALIASES = """
aliases:
  mana/fast-text:
    chain: [groq/no-such-model, together/anything, ollama/gemma3:4b]
"""
MSG = [{"role": "user", "content": "hi"}]


def label_values(stack: Stack, metric: str, label: str) -> set[str]:
    return {
        sample.labels[label]
        for family in stack.registry.collect()
        for sample in family.samples
        if sample.name == metric and label in sample.labels
    }


async def test_a_plain_answer(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    with trio.fail_after(10):
        async with stack.client() as client:
            r = await client.post(
                "/v1/chat/completions", json={"model": "gemma3:4b", "messages": MSG}
            )
    assert r.status_code == 200
    model = "ollama/gemma3:4b"
    assert (
        stack.metric(
            "mana_llm_llm_requests_total", provider="ollama", model=model, status="requested"
        )
        == 1
    )
    assert (
        stack.metric(
            "mana_llm_llm_requests_total", provider="ollama", model=model, status="success"
        )
        == 1
    )
    assert stack.metric("mana_llm_tokens_total", provider="ollama", model=model, kind="prompt") == 7
    assert (
        stack.metric("mana_llm_tokens_total", provider="ollama", model=model, kind="completion")
        == 5
    )
    assert (
        stack.metric("mana_llm_request_duration_seconds_count", endpoint="chat", stream="false")
        == 1
    )
    assert stack.metric("mana_llm_upstream_duration_seconds_count", provider="ollama") == 1
    assert stack.metric("mana_llm_gateway_overhead_seconds_count", endpoint="chat") == 1
    total = stack.metric("mana_llm_request_duration_seconds_sum", endpoint="chat", stream="false")
    upstream = stack.metric("mana_llm_upstream_duration_seconds_sum", provider="ollama")
    overhead = stack.metric("mana_llm_gateway_overhead_seconds_sum", endpoint="chat")
    assert 0 < upstream < total and abs(total - upstream - overhead) < 1e-6
    assert stack.metric("mana_llm_active_requests", stream="false") == 0
    assert stack.metric("mana_llm_errors_total", error_type="internal") == 0


async def test_a_fallback_through_an_alias(nursery: trio.Nursery, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "aliases.yaml"
    path.write_text(ALIASES)
    stack = await start_stack(nursery, ALIASES_PATH=str(path))
    with trio.fail_after(10):
        async with stack.client() as client:
            r = await client.post(
                "/v1/chat/completions", json={"model": "mana/fast-text", "messages": MSG}
            )
    assert r.status_code == 200
    assert (
        stack.metric(
            "mana_llm_llm_requests_total",
            provider="mana",
            model="mana/fast-text",
            status="requested",
        )
        == 1
    )
    assert (
        stack.metric(
            "mana_llm_llm_requests_total",
            provider="ollama",
            model="ollama/gemma3:4b",
            status="success",
        )
        == 1
    )
    assert (
        stack.metric(
            "mana_llm_alias_resolved_total",
            alias="mana/fast-text",
            target="ollama/gemma3:4b",
        )
        == 1
    )
    fallback = "mana_llm_fallback_total"
    assert (
        stack.metric(
            fallback,
            from_model="groq/no-such-model",
            to_model="together/anything",
            reason="UpstreamModelNotFound",
        )
        == 1
    )
    assert (
        stack.metric(
            fallback,
            from_model="together/anything",
            to_model="ollama/gemma3:4b",
            reason="unconfigured",
        )
        == 1
    )


async def test_a_stream_and_a_disconnect(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery, STREAM_IDLE_TIMEOUT="30")
    with trio.fail_after(10):
        async with stack.client() as client:
            body = {"model": "gemma3:4b", "messages": MSG, "stream": True}
            r = await client.post("/v1/chat/completions", json=body)
            assert r.text.endswith("data: [DONE]\n\n")
            stack.ollama.script("/api/chat", ollama_stream(ollama_line("Hi"), Stall()))
            async with client.stream("POST", "/v1/chat/completions", json=body) as s:
                async for line in s.aiter_lines():
                    if "Hi" in line:
                        assert stack.metric("mana_llm_active_requests", stream="true") == 1
                        break
        await stack.ollama.requests[-1].closed.wait()
        async with stack.client() as client:  # a later request: the disconnected one has finished
            await client.get("/health")
    assert stack.metric("mana_llm_time_to_first_token_seconds_count", provider="ollama") == 2
    assert (
        stack.metric("mana_llm_request_duration_seconds_count", endpoint="chat", stream="true") == 2
    )
    assert stack.metric("mana_llm_errors_total", error_type="client_disconnected") == 1
    assert stack.metric("mana_llm_active_requests", stream="true") == 0
    success = stack.metric(
        "mana_llm_llm_requests_total",
        provider="ollama",
        model="ollama/gemma3:4b",
        status="success",
    )
    assert success == 1  # the cut-off stream is not a success
    assert (
        stack.metric(
            "mana_llm_tokens_total",
            provider="ollama",
            model="ollama/gemma3:4b",
            kind="completion",
        )
        == 5
    )


async def test_errors_by_type(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    with trio.fail_after(10):
        async with stack.client() as client:
            await client.post("/v1/chat/completions", content=b"{")
            await client.post("/v1/chat/completions", json={"model": "together/x", "messages": MSG})
            await client.post(
                "/v1/chat/completions", json={"model": "ollama/missing:1b", "messages": MSG}
            )
            await client.get("/nowhere")
    assert stack.metric("mana_llm_errors_total", error_type="invalid_request") == 1
    assert stack.metric("mana_llm_errors_total", error_type="provider_not_configured") == 1
    assert stack.metric("mana_llm_errors_total", error_type="not_found") == 2


async def test_callers_cannot_create_unbounded_series(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    rng = random.Random(7)
    names = ["".join(rng.choices(string.ascii_lowercase, k=12)) for _ in range(30)]
    models = [f"ollama/{n}" for n in names[:10]] + [f"groq/{n}" for n in names[10:20]] + names[20:]
    with trio.fail_after(20):
        async with stack.client() as client:
            for model in models:
                r = await client.post(
                    "/v1/chat/completions", json={"model": model, "messages": MSG}
                )
                assert r.status_code == 404
            await client.post(
                "/v1/chat/completions", json={"model": "mana/" + names[0], "messages": MSG}
            )
            await client.post("/v1/chat/completions", json={"model": "gemma3:4b", "messages": MSG})
    assert label_values(stack, "mana_llm_llm_requests_total", "model") == {
        "other",
        "ollama/gemma3:4b",
    }
    assert label_values(stack, "mana_llm_llm_requests_total", "provider") == {"other", "ollama"}
    text = "".join(str(s) for f in stack.registry.collect() for s in f.samples)
    assert not any(n in text for n in names)


async def test_request_ids(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    with trio.fail_after(10):
        async with stack.client() as client:
            given = await client.get("/health", headers={"x-request-id": "abc-123.x:y"})
            bad = await client.get("/health", headers={b"x-request-id": b"no spaces or \xfcnicode"})
            none = await client.post("/v1/chat/completions", content=b"{")
            long = await client.get("/health", headers={"x-request-id": "a" * 500})
            stream = await client.post(
                "/v1/chat/completions",
                json={"model": "gemma3:4b", "messages": MSG, "stream": True},
                headers={"x-request-id": "stream-1"},
            )
    assert given.headers["x-request-id"] == "abc-123.x:y"
    for r in (bad, none, long):
        assert len(r.headers["x-request-id"]) == 32 and r.headers["x-request-id"].isalnum()
    assert stream.headers["x-request-id"] == "stream-1"


async def test_metrics_content_type_follows_accept(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    with trio.fail_after(10):
        async with stack.client() as client:
            plain = await client.get("/metrics")
            open_metrics = await client.get(
                "/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"}
            )
    assert plain.headers["content-type"].startswith("text/plain")
    assert "mana_llm_errors_total" in plain.text
    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
    assert open_metrics.text.rstrip().endswith("# EOF")


async def test_series_known_in_advance_exist_at_zero_and_no_created_series(
    nursery: trio.Nursery,
) -> None:
    stack = await start_stack(nursery)
    with trio.fail_after(10):
        async with stack.client() as client:
            text = (await client.get("/metrics")).text
    assert "_created" not in text
    for line in (
        'mana_llm_alias_reloads_total{result="error"} 0.0',
        'mana_llm_alias_reloads_total{result="success"} 0.0',
        'mana_llm_health_probe_total{provider="groq",result="failure"} 0.0',
        'mana_llm_health_probe_total{provider="ollama",result="failure"} 0.0',
        'mana_llm_health_probe_total{provider="ollama",result="success"} 1.0',
        'mana_llm_errors_total{error_type="all_providers_failed"} 0.0',
    ):
        assert line in text.splitlines(), line
    assert 'provider="together"' not in text  # not configured: no probe series


async def test_a_failed_direct_request_is_no_fallback(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    stack.cloud.script("/v1/chat/completions", openai_error(503, "overloaded"))
    with trio.fail_after(10):
        r = await stack.chat({"model": "groq/llama-3.1-8b-instant", "messages": MSG})
    assert r.status_code == 502
    assert label_values(stack, "mana_llm_fallback_total", "from_model") == set()
