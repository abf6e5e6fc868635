"""The use cases: chat, chat_stream, embed, list_models, get_model, health.

resolve -> cache lookup -> walk (each attempt under its deadline, health fed as it goes)
-> answer (stored when it is cacheable and finished cleanly).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, TypeVar

import attrs
import trio

from mana_llm import errors, read_through
from mana_llm.cache.entries import Entry, storable_completion
from mana_llm.cache.keys import chat_cacheable, chat_key, embedding_key
from mana_llm.cache.store import ResponseCache
from mana_llm.domain import (
    CacheControl,
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelInfo,
    Target,
)
from mana_llm.metrics import RequestTrace
from mana_llm.providers.protocol import Provider
from mana_llm.routing.aliases import Alias, AliasStore
from mana_llm.routing.commit import CommittedStream, open_committed
from mana_llm.routing.fallback import Answered, Walker
from mana_llm.routing.health import CircuitState, ProviderHealthCache
from mana_llm.routing.targets import ALIAS_PREFIX, parse_target
from mana_llm.settings import Settings

__all__ = ["Answered", "CommittedStream", "Gateway"]  # the api sees routing types only through here

log = logging.getLogger(__name__)

Answer = TypeVar("Answer", ChatResponse, EmbeddingResponse)
NO_DIRECTIVES = CacheControl()


@attrs.frozen
class Route:
    """What a model string resolved to, against one snapshot of the alias table."""

    targets: tuple[Target, ...]
    alias: Alias | None = None

    @property
    def direct(self) -> bool:
        return self.alias is None

    def attempt_timeout_s(self, provider: Provider) -> float:
        if self.alias is not None and self.alias.attempt_timeout_s is not None:
            return self.alias.attempt_timeout_s
        return provider.timeout_s

    def first_token_timeout_s(self, provider: Provider, default_s: float) -> float:
        if self.alias is not None and self.alias.first_token_timeout_s is not None:
            default_s = self.alias.first_token_timeout_s
        return min(default_s, self.attempt_timeout_s(provider))


@attrs.define(eq=False)
class Prepared:
    """One request as each provider needs it, prepared once per provider whatever the number
    of attempts (Ollama fetches image URLs once per request, not once per chain entry)."""

    request: ChatRequest
    _by_provider: dict[str, ChatRequest] = attrs.field(factory=dict)

    async def for_provider(self, provider: Provider) -> ChatRequest:
        found = self._by_provider.get(provider.name)
        if found is None:
            found = self._by_provider[provider.name] = await provider.prepare(self.request)
        return found


@attrs.define(eq=False)
class Gateway:
    settings: Settings
    providers: Mapping[str, Provider]
    health: ProviderHealthCache
    aliases: AliasStore
    clock: Callable[[], float] = trio.current_time
    wall_clock: Callable[[], float] = time.time
    cache: ResponseCache | None = None
    _walker: Walker = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._walker = Walker(
            self.providers,
            self.health,
            self.settings.request_timeout_s,
            self.clock,
            self.wall_clock,
        )

    def resolve(self, model: str) -> Route:
        """An alias resolves to its chain (from the table as it is now); `provider/model` to
        one target, no fallback."""
        if model.startswith(ALIAS_PREFIX):
            alias = self.aliases.table.get(model)
            if alias is None:
                raise errors.ModelNotFound(
                    f"unknown alias {model!r}; GET /v1/aliases lists them", param="model"
                )
            return Route(alias.chain, alias)
        return Route((parse_target(model, self.providers, self.settings.ollama_default_model),))

    def _route(self, model: str, trace: RequestTrace | None) -> Route:
        route = self.resolve(model)
        if trace is not None:
            trace.model = model
            trace.label_model = route.alias.name if route.alias else route.targets[0].resolved
        return route

    def _answered(self, trace: RequestTrace | None, answered: Answered[Any]) -> None:
        if trace is not None:
            trace.resolved = answered.target.resolved
            trace.attempts = answered.failed
            trace.upstream_started_at = answered.started_at

    async def _answer(
        self,
        route: Route,
        attempt: Callable[[Provider, Target], Awaitable[Answer]],
        trace: RequestTrace | None,
        plan: read_through.Plan | None,
        from_entry: Callable[[Entry], Answer],
    ) -> Answered[Answer]:
        """A whole answer (not a stream): from the cache, or walk, record who answered and the
        usage, and store it."""
        if plan is not None:
            entry = await plan.lookup(self._walker.first_candidate(route.targets))
            if entry is not None:
                target = read_through.target_of(entry)
                return Answered(from_entry(entry), target, (), self.clock(), cached=True)
        answered = await self._walker.walk(
            route.targets, attempt, route.attempt_timeout_s, "answer", direct=route.direct
        )
        self._answered(trace, answered)
        if trace is not None:
            trace.upstream_ended_at = self.clock()
            trace.usage = answered.result.usage
        if plan is not None:
            await plan.save(answered.target, answered.result.payload)
        return answered

    def _chat_plan(
        self,
        route: Route,
        request: ChatRequest,
        control: CacheControl,
        trace: RequestTrace | None,
    ) -> read_through.Plan | None:
        opt_in = route.alias.cache if route.alias is not None else None
        return read_through.plan(
            self.cache,
            control,
            chat_cacheable(request, opt_in, control.opt_in),
            lambda target: chat_key(control.namespace, target, request),
            storable_completion,
            trace,
        )

    async def chat(
        self,
        request: ChatRequest,
        trace: RequestTrace | None = None,
        control: CacheControl = NO_DIRECTIVES,
    ) -> Answered[ChatResponse]:
        prepared = Prepared(request)

        async def attempt(provider: Provider, target: Target) -> ChatResponse:
            return await provider.chat(target, await prepared.for_provider(provider))

        route = self._route(request.model, trace)
        plan = self._chat_plan(route, request, control, trace)
        return await self._answer(
            route, attempt, trace, plan, lambda e: read_through.chat_hit(e, self.wall_clock())
        )

    async def chat_stream(
        self,
        request: ChatRequest,
        trace: RequestTrace | None = None,
        control: CacheControl = NO_DIRECTIVES,
    ) -> CommittedStream:
        """Walk the chain until one attempt commits; the returned stream owns the upstream.
        A cache hit is replayed as a stream; a cacheable miss is stored once it completes."""
        first_token_s = self.settings.first_token_timeout_s
        began = self.clock()

        prepared = Prepared(request)

        async def attempt(provider: Provider, target: Target) -> CommittedStream:
            return await open_committed(provider, target, await prepared.for_provider(provider))

        route = self._route(request.model, trace)
        plan = self._chat_plan(route, request, control, trace)
        if plan is not None:
            entry = await plan.lookup(self._walker.first_candidate(route.targets))
            if entry is not None:
                return read_through.stream_hit(entry, self.wall_clock())
        answered = await self._walker.walk(
            route.targets,
            attempt,
            lambda p: route.first_token_timeout_s(p, first_token_s),
            "first token",
            direct=route.direct,
        )
        self._answered(trace, answered)
        if trace is not None:
            trace.first_token_at = self.clock()  # the upstream's end is set when the stream ends
        stream = answered.result
        stream.attempts = answered.attempts
        stream.idle_timeout_s = self.settings.stream_idle_timeout_s
        stream.deadline = (
            began + self.settings.request_timeout_s
        )  # the whole request, walk included
        provider = answered.target.provider
        stream.on_error = lambda error: self._walker.report(provider, error)
        if plan is not None:
            stream.record(partial(plan.save_stream, answered.target))
        return stream

    async def embed(
        self,
        request: EmbeddingRequest,
        trace: RequestTrace | None = None,
        control: CacheControl = NO_DIRECTIVES,
    ) -> Answered[EmbeddingResponse]:
        async def attempt(provider: Provider, target: Target) -> EmbeddingResponse:
            return await provider.embed(target, request)

        route = self._route(request.model, trace)
        plan = read_through.plan(
            self.cache,
            control,
            True,  # an embedding is deterministic
            lambda target: embedding_key(control.namespace, target, request),
            _embeddings_valid,
            trace,
        )
        return await self._answer(route, attempt, trace, plan, read_through.embedding_hit)

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

    def health_details(self) -> dict[str, dict[str, object]]:
        """Per provider: circuit state, consecutive failures, last error (secret-free), last
        success, when the circuit may reopen and the last probe, as unix times."""
        now, wall = self.clock(), self.wall_clock()

        def at(t: float | None) -> float | None:
            return None if t is None else round(wall - (now - t), 3)

        out: dict[str, dict[str, object]] = {}
        for name, provider in self.providers.items():
            if not provider.configured:
                out[name] = {"state": "unconfigured", "missing": provider.key_env}
                continue
            stats = self.health.statistics(name, now)
            out[name] = {
                "state": stats.state.value if stats.checked else "unknown",
                "consecutive_failures": stats.consecutive_failures,
                "last_error": stats.last_error,
                "last_failure_at": at(stats.last_failure_at),
                "last_success_at": at(stats.last_success_at),
                "opened_at": at(stats.opened_at),
                "opened_because": stats.opened_because,
                "reopens_at": at(stats.reopens_at),
                "last_probe_at": at(stats.last_probe_at),
                "last_probe_ok": stats.last_probe_ok,
            }
        return out

    def cache_details(self) -> dict[str, object]:
        if self.cache is None:
            return {"backend": None, "state": "off"}
        return self.cache.statistics()

    def health_summary(self) -> dict[str, str]:
        """Per provider: unconfigured, unknown (nobody has checked it yet), healthy (circuit
        closed) or unhealthy."""
        now = self.clock()
        out: dict[str, str] = {}
        for name, provider in self.providers.items():
            stats = self.health.statistics(name, now)
            if not provider.configured:
                out[name] = "unconfigured"
            elif not stats.checked:
                out[name] = "unknown"
            elif stats.state is CircuitState.CLOSED:
                out[name] = "healthy"
            else:
                out[name] = "unhealthy"
        return out


def _embeddings_valid(payload: dict[str, Any]) -> bool:
    return isinstance(payload.get("data"), list)
