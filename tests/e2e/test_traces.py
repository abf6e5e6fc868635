"""OpenTelemetry traces through the real service, exported over OTLP/HTTP to a real receiver
(tests/e2e/otlp.py decodes the exporter's protobuf): the span tree of a fallback chain, every
attribute the GenAI and HTTP conventions give it, the caller's trace continued, `traceparent`
at the upstreams, a stream's first token and commit, a client that goes away, a dead
collector."""

from __future__ import annotations

import json
import os
import pathlib
import signal
from typing import Any

import httpx
import pytest
import trio

from tests.e2e.otlp import Receiver, Span, start_receiver
from tests.e2e.stack import Stack, aliases_file, closed_port_url, stack_env, start_stack
from tests.e2e.test_fidelity import PNG
from tests.e2e.test_process import gateway_process, one_line_exit_2
from tests.fakes.server import FakeServer, Reply, Request, Stall
from tests.fakes.upstreams import FakeOllama, FakeOpenAI, ollama_line, ollama_stream, openai_error

CHAIN = "mana/fast-text"  # groq, together (not configured), ollama/gemma3:4b
PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture(autouse=True)
def quick_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch processor exports every 50 ms (the SDK reads OTEL_BSP_* itself)."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")


async def traced_stack(nursery: trio.Nursery, receiver: Receiver, **env: str) -> Stack:
    return await start_stack(nursery, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=receiver.url, **env)


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


def sampled(traceparent: str) -> str:
    """A W3C traceparent without its flags, once they say "sampled" (the SDK may also set
    trace context level 2's random-trace-id bit: 03)."""
    head, _, flags = traceparent.rpartition("-")
    assert int(flags, 16) & 1, traceparent
    return head


def tree(spans: list[Span]) -> tuple[Span, list[Span]]:
    """The one server span and its attempt spans, in the order they started."""
    [server] = [s for s in spans if s.kind == "SERVER"]
    attempts = sorted((s for s in spans if s.parent_id == server.span_id), key=lambda s: s.start)
    assert all(s.trace_id == server.trace_id for s in spans)
    return server, attempts


async def test_a_fallback_chain_is_a_server_span_over_one_client_span_per_attempt(
    nursery: trio.Nursery,
) -> None:
    receiver = await start_receiver(nursery)
    stack = await traced_stack(nursery, receiver, MANA_LLM_API_KEYS="k")
    stack.cloud.script("/v1/chat/completions", openai_error(503, "overloaded"))
    body = chat(CHAIN, max_tokens=50, temperature=0.5, top_p=0.9)
    with trio.fail_after(10):
        async with stack.client() as client:
            r = await client.post(
                "/v1/chat/completions",
                json=body,
                headers={"authorization": "Bearer k", "user-agent": "tests/1.0"},
            )
        spans = await receiver.wait_for(3)
    assert r.status_code == 200
    server, attempts = tree(spans)
    assert server.name == "POST /v1/chat/completions"
    assert server.attributes == {
        "http.request.method": "POST",
        "http.route": "/v1/chat/completions",
        "url.scheme": "http",
        "server.address": "127.0.0.1",
        "user_agent.original": "tests/1.0",
        "http.response.status_code": 200,
        "mana_llm.alias": CHAIN,
    }
    skipped = server.event("mana_llm.circuit_refusal")
    assert skipped == {
        "mana_llm.target": "together/meta-llama/Llama-3.2-3B-Instruct-Turbo",
        "error.type": "provider_not_configured",
    }
    groq, ollama = attempts
    assert [groq.name, ollama.name] == ["chat groq/llama-3.1-8b-instant", "chat ollama/gemma3:4b"]
    assert groq.kind == ollama.kind == "CLIENT"
    assert groq.status == 2 and groq.attributes["error.type"] == "upstream_error"
    assert groq.attributes["gen_ai.provider.name"] == "groq"
    assert groq.attributes["mana_llm.attempt"] == 0
    assert "mana_llm.attempt.kind" not in groq.attributes  # the first try of the walk
    common = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.max_tokens": 50,
        "gen_ai.request.temperature": 0.5,
        "gen_ai.request.top_p": 0.9,
        "mana_llm.alias": CHAIN,
    }
    assert "gen_ai.request.stream" not in groq.attributes  # set if and only if streaming
    assert common.items() <= groq.attributes.items()
    assert common.items() <= ollama.attributes.items()
    ollama_port = int(stack.ollama.url.rsplit(":", 1)[1])
    assert ollama.status != 2 and ollama.attributes | {"gen_ai.response.id": "x"} == {
        **common,
        "gen_ai.provider.name": "ollama",
        "gen_ai.request.model": "ollama/gemma3:4b",
        "gen_ai.response.id": "x",
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.usage.input_tokens": 7,
        "gen_ai.usage.output_tokens": 5,
        "server.address": "127.0.0.1",
        "server.port": ollama_port,
        "mana_llm.deployment": "ollama-1",
        "mana_llm.attempt": 1,
        "mana_llm.attempt.kind": "fallback",
        "mana_llm.fallback.reason": "provider_not_configured",
    }
    # each upstream got the traceparent of its own attempt's span
    cloud = [q for q in stack.cloud.requests if q.path == "/v1/chat/completions"][-1]
    local = [q for q in stack.ollama.requests if q.path == "/api/chat"][-1]
    assert sampled(cloud.headers["traceparent"]) == f"00-{groq.trace_id}-{groq.span_id}"
    assert sampled(local.headers["traceparent"]) == f"00-{ollama.trace_id}-{ollama.span_id}"
    assert server.resource["service.name"] == "mana-llm"
    assert server.resource["service.instance.id"].endswith(str(os.getpid()))


