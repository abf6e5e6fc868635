"""OpenAI request JSON -> domain, validated at the edge. Every rejection is a 400 whose `param`
names the offending field; nothing malformed reaches a provider."""

from __future__ import annotations

from typing import Any, Literal

from mana_llm import codec
from mana_llm.api.messages import bad, one_of, parse_message
from mana_llm.domain import JSON, ChatRequest, EmbeddingRequest

# Deeper documents are refused: every accepted one serializes on orjson's fast path (its limit
# is 254) and no recursive walk over it comes near Python's recursion limit.
MAX_DEPTH = 128


def parse_json_object(raw: bytes) -> JSON:
    try:
        data, slow = codec.loads_strict(raw)
    except ValueError as exc:
        raise bad(f"the request body is not valid JSON ({exc})", None) from None
    if not isinstance(data, dict):
        raise bad("the request body must be a JSON object", None)
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
            raise bad(f"the request body nests deeper than {MAX_DEPTH} levels", path or None)
        if isinstance(value, dict):
            for key, item in value.items():
                at = f"{path}.{key}" if path else key
                if surrogates and not _encodable(key):
                    raise bad(f"a key in {path or 'the body'} is not valid Unicode", path or None)
                stack.append((item, at, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))
        elif surrogates and isinstance(value, str) and not _encodable(value):
            raise bad(f"'{path}' is not valid Unicode (a lone surrogate)", path)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(body: JSON, key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if not _is_number(value) or not low <= value <= high:
        raise bad(f"'{key}' must be a number from {low:g} to {high:g}", key)
    return float(value)


def _integer(body: JSON, key: str, low: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or (low is not None and value < low):
        floor = "" if low is None else f" >= {low}"
        raise bad(f"'{key}' must be an integer{floor}", key)
    return value


def _boolean(body: JSON, key: str) -> bool:
    value = body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad(f"'{key}' must be a boolean", key)
    return value


MAX_MODEL_CHARS = 256


def _model(body: JSON) -> str:
    """Printable, bounded: it is echoed in headers, labels and log lines."""
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise bad("'model' is required and must be a non-empty string", "model")
    model = model.strip()
    if len(model) > MAX_MODEL_CHARS:
        raise bad(f"'model' is longer than {MAX_MODEL_CHARS} characters", "model")
    if not model.isprintable():
        raise bad("'model' must not contain control characters", "model")
    return model


def _stop(body: JSON) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return tuple(stop)
    raise bad("'stop' must be a string or a list of strings", "stop")


REASONING_EFFORTS = frozenset({"none", "minimal", "low", "medium", "high", "xhigh", "max"})
RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})


def _tools(body: JSON) -> tuple[JSON, ...]:
    tools = body.get("tools")
    if tools is None:
        return ()
    if not isinstance(tools, list):
        raise bad("'tools' must be a list", "tools")
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise bad(
                f"tools[{i}] must be {{type: function, function: {{name, ...}}}}", f"tools[{i}]"
            )
    return tuple(tools)


def _tool_choice(body: JSON) -> str | JSON | None:
    choice = body.get("tool_choice")
    if choice is None or choice in ("none", "auto", "required"):
        return choice
    if isinstance(choice, dict):
        return choice
    raise bad("'tool_choice' must be none, auto, required or an object", "tool_choice")


def _response_format(body: JSON) -> JSON | None:
    fmt = body.get("response_format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or not one_of(fmt.get("type"), RESPONSE_FORMATS):
        raise bad(
            "'response_format.type' must be text, json_object or json_schema", "response_format"
        )
    if fmt["type"] == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise bad("'response_format.json_schema' needs a name", "response_format.json_schema")
        if "schema" in spec and not isinstance(spec["schema"], dict):
            raise bad(
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
    if not one_of(effort, REASONING_EFFORTS):
        raise bad(
            f"'reasoning_effort' must be one of {', '.join(sorted(REASONING_EFFORTS))}",
            "reasoning_effort",
        )
    return str(effort)


def _ollama_extras(body: JSON) -> tuple[JSON, str | float | None]:
    options = body.get("options")
    if options is not None and not isinstance(options, dict):
        raise bad("'options' must be an object of Ollama options", "options")
    keep_alive = body.get("keep_alive")
    if keep_alive is not None and (
        isinstance(keep_alive, bool) or not isinstance(keep_alive, str | int | float)
    ):
        raise bad("'keep_alive' must be a duration string or a number of seconds", "keep_alive")
    return options or {}, keep_alive


def parse_chat_request(body: JSON) -> ChatRequest:
    model = _model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("'messages' is required and must be a non-empty list", "messages")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad("'stream_options' must be an object", "stream_options")
    include_usage = _boolean(options, "include_usage") if options else False
    max_tokens = _integer(body, "max_completion_tokens", 1)
    legacy_max = _integer(body, "max_tokens", 1)
    options, keep_alive = _ollama_extras(body)
    return ChatRequest(
        model=model,
        messages=tuple(parse_message(m, i) for i, m in enumerate(messages)),
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
        raise bad(f"'input' holds more than {max_inputs} items (MAX_EMBEDDING_INPUTS)", "input")
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
        raise bad("'input' must be a string or a non-empty list of strings or tokens", "input")
    encoding = body.get("encoding_format")
    if encoding is None:
        encoding = "float"
    if encoding not in ("float", "base64"):
        raise bad("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    fmt: Literal["float", "base64"] = "base64" if encoding == "base64" else "float"
    truncate = body.get("truncate")
    if truncate is not None and not isinstance(truncate, bool):
        raise bad("'truncate' must be a boolean", "truncate")
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
