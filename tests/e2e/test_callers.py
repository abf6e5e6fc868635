"""Callers of the keys file through the real service: who they are, what they may ask for,
their limits and budgets (OpenAI-shaped refusals and x-ratelimit-* headers), what the ledger
keeps of each request, /v1/usage and /v1/keys/status, and the metrics."""

from __future__ import annotations

import hashlib
import pathlib
import sqlite3
from typing import Any

import httpx
import openai
import pytest
import trio

from tests.e2e.stack import GATEWAY_KEY, Stack, start_stack
from tests.fakes.server import Cut, WaitFor
from tests.fakes.upstreams import (
    WORDS,
    ollama_line,
    ollama_stream,
    openai_chunk,
    openai_stream,
)

APP_KEY = "sk-chat-app-0123456789"
OPS_KEY = "sk-ops-0123456789abcdef"
CHAT: dict[str, Any] = {"model": "gemma3:4b", "messages": [{"role": "user", "content": "hi"}]}
GROQ = "groq/llama-3.1-8b-instant"
USED = 7 + len(WORDS)  # what the fakes report: 7 prompt tokens, one per word


def keys_file(tmp_path: pathlib.Path, app: str = "", ops: str = "operator: true") -> str:
    digest = hashlib.sha256(APP_KEY.encode()).hexdigest()
    path = tmp_path / "keys.yaml"
    text = f"keys:\n  chat-app:\n    key_sha256: {digest}\n"
    text += "".join(f"    {line}\n" for line in app.splitlines())
    text += f"  ops:\n    key_env: OPS_KEY\n    {ops}\n"
    path.write_text(text)
    return str(path)


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def callers_stack(
    nursery: trio.Nursery, tmp_path: pathlib.Path, app: str = "", **env: str
) -> Stack:
    return await start_stack(
        nursery,
        KEYS_PATH=keys_file(tmp_path, app),
        OPS_KEY=OPS_KEY,
        MANA_LLM_API_KEYS=GATEWAY_KEY,
        LIMITS_DB=str(tmp_path / "limits.sqlite"),
        **env,
    )


