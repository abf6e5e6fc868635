"""Sans-IO translation between the domain and Ollama's native API (/api/chat, /api/embed,
/api/tags). API-NOTES.md sections 4-6 give the mapping field by field."""

from __future__ import annotations

import base64
import secrets
import struct
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import attrs

from mana_llm import codec, errors
from mana_llm.domain import (
    JSON,
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    Image,
    Message,
    ModelInfo,
    StreamChunk,
    Target,
    Usage,
)

_FINISH = {"stop": "stop", "length": "length"}  # "", load, unload, anything new -> "stop"


def new_completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def unix_time(created_at: Any, wall_clock: Callable[[], float]) -> int:
    """Ollama's RFC 3339 `created_at` (nanoseconds, offset) as unix seconds."""
    if isinstance(created_at, str):
        try:
            return int(datetime.fromisoformat(created_at).timestamp())
        except ValueError:
            pass
    return int(wall_clock())


# --- request ---------------------------------------------------------------------------

# reasoning_effort -> think (API-NOTES 5.1): none -> off, minimal -> low, xhigh -> max
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


# --- responses -------------------------------------------------------------------------


def in_band_error(provider: str, line: JSON) -> errors.ProviderError:
    message = line.get("error")
    return errors.UpstreamUnavailable(f"{provider} reported an error: {message}", provider=provider)


def usage_from(line: JSON) -> Usage:
    prompt, completion = line.get("prompt_eval_count"), line.get("eval_count")
    return Usage(
        prompt if isinstance(prompt, int) else 0, completion if isinstance(completion, int) else 0
    )


def finish_reason(line: JSON, saw_tool_calls: bool) -> str:
    reason = _FINISH.get(line.get("done_reason") or "", "stop")
    return "tool_calls" if saw_tool_calls and reason == "stop" else reason


def completion(
    data: Any,
    target: Target,
    wall_clock: Callable[[], float],
    protocol_error: Callable[[str], Exception],
) -> ChatResponse:
    if not isinstance(data, dict) or not isinstance(data.get("message"), dict):
        raise protocol_error("a chat answer without a message")
    if "error" in data:
        raise in_band_error(target.provider, data)
    source = data["message"]
    content = source.get("content")
    calls = [openai_tool_call(call, i) for i, call in enumerate(source.get("tool_calls") or ())]
    message: JSON = {
        "role": "assistant",
        "content": content if isinstance(content, str) and (content or not calls) else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in calls]
    if source.get("thinking"):
        message["reasoning_content"] = source["thinking"]
    reason = finish_reason(data, saw_tool_calls=bool(calls))
    usage = usage_from(data)
    payload: JSON = {
        "id": new_completion_id(),
        "object": "chat.completion",
        "created": unix_time(data.get("created_at"), wall_clock),
        "model": target.resolved,
        "choices": [{"index": 0, "message": message, "finish_reason": reason, "logprobs": None}],
        "usage": usage.to_json(),
    }
    return ChatResponse(payload, reason, usage)


def openai_tool_call(call: Any, index: int) -> JSON:
    """Ollama's whole tool call -> OpenAI's: an id (Ollama's or a new call_...), arguments as a
    JSON string, and the index a stream delta needs."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise ValueError("a tool call without a function name")
    arguments = function.get("arguments", {})
    call_id = call.get("id") or "call_" + secrets.token_hex(12)
    return {
        "index": index,
        "id": call_id,
        "type": "function",
        "function": {
            "name": function["name"],
            "arguments": arguments
            if isinstance(arguments, str)
            else codec.dumps(arguments).decode(),
        },
    }


@attrs.define(eq=False)
class StreamTranslator:
    """Ollama NDJSON lines -> OpenAI chunks: one id and `created` for the whole stream, the role
    on the first delta, a finish chunk with an empty delta, then the usage chunk."""

    target: Target
    wall_clock: Callable[[], float]
    _id: str = attrs.field(factory=new_completion_id)
    _created: int | None = None
    _role_sent: bool = False
    _saw_tool_calls: bool = False
    _tool_index: int = 0

    def translate(self, line: JSON) -> list[StreamChunk]:
        if "error" in line:
            raise in_band_error(self.target.provider, line)
        if self._created is None:
            self._created = unix_time(line.get("created_at"), self.wall_clock)
        message = line.get("message")
        message = message if isinstance(message, dict) else {}
        chunks: list[StreamChunk] = []
        if message.get("thinking"):
            chunks.append(self._delta({"reasoning_content": message["thinking"]}))
        if message.get("content"):
            chunks.append(self._delta({"content": message["content"]}))
        calls = message.get("tool_calls")
        if calls:
            first = self._tool_index
            self._tool_index += len(calls)
            self._saw_tool_calls = True
            deltas = [openai_tool_call(call, first + i) for i, call in enumerate(calls)]
            chunks.append(self._delta({"tool_calls": deltas}))
        if line.get("done"):
            reason = finish_reason(line, self._saw_tool_calls)
            usage = usage_from(line)
            chunks.append(StreamChunk(self._payload([self._choice({}, reason)]), False, reason))
            usage_payload = self._payload([])
            usage_payload["usage"] = usage.to_json()
            chunks.append(StreamChunk(usage_payload, usage=usage))
        return chunks

    def _delta(self, delta: JSON) -> StreamChunk:
        if not self._role_sent:
            delta = {"role": "assistant", **delta}
            self._role_sent = True
        return StreamChunk(self._payload([self._choice(delta, None)]), commits=True)

    @staticmethod
    def _choice(delta: JSON, reason: str | None) -> JSON:
        return {"index": 0, "delta": delta, "finish_reason": reason}

    def _payload(self, choices: list[JSON]) -> JSON:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self.target.resolved,
            "choices": choices,
        }


def embeddings(data: Any, target: Target, request: EmbeddingRequest) -> tuple[JSON, Usage]:
    vectors = data.get("embeddings") if isinstance(data, dict) else None
    if not isinstance(vectors, list) or len(vectors) != len(request.inputs):
        raise ValueError("an embed answer whose embeddings do not match the inputs")
    items: list[JSON] = []
    for index, vector in enumerate(vectors):
        value: Any = vector
        if request.encoding_format == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
        items.append({"object": "embedding", "index": index, "embedding": value})
    prompt = data.get("prompt_eval_count")
    usage = Usage(prompt if isinstance(prompt, int) else 0, 0)
    payload: JSON = {
        "object": "list",
        "data": items,
        "model": target.resolved,
        "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens},
    }
    return payload, usage


def models(data: Any, provider: str, wall_clock: Callable[[], float]) -> tuple[ModelInfo, ...]:
    items = data.get("models") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError("a tags answer without models")
    out: list[ModelInfo] = []
    for item in items:
        name = item.get("model") or item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            continue
        owner = name.split("/", 1)[0] if "/" in name else "library"
        out.append(
            ModelInfo(f"{provider}/{name}", unix_time(item.get("modified_at"), wall_clock), owner)
        )
    return tuple(out)
