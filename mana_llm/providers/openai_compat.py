"""OpenAI-compatible clouds (OpenRouter, Groq, Together, any base URL): the caller's body passes
through with only `model` replaced; responses and SSE chunks come back with `model` rewritten
to the resolved `provider/model`. Streams always ask the upstream for usage (for accounting) and
hand it to the caller only when the caller asked."""

from __future__ import annotations

from functools import partial
from typing import Any

import attrs

from mana_llm import errors
from mana_llm.domain import (
    JSON,
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelInfo,
    StreamChunk,
    Target,
    Usage,
)
from mana_llm.providers.framing import SSEDecoder
from mana_llm.providers.upstream import FramedChunkStream, Upstream

_COMMIT_KEYS = ("content", "tool_calls", "reasoning_content", "reasoning", "refusal")


def usage_from_json(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    prompt, completion = data.get("prompt_tokens"), data.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt, completion)


def in_band_error(upstream: Upstream, data: JSON) -> errors.ProviderError:
    """An `{"error": ...}` object inside a 200: classify by the status it names, else 502."""
    err = data.get("error")
    code = err.get("code") if isinstance(err, dict) else None
    status = code if isinstance(code, int) and 400 <= code <= 599 else 502
    return upstream.error(status, data, {})


@attrs.define(eq=False)
class OpenAICompatProvider:
    upstream: Upstream

    @property
    def name(self) -> str:
        return self.upstream.name

    @property
    def configured(self) -> bool:
        return self.upstream.settings.configured

    @property
    def timeout_s(self) -> float:
        return self.upstream.settings.timeout_s

    @property
    def key_env(self) -> str | None:
        return self.upstream.settings.key_env

    async def prepare(self, request: ChatRequest) -> ChatRequest:
        return request  # the caller's body passes through as it is

    async def chat(self, target: Target, request: ChatRequest) -> ChatResponse:
        body = dict(request.body)
        body["model"] = target.model
        body["stream"] = False
        body.pop("stream_options", None)
        data = await self.upstream.post_json("/chat/completions", body)
        return self._completion(data, target)

    def _completion(self, data: Any, target: Target) -> ChatResponse:
        if not isinstance(data, dict):
            raise self.upstream.protocol_error("a completion that is not an object")
        if "error" in data:
            raise in_band_error(self.upstream, data)
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise self.upstream.protocol_error("a completion without choices")
        for choice in choices:
            if choice.get("finish_reason") == "error":
                raise errors.UpstreamUnavailable(
                    f"{self.name} reported an error while generating", provider=self.name
                )
            if not choice.get("finish_reason"):
                choice["finish_reason"] = "stop"
            choice.setdefault("logprobs", None)
        data["model"] = target.resolved
        drop_disallowed_nulls(data, "message")
        return ChatResponse(data, choices[0]["finish_reason"], usage_from_json(data.get("usage")))

    async def open_stream(self, target: Target, request: ChatRequest) -> FramedChunkStream:
        body = dict(request.body)
        body["model"] = target.model
        body["stream"] = True
        options = body.get("stream_options")
        body["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
        response = await self.upstream.open_stream("/chat/completions", body)
        parse = partial(sse_chunks, self.upstream, target)
        return FramedChunkStream(self.upstream, response, SSEDecoder(), parse)

    async def embed(self, target: Target, request: EmbeddingRequest) -> EmbeddingResponse:
        body = dict(request.body)
        body["model"] = target.model
        data = await self.upstream.post_json("/embeddings", body)
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise self.upstream.protocol_error("an embeddings answer without data")
        data["model"] = target.resolved
        data.setdefault("object", "list")
        usage = data.get("usage")
        if not isinstance(usage, dict):
            data["usage"] = {"prompt_tokens": 0, "total_tokens": 0}
        prompt = data["usage"].get("prompt_tokens")
        return EmbeddingResponse(data, Usage(prompt, 0) if isinstance(prompt, int) else None)

    async def probe(self) -> None:
        await self.upstream.check("/models")

    async def list_models(self) -> tuple[ModelInfo, ...]:
        items = model_items(await self.upstream.get_json("/models"))
        if items is None:
            raise self.upstream.protocol_error("a model list without data")
        return tuple(
            ModelInfo(
                id=f"{self.name}/{item['id']}",
                created=item["created"] if isinstance(item.get("created"), int) else 0,
                owned_by=str(item.get("owned_by") or self.name),
            )
            for item in items
            if isinstance(item, dict) and isinstance(item.get("id"), str)
        )


def model_items(data: Any) -> list[Any] | None:
    """The entries of a model list in every shape real OpenAI-compatible servers send:
    OpenAI's `{"object": "list", "data": [...]}`, Together's bare array `[{...}, ...]` (its
    SDK types `GET /models` as `List[ModelInfo]`), and `{"models": [...]}`."""
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        for key in ("data", "models"):
            if isinstance(data.get(key), list):
                return list(data[key])
    return None


# Fields the OpenAI spec lets be null (CreateChatCompletionResponse and its stream chunk);
# any other null an upstream sends (OpenRouter's `system_fingerprint: null`) is dropped.
_NULLABLE_TOP = frozenset({"metadata", "moderation", "service_tier"})
_NULLABLE_CHOICE = frozenset({"logprobs", "finish_reason"})  # counted by name per chunk below
_NULLABLE_MESSAGE = frozenset({"content", "refusal", "audio"})


def _drop_nulls(obj: dict[str, Any], keep: frozenset[str]) -> None:
    """Drop `obj`'s nulls but those in `keep`; callers look for a null in C first."""
    for key in [k for k, v in obj.items() if v is None and k not in keep]:
        del obj[key]


_NOTHING_NULLABLE: frozenset[str] = frozenset()


def drop_disallowed_nulls(data: JSON, message_key: str) -> None:
    """In place: a completion (`message`) or a chunk (`delta`) without nulls the spec forbids.
    Runs for every streamed chunk: each object is checked for a null in C before any call."""
    if None in data.values():
        _drop_nulls(data, _NULLABLE_TOP)
    usage = data.get("usage")
    if isinstance(usage, dict) and None in usage.values():
        _drop_nulls(usage, _NOTHING_NULLABLE)
    for choice in data.get("choices") or ():
        if isinstance(choice, dict):
            # nulls counted in C: a streamed choice's usual ones (the two _NULLABLE_CHOICE
            # names) are allowed, so `_drop_nulls` is called only when there are others
            nulls = list(choice.values()).count(None)
            allowed = (choice.get("finish_reason", 0) is None) + (choice.get("logprobs", 0) is None)
            if nulls > allowed:
                _drop_nulls(choice, _NULLABLE_CHOICE)
            message = choice.get(message_key)
            if isinstance(message, dict) and None in message.values():
                _drop_nulls(message, _NULLABLE_MESSAGE)


def sse_chunks(upstream: Upstream, target: Target, event: bytes) -> list[StreamChunk] | None:
    """One SSE event's chunks, with `model` rewritten; None for [DONE]."""
    if event == b"[DONE]":
        return None
    data = upstream.json_object(event, "stream event")
    if "error" in data:
        raise in_band_error(upstream, data)
    choices = data.get("choices")
    if not isinstance(choices, list):
        raise upstream.protocol_error("a stream chunk without choices")
    data["model"] = target.resolved
    drop_disallowed_nulls(data, "delta")
    commits, finish = False, None
    for choice in choices:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            raise upstream.protocol_error("a stream choice without a delta")
        if not commits:
            for key in _COMMIT_KEYS:
                if delta.get(key):
                    commits = True
                    break
        finish = choice.get("finish_reason") or finish
    if finish == "error":
        raise errors.UpstreamUnavailable(
            f"{upstream.name} reported an error while generating", provider=upstream.name
        )
    raw_usage = data.get("usage")  # on one chunk of a stream: parsed only there
    usage = None if raw_usage is None else usage_from_json(raw_usage)
    if usage is None or not choices:
        return [StreamChunk(data, commits, finish, usage)]
    # Some clouds put usage on the finish chunk; the caller wants it on a chunk of its own.
    usage_chunk = {k: v for k, v in data.items() if k != "choices"}
    usage_chunk["choices"] = []
    del data["usage"]
    return [StreamChunk(data, commits, finish), StreamChunk(usage_chunk, usage=usage)]
