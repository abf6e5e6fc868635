"""Errors a new user meets in the first hour, through the real service: an OLLAMA_URL that
points at a server that is not Ollama (Python's own http.server), a provider prefix that
names no provider, an alias whose first entry names a model that does not exist."""

from __future__ import annotations

import http.server
import logging
import pathlib
import threading
from collections.abc import Iterator

import pytest
import trio

from tests.e2e.stack import aliases_file, start_stack

MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture
def not_ollama() -> Iterator[str]:
    """`python -m http.server`, in a thread: 404 pages for GET, 501 pages for POST."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_a_server_that_is_not_ollama_is_said_in_one_short_line(
    nursery: trio.Nursery, not_ollama: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mana_llm.routing.probe")
    stack = await start_stack(nursery, OLLAMA_URL=not_ollama, RETRIES="1")
    with trio.fail_after(10):
        r = await stack.chat({"model": "ollama/gemma3:4b", "messages": MSG})
    assert r.status_code == 502
    error = r.json()["error"]
    assert error["message"] == (
        "ollama answered 501: Error response Error code: 501 Message: Unsupported method"
        " ('POST'). Error code explanation: 501 - Server does not support this operation."
    )
    assert len(error["attempts"]) == 1  # a 501 is not retried
    assert "<" not in r.text and "\\n" not in r.text
    assert r.headers["x-should-retry"] == "false"
    [probe] = [rec.getMessage() for rec in caplog.records if "probe of ollama" in rec.getMessage()]
    assert probe.startswith("probe of ollama failed: probe: ollama answered 404: Error response")
    assert "\n" not in probe and "<" not in probe and len(probe) < 300


async def test_a_prefix_that_names_no_provider_is_said(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    with trio.fail_after(10):
        r = await stack.chat({"model": "anthropic/claude-3", "messages": MSG})
        pulled = await stack.chat({"model": "hf.co/org/nope", "messages": MSG})
    assert r.status_code == 404
    message = r.json()["error"]["message"]
    assert "model 'anthropic/claude-3' not found" in message  # what Ollama said
    assert message.endswith(
        "'anthropic' is not a configured provider (known: ollama, openrouter, groq, together),"
        " so the whole name went to Ollama as a model name"
    )
    assert r.json()["error"]["param"] == "model"
    # a registry path is an Ollama model name, not a provider: nothing to add
    assert pulled.status_code == 404 and "provider" not in pulled.json()["error"]["message"]


CHAIN = """
aliases:
  mana/fast-text:
    chain: [groq/no-such-model, openrouter/also-missing, ollama/gemma3:4b]
"""


async def test_a_missing_model_is_remembered_and_the_cache_works_for_its_alias(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    stack = await start_stack(nursery, ALIASES_PATH=aliases_file(tmp_path, CHAIN))
    body = {"model": "mana/fast-text", "messages": MSG, "temperature": 0}
    with trio.fail_after(10):
        answers = [await stack.chat(body) for _ in range(10)]
    assert all(r.status_code == 200 for r in answers)
    assert {r.headers["x-mana-llm-resolved"] for r in answers} == {"ollama/gemma3:4b"}
    assert answers[0].headers["x-mana-llm-attempts"] == "3"
    assert answers[0].headers["x-mana-llm-cache"] == "MISS"
    assert [r.headers["x-mana-llm-cache"] for r in answers[1:]] == ["HIT"] * 9
    assert stack.cloud_calls() == 2  # each missing model was asked once, not ten times
    assert sum(1 for q in stack.ollama.requests if q.path == "/api/chat") == 1
