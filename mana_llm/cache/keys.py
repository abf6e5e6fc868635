"""Cache keys and what may be cached.

A key is a hash of the canonical request as the answering target will see it: the resolved
`provider/model`, the messages (inline images and other binary parts by their hash), tools,
`tool_choice`, `response_format` and every sampling parameter, including ones this gateway
does not know (a new parameter may change the answer). Fields that cannot change the answer
are left out: `stream` and `stream_options` (a hit is replayed in either form), `user`,
`metadata` and request ids. Numbers are canonical (`0` and `0.0` are one key). The key is
namespaced by the caller, so one caller never sees another's answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import attrs

from mana_llm import codec
from mana_llm.domain import ChatRequest, EmbeddingRequest, Target

VERSION = "v1"  # bump when the key or the entry format changes

_NOT_IN_KEY = frozenset(
    {
        "model",  # replaced by the resolved target
        "stream",
        "stream_options",
        "user",
        "metadata",
        "store",
        "keep_alive",  # Ollama: how long the model stays loaded
        "safety_identifier",
        "prompt_cache_key",
        "request_id",
    }
)
_MAX_EXACT = 2**53  # integral floats below this are written as integers


def chat_cacheable(request: ChatRequest, alias_opt_in: bool | None, caller_opt_in: bool) -> bool:
    """Deterministic answers (temperature 0, or a seed) unless the alias says `cache: false`;
    any single-choice answer when the alias or the caller opts in."""
    if request.n is not None and request.n > 1:
        return False
    if alias_opt_in is False:
        return False
    if alias_opt_in or caller_opt_in:
        return True
    temperature = request.temperature
    if temperature is None:
        temperature = request.options.get("temperature")
    return temperature == 0 or request.seed is not None or "seed" in request.options


def chat_key(namespace: str, target: Target, request: ChatRequest) -> str:
    body = {k: v for k, v in request.body.items() if k not in _NOT_IN_KEY}
    if body.get("n") == 1:
        del body["n"]
    body["messages"] = [_message(m) for m in body.get("messages") or ()]
    return _key(namespace, "chat", target, body)


def embedding_key(namespace: str, target: Target, request: EmbeddingRequest) -> str:
    body = {k: v for k, v in request.body.items() if k not in _NOT_IN_KEY}
    if not request.tokens:
        body["input"] = list(request.inputs)  # "x" and ["x"] answer alike
    body["encoding_format"] = request.encoding_format  # the stored payload's encoding
    return _key(namespace, "embeddings", target, body)


def _key(namespace: str, kind: str, target: Target, body: dict[str, Any]) -> str:
    document = {"target": target.resolved, "request": _canonical(body)}
    digest = hashlib.sha256(codec.canonical(document)).hexdigest()
    return f"mana-llm:{VERSION}:{namespace}:{kind}:{digest}"


def _canonical(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < _MAX_EXACT:
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def _message(message: Any) -> Any:
    if not isinstance(message, Mapping) or not isinstance(message.get("content"), list):
        return message
    return {**message, "content": [_part(p) for p in message["content"]]}


def _part(part: Any) -> Any:
    """Inline binary parts by their hash: the key stays small and says the same."""
    if not isinstance(part, Mapping):
        return part
    kind = part.get("type")
    for field, inner in (("image_url", "url"), ("input_audio", "data"), ("file", "file_data")):
        value = part.get(field)
        if kind == field and isinstance(value, Mapping) and isinstance(value.get(inner), str):
            data = value[inner]
            if field != "image_url" or data.startswith("data:"):
                digest = hashlib.sha256(data.encode()).hexdigest()
                return {**part, field: {**value, inner: f"sha256:{digest}"}}
    return part


@attrs.frozen
class ChatKeys:
    """A chat request's key for each target (the read-through plan asks, target by target)."""

    namespace: str
    request: ChatRequest

    def __call__(self, target: Target) -> str:
        return chat_key(self.namespace, target, self.request)


@attrs.frozen
class EmbeddingKeys:
    namespace: str
    request: EmbeddingRequest

    def __call__(self, target: Target) -> str:
        return embedding_key(self.namespace, target, self.request)