@pytest.mark.parametrize(
    ("traceparent", "continued"),
    [
        (f"00-{PARENT_TRACE}-{PARENT_SPAN}-01", True),
        (f"00-{PARENT_TRACE}-{PARENT_SPAN}", False),  # no flags: malformed
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", False),  # zero trace id
        ("garbage", False),
    ],
)
async def test_the_callers_trace_is_continued_and_a_malformed_one_ignored(
    nursery: trio.Nursery, traceparent: str, continued: bool
) -> None:
    receiver = await start_receiver(nursery)
    stack = await traced_stack(nursery, receiver)
    headers = {"traceparent": traceparent, "tracestate": "vendor=1"}
    with trio.fail_after(10):
        r = await stack.chat(chat("gemma3:4b"), headers)
        spans = await receiver.wait_for(2)
    assert r.status_code == 200
    server, _ = tree(spans)
    if continued:
        assert (server.trace_id, server.parent_id) == (PARENT_TRACE, PARENT_SPAN)
        sent = [q for q in stack.ollama.requests if q.path == "/api/chat"][-1].headers
        assert sent["tracestate"] == "vendor=1"
    else:
        assert server.trace_id != PARENT_TRACE and server.parent_id == ""


async def test_a_stream_has_its_commit_and_first_token_and_ends_with_its_usage(
    nursery: trio.Nursery,
) -> None:
    receiver = await start_receiver(nursery)
    stack = await traced_stack(nursery, receiver)
    with trio.fail_after(10):
        r = await stack.chat(chat("groq/llama-3.1-8b-instant", stream=True))
        spans = await receiver.wait_for(2)
    assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
    server, [attempt] = tree(spans)
    [(_, _, first_token_at)] = [e for e in server.events if e[0] == "mana_llm.first_token"]
    [(_, _, commit_at)] = [e for e in attempt.events if e[0] == "mana_llm.commit"]
    assert attempt.start <= commit_at <= first_token_at <= server.end
    assert attempt.attributes["gen_ai.request.stream"] is True
    assert attempt.attributes["gen_ai.usage.output_tokens"] == 5
    assert attempt.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert 0 < attempt.attributes["gen_ai.response.time_to_first_chunk"] < 5
    assert attempt.end <= server.end and attempt.status != 2


