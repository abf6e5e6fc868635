"""Ollama through its native API: /api/chat (NDJSON streaming), /api/embed, /api/tags."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

import attrs

from mana_llm import codec
from mana_llm.domain import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelInfo,
    StreamChunk,
    Target,
)
from mana_llm.providers import ollama_wire as wire
from mana_llm.providers.framing import NDJSONDecoder
from mana_llm.providers.upstream import RawStream, Upstream


@attrs.define(eq=False)
class OllamaProvider:
    upstream: Upstream
    wall_clock: Callable[[], float] = time.time

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
        data = await self.upstream.post_json(
            "/api/chat", wire.chat_body(target.model, request, stream=False)
        )
        return wire.completion(data, target, self.wall_clock, self.upstream.protocol_error)

    async def open_stream(self, target: Target, request: ChatRequest) -> NDJSONChunkStream:
        body = wire.chat_body(target.model, request, stream=True)
        response = await self.upstream.open_stream("/api/chat", body)
        return NDJSONChunkStream(
            RawStream(self.upstream, response), wire.StreamTranslator(target, self.wall_clock)
        )

    async def embed(self, target: Target, request: EmbeddingRequest) -> EmbeddingResponse:
        data = await self.upstream.post_json("/api/embed", wire.embed_body(target.model, request))
        try:
            payload, usage = wire.embeddings(data, target, request)
        except (ValueError, TypeError, struct.error) as exc:
            raise self.upstream.protocol_error(str(exc)) from None
        return EmbeddingResponse(payload, usage)

    async def list_models(self) -> tuple[ModelInfo, ...]:
        data = await self.upstream.get_json("/api/tags")
        try:
            return wire.models(data, self.name, self.wall_clock)
        except ValueError as exc:
            raise self.upstream.protocol_error(str(exc)) from None


@attrs.define(eq=False)
class NDJSONChunkStream:
    raw: RawStream
    translator: wire.StreamTranslator
    _decoder: NDJSONDecoder = attrs.field(factory=NDJSONDecoder)
    _ended: bool = False

    async def receive(self) -> list[StreamChunk]:
        while not self._ended:
            data = await self.raw.read()
            if data:
                lines = self._decoder.feed(data)
            else:
                lines = self._decoder.close()
                self._ended = True
            chunks: list[StreamChunk] = []
            for line in lines:
                try:
                    obj = codec.loads(line)
                except ValueError:
                    raise self.raw.upstream.protocol_error(
                        "a stream line that is not JSON"
                    ) from None
                if not isinstance(obj, dict):
                    raise self.raw.upstream.protocol_error("a stream line that is not an object")
                chunks.extend(self.translator.translate(obj))
            if chunks:
                return chunks
        return []

    async def aclose(self) -> None:
        await self.raw.aclose()
