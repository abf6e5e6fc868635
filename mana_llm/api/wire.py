"""OpenAI request JSON -> domain, validated at the edge. Every rejection is a 400 whose `param`
names the offending field; nothing malformed reaches a provider."""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal, TypeGuard

import attrs

from mana_llm import codec, errors
from mana_llm.domain import JSON, ChatRequest, EmbeddingRequest, Image, Message, ToolCall

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def _bad(message: str, param: str | None) -> errors.InvalidRequest:
    return errors.InvalidRequest(message, param=param)


# Deeper documents are refused: every accepted one serializes on orjson's fast path (its limit
# is 254) and no recursive walk over it comes near Python's recursion limit.
MAX_DEPTH = 128


def parse_json_object(raw: bytes) -> JSON:
    try:
        data, slow = codec.loads_strict(raw)
    except ValueError as exc:
        raise _bad(f"the request body is not valid JSON ({exc})", None) from None
    if not isinstance(data, dict):
        raise _bad("the request body must be a JSON object", None)
    # only a document with that many brackets can be that deep; only one orjson refused can
    # hold a lone surrogate: the walk runs when one of them is possible
    if slow or raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:
        _check_document(data, surrogates=slow)
    return data


def _check_document(data: JSON, *, surrogates: bool) -> None:
    """Refuse nesting deeper than MAX_DEPTH and lone surrogates, naming where they are."""
    stack: list[tuple[Any, str, int]] = [(data, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, dict | list) and depth > MAX_DEPTH:
            raise _bad(f"the request body nests deeper than {MAX_DEPTH} levels", path or None)
        if isinstance(value, dict):
            for key, item in value.items():
                at = f"{path}.{key}" if path else key
                if surrogates and not _encodable(key):
                    raise _bad(f"a key in {path or 'the body'} is not valid Unicode", path or None)
                stack.append((item, at, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))
        elif surrogates and isinstance(value, str) and not _encodable(value):
            raise _bad(f"'{path}' is not valid Unicode (a lone surrogate)", path)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _one_of(value: Any, allowed: frozenset[str]) -> TypeGuard[str]:
    """Membership that a list or an object (unhashable) cannot crash."""
    return isinstance(value, str) and value in allowed


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(body: JSON, key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if not _is_number(value) or not low <= value <= high:
        raise _bad(f"'{key}' must be a number from {low:g} to {high:g}", key)
    return float(value)


def _integer(body: JSON, key: str, low: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or (low is not None and value < low):
        floor = "" if low is None else f" >= {low}"
        raise _bad(f"'{key}' must be an integer{floor}", key)
    return value


def _boolean(body: JSON, key: str) -> bool:
    value = body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _bad(f"'{key}' must be a boolean", key)
    return value


MAX_MODEL_CHARS = 256


def _model(body: JSON) -> str:
    """Printable, bounded: it is echoed in headers, labels and log lines."""
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _bad("'model' is required and must be a non-empty string", "model")
    model = model.strip()
    if len(model) > MAX_MODEL_CHARS:
        raise _bad(f"'model' is longer than {MAX_MODEL_CHARS} characters", "model")
    if not model.isprintable():
        raise _bad("'model' must not contain control characters", "model")
    return model


def _stop(body: JSON) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return tuple(stop)
    raise _bad("'stop' must be a string or a list of strings", "stop")


@attrs.frozen
class _Content:
    text: str | None
    images: tuple[Image, ...] = ()
    unsupported: tuple[str, ...] = ()


MAX_IMAGE_URL_CHARS = 8192


def _image(url: str, at: str) -> Image:
    if not url.startswith("data:"):
        if not url.startswith(("http://", "https://")):
            raise _bad(f"{at}.image_url.url must be a data: URI or an http(s) URL", at)
        if len(url) > MAX_IMAGE_URL_CHARS:
            raise _bad(f"{at}.image_url.url is longer than {MAX_IMAGE_URL_CHARS} characters", at)
        if not url.isprintable() or any(c.isspace() for c in url):
            raise _bad(f"{at}.image_url.url must not contain spaces or control characters", at)
        return Image(at, url=url)
    header, sep, data = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise _bad(f"{at}.image_url.url must be a base64 data: URI", at)
    if not data:
        raise _bad(f"{at}.image_url.url holds no image data", at)
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"{at}.image_url.url has invalid base64 data", at) from None
    return Image(at, data=data)


def _content(raw: Any, where: str, role: str) -> _Content:
    """Text parts joined into one string; images; parts only some providers take."""
    if raw is None:
        if role in ("assistant", "function"):
            return _Content(None)
        raise _bad(f"{where}.content is required for role '{role}'", f"{where}.content")
    if isinstance(raw, str):
        return _Content(raw)
    if not isinstance(raw, list) or not raw:
        raise _bad(
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
                raise _bad(f"{at}.image_url.url must be a string", at)
            images.append(_image(url, at))
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        elif not isinstance(kind, str):
            raise _bad(f"{at} must be an object with a string 'type'", at)
        elif kind in ("input_audio", "file"):
            unsupported.append(at)
        else:
            raise _bad(f"{at} has an unknown part type {kind!r}", f"{at}.type")
    return _Content("\n".join(texts) if texts else None, tuple(images), tuple(unsupported))


def _tool_calls(raw: Any, where: str) -> tuple[ToolCall, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _bad(f"{where}.tool_calls must be a list", f"{where}.tool_calls")
    calls: list[ToolCall] = []
    for i, call in enumerate(raw):
        at = f"{where}.tool_calls[{i}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _bad(f"{at}.function.name is required", f"{at}.function")
        arguments = function.get("arguments", "")
        if not isinstance(arguments, str):
            raise _bad(f"{at}.function.arguments must be a JSON string", f"{at}.function.arguments")
        call_id = call.get("id")
        calls.append(
            ToolCall(call_id if isinstance(call_id, str) else "", function["name"], arguments)
        )
    return tuple(calls)


def _message(raw: Any, index: int) -> Message:
    where = f"messages[{index}]"
    if not isinstance(raw, dict):
        raise _bad(f"{where} must be an object", where)
    role = raw.get("role")
    if not _one_of(role, ROLES):
        raise _bad(f"{where}.role must be one of {', '.join(sorted(ROLES))}", f"{where}.role")
    content = _content(raw.get("content"), where, role)
    name = raw.get("name")
    if name is not None and not isinstance(name, str):
        raise _bad(f"{where}.name must be a string", f"{where}.name")
    tool_call_id = raw.get("tool_call_id")
    if role == "tool" and not isinstance(tool_call_id, str):
        raise _bad(f"{where}.tool_call_id is required for role 'tool'", f"{where}.tool_call_id")
    if role != "tool" and tool_call_id is not None:
        raise _bad(f"{where}.tool_call_id belongs to role 'tool' only", f"{where}.tool_call_id")
    if role != "assistant" and raw.get("tool_calls") is not None:
        raise _bad(f"{where}.tool_calls belongs to role 'assistant' only", f"{where}.tool_calls")
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


REASONING_EFFORTS = frozenset({"none", "minimal", "low", "medium", "high", "xhigh", "max"})
RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})


def _tools(body: JSON) -> tuple[JSON, ...]:
    tools = body.get("tools")
    if tools is None:
        return ()
    if not isinstance(tools, list):
        raise _bad("'tools' must be a list", "tools")
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _bad(
                f"tools[{i}] must be {{type: function, function: {{name, ...}}}}", f"tools[{i}]"
            )
    return tuple(tools)


def _tool_choice(body: JSON) -> str | JSON | None:
    choice = body.get("tool_choice")
    if choice is None or choice in ("none", "auto", "required"):
        return choice
    if isinstance(choice, dict):
        return choice
    raise _bad("'tool_choice' must be none, auto, required or an object", "tool_choice")


def _response_format(body: JSON) -> JSON | None:
    fmt = body.get("response_format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or not _one_of(fmt.get("type"), RESPONSE_FORMATS):
        raise _bad(
            "'response_format.type' must be text, json_object or json_schema", "response_format"
        )
    if fmt["type"] == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise _bad("'response_format.json_schema' needs a name", "response_format.json_schema")
        if "schema" in spec and not isinstance(spec["schema"], dict):
            raise _bad(
                "'response_format.json_schema.schema' must be an object",
                "response_format.json_schema.schema",
            )
    return fmt


def _reasoning_effort(body: JSON) -> str | None:
    effort = body.get("reasoning_effort")
    if effort is None:
        reasoning = body.get("reasoning")
        effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
    if effort is None:
        return None
    if not _one_of(effort, REASONING_EFFORTS):
        raise _bad(
            f"'reasoning_effort' must be one of {', '.join(sorted(REASONING_EFFORTS))}",
            "reasoning_effort",
        )
    return str(effort)


def _ollama_extras(body: JSON) -> tuple[JSON, str | float | None]:
    options = body.get("options")
    if options is not None and not isinstance(options, dict):
        raise _bad("'options' must be an object of Ollama options", "options")
    keep_alive = body.get("keep_alive")
    if keep_alive is not None and (
        isinstance(keep_alive, bool) or not isinstance(keep_alive, str | int | float)
    ):
        raise _bad("'keep_alive' must be a duration string or a number of seconds", "keep_alive")
    return options or {}, keep_alive


def parse_chat_request(body: JSON) -> ChatRequest:
    model = _model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' is required and must be a non-empty list", "messages")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _bad("'stream_options' must be an object", "stream_options")
    include_usage = _boolean(options, "include_usage") if options else False
    max_tokens = _integer(body, "max_completion_tokens", 1)
    legacy_max = _integer(body, "max_tokens", 1)
    options, keep_alive = _ollama_extras(body)
    return ChatRequest(
        model=model,
        messages=tuple(_message(m, i) for i, m in enumerate(messages)),
        stream=_boolean(body, "stream"),
        include_usage=include_usage,
        temperature=_number(body, "temperature", 0, 2),
        top_p=_number(body, "top_p", 0, 1),
        max_tokens=max_tokens if max_tokens is not None else legacy_max,
        stop=_stop(body),
        seed=_integer(body, "seed"),
        presence_penalty=_number(body, "presence_penalty", -2, 2),
        frequency_penalty=_number(body, "frequency_penalty", -2, 2),
        n=_integer(body, "n", 1),
        tools=_tools(body),
        tool_choice=_tool_choice(body),
        response_format=_response_format(body),
        reasoning_effort=_reasoning_effort(body),
        options=options,
        keep_alive=keep_alive,
        body=body,
    )


def parse_embedding_request(body: JSON, max_inputs: int = 2048) -> EmbeddingRequest:
    model = _model(body)
    raw = body.get("input")
    if isinstance(raw, list) and len(raw) > max_inputs:
        raise _bad(f"'input' holds more than {max_inputs} items (MAX_EMBEDDING_INPUTS)", "input")
    tokens = False
    if isinstance(raw, str):
        inputs: tuple[str, ...] = (raw,)
    elif isinstance(raw, list) and raw and all(isinstance(s, str) for s in raw):
        inputs = tuple(raw)
    elif (
        isinstance(raw, list)
        and raw
        and (
            all(_is_token_list(t) for t in raw)
            or all(isinstance(t, int) and not isinstance(t, bool) for t in raw)
        )
    ):
        inputs, tokens = (), True  # token arrays: passed through to clouds, refused by Ollama
    else:
        raise _bad("'input' must be a string or a non-empty list of strings or tokens", "input")
    encoding = body.get("encoding_format")
    if encoding is None:
        encoding = "float"
    if encoding not in ("float", "base64"):
        raise _bad("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    fmt: Literal["float", "base64"] = "base64" if encoding == "base64" else "float"
    truncate = body.get("truncate")
    if truncate is not None and not isinstance(truncate, bool):
        raise _bad("'truncate' must be a boolean", "truncate")
    _, keep_alive = _ollama_extras(body)
    return EmbeddingRequest(
        model,
        inputs,
        fmt,
        _integer(body, "dimensions", 1),
        truncate=truncate,
        tokens=tokens,
        keep_alive=keep_alive,
        body=body,
    )


def _is_token_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(t, int) for t in value)