async def test_callers_are_known_by_their_keys_and_never_by_them_in_answers(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    stack = await callers_stack(nursery, tmp_path, "rpm: 5\ntpm: 5000")
    with trio.fail_after(10):
        nobody = await stack.chat(CHAT)
        wrong = await stack.chat(CHAT, bearer(APP_KEY + "x"))
        app = await stack.chat(CHAT, bearer(APP_KEY))
        anonymous = await stack.chat(CHAT, bearer(GATEWAY_KEY))
        async with stack.client() as client:
            status_app = await client.get("/v1/keys/status", headers=bearer(APP_KEY))
            status_ops = await client.get("/v1/keys/status", headers=bearer(OPS_KEY))
            usage = await client.get("/v1/usage", headers=bearer(APP_KEY))
            usage_anonymous = await client.get("/v1/usage", headers=bearer(GATEWAY_KEY))
    assert nobody.status_code == wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert APP_KEY not in wrong.text
    assert app.status_code == anonymous.status_code == 200
    assert app.headers["x-ratelimit-limit-requests"] == "5"
    assert app.headers["x-ratelimit-remaining-requests"] == "4"
    assert app.headers["x-ratelimit-reset-requests"] == "1m0s"
    assert app.headers["x-ratelimit-limit-tokens"] == "5000"
    reserved = 4 + 1024  # one message's estimate, and no max_tokens: the estimate
    assert app.headers["x-ratelimit-remaining-tokens"] == str(5000 - reserved)
    assert "x-ratelimit-limit-requests" not in anonymous.headers
    assert status_app.status_code == 403
    assert status_ops.status_code == 200
    body = status_ops.json()
    assert [c["name"] for c in body["callers"]] == ["chat-app", "ops"]
    assert body["callers"][0]["limits"] == {"rpm": 5, "tpm": 5000}
    digest = hashlib.sha256(APP_KEY.encode()).hexdigest()
    assert digest not in status_ops.text and digest[:8] not in status_ops.text
    assert usage.status_code == 200
    mine = usage.json()
    assert (mine["caller"], mine["requests"], mine["tokens"]) == ("chat-app", 1, USED)
    assert mine["limits"]["rpm"] == {"limit": 5, "remaining": 4}
    assert usage_anonymous.status_code == 404
    labels = {"caller": "chat-app"}
    assert stack.metric("mana_llm_caller_requests_total", outcome="answered", **labels) == 1
    assert stack.metric("mana_llm_caller_tokens_total", kind="prompt", **labels) == 7
    assert stack.metric("mana_llm_caller_tokens_total", kind="completion", **labels) == len(WORDS)
    assert (
        stack.registry.get_sample_value(
            "mana_llm_limit_refusals_total", {"caller": "ops", "limit": "rpm"}
        )
        == 0
    )  # every caller's series exists before its first event


async def test_requests_per_minute_refuse_as_openai_does(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    stack = await callers_stack(nursery, tmp_path, "rpm: 2")
    with trio.fail_after(10):
        answers = [await stack.chat(CHAT, bearer(APP_KEY)) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    refused = answers[2]
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    assert "Limit 2, Used 2, Requested 1" in error["message"]
    assert 55 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-should-retry" not in refused.headers  # a rate limit passes: SDKs may wait
    assert sum(1 for r in stack.ollama.requests if r.path == "/api/chat") == 2
    labels = {"caller": "chat-app"}
    assert stack.metric("mana_llm_limit_refusals_total", limit="rpm", **labels) == 1
    assert stack.metric("mana_llm_caller_requests_total", outcome="refused", **labels) == 1
    assert stack.metric("mana_llm_errors_total", error_type="rate_limit_exceeded") == 1


async def test_a_model_off_the_allow_list_is_a_403(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    stack = await callers_stack(nursery, tmp_path, 'models: ["ollama/*", "mana/*"]')
    with trio.fail_after(10):
        ollama = await stack.chat({**CHAT, "model": "ollama/gemma3:4b"}, bearer(APP_KEY))
        cloud = await stack.chat({**CHAT, "model": GROQ}, bearer(APP_KEY))
    assert ollama.status_code == 200
    assert cloud.status_code == 403
    assert cloud.json()["error"]["code"] == "model_not_allowed"
    assert stack.cloud_calls() == 0


async def test_a_spent_budget_is_refused_once_through_the_sdk(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    """The SDK retries 429s twice by default; insufficient_quota says x-should-retry: false."""
    stack = await callers_stack(nursery, tmp_path, "budget: {tokens: 16, period: day}")
    client = openai.AsyncOpenAI(base_url=stack.base_url + "/v1", api_key=APP_KEY, max_retries=2)
    body: Any = {"model": "gemma3:4b", "messages": CHAT["messages"], "max_tokens": 5}
    with trio.fail_after(20):
        first = await client.chat.completions.create(**body)  # reserves 4 + 5, uses 12
        assert first.usage is not None and first.usage.total_tokens == USED
        with pytest.raises(openai.RateLimitError) as refused:
            await client.chat.completions.create(**body)  # 12 + 9 > 16
    assert refused.value.code == "insufficient_quota"
    assert refused.value.response.headers["x-should-retry"] == "false"
    labels = {"caller": "chat-app"}
    assert stack.metric("mana_llm_limit_refusals_total", limit="budget", **labels) == 1
    assert stack.metric("mana_llm_caller_budget_remaining", unit="tokens", **labels) == 4


async def test_max_parallel_holds_under_concurrent_streams(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    """20 streams at once with max_parallel 3: 3 reach the upstream, 17 are refused at once;
    once those end, the slots are free again."""
    stack = await callers_stack(nursery, tmp_path, "max_parallel: 3")
    release = trio.Event()
    held = [  # the streams that reach the upstream are held until `release`
        ollama_stream(ollama_line("Hi"), WaitFor(release), ollama_line(done=True)) for _ in range(3)
    ]
    stack.ollama.script("/api/chat", *held)
    statuses: list[int] = []
    refusals_back = trio.Event()

    async def one(client: httpx.AsyncClient) -> None:
        body = {**CHAT, "stream": True}
        async with client.stream(
            "POST", "/v1/chat/completions", json=body, headers=bearer(APP_KEY)
        ) as answer:
            await answer.aread()
            statuses.append(answer.status_code)
        if len(statuses) == 17:
            refusals_back.set()

    with trio.fail_after(15):
        async with stack.client(limits=httpx.Limits(max_connections=32)) as client:
            async with trio.open_nursery() as streams:
                for _ in range(20):
                    streams.start_soon(one, client)
                await refusals_back.wait()  # the refusals come back while 3 streams are held
                assert sum(1 for r in stack.ollama.requests if r.path == "/api/chat") == 3
                release.set()
            after = await stack.chat(CHAT, bearer(APP_KEY))
    assert sorted(statuses) == [200] * 3 + [429] * 17
    assert after.status_code == 200


async def test_the_ledger_keeps_a_row_per_request_with_what_it_used(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    db = tmp_path / "usage.sqlite"
    prices = tmp_path / "providers.yaml"
    prices.write_text(f'prices:\n  "{GROQ}": {{input_per_mtok: 1000, output_per_mtok: 2000}}\n')
    stack = await callers_stack(
        nursery, tmp_path, "rpm: 100", USAGE_DB=str(db), PROVIDERS_PATH=str(prices)
    )
    cut = openai_stream(openai_chunk("Hel"), openai_chunk("lo"), Cut())
    deterministic = {"model": GROQ, "messages": CHAT["messages"], "temperature": 0}
    with trio.fail_after(15):
        await stack.chat(CHAT, bearer(APP_KEY))  # ollama, not streamed
        await stack.chat(deterministic, bearer(APP_KEY))  # groq: priced
        hit = await stack.chat(deterministic, bearer(APP_KEY))  # the cache: free
        async with stack.client() as client:
            streamed = await client.post(
                "/v1/chat/completions", json={**CHAT, "stream": True}, headers=bearer(GATEWAY_KEY)
            )
            stack.cloud.script("/v1/chat/completions", cut)
            broken = await client.post(
                "/v1/chat/completions",
                json={"model": GROQ, "messages": CHAT["messages"], "stream": True},
                headers=bearer(APP_KEY),
            )
        assert hit.headers["x-mana-llm-cache"] == "HIT"
        assert streamed.status_code == broken.status_code == 200
        rows = await ledger_rows(db, 5)
    by = [(r["caller"], r["resolved"], r["stream"], r["cache_hit"]) for r in rows]
    assert by == [
        ("chat-app", "ollama/gemma3:4b", 0, 0),
        ("chat-app", GROQ, 0, 0),
        ("chat-app", GROQ, 0, 1),
        ("anonymous", "ollama/gemma3:4b", 1, 0),
        ("chat-app", GROQ, 1, 0),
    ]
    tokens = [(r["prompt_tokens"], r["completion_tokens"], r["estimated"]) for r in rows]
    assert tokens[:4] == [(7, 5, 0), (7, 5, 0), (0, 0, 0), (7, 5, 0)]
    assert tokens[4] == (4, 2, 1)  # cut: the prompt's estimate and 2 chunks relayed, estimated
    assert rows[1]["cost_usd"] == pytest.approx((7 * 1000 + 5 * 2000) / 1e6)
    assert rows[2]["cost_usd"] == 0 and rows[0]["cost_usd"] == 0
    assert (rows[4]["status"], rows[4]["error_type"]) == (502, "upstream_error")  # its last event
    assert all(r["request_id"] and r["duration_ms"] > 0 for r in rows)
    assert rows[3]["ttft_ms"] is not None and rows[0]["deployment"] == "ollama-1"
    cost = stack.metric("mana_llm_caller_cost_usd_total", caller="chat-app")
    assert cost == pytest.approx(rows[1]["cost_usd"] + rows[4]["cost_usd"])


async def ledger_rows(db: pathlib.Path, count: int) -> list[dict[str, Any]]:
    """The ledger's rows once `count` are written (the writer flushes every half second)."""
    # a poll of the file the ledger's thread writes, as a reader would; bounded by the caller
    while len(rows := read_rows(db)) < count:  # noqa: ASYNC110
        await trio.sleep(0.05)
    return rows


def read_rows(db: pathlib.Path) -> list[dict[str, Any]]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM usage ORDER BY id")]


@pytest.mark.parametrize(
    "authorization",
    [
        b"Bearer sk-chat\x01app-0123456789",  # a control character
        b"Bearer " + "sk-\u00e9t\u00e9".encode(),  # not ASCII
        b"Bearer " + b"k" * 60_000,  # huge
        b"Bearer",  # no token
        b"Basic " + APP_KEY.encode(),  # the right key, the wrong scheme
    ],
    ids=["control", "non-ascii", "huge", "empty", "basic"],
)
async def test_hostile_keys_are_clear_refusals_never_a_500(
    nursery: trio.Nursery, tmp_path: pathlib.Path, authorization: bytes
) -> None:
    stack = await callers_stack(nursery, tmp_path, "rpm: 5")
    host, port = stack.base_url.removeprefix("http://").rsplit(":", 1)
    body = b'{"model": "gemma3:4b", "messages": [{"role": "user", "content": "hi"}]}'
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"authorization: " + authorization + b"\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n" % len(body)
    ) + body
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(request)
            answer = b""
            while chunk := await stream.receive_some(65536):
                answer += chunk
    status = int(answer.split(b" ", 2)[1])
    assert status in (400, 401, 431), answer[:300]
    secret = authorization.partition(b" ")[2][:32]
    assert not secret or secret not in answer.partition(b"\r\n\r\n")[2]
    assert not any(r.path == "/api/chat" for r in stack.ollama.requests)
