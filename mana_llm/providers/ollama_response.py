"""Sans-IO translation of Ollama's answers (/api/chat, NDJSON streams, /api/embed,
/api/tags) into OpenAI's shapes (the README's "Provider fidelity" section)."""

from __future__ import annotations

import base64
import secrets
import struct
from collections.abc import Callable
from datetime import datetime
from typing import Any

import attrs

from mana_llm import codec, errors
from mana_llm.domain import (
    JSON,
    ChatResponse,
    EmbeddingRequest,
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


def model_names(data: Any) -> frozenset[str] | None:
    """The names in a /api/tags or /api/ps answer ({"models": [{"name", "model", ...}]}), with
    `name:latest` for a bare name as Ollama means it; None for a shape that is not that."""
    items = data.get("models") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return None
    names: set[str] = set()
    for item in items:
        for key in ("name", "model"):
            name = item.get(key) if isinstance(item, dict) else None
            if isinstance(name, str) and name:
                names.add(name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest")
    return frozenset(names)


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