async def test_a_client_that_goes_away_ends_every_span(nursery: trio.Nursery) -> None:
    receiver = await start_receiver(nursery)
    stack = await traced_stack(nursery, receiver)
    stack.ollama.script("/api/chat", ollama_stream(ollama_line("Hel"), Stall()))
    with trio.fail_after(10):
        body = chat("gemma3:4b", stream=True)
        async with (
            stack.client() as client,
            client.stream("POST", "/v1/chat/completions", json=body) as response,
        ):
            async for _ in response.aiter_bytes():
                break  # the first token is here: go away
        spans = await receiver.wait_for(2)
    server, [attempt] = tree(spans)
    assert server.status == attempt.status == 2
    assert server.attributes["http.response.status_code"] == 499
    assert (
        server.attributes["error.type"]
        == attempt.attributes["error.type"]
        == ("client_disconnected")
    )


async def test_the_request_deadline_ends_the_attempt_span(nursery: trio.Nursery) -> None:
    receiver = await start_receiver(nursery)
    stack = await traced_stack(nursery, receiver, FIRST_TOKEN_TIMEOUT="0.3")
    stack.ollama.script("/api/chat", ollama_stream(Stall()))
    with trio.fail_after(10):
        r = await stack.chat(chat("gemma3:4b", stream=True))
        spans = await receiver.wait_for(2)
    assert r.status_code == 504
    server, [attempt] = tree(spans)
    assert attempt.attributes["error.type"] == "upstream_timeout" and attempt.status == 2
    assert server.attributes["error.type"] == "upstream_timeout"


async def test_an_image_fetch_has_its_own_span(nursery: trio.Nursery) -> None:
    receiver = await start_receiver(nursery)

    def serve(request: Request) -> Reply:
        return Reply(200, [PNG], {"content-type": "image/png"})

    images: FakeServer = await nursery.start(FakeServer(serve).serve)
    stack = await traced_stack(nursery, receiver, IMAGE_FETCH_ALLOW_NETWORKS="127.0.0.0/8")
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": images.url + "/cat.png"}},
    ]
    body = {"model": "gemma3:4b", "messages": [{"role": "user", "content": content}]}
    with trio.fail_after(10):
        r = await stack.chat(body)
        spans = await receiver.wait_for(3)
    assert r.status_code == 200
    _, [attempt] = tree(spans)
    [fetch] = [s for s in spans if s.parent_id == attempt.span_id]
    assert fetch.name == "GET" and fetch.kind == "CLIENT"
    assert fetch.attributes["http.response.status_code"] == 200
    assert fetch.attributes["mana_llm.purpose"] == "image_fetch"
    assert "traceparent" not in images.requests[0].headers  # not sent to a third party


async def test_message_content_only_when_asked_and_bounded(nursery: trio.Nursery) -> None:
    receiver = await start_receiver(nursery)
    stack = await traced_stack(
        nursery, receiver, OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="true"
    )
    long = "x" * 10_000
    body = {"model": "gemma3:4b", "messages": [{"role": "user", "content": long}]}
    with trio.fail_after(10):
        await stack.chat(body)
        spans = await receiver.wait_for(2)
    _, [attempt] = tree(spans)
    events = [a for n, a, _ in attempt.events if n == "gen_ai.client.inference.operation.details"]
    sent = json.loads(events[0]["gen_ai.input.messages"])
    answer = json.loads(events[1]["gen_ai.output.messages"])
    text = sent[0]["parts"][0]["content"]
    assert len(text) == 4096 and text.endswith("…[truncated]")
    assert answer[0]["parts"][0]["content"] == "Hello from the fake."


