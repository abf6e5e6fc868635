"""The cache key: what changes it (anything that can change the answer, or the caller) and what
does not (stream, usage reporting, user, metadata, number spelling); what may be cached."""

from __future__ import annotations

from typing import Any

import pytest

from mana_llm.api.wire import parse_chat_request, parse_embedding_request
from mana_llm.cache.keys import chat_cacheable, chat_key, embedding_key
from mana_llm.domain import Target

GROQ = Target("groq", "llama-3.1-8b-instant")
BASE: dict[str, Any] = {
    "model": "mana/fast-text",
    "messages": [{"role": "user", "content": "Tag this: trio"}],
    "temperature": 0,
}
PIXEL = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg=="


def key(body: dict[str, Any], target: Target = GROQ, namespace: str = "public") -> str:
    return chat_key(namespace, target, parse_chat_request(body))


def with_(**fields: Any) -> dict[str, Any]:
    return {**BASE, **fields}


def test_key_shape_names_version_namespace_and_kind() -> None:
    parts = key(BASE).split(":")
    assert parts[:4] == ["mana-llm", "v1", "public", "chat"]
    assert len(parts[4]) == 64


@pytest.mark.parametrize(
    "same",
    [
        with_(stream=True),
        with_(stream=True, stream_options={"include_usage": True}),
        with_(user="alice"),
        with_(metadata={"trace": "x"}),
        with_(store=True),
        with_(temperature=0.0),  # 0 and 0.0 are one number
        with_(n=1),
        with_(keep_alive="5m"),
        with_(model="groq/llama-3.1-8b-instant"),  # the model string is replaced by the target
        {"temperature": 0, "messages": BASE["messages"], "model": "mana/fast-text"},  # key order
    ],
    ids=[
        "stream",
        "include_usage",
        "user",
        "metadata",
        "store",
        "0.0",
        "n=1",
        "keep_alive",
        "model-string",
        "key-order",
    ],
)
def test_what_cannot_change_the_answer_does_not_change_the_key(same: dict[str, Any]) -> None:
    assert key(same) == key(BASE)


@pytest.mark.parametrize(
    "other",
    [
        with_(messages=[{"role": "user", "content": "Tag this: asyncio"}]),
        with_(messages=[{"role": "system", "content": "Tag this: trio"}]),
        with_(messages=[*BASE["messages"], {"role": "assistant", "content": "ok"}]),
        with_(temperature=0.2),
        with_(top_p=0.5),
        with_(max_tokens=5),
        with_(stop=["\n"]),
        with_(seed=1),
        with_(presence_penalty=0.1),
        with_(frequency_penalty=0.1),
        with_(response_format={"type": "json_object"}),
        with_(tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}]),
        with_(tool_choice="none"),
        with_(reasoning_effort="low"),
        with_(logit_bias={"50256": -100}),  # unknown to the gateway: still in the key
        with_(top_k=3),
        with_(options={"num_ctx": 8192}),
    ],
    ids=lambda b: next((k for k in b if BASE.get(k) != b[k]), "?"),
)
def test_what_can_change_the_answer_changes_the_key(other: dict[str, Any]) -> None:
    assert key(other) != key(BASE)


def test_the_target_and_the_namespace_change_the_key() -> None:
    assert key(BASE, Target("ollama", "gemma3:4b")) != key(BASE)
    assert key(BASE, namespace="a" * 32) != key(BASE)
    assert key(BASE, namespace="a" * 32) != key(BASE, namespace="b" * 32)


def image(url: str, detail: str = "auto") -> dict[str, Any]:
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": url, "detail": detail}},
    ]
    return with_(messages=[{"role": "user", "content": content}])


def test_inline_images_are_keyed_by_their_hash() -> None:
    assert key(image(PIXEL)) == key(image(PIXEL))
    assert key(image(PIXEL)) != key(image(PIXEL.replace("Ug==", "Vg==")))
    assert key(image(PIXEL)) != key(image(PIXEL, detail="high"))
    assert key(image("https://example.com/a.png")) != key(image("https://example.com/b.png"))


def test_embedding_key_input_forms_and_encoding() -> None:
    def ekey(**fields: Any) -> str:
        body = {"model": "groq/embed-small", "input": "hello", **fields}
        return embedding_key("public", GROQ, parse_embedding_request(body))

    assert ekey() == ekey(input=["hello"]) == ekey(encoding_format="float") == ekey(user="u")
    assert ekey() != ekey(encoding_format="base64")  # the stored payload differs
    assert ekey() != ekey(input="hello!")
    assert ekey() != ekey(dimensions=2)
    assert ekey().split(":")[3] == "embeddings"


@pytest.mark.parametrize(
    ("fields", "alias", "caller", "cacheable"),
    [
        ({"temperature": 0}, None, False, True),
        ({"seed": 7, "temperature": 0.9}, None, False, True),
        ({"options": {"temperature": 0}}, None, False, True),  # Ollama's own spelling
        ({}, None, False, False),  # the provider's default temperature samples
        ({"temperature": 0.7}, None, False, False),
        ({"temperature": 0.7}, True, False, True),  # the alias opts in
        ({"temperature": 0.7}, None, True, True),  # the caller opts in
        ({"temperature": 0}, False, True, False),  # the alias says never
        ({"temperature": 0, "n": 2}, None, False, False),
        ({"temperature": 0.7, "n": 3}, True, True, False),
    ],
)
def test_what_may_be_cached(
    fields: dict[str, Any], alias: bool | None, caller: bool, cacheable: bool
) -> None:
    body = {"model": "x", "messages": BASE["messages"], **fields}
    assert chat_cacheable(parse_chat_request(body), alias, caller) is cacheable
