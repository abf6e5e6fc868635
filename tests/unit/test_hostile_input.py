"""Hostile input, one test per class a fuzzing run found: each is a 400 naming the field (or a
clean answer), never a 500. Reproductions from the issue, then the classes' neighbours."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import httpx
import pytest
import trio

from mana_llm import codec, errors
from mana_llm.api import wire
from mana_llm.cache.keys import chat_key
from mana_llm.domain import Image, Target
from mana_llm.providers import ollama_wire
from mana_llm.providers.http_errors import Redactor
from mana_llm.providers.images import ImageFetcher

MSG = [{"role": "user", "content": "hi"}]


def chat(raw: bytes) -> Any:
    return wire.parse_chat_request(wire.parse_json_object(raw))


def refused(raw: bytes, param: str | None) -> errors.InvalidRequest:
    with pytest.raises(errors.InvalidRequest) as raised:
        chat(raw)
    assert raised.value.param == param, raised.value.message
    return raised.value


SURROGATE = "\\ud800"  # as JSON text: a lone high surrogate escape


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ('{"model":"x","messages":[{"role":"user","content":"%s"}]}', "messages[0].content"),
        ('{"model":"%s","messages":[{"role":"user","content":"a"}]}', "model"),
        ('{"model":"x","messages":[{"role":"user","content":"a"}],"stop":["%s"]}', "stop[0]"),
        (
            '{"model":"x","messages":[{"role":"user","content":"a"}],'
            '"tools":[{"type":"function","function":{"name":"%s"}}]}',
            "tools[0].function.name",
        ),
        (
            '{"model":"x","messages":[{"role":"user","content":"a"}],"options":{"k":"%s"}}',
            "options.k",
        ),
        ('{"model":"x","messages":[{"role":"user","content":"a"}],"extra":"%s"}', "extra"),
        ('{"model":"x","messages":[{"role":"user","content":"a"}],"%s":1}', None),
    ],
)
def test_a_lone_surrogate_anywhere_is_a_400_naming_the_field(body: str, param: str | None) -> None:
    error = refused((body % SURROGATE).encode(), param)
    assert "Unicode" in error.message


def test_a_lone_surrogate_in_embedding_input_is_a_400() -> None:
    with pytest.raises(errors.InvalidRequest) as raised:
        wire.parse_json_object(b'{"model":"x","input":["a","\\ud800"]}')
    assert raised.value.param == "input[1]"


def test_a_valid_surrogate_pair_is_fine() -> None:
    parsed = chat(b'{"model":"x","messages":[{"role":"user","content":"\\ud83d\\ude00"}]}')
    assert parsed.messages[0].content == "\U0001f600"


@pytest.mark.parametrize("depth", [129, 1025, 5000])
def test_nesting_deeper_than_the_limit_is_a_400(depth: int) -> None:
    raw = b"[" * depth + b"]" * depth
    with pytest.raises(errors.InvalidRequest):
        wire.parse_json_object(b'{"model":"x","input":' + raw + b"}")
    deep = b'{"a":' * depth + b"1" + b"}" * depth
    with pytest.raises(errors.InvalidRequest):
        wire.parse_json_object(b'{"model":"x","messages":[],"extra":' + deep + b"}")


def test_nesting_at_the_limit_is_accepted_and_keys_and_serializes() -> None:
    inner = b'{"a":' * 120 + b"1" + b"}" * 120
    raw = b'{"model":"x","messages":[{"role":"user","content":"a"}],"extra":' + inner + b"}"
    request = chat(raw)
    assert codec.loads(codec.dumps(request.body)) == json.loads(raw)
    assert chat_key("public", Target("groq", "m"), request).startswith("mana-llm:v1:public:chat:")


@pytest.mark.parametrize(
    ("field", "value", "param"),
    [
        ("role", [], "messages[0].role"),
        ("role", {}, "messages[0].role"),
        ("response_format", {"type": []}, "response_format"),
        ("response_format", {"type": {}}, "response_format"),
        ("reasoning_effort", [], "reasoning_effort"),
        ("reasoning", {"effort": {}}, "reasoning_effort"),
        ("tool_choice", [], "tool_choice"),
        ("stop", [[]], "stop"),
    ],
)
def test_a_list_or_object_where_a_string_is_expected_is_a_400(
    field: str, value: Any, param: str | None
) -> None:
    body: dict[str, Any] = {"model": "x", "messages": [{"role": "user", "content": "a"}]}
    if field == "role":
        body["messages"][0]["role"] = value
    else:
        body[field] = value
    refused(json.dumps(body).encode(), param)


@pytest.mark.parametrize("value", [[], {}, 0, "x", True])
def test_encoding_format_other_than_float_or_base64_is_a_400(value: Any) -> None:
    with pytest.raises(errors.InvalidRequest) as raised:
        wire.parse_embedding_request({"model": "x", "input": "a", "encoding_format": value})
    assert raised.value.param == "encoding_format"


@pytest.mark.parametrize(
    "model", ["a\r\nX-Evil: 1", "gem\nma3", "x\x00y", "\x1b[31mred", "x" * 257, "tab\there"]
)
def test_a_model_with_control_characters_or_too_long_is_a_400(model: str) -> None:
    refused(json.dumps({"model": model, "messages": MSG}).encode(), "model")


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999"])
def test_nan_and_infinity_are_not_json(literal: bytes) -> None:
    raw = b'{"model":"x","messages":[{"role":"user","content":"a"}],"temperature":' + literal + b"}"
    with pytest.raises(errors.InvalidRequest, match="not valid JSON"):
        chat(raw)


def test_big_integers_are_still_json() -> None:
    request = chat(b'{"model":"x","messages":[{"role":"user","content":"a"}],"n_big":1e300}')
    assert request.body["n_big"] == 1e300


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "user", "content": "a", "tool_calls": []}, "messages[0].tool_calls"),
        ({"role": "system", "content": "a", "tool_call_id": "c"}, "messages[0].tool_call_id"),
        ({"role": "assistant", "content": "a", "tool_call_id": "c"}, "messages[0].tool_call_id"),
        (
            {"role": "tool", "content": "a", "tool_call_id": "c", "tool_calls": []},
            "messages[0].tool_calls",
        ),
    ],
)
def test_tool_fields_on_roles_that_cannot_carry_them_are_a_400(
    message: dict[str, Any], param: str
) -> None:
    refused(json.dumps({"model": "x", "messages": [message]}).encode(), param)


def test_an_empty_data_uri_is_a_400() -> None:
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,"}}
    body = {"model": "x", "messages": [{"role": "user", "content": [part]}]}
    refused(json.dumps(body).encode(), "messages[0].content[0]")


@pytest.mark.parametrize(
    "url",
    ["http://a/\x00b", "http://a/b\r\nHost: evil", "http://a/ b", "http://a/" + "x" * 100_000],
)
def test_image_urls_with_control_characters_or_too_long_are_a_400_at_parse(url: str) -> None:
    part = {"type": "image_url", "image_url": {"url": url}}
    body = {"model": "x", "messages": [{"role": "user", "content": [part]}]}
    refused(json.dumps(body).encode(), "messages[0].content[0]")


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1/x",
        "http://0177.0.0.1/x",
        "http://①②⑦.0.0.1/x",
        "http://" + "a" * 70 + ".example/x",
        "http://127.1/x",
        "http://[::127.0.0.1]/x",
        "http://x:99999/y",
        "http:///nohost",
    ],
)
async def test_malformed_or_disguised_image_urls_are_a_400_at_fetch(url: str) -> None:
    async with httpx.AsyncHTTPTransport() as transport:
        fetcher = ImageFetcher(transport, timeout_s=2)
        with trio.fail_after(5), pytest.raises(errors.InvalidRequest) as raised:
            await fetcher.fetch(Image("messages[0].content[1]", url=url))
    assert raised.value.param == "messages[0].content[1]"


def test_more_image_urls_than_allowed_is_a_400() -> None:
    async def run() -> None:
        async with httpx.AsyncHTTPTransport() as transport:
            fetcher = ImageFetcher(transport, max_count=2)
            images = [Image(f"messages[0].content[{i}]", url="http://x/y.png") for i in range(3)]
            with pytest.raises(errors.InvalidRequest) as raised:
                await fetcher.fetch_all(images)
            assert raised.value.param == "messages[0].content[2]"

    trio.run(run)


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("64:ff9b::7f00:1", True),  # NAT64 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", True),  # NAT64 of 169.254.169.254
        ("64:ff9b:1::1", True),  # local-use NAT64
        ("2002:7f00:1::", True),  # 6to4 of 127.0.0.1
        ("2002:a9fe:a9fe::", True),  # 6to4 of the metadata address
        ("::127.0.0.1", True),  # IPv4-compatible
        ("::ffff:127.0.0.1", True),  # IPv4-mapped
        ("::ffff:8.8.8.8", True),  # mapped: refused as a kind
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", True),  # Teredo, client 127.0.0.1
        ("fd00::1", True),
        ("fe80::1", True),
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("100.64.0.1", True),
        ("169.254.169.254", True),
        ("0.0.0.0", True),
        ("64:ff9b::808:808", False),  # NAT64 of 8.8.8.8
        ("2002:808:808::", False),  # 6to4 of 8.8.8.8
        ("8.8.8.8", False),
        ("2606:4700:4700::1111", False),
    ],
)
def test_the_fetch_guard_refuses_every_address_that_reaches_a_private_one(
    address: str, refused: bool
) -> None:
    async def run() -> bool:
        async with httpx.AsyncHTTPTransport() as transport:
            return ImageFetcher(transport).refused(ipaddress.ip_address(address))

    assert trio.run(run) is refused


def test_an_allowed_network_lets_an_embedded_address_through() -> None:
    async def run() -> bool:
        async with httpx.AsyncHTTPTransport() as transport:
            fetcher = ImageFetcher(transport, allow_networks=("127.0.0.0/8",))
            return fetcher.refused(ipaddress.ip_address("64:ff9b::7f00:1"))

    assert trio.run(run) is False


def test_embeddings_inputs_are_capped() -> None:
    with pytest.raises(errors.InvalidRequest) as raised:
        wire.parse_embedding_request({"model": "x", "input": ["a"] * 2049})
    assert raised.value.param == "input" and "2048" in raised.value.message
    assert len(wire.parse_embedding_request({"model": "x", "input": ["a"] * 2048}).inputs) == 2048


def test_an_unfetched_image_url_never_reaches_ollama_as_a_hole() -> None:
    request = chat(
        json.dumps(
            {
                "model": "x",
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}],
                    }
                ],
            }
        ).encode()
    )
    with pytest.raises(errors.InvalidRequest):
        ollama_wire.chat_body("m", request, stream=False)


@pytest.mark.parametrize(
    "echoed",
    [
        "Incorrect API key provided: sk-live-1234567890abcdefWXYZ",
        "Incorrect API key provided: SK-LIVE-1234567890ABCDEFwxyz",
        "Incorrect API key provided: sk-live-****************WXYZ.",
        "key sk-live-12...",
        "Bearer sk-live-1234567890abcdefWXYZ was refused",
    ],
)
def test_redaction_covers_what_an_upstream_might_echo(echoed: str) -> None:
    text = Redactor("sk-live-1234567890abcdefWXYZ")(echoed)
    assert "1234567890" not in text and "WXYZ" not in text.upper() and "***" in text
