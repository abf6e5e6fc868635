"""Properties of the request parsers, over generated input: any JSON value in any field of a
chat or embeddings body gives a parsed request or an InvalidRequest naming a field, never
another exception; any bytes as the body give a request or an InvalidRequest. What parses
also translates for Ollama, keys the cache and serializes, or is refused as a 400."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mana_llm import codec, errors
from mana_llm.api import wire
from mana_llm.cache.keys import chat_cacheable, chat_key, embedding_key
from mana_llm.domain import Target
from mana_llm.providers import ollama_wire
from tests.fields import CHAT_FIELDS, EMBEDDING_FIELDS, MESSAGE_FIELDS

# text, sometimes with lone surrogates (the wire carries them as \\udXXX escapes)
SURROGATES = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1)
TEXT = st.text(max_size=12) | st.tuples(st.text(max_size=4), SURROGATES).map("".join)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
    | st.sampled_from(["user", "assistant", "tool", "json_schema", "float", "base64", "high"])
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)


def base_chat() -> dict[str, Any]:
    return {
        "model": "ollama/gemma3:4b",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}],
            },
            {"role": "tool", "content": "ok", "tool_call_id": "c1"},
        ],
    }


def through_the_edge(body: dict[str, Any]) -> dict[str, Any]:
    """As the wire carries it: ASCII JSON, so lone surrogates travel as escapes."""
    return wire.parse_json_object(json.dumps(body).encode())


def named(error: errors.InvalidRequest) -> None:
    assert error.param is not None, error.message  # the refusal names a field


def use_chat(body: dict[str, Any]) -> None:
    """Parse, then everything the gateway does with a parsed request before any I/O."""
    try:
        request = wire.parse_chat_request(through_the_edge(body))
    except errors.InvalidRequest as error:
        named(error)
        return
    codec.dumps(request.body)
    chat_cacheable(request, None, True)
    chat_key("ns", Target("groq", "m"), request)
    with contextlib.suppress(errors.InvalidRequest, errors.UnsupportedCapability):
        ollama_wire.chat_body("m", request, stream=True)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(CHAT_FIELDS), value=VALUES)
def test_any_value_in_any_chat_field(field: str, value: Any) -> None:
    body = base_chat()
    body[field] = value
    use_chat(body)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index=st.integers(0, 3), field=st.sampled_from(MESSAGE_FIELDS), value=VALUES)
def test_any_value_in_any_message_field(index: int, field: str, value: Any) -> None:
    body = base_chat()
    body["messages"][index][field] = value
    use_chat(body)


@settings(max_examples=200, deadline=None)
@given(value=VALUES)
def test_any_value_as_a_content_part(value: Any) -> None:
    body = base_chat()
    body["messages"][1]["content"] = [{"type": "text", "text": "a"}, value]
    use_chat(body)


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(EMBEDDING_FIELDS), value=VALUES)
def test_any_value_in_any_embeddings_field(field: str, value: Any) -> None:
    body: dict[str, Any] = {"model": "ollama/nomic-embed-text", "input": ["a", "b"]}
    body[field] = value
    try:
        request = wire.parse_embedding_request(through_the_edge(body))
    except errors.InvalidRequest as error:
        named(error)
        return
    codec.dumps(request.body)
    embedding_key("ns", Target("ollama", "m"), request)
    with contextlib.suppress(errors.UnsupportedCapability):
        ollama_wire.embed_body("m", request)


@settings(max_examples=500, deadline=None)
@given(raw=st.binary(max_size=200) | TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_any_bytes_as_the_body(raw: bytes) -> None:
    try:
        body = wire.parse_json_object(raw)
        wire.parse_chat_request(body)
    except errors.InvalidRequest:
        pass
