"""The use cases: resolve, chat, chat_stream, embed, list_models, get_model, and the state
operators read (provider and cache status).

resolve -> cache lookup -> walk (each attempt under its deadline, health fed as it goes)
-> answer (stored when it is cacheable and finished cleanly). Every use case returns what it
did (`Answered`: the answer, who gave it, the attempts, the timings, the cache's part) or raises
a GatewayError carrying its attempts; it never reaches into the api's metrics or log line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import TypeVar

import attrs
import trio

from mana_llm import errors, read_through
from mana_llm.cache.entries import Entry, storable_completion
from mana_llm.cache.keys import chat_cacheable, chat_key, embedding_key
from mana_llm.cache.store import ResponseCache
from mana_llm.domain import (
    Answered,
    AnswerStream,
    CacheControl,
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelInfo,
    ProviderStatus,
    Target,
)
from mana_llm.providers.protocol import Provider
from mana_llm.routing.aliases import AliasStore
from mana_llm.routing.commit import (
    CommittedStream,
    Recorder,
    StreamPolicy,
    open_committed,
    read_whole,
)
from mana_llm.routing.fallback import Walker
from mana_llm.routing.health import ProviderHealthCache
from mana_llm.routing.retry import Budgets, RetryPolicy
from mana_llm.routing.route import Prepared, Route
from mana_llm.routing.targets import ALIAS_PREFIX, parse_target
from mana_llm.settings import Settings

__all__ = ["NO_DIRECTIVES", "Gateway", "Route"]  # Route: what resolve() answers the api

log = logging.getLogger(__name__)

Answer = TypeVar("Answer", ChatResponse, EmbeddingResponse)
T = TypeVar("T")
NO_DIRECTIVES = CacheControl()


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
        settings = self.settings
        self._walker = Walker(
            self.providers,
            self.health,
            settings.request_timeout_s,
            self.clock,
            self.wall_clock,
            RetryPolicy(settings.retry_base_delay_s, settings.retry_max_wait_s),
            Budgets(settings.retry_budget),
            Budgets(settings.hedge_budget),
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
        target = parse_target(model, self.providers, self.settings.ollama_default_model)
        prefix, slash, _ = model.partition("/")
        unknown = slash and prefix not in self.providers and "." not in prefix  # not hf.co/...
        return Route((target,), unknown_prefix=prefix if unknown else None)

    async def _answer(
        self,
        route: Route,
        attempt: Callable[[Provider, Target], Awaitable[Answer]],
        plan: read_through.Plan | None,
        from_entry: Callable[[Entry], Answer],
    ) -> Answered[Answer]:
        """A whole answer (not a stream): from the cache, or walk, then store it."""
        if plan is not None:
            entry = await plan.lookup(self._walker.first_candidate(route.targets))
            if entry is not None:
                target = read_through.target_of(entry)
                return Answered(from_entry(entry), target, (), cached=True, cache=plan.result)
        answered = await self._walk(route, attempt, plan, route.attempt_timeout_s, "answer")
        if plan is not None:
            await plan.save(answered.target, answered.result.payload)
        return answered

    async def _walk(
        self,
        route: Route,
        attempt: Callable[[Provider, Target], Awaitable[T]],
        plan: read_through.Plan | None,
        deadline_s: Callable[[Provider], float],
        waiting_for: str,
    ) -> Answered[T]:
        """The walk over the route's chain, with its policy; the answer, or the failure,
        carries what the cache lookup did."""
        cache = None if plan is None else plan.result
        try:
            answered = await self._walker.walk(
                route.targets,
                attempt,
                deadline_s,
                waiting_for,
                direct=route.direct,
                retries=route.retries(self.settings.retries),
                hedge_after_s=route.hedge_after_s,
            )
        except errors.UpstreamModelNotFound as error:
            if route.unknown_prefix is None:
                error.cache = cache
                raise
            raise self._not_a_provider(route.unknown_prefix, error, cache) from error
        except errors.GatewayError as error:
            error.cache = cache
            raise
        return attrs.evolve(answered, ended_at=self.clock(), cache=cache)

    def _not_a_provider(
        self, prefix: str, error: errors.UpstreamModelNotFound, cache: str | None
    ) -> errors.UpstreamModelNotFound:
        """Ollama has no model `anthropic/claude-3`: say that `anthropic` is no provider here."""
        known = ", ".join(self.providers)
        better = errors.UpstreamModelNotFound(
            f"{error.message}; {prefix!r} is not a configured provider (known: {known}), so"
            " the whole name went to Ollama as a model name",
            param="model",
            provider=error.provider,
            attempts=error.attempts,
        )
        better.cache, better.retried = cache, error.retried
        return better

    def _chat_plan(
        self, route: Route, request: ChatRequest, control: CacheControl
    ) -> read_through.Plan | None:
        opt_in = route.alias.cache if route.alias is not None else None
        return read_through.plan(
            self.cache,
            control,
            chat_cacheable(request, opt_in, control.opt_in),
            lambda target: chat_key(control.namespace, target, request),
            storable_completion,
        )

    async def chat(
        self,
        request: ChatRequest,
        control: CacheControl = NO_DIRECTIVES,
        route: Route | None = None,
    ) -> Answered[ChatResponse]:
        """`route`: what `resolve(request.model)` said, when the caller already asked."""
        route = route or self.resolve(request.model)
        prepared = Prepared(request)

        async def attempt(provider: Provider, target: Target) -> ChatResponse:
            return await provider.chat(target, await prepared.for_provider(provider))

        plan = self._chat_plan(route, request, control)
        return await self._answer(
            route, attempt, plan, lambda e: read_through.chat_hit(e, self.wall_clock())
        )

    async def chat_stream(
        self,
        request: ChatRequest,
        control: CacheControl = NO_DIRECTIVES,
        route: Route | None = None,
    ) -> Answered[AnswerStream]:
        """Walk the chain until one attempt commits; the answer's stream owns the upstream.
        A cache hit is replayed as a stream; a cacheable miss is stored once it completes.
        `ended_at` is when the stream committed (its first token)."""
        route = route or self.resolve(request.model)
        deadline = self.clock() + self.settings.request_timeout_s  # the walk included
        plan = self._chat_plan(route, request, control)
        whole = route.alias is not None and route.alias.buffer
        first_token_s = self.settings.first_token_timeout_s

        def first_token_deadline_s(provider: Provider) -> float:
            return route.first_token_timeout_s(provider, first_token_s)

        attempt = self._stream_attempt(
            Prepared(request), plan, deadline, first_token_deadline_s if whole else None
        )
        if plan is not None:
            entry = await plan.lookup(self._walker.first_candidate(route.targets))
            if entry is not None:
                stream = read_through.stream_hit(entry, self.wall_clock())
                target = read_through.target_of(entry)
                return Answered(stream, target, (), cached=True, cache=plan.result)
        if whole:
            return await self._walk(route, attempt, plan, route.attempt_timeout_s, "answer")
        return await self._walk(route, attempt, plan, first_token_deadline_s, "first token")

    def _stream_attempt(
        self,
        prepared: Prepared,
        plan: read_through.Plan | None,
        deadline: float,
        whole: Callable[[Provider], float] | None,
    ) -> Callable[[Provider, Target], Awaitable[AnswerStream]]:
        """One stream attempt: open the upstream and read to the commit point, its policy built
        whole; or, for a buffered alias (`whole`: its first-token deadline per provider), read
        the entire answer and replay it. The time to the first content is bounded by the
        first-token deadline either way; a buffered answer's rest by the idle timeout and the
        entry's attempt deadline."""

        async def live(provider: Provider, target: Target) -> AnswerStream:
            recorder = None
            if plan is not None and plan.enabled:
                recorder = Recorder(
                    self.settings.cache_max_entry_bytes, partial(plan.save_stream, target)
                )
            policy = StreamPolicy(
                self.settings.stream_idle_timeout_s,
                deadline,
                partial(self._walker.report, target.provider),
                recorder,
            )
            ready = await prepared.for_provider(provider)
            return await open_committed(provider, target, ready, policy)

        async def buffered(provider: Provider, target: Target) -> AnswerStream:
            assert whole is not None
            first_token_s = whole(provider)
            policy = StreamPolicy(self.settings.stream_idle_timeout_s, deadline)
            committed: CommittedStream | None = None
            with trio.move_on_after(first_token_s):
                ready = await prepared.for_provider(provider)
                committed = await open_committed(provider, target, ready, policy)
            if committed is None:
                raise errors.FirstTokenTimeout(
                    f"{target.resolved} sent no first token within {first_token_s:g}s",
                    provider=target.provider,
                )
            answer = await read_whole(committed)
            if plan is not None:
                await plan.save_stream(target, [chunk.payload for chunk in answer])
            return CommittedStream.replay(target, answer)

        return live if whole is None else buffered

    async def embed(
        self,
        request: EmbeddingRequest,
        control: CacheControl = NO_DIRECTIVES,
        route: Route | None = None,
    ) -> Answered[EmbeddingResponse]:
        route = route or self.resolve(request.model)

        async def attempt(provider: Provider, target: Target) -> EmbeddingResponse:
            return await provider.embed(target, request)

        plan = read_through.plan(
            self.cache,
            control,
            True,  # an embedding is deterministic
            lambda target: embedding_key(control.namespace, target, request),
            _embeddings_valid,
        )
        return await self._answer(route, attempt, plan, read_through.embedding_hit)

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
        aliases = list(self._alias_models().values())
        return aliases + [model for p in self.configured() for model in found.get(p.name, ())]

    def _alias_models(self) -> dict[str, ModelInfo]:
        """Every alias of the current table as a model (model pickers build on /v1/models)."""
        table = self.aliases.table
        created = int(table.loaded_at or 0)
        return {
            name: ModelInfo(
                name,
                created,
                "mana-llm",
                alias.description,
                tuple(t.resolved for t in alias.chain),
            )
            for name, alias in table.aliases.items()
        }

    async def get_model(self, model_id: str) -> ModelInfo:
        if model_id.startswith(ALIAS_PREFIX):
            alias = self._alias_models().get(model_id)
            if alias is None:
                raise errors.ModelNotFound(
                    f"unknown alias {model_id!r}; GET /v1/aliases lists them", param="model"
                )
            return alias
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

    def provider_statuses(self) -> list[ProviderStatus]:
        """Every provider's health as operators see it, times as unix seconds."""
        now, wall = self.clock(), self.wall_clock()

        def at(t: float | None) -> float | None:
            return None if t is None else round(wall - (now - t), 3)

        out: list[ProviderStatus] = []
        for name, provider in self.providers.items():
            if not provider.configured:
                out.append(ProviderStatus(name, "unconfigured", missing=provider.key_env))
                continue
            stats = self.health.statistics(name, now)
            out.append(
                ProviderStatus(
                    name,
                    stats.state.value if stats.checked else "unknown",
                    consecutive_failures=stats.consecutive_failures,
                    last_error=stats.last_error,
                    last_failure_at=at(stats.last_failure_at),
                    last_success_at=at(stats.last_success_at),
                    opened_at=at(stats.opened_at),
                    opened_because=stats.opened_because,
                    reopens_at=at(stats.reopens_at),
                    last_probe_at=at(stats.last_probe_at),
                    last_probe_ok=stats.last_probe_ok,
                    failing=stats.failing,
                )
            )
        return out

    def cache_status(self) -> dict[str, object]:
        if self.cache is None:
            return {"backend": None, "state": "off"}
        return self.cache.statistics()


def _embeddings_valid(payload: dict[str, object]) -> bool:
    return isinstance(payload.get("data"), list)