async def test_no_content_by_default(nursery: trio.Nursery) -> None:
    receiver = await start_receiver(nursery)
    stack = await traced_stack(nursery, receiver)
    with trio.fail_after(10):
        await stack.chat(chat("gemma3:4b"))
        spans = await receiver.wait_for(2)
    assert all("gen_ai.input.messages" not in json.dumps(s.events) for s in spans)
    assert all("hi" not in json.dumps(s.attributes) for s in spans)


async def test_a_dead_collector_costs_nothing_and_is_counted(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "0.5")
    stack = await start_stack(
        nursery, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=closed_port_url() + "/v1/traces"
    )
    with trio.fail_after(10):
        async with stack.client() as client:
            for _ in range(20):
                r = await client.post("/v1/chat/completions", json=chat("gemma3:4b"))
                assert r.status_code == 200
        # the exporter's thread gives up on its own (a poll of a counter another thread sets)
        while not stack.metric("mana_llm_trace_spans_dropped_total", reason="export_failed"):  # noqa: ASYNC110
            await trio.sleep(0.05)
    assert stack.metric("mana_llm_trace_spans_dropped_total", reason="queue_full") == 0


async def test_sigterm_flushes_the_spans_and_log_lines_carry_the_ids(
    nursery: trio.Nursery,
) -> None:
    receiver = await start_receiver(nursery)
    ollama: FakeServer = await nursery.start(FakeServer(FakeOllama()).serve)
    cloud: FakeServer = await nursery.start(FakeServer(FakeOpenAI()).serve)
    env = stack_env(
        ollama,
        cloud,
        LOG_FORMAT="json",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url.removesuffix("/v1/traces"),
        OTEL_SERVICE_NAME="gw-under-test",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment=test",
        OTEL_BSP_SCHEDULE_DELAY="600000",  # nothing leaves before the drain flushes it
    )
    with trio.fail_after(20):
        async with gateway_process(env) as gw:
            await gw.wait_log(rb"traces: to http://127\.0\.0\.1:\d+/v1/traces as gw-under-test")
            async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
                r = await client.post(
                    "/v1/chat/completions", json=chat("gemma3:4b"), headers={"x-request-id": "r1"}
                )
            assert r.status_code == 200 and not receiver.spans
            gw.proc.send_signal(signal.SIGTERM)
            assert await gw.proc.wait() == 0
            assert gw.proc.stderr is not None
            while data := await gw.proc.stderr.receive_some():  # the rest of its log
                gw.log.extend(data)
    server, [_] = tree(receiver.spans)  # exported on the way out
    assert server.resource["service.name"] == "gw-under-test"
    assert server.resource["deployment.environment"] == "test"
    assert server.resource["service.instance.id"].endswith(f"-{gw.proc.pid}")
    lines = [json.loads(line) for line in gw.log.decode().splitlines()]
    [request] = [line for line in lines if line.get("request_id") == "r1"]
    assert (request["trace_id"], request["span_id"]) == (server.trace_id, server.span_id)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OTEL_TRACES_EXPORTER", "zipkin"),
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
        ("OTEL_RESOURCE_ATTRIBUTES", "team"),
        ("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "maybe"),
    ],
)
def test_a_malformed_otel_variable_is_one_line_and_exit_2(name: str, value: str) -> None:
    assert name in one_line_exit_2(**{name: value})


HEDGED = """
aliases:
  mana/quick:
    hedge_after_s: 0.2
    chain: [groq/llama-3.1-8b-instant, ollama/gemma3:4b]
"""


