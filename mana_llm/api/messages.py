"""One chat message, OpenAI JSON -> domain, validated at the edge: roles, content parts
(text, images as data URIs or http(s) URLs, parts only some providers take), tool calls.
Every refusal is a 400 naming the field."""

from __future__ import annotations

import base64
import binascii
from typing import Any, TypeGuard

import attrs

from mana_llm import errors
from mana_llm.domain import Image, Message, ToolCall

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def bad(message: str, param: str | None) -> errors.InvalidRequest:
    return errors.InvalidRequest(message, param=param)


def one_of(value: Any, allowed: frozenset[str]) -> TypeGuard[str]:
    """Membership that a list or an object (unhashable) cannot crash."""
    return isinstance(value, str) and value in allowed


@attrs.frozen
class _Content:
    text: str | None
    images: tuple[Image, ...] = ()
    unsupported: tuple[str, ...] = ()


MAX_IMAGE_URL_CHARS = 8192


def _image(url: str, at: str) -> Image:
    if not url.startswith("data:"):
        if not url.startswith(("http://", "https://")):
            raise bad(f"{at}.image_url.url must be a data: URI or an http(s) URL", at)
        if len(url) > MAX_IMAGE_URL_CHARS:
            raise bad(f"{at}.image_url.url is longer than {MAX_IMAGE_URL_CHARS} characters", at)
        if not url.isprintable() or any(c.isspace() for c in url):
            raise bad(f"{at}.image_url.url must not contain spaces or control characters", at)
        return Image(at, url=url)
    header, sep, data = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise bad(f"{at}.image_url.url must be a base64 data: URI", at)
    if not data:
        raise bad(f"{at}.image_url.url holds no image data", at)
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise bad(f"{at}.image_url.url has invalid base64 data", at) from None
    return Image(at, data=data)


def _content(raw: Any, where: str, role: str) -> _Content:
    """Text parts joined into one string; images; parts only some providers take."""
    if raw is None:
        if role in ("assistant", "function"):
            return _Content(None)
        raise bad(f"{where}.content is required for role '{role}'", f"{where}.content")
    if isinstance(raw, str):
        return _Content(raw)
    if not isinstance(raw, list) or not raw:
        raise bad(
            f"{where}.content must be a string or a non-empty list of parts", f"{where}.content"
        )
    texts: list[str] = []
    images: list[Image] = []
    unsupported: list[str] = []
    for i, part in enumerate(raw):
        at = f"{where}.content[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if not isinstance(url, str) or not url:
                raise bad(f"{at}.image_url.url must be a string", at)
            images.append(_image(url, at))
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        elif not isinstance(kind, str):
            raise bad(f"{at} must be an object with a string 'type'", at)
        elif kind in ("input_audio", "file"):
            unsupported.append(at)
        else:
            raise bad(f"{at} has an unknown part type {kind!r}", f"{at}.type")
    return _Content("\n".join(texts) if texts else None, tuple(images), tuple(unsupported))


def _tool_calls(raw: Any, where: str) -> tuple[ToolCall, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise bad(f"{where}.tool_calls must be a list", f"{where}.tool_calls")
    calls: list[ToolCall] = []
    for i, call in enumerate(raw):
        at = f"{where}.tool_calls[{i}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise bad(f"{at}.function.name is required", f"{at}.function")
        arguments = function.get("arguments", "")
        if not isinstance(arguments, str):
            raise bad(f"{at}.function.arguments must be a JSON string", f"{at}.function.arguments")
        call_id = call.get("id")
        calls.append(
            ToolCall(call_id if isinstance(call_id, str) else "", function["name"], arguments)
        )
    return tuple(calls)


def parse_message(raw: Any, index: int) -> Message:
    where = f"messages[{index}]"
    if not isinstance(raw, dict):
        raise bad(f"{where} must be an object", where)
    role = raw.get("role")
    if not one_of(role, ROLES):
        raise bad(f"{where}.role must be one of {', '.join(sorted(ROLES))}", f"{where}.role")
    content = _content(raw.get("content"), where, role)
    name = raw.get("name")
    if name is not None and not isinstance(name, str):
        raise bad(f"{where}.name must be a string", f"{where}.name")
    tool_call_id = raw.get("tool_call_id")
    if role == "tool" and not isinstance(tool_call_id, str):
        raise bad(f"{where}.tool_call_id is required for role 'tool'", f"{where}.tool_call_id")
    if role != "tool" and tool_call_id is not None:
        raise bad(f"{where}.tool_call_id belongs to role 'tool' only", f"{where}.tool_call_id")
    if role != "assistant" and raw.get("tool_calls") is not None:
        raise bad(f"{where}.tool_calls belongs to role 'assistant' only", f"{where}.tool_calls")
    reasoning = raw.get("reasoning_content", raw.get("reasoning"))
    return Message(
        role=role,
        content=content.text,
        name=name,
        images=content.images,
        unsupported=content.unsupported,
        tool_calls=_tool_calls(raw.get("tool_calls"), where) if role == "assistant" else (),
        tool_call_id=tool_call_id if isinstance(tool_call_id, str) else None,
        reasoning=reasoning if isinstance(reasoning, str) else None,
    )
