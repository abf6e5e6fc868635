"""The use cases: chat, chat_stream, embed, list_models, get_model, health.

resolve -> walk (each attempt under its deadline, health fed as it goes) -> answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import attrs
import trio

from mana_llm import errors
from mana_llm.domain import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelInfo,
    Target,
)
from mana_llm.providers.protocol import Provider
from mana_llm.routing.commit import CommittedStream, open_committed
from mana_llm.routing.fallback import Answered, Walker
from mana_llm.routing.health import CircuitState, ProviderHealthCache
from mana_llm.routing.targets import ALIAS_PREFIX, parse_target
from mana_llm.settings import Settings

__all__ = ["Answered", "CommittedStream", "Gateway"]  # the api sees routing types only through here

log = logging.getLogger(__name__)


@attrs.define(eq=False)
class Gateway:
    settings: Settings
    providers: Mapping[str, Provider]
    health: ProviderHealthCache
    clock: Callable[[], float] = trio.current_time
    _walker: Walker = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._walker = Walker(
            self.providers, self.health, self.settings.request_timeout_s, self.clock
        )

    def resolve(self, model: str) -> tuple[Target, ...]:
        if model.startswith(ALIAS_PREFIX):
            raise errors.ModelNotFound(f"unknown alias {model!r}", param="model")
        return (parse_target(model, self.providers, self.settings.ollama_default_model),)

    async def chat(self, request: ChatRequest) -> Answered[ChatResponse]:
        async def attempt(provider: Provider, target: Target) -> ChatResponse:
            return await provider.chat(target, request)

        return await self._walker.walk(
            self.resolve(request.model), attempt, lambda p: p.timeout_s, "answer"
        )

    async def chat_stream(self, request: ChatRequest) -> CommittedStream:
        """Walk the chain until one attempt commits; the returned stream owns the upstream."""
        first_token_s = self.settings.first_token_timeout_s

        async def attempt(provider: Provider, target: Target) -> CommittedStream:
            return await open_committed(provider, target, request)

        answered = await self._walker.walk(
            self.resolve(request.model),
            attempt,
            lambda p: min(first_token_s, p.timeout_s),
            "first token",
        )
        stream = answered.result
        stream.attempts = answered.attempts
        stream.idle_timeout_s = self.settings.stream_idle_timeout_s
        stream.deadline = self.clock() + self.settings.request_timeout_s
        provider = answered.target.provider
        stream.on_error = lambda error: self._walker.report(provider, error)
        return stream

    async def embed(self, request: EmbeddingRequest) -> Answered[EmbeddingResponse]:
        async def attempt(provider: Provider, target: Target) -> EmbeddingResponse:
            return await provider.embed(target, request)

        return await self._walker.walk(
            self.resolve(request.model), attempt, lambda p: p.timeout_s, "answer"
        )

    def configured(self) -> list[Provider]:
        return [p for p in self.providers.values() if p.configured]

    async def list_models(self) -> list[ModelInfo]:
        """Every configured provider's models, fetched concurrently, each under a short
        deadline; a provider that fails or is slow is left out, not fatal."""
        found: dict[str, tuple[ModelInfo, ...]] = {}

        async def collect(provider: Provider) -> None:
            with trio.move_on_after(self.settings.models_timeout_s):
                try:
                    found[provider.name] = await provider.list_models()
                except errors.ProviderError as error:
                    log.warning("model list from %s failed: %s", provider.name, error.message)
                return
            log.warning("model list from %s timed out", provider.name)

        async with trio.open_nursery() as nursery:
            for provider in self.configured():
                nursery.start_soon(collect, provider)
        return [model for p in self.configured() for model in found.get(p.name, ())]

    async def get_model(self, model_id: str) -> ModelInfo:
        if model_id.startswith(ALIAS_PREFIX):
            raise errors.ModelNotFound(f"model {model_id!r} not found", param="model")
        target = parse_target(model_id, self.providers, self.settings.ollama_default_model)
        provider = self.providers[target.provider]
        if not provider.configured:
            raise errors.ModelNotFound(
                f"model {model_id!r} not found: provider {provider.name!r} is not configured",
                param="model",
            )
        with trio.move_on_after(self.settings.models_timeout_s):
            models = await provider.list_models()
            wanted = {target.resolved}
            if target.provider == "ollama" and ":" not in target.model:
                wanted.add(f"{target.resolved}:latest")
            for model in models:
                if model.id in wanted:
                    return model
            raise errors.ModelNotFound(f"model {model_id!r} not found", param="model")
        raise errors.UpstreamTimeout(
            f"{provider.name} did not list its models within {self.settings.models_timeout_s:g}s",
            provider=provider.name,
        )

    def health_summary(self) -> dict[str, str]:
        now = self.clock()
        out: dict[str, str] = {}
        for name, provider in self.providers.items():
            if not provider.configured:
                out[name] = "unconfigured"
            elif self.health.state(name, now) is CircuitState.CLOSED:
                out[name] = "healthy"
            else:
                out[name] = "unhealthy"
        return out