async def test_a_hedge_is_a_span_beside_the_silent_one_and_the_winner_is_said(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    receiver = await start_receiver(nursery)
    aliases = aliases_file(tmp_path, HEDGED)
    stack = await traced_stack(nursery, receiver, ALIASES_PATH=aliases)
    stack.cloud.script("/v1/chat/completions", Reply(200, [Stall()]))
    with trio.fail_after(10):
        r = await stack.chat(chat("mana/quick"))
        spans = await receiver.wait_for(3)
    assert r.headers["x-mana-llm-resolved"] == "ollama/gemma3:4b"
    server, [silent, hedge] = tree(spans)
    assert silent.attributes["mana_llm.attempt"] == 0 and "mana_llm.hedged" not in silent.attributes
    assert silent.attributes["error.type"] == "cancelled" and silent.status == 2
    assert hedge.attributes["mana_llm.attempt.kind"] == "hedge"
    assert hedge.attributes["mana_llm.hedged"] is True and hedge.status != 2
    assert server.event("mana_llm.hedge_started") == {"mana_llm.target": "ollama/gemma3:4b"}
    assert server.event("mana_llm.hedge") == {"mana_llm.hedge.winner": "hedge"}
    assert server.attributes["mana_llm.hedge"] == "won"


async def test_a_client_gone_before_the_answer_ends_the_attempt_span_as_a_disconnect(
    nursery: trio.Nursery,
) -> None:
    receiver = await start_receiver(nursery)
    stack = await traced_stack(nursery, receiver)
    stack.ollama.script("/api/chat", Reply(200, [Stall()]))
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=0.3) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post("/v1/chat/completions", json=chat("gemma3:4b"))
        spans = await receiver.wait_for(2)
    server, [attempt] = tree(spans)
    assert server.attributes["http.response.status_code"] == 499
    assert attempt.attributes["error.type"] == "client_disconnected" and attempt.status == 2


async def test_a_stalled_collector_fills_the_bounded_queue_not_the_requests(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "4")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "5")
    collector: FakeServer = await nursery.start(
        FakeServer(lambda request: Reply(200, [Stall()])).serve
    )
    stack = await start_stack(
        nursery, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=collector.url + "/v1/traces"
    )
    with trio.fail_after(10):
        async with stack.client() as client:
            for _ in range(10):
                with trio.fail_after(1):  # an export that hangs is on another thread
                    r = await client.post("/v1/chat/completions", json=chat("gemma3:4b"))
                assert r.status_code == 200
        await collector.wait_requests(1)  # the exporter is stuck in its first export...
    dropped = stack.metric("mana_llm_trace_spans_dropped_total", reason="queue_full")
    # ...so what the queue cannot hold is dropped, and counted: 20 spans, 2 in the stuck export,
    # 4 queued, and the last server span may end just after its answer reached the client
    assert dropped >= 20 - 2 - 4 - 1


async def test_embeddings_attempts_are_embeddings_spans(nursery: trio.Nursery) -> None:
    receiver = await start_receiver(nursery)
    stack = await traced_stack(nursery, receiver)
    with trio.fail_after(10):
        async with stack.client() as client:
            r = await client.post(
                "/v1/embeddings", json={"model": "nomic-embed-text", "input": ["a", "b"]}
            )
        spans = await receiver.wait_for(2)
    assert r.status_code == 200
    server, [attempt] = tree(spans)
    assert server.name == "POST /v1/embeddings"
    assert attempt.name == "embeddings ollama/nomic-embed-text"
    assert attempt.attributes["gen_ai.operation.name"] == "embeddings"
    assert attempt.attributes["gen_ai.usage.input_tokens"] == 3


async def test_a_cache_hit_is_a_server_span_alone_naming_the_answer(
    nursery: trio.Nursery,
) -> None:
    receiver = await start_receiver(nursery)
    stack = await traced_stack(nursery, receiver)
    body = chat("groq/llama-3.1-8b-instant", temperature=0)
    with trio.fail_after(10):
        await stack.chat(body)
        hit = await stack.chat(body)
        spans = await receiver.wait_for(3)
    assert hit.headers["x-mana-llm-cache"] == "HIT"
    servers = [s for s in spans if s.kind == "SERVER"]
    assert [s.attributes.get("mana_llm.cache") for s in servers] == ["miss", "hit"]
    assert servers[1].attributes["mana_llm.resolved"] == "groq/llama-3.1-8b-instant"
    assert not [s for s in spans if s.parent_id == servers[1].span_id]  # no attempt ran
