"""Ollama through its native API: /api/chat (NDJSON streaming), /api/embed, /api/tags."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import attrs

from mana_llm import errors
from mana_llm.domain import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    Image,
    Inventory,
    ModelInfo,
    StreamChunk,
    Target,
)
from mana_llm.providers import ollama_wire as wire
from mana_llm.providers.framing import NDJSONDecoder
from mana_llm.providers.images import ImageFetcher
from mana_llm.providers.upstream import FramedChunkStream, Upstream


@attrs.define(eq=False)
class OllamaProvider:
    upstream: Upstream
    images: ImageFetcher | None = None  # None: http(s) image URLs are refused
    wall_clock: Callable[[], float] = time.time
    _defaults: dict[str, wire.ModelDefaults] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._defaults = {}
        for name, spec in self.upstream.settings.models.items():
            options = {k: v for k, v in spec.items() if k != "keep_alive"}
            self._defaults[name] = wire.ModelDefaults(options, spec.get("keep_alive"))

    def defaults(self, model: str) -> wire.ModelDefaults | None:
        found = self._defaults.get(model)
        if found is None and ":" not in model:
            found = self._defaults.get(f"{model}:latest")
        return found

    async def prepare(self, request: ChatRequest) -> ChatRequest:
        """Image URLs fetched and inlined, once per request whatever the attempts."""
        urls = [img for m in request.messages for img in m.images if img.url is not None]
        if not urls:
            return request
        if self.images is None:
            where = urls[0].where
            raise errors.InvalidRequest(f"{where}: image URLs are not enabled", param=where)
        fetched = await self.images.fetch_all(urls)
        messages = tuple(
            attrs.evolve(
                m,
                images=tuple(
                    Image(img.where, data=fetched[img.where]) if img.url is not None else img
                    for img in m.images
                ),
            )
            if m.images
            else m
            for m in request.messages
        )
        return attrs.evolve(request, messages=messages)

    def _body(self, target: Target, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        return wire.chat_body(
            target.model, request, stream=stream, defaults=self.defaults(target.model)
        )

    @property
    def name(self) -> str:
        return self.upstream.name

    @property
    def configured(self) -> bool:
        return True

    @property
    def timeout_s(self) -> float:
        return self.upstream.settings.timeout_s

    @property
    def key_env(self) -> str | None:
        return None

    async def chat(self, target: Target, request: ChatRequest) -> ChatResponse:
        data = await self.upstream.post_json("/api/chat", self._body(target, request, stream=False))
        try:
            return wire.completion(data, target, self.wall_clock, self.upstream.protocol_error)
        except ValueError as exc:
            raise self.upstream.protocol_error(str(exc)) from None

    async def open_stream(self, target: Target, request: ChatRequest) -> FramedChunkStream:
        body = self._body(target, request, stream=True)
        response = await self.upstream.open_stream("/api/chat", body)
        translator = wire.StreamTranslator(target, self.wall_clock)
        parse = partial(ndjson_chunks, self.upstream, translator)
        return FramedChunkStream(self.upstream, response, NDJSONDecoder(), parse)

    async def embed(self, target: Target, request: EmbeddingRequest) -> EmbeddingResponse:
        body = wire.embed_body(target.model, request, self.defaults(target.model))
        data = await self.upstream.post_json("/api/embed", body)
        try:
            payload, usage = wire.embeddings(data, target, request)
        except (ValueError, TypeError, struct.error) as exc:
            raise self.upstream.protocol_error(str(exc)) from None
        return EmbeddingResponse(payload, usage)

    async def probe(self) -> Inventory:
        """/api/tags (reachable, and what is installed), then /api/ps (what is loaded now).
        Shapes: Ollama's API docs (ListResponse, PsResponse): {"models": [{"name": ...}]}."""
        try:
            installed = wire.model_names(await self.upstream.get_json("/api/tags"))
        except errors.UpstreamProtocolError:  # a 2xx it cannot read: reachable, holding what?
            return Inventory()
        try:
            loaded = wire.model_names(await self.upstream.get_json("/api/ps"))
        except errors.ProviderError:  # an Ollama without /api/ps: loaded models unknown
            loaded = None
        return Inventory(installed, loaded)

    async def list_models(self) -> tuple[ModelInfo, ...]:
        data = await self.upstream.get_json("/api/tags")
        try:
            return wire.models(data, self.name, self.wall_clock)
        except ValueError as exc:
            raise self.upstream.protocol_error(str(exc)) from None


def ndjson_chunks(
    upstream: Upstream, translator: wire.StreamTranslator, line: bytes
) -> list[StreamChunk]:
    """One Ollama NDJSON line as OpenAI chunks."""
    data = upstream.json_object(line, "stream line")
    try:
        return translator.translate(data)
    except ValueError as exc:
        raise upstream.protocol_error(str(exc)) from None
