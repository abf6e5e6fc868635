"""Sans-IO translation of requests from the domain to Ollama's native API (/api/chat,
/api/embed). The README's "Provider fidelity" table gives the mapping field by field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from mana_llm import codec, errors
from mana_llm.domain import JSON, ChatRequest, EmbeddingRequest, Image, Message

# reasoning_effort -> think: none -> off, minimal -> low, xhigh -> max
_THINK: dict[str, bool | str] = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "max",
    "max": "max",
}


@attrs.frozen
class ModelDefaults:
    """Per-model Ollama settings from the providers file; a request's own values win."""

    options: Mapping[str, Any] = attrs.field(factory=dict)  # num_ctx and friends
    keep_alive: str | float | None = None


def _tool_calls(message: Message, index: int) -> list[JSON]:
    calls: list[JSON] = []
    for j, call in enumerate(message.tool_calls):
        try:
            arguments = codec.loads(call.arguments or "{}")
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            where = f"messages[{index}].tool_calls[{j}].function.arguments"
            raise errors.InvalidRequest(f"{where} is not a JSON object", param=where)
        out: JSON = {"function": {"name": call.name, "arguments": arguments}}
        if call.id:
            out["id"] = call.id
        calls.append(out)
    return calls


def messages_json(messages: tuple[Message, ...]) -> list[JSON]:
    """Image URLs must have been fetched and inlined first (OllamaProvider.prepare)."""
    names_by_call: dict[str, str] = {}
    out: list[JSON] = []
    for i, message in enumerate(messages):
        if message.unsupported:
            where = message.unsupported[0]
            raise errors.UnsupportedCapability(
                f"{where}: Ollama takes no audio or file parts", param=where, contacted=False
            )
        role = {"developer": "system", "function": "tool"}.get(message.role, message.role)
        item: JSON = {"role": role, "content": message.content or ""}
        if message.images:
            item["images"] = [_image_data(img) for img in message.images]
        if message.tool_calls:
            item["tool_calls"] = _tool_calls(message, i)
            names_by_call.update({c.id: c.name for c in message.tool_calls if c.id})
        if role == "tool":
            name = message.name or names_by_call.get(message.tool_call_id or "")
            if name:
                item["tool_name"] = name
            if message.tool_call_id:
                item["tool_call_id"] = message.tool_call_id
        if message.reasoning:
            item["thinking"] = message.reasoning
        out.append(item)
    return out


def _image_data(image: Image) -> str:
    if image.data is None:  # a URL nobody fetched: refuse rather than send a hole
        raise errors.InvalidRequest(f"{image.where}: image URLs are not enabled", param=image.where)
    return image.data


def _tools(request: ChatRequest) -> list[JSON]:
    choice = request.tool_choice
    if not request.tools or choice == "none":
        return []
    if isinstance(choice, Mapping):  # a named function: only that tool
        function = choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        return [dict(t) for t in request.tools if t.get("function", {}).get("name") == name]
    return [dict(t) for t in request.tools]


def _format(request: ChatRequest) -> Any:
    fmt = request.response_format
    if fmt is None or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_object":
        return "json"
    return fmt.get("json_schema", {}).get("schema") or "json"


def chat_body(
    model: str,
    request: ChatRequest,
    *,
    stream: bool,
    defaults: ModelDefaults | None = None,
) -> JSON:
    if request.n is not None and request.n > 1:
        raise errors.UnsupportedCapability(
            "Ollama answers one choice: n must be 1", param="n", contacted=False
        )
    body: JSON = {
        "model": model,
        "messages": messages_json(request.messages),
        "stream": stream,
    }
    defaults = defaults or ModelDefaults()
    options: JSON = dict(defaults.options)
    for key, value in (
        ("temperature", request.temperature),
        ("top_p", request.top_p),
        ("seed", request.seed),
        ("num_predict", request.max_tokens),
        ("presence_penalty", request.presence_penalty),
        ("frequency_penalty", request.frequency_penalty),
    ):
        if value is not None:  # unset stays unset: the model's own defaults apply
            options[key] = value
    if request.stop:
        options["stop"] = list(request.stop)
    options.update(request.options)
    if options:
        body["options"] = options
    tools = _tools(request)
    if tools:
        body["tools"] = tools
    fmt = _format(request)
    if fmt is not None:
        body["format"] = fmt
    if request.reasoning_effort is not None:
        body["think"] = _THINK[request.reasoning_effort]
    keep_alive = request.keep_alive if request.keep_alive is not None else defaults.keep_alive
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    return body


def embed_body(
    model: str, request: EmbeddingRequest, defaults: ModelDefaults | None = None
) -> JSON:
    if request.tokens:
        raise errors.UnsupportedCapability(
            "Ollama embeds text only: 'input' must be a string or a list of strings",
            param="input",
            contacted=False,
        )
    body: JSON = {"model": model, "input": list(request.inputs)}
    if request.dimensions is not None:
        body["dimensions"] = request.dimensions
    if request.truncate is not None:
        body["truncate"] = request.truncate
    defaults = defaults or ModelDefaults()
    if defaults.options:
        body["options"] = dict(defaults.options)
    keep_alive = request.keep_alive if request.keep_alive is not None else defaults.keep_alive
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    return body
