"""What a cache entry holds and how it is replayed.

An entry is the answer as a `chat.completion` (or embeddings list) object plus the
`provider/model` that gave it. A streamed answer is assembled into that object before it is
stored, so a hit can be replayed either way: as the JSON object, or as a proper SSE stream.
Only answers that can be replayed faithfully are stored: one choice that finished cleanly,
without tool calls (the caller would run them again) and without delta fields this module
does not know how to assemble.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from mana_llm import codec
from mana_llm.domain import JSON, StreamChunk, Usage

FORMAT = 1
CLEAN_FINISHES = frozenset({"stop", "length"})
_TEXT_FIELDS = ("reasoning", "reasoning_content", "content", "refusal")  # concatenated deltas
_TOP_FIELDS = ("id", "created", "model", "system_fingerprint", "service_tier")


@attrs.frozen
class Entry:
    resolved: str  # provider/model that answered
    payload: JSON = attrs.field(repr=False)

    def encode(self) -> bytes:
        return codec.dumps({"v": FORMAT, "resolved": self.resolved, "payload": self.payload})


def decode(data: bytes) -> Entry | None:
    """None for anything that is not an entry of this format (a miss, not an error)."""
    try:
        doc = codec.loads(data)
    except ValueError:
        return None
    if not isinstance(doc, dict) or doc.get("v") != FORMAT:
        return None
    resolved, payload = doc.get("resolved"), doc.get("payload")
    if not isinstance(resolved, str) or "/" not in resolved or not isinstance(payload, dict):
        return None
    return Entry(resolved, payload)


def storable_completion(payload: JSON) -> bool:
    choices = payload.get("choices")
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
        return False
    choice = choices[0]
    message = choice.get("message")
    return (
        choice.get("finish_reason") in CLEAN_FINISHES
        and isinstance(message, dict)
        and not message.get("tool_calls")
        and not message.get("function_call")
        and not message.get("audio")
    )


def completion_from_chunks(chunks: Iterable[JSON]) -> JSON | None:
    """The `chat.completion` a relayed stream amounts to; None when it cannot be replayed."""
    top: JSON = {}
    message: dict[str, Any] = {"role": "assistant"}
    texts: dict[str, list[str]] = {}
    logprobs: dict[str, list[Any]] = {}
    finish: str | None = None
    usage: Any = None
    for chunk in chunks:
        for field in _TOP_FIELDS:
            if chunk.get(field) is not None:
                top.setdefault(field, chunk[field])
        if chunk.get("usage") is not None:
            usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                return None
            delta, probs = choice.get("delta") or {}, choice.get("logprobs") or {}
            if not isinstance(delta, dict) or not isinstance(probs, dict):
                return None  # a shape this module does not know: relayed, not stored
            for name, value in delta.items():
                if name in _TEXT_FIELDS and isinstance(value, str):
                    texts.setdefault(name, []).append(value)
                elif name == "role" and isinstance(value, str):
                    message["role"] = value
                elif value:  # tool calls, audio, anything new: not replayable as stored
                    return None
            for name, items in probs.items():
                if isinstance(items, list):
                    logprobs.setdefault(name, []).extend(items)
            finish = choice.get("finish_reason") or finish
    if finish not in CLEAN_FINISHES or "id" not in top:
        return None
    message["content"] = "".join(texts.pop("content", []))
    message.update({name: "".join(parts) for name, parts in texts.items()})
    choice_out: JSON = {
        "index": 0,
        "message": message,
        "logprobs": logprobs or None,
        "finish_reason": finish,
    }
    completion: JSON = {**top, "object": "chat.completion", "choices": [choice_out]}
    if usage is not None:
        completion["usage"] = usage
    return completion


def fresh_completion(payload: JSON, completion_id: str, created: int) -> JSON:
    return {**payload, "id": completion_id, "created": created}


def replay_chunks(payload: JSON, completion_id: str, created: int) -> list[StreamChunk]:
    """A stored completion as the chunks of a stream: role and text deltas, the finish, then
    the usage chunk (which the SSE body drops unless the caller asked for usage)."""
    choice = payload["choices"][0]
    message = choice.get("message") or {}
    head = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": payload.get("model"),
    }
    if payload.get("system_fingerprint") is not None:
        head["system_fingerprint"] = payload["system_fingerprint"]

    def chunk(choices: list[JSON], **extra: Any) -> JSON:
        return {**head, "choices": choices, **extra}

    chunks: list[StreamChunk] = []
    deltas: list[JSON] = [
        {name: message[name]} for name in _TEXT_FIELDS if isinstance(message.get(name), str)
    ]
    deltas = [d for d in deltas if next(iter(d.values()))] or [{"content": ""}]
    deltas[0] = {"role": message.get("role") or "assistant", **deltas[0]}
    for i, delta in enumerate(deltas):
        logprobs = choice.get("logprobs") if i == len(deltas) - 1 else None
        body = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": None}
        chunks.append(StreamChunk(chunk([body]), commits=True))
    reason = choice.get("finish_reason")
    end = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}
    chunks.append(StreamChunk(chunk([end]), finish_reason=reason))
    usage = usage_of(payload.get("usage"))
    if usage is not None:
        chunks.append(StreamChunk(chunk([], usage=payload["usage"]), usage=usage))
    return chunks


def usage_of(usage: Any) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int):
        return Usage(prompt, completion)
    return None
