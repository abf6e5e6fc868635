"""What the gateway and the walk need from a provider; nothing about wire formats."""

from __future__ import annotations

from typing import Protocol

from mana_llm.domain import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    Inventory,
    ModelInfo,
    StreamChunk,
    Target,
)


class ChunkStream(Protocol):
    """An open upstream stream. `receive` returns the next chunks (possibly none that commit),
    or an empty list once the upstream has ended; upstream failures raise ProviderError."""

    async def receive(self) -> list[StreamChunk]: ...

    async def aclose(self) -> None: ...


class Provider(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def configured(self) -> bool: ...

    @property
    def key_env(self) -> str | None: ...

    @property
    def timeout_s(self) -> float: ...

    async def prepare(self, request: ChatRequest) -> ChatRequest:
        """The request as this provider's attempts need it, done once per request (Ollama
        fetches image URLs); InvalidRequest when the request cannot be prepared."""
        ...

    async def chat(self, target: Target, request: ChatRequest) -> ChatResponse: ...

    async def open_stream(self, target: Target, request: ChatRequest) -> ChunkStream: ...

    async def embed(self, target: Target, request: EmbeddingRequest) -> EmbeddingResponse: ...

    async def list_models(self) -> tuple[ModelInfo, ...]: ...

    async def probe(self) -> Inventory | None:
        """Ask for the model list and judge the status: raise the ProviderError a failure maps
        to. Spends no tokens. A local server says what it holds (installed and loaded
        models, read leniently: a shape it cannot read is unknown, never a failure); a cloud
        returns None."""
        ...
