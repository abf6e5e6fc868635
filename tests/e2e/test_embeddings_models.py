"""Embeddings (float and base64), the model list and lookup, and /health."""

from __future__ import annotations

import base64
import pathlib
import struct

import openai
import pytest
import trio

from tests.e2e.stack import aliases_file, start_stack
from tests.fakes.server import Reply, Stall
from tests.fakes.upstreams import vector


@pytest.mark.parametrize("model", ["nomic-embed-text", "groq/embed-small"])
async def test_sdk_embeddings_default_base64_decode_to_the_upstream_vectors(
    nursery: trio.Nursery, model: str
) -> None:
    stack = await start_stack(nursery)
    with trio.fail_after(10):
        async with stack.sdk() as sdk:
            result = await sdk.embeddings.create(model=model, input=["one", "three"])
    assert [d.embedding for d in result.data] == [vector("one"), vector("three")]
    assert [d.index for d in result.data] == [0, 1]
    assert result.model == model if "/" in model else result.model == f"ollama/{model}"
    assert result.usage.prompt_tokens == 3


async def test_ollama_embeddings_float_and_base64_over_http(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    with trio.fail_after(10):
        async with stack.client() as client:
            floats = await client.post(
                "/v1/embeddings", json={"model": "nomic-embed-text", "input": "hey"}
            )
            b64 = await client.post(
                "/v1/embeddings",
                json={
                    "model": "nomic-embed-text",
                    "input": "hey",
                    "encoding_format": "base64",
                    "dimensions": 3,
                },
            )
    assert floats.status_code == 200
    assert floats.headers["x-mana-llm-resolved"] == "ollama/nomic-embed-text"
    assert floats.json() == {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": vector("hey")}],
        "model": "ollama/nomic-embed-text",
        "usage": {"prompt_tokens": 3, "total_tokens": 3},
    }
    raw = base64.b64decode(b64.json()["data"][0]["embedding"])
    assert list(struct.unpack("<3f", raw)) == vector("hey", 3)
    assert stack.ollama.requests[-1].json() == {
        "model": "nomic-embed-text",
        "input": ["hey"],
        "dimensions": 3,
    }


async def test_model_list_covers_every_configured_provider(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    with trio.fail_after(10):
        async with stack.sdk() as sdk:
            ids = [m.id async for m in sdk.models.list()]
    assert "ollama/gemma3:4b" in ids
    assert "groq/llama-3.1-8b-instant" in ids
    assert "openrouter/meta-llama/llama-3.1-8b-instruct" in ids
    assert not any(i.startswith("together/") for i in ids)  # not configured


async def test_one_provider_down_or_slow_does_not_fail_the_list(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery, OLLAMA_URL="http://127.0.0.1:1", MODELS_TIMEOUT="0.5")
    stack.cloud.script("/v1/models", Reply(200, [Stall()]))  # one cloud hangs, the other answers
    with trio.fail_after(10):
        async with stack.client() as client:
            r = await client.get("/v1/models")
    assert r.status_code == 200
    ids = [m["id"] for m in r.json()["data"] if m["owned_by"] != "mana-llm"]  # not aliases
    assert {i.split("/", 1)[0] for i in ids} in ({"groq"}, {"openrouter"})


async def test_model_lookup_with_slashes_encoded_or_not(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    with trio.fail_after(10):
        async with stack.sdk() as sdk:
            deep = await sdk.models.retrieve("openrouter/meta-llama/llama-3.1-8b-instruct")
            local = await sdk.models.retrieve("ollama/gemma3:4b")
            with pytest.raises(openai.NotFoundError):
                await sdk.models.retrieve("ollama/nope:1b")
        async with stack.client() as client:
            plain = await client.get("/v1/models/groq/llama-3.1-8b-instant")
            encoded = await client.get("/v1/models/groq%2Fllama-3.1-8b-instant")
            bare = await client.get("/v1/models/gemma3")  # means gemma3:latest, which is not pulled
            latest = await client.get("/v1/models/ollama/nomic-embed-text")
    assert deep.id == "openrouter/meta-llama/llama-3.1-8b-instruct"
    assert local.id == "ollama/gemma3:4b" and local.owned_by == "library"
    assert plain.json()["id"] == encoded.json()["id"] == "groq/llama-3.1-8b-instant"
    assert bare.status_code == 404
    assert latest.json()["id"] == "ollama/nomic-embed-text:latest"


async def test_health_reports_each_provider(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    with trio.fail_after(10):
        async with stack.client() as client:
            r = await client.get("/health")
    assert r.json() == {
        "status": "ok",
        "providers": {
            "ollama": "healthy",
            "openrouter": "healthy",
            "groq": "healthy",
            "together": "unconfigured",
        },
    }


ALIASES = """
aliases:
  mana/fast-text:
    description: quick text
    chain: [groq/llama-3.1-8b-instant, ollama/gemma3:4b]
  mana/vision:
    description: images
    chain: [ollama/gemma3:4b]
"""


async def test_aliases_are_models_where_clients_look_for_them(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    """Model pickers build on /v1/models: every alias is listed once, first, owned by
    mana-llm, with its description and chain; the SDK retrieves one by name."""
    stack = await start_stack(nursery, ALIASES_PATH=aliases_file(tmp_path, ALIASES))
    with trio.fail_after(10):
        async with stack.sdk() as sdk:
            listed = [m async for m in sdk.models.list()]
            alias = await sdk.models.retrieve("mana/fast-text")
            with pytest.raises(openai.NotFoundError, match="unknown alias 'mana/nope'"):
                await sdk.models.retrieve("mana/nope")
    assert [m.id for m in listed[:2]] == ["mana/fast-text", "mana/vision"]
    assert not any(m.id.startswith("mana/") for m in listed[2:])
    assert "ollama/gemma3:4b" in [m.id for m in listed]  # the providers' models follow
    assert alias.id == "mana/fast-text" and alias.owned_by == "mana-llm"
    assert alias.object == "model" and alias.created > 1_700_000_000
    extra = alias.model_dump()
    assert extra["description"] == "quick text"
    assert extra["chain"] == ["groq/llama-3.1-8b-instant", "ollama/gemma3:4b"]
