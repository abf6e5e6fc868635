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

import mana_llm.cache.read_through as read_through
from mana_llm import errors
from mana_llm.cache.entries import Entry, storable_completion
from mana_llm.cache.keys import ChatKeys, EmbeddingKeys, chat_cacheable
from mana_llm.cache.store import ResponseCache
from mana_llm.domain import (
    Answered,
    AnswerStream,
    CacheControl,
    ChatRequest,
    ChatResponse,
    DeploymentStatus,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelInfo,
    ProviderStatus,
    Target,
)
from mana_llm.health.providers import ProviderHealthCache
from mana_llm.live_answer import LiveAnswer
from mana_llm.providers.protocol import Provider
from mana_llm.routing import operations
from mana_llm.routing.aliases import AliasStore
from mana_llm.routing.attempts import AttemptObserver
from mana_llm.routing.balance import Balancer
from mana_llm.routing.commit import CommittedStream, StreamPolicy
from mana_llm.routing.fallback import Walker, one_deployment_each
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
    balancer: Balancer | None = None  # None: each provider is its own one deployment
    attempts: AttemptObserver | None = None  # the traces' attempt spans (None: off)
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
            balancer=self.balancer or one_deployment_each(self.providers, self.health),
            observer=self.attempts,
        )
        self.balancer = self._walker.balancer  # given, or one deployment per provider

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
                raise error.evolve(cache=cache) from error
            known = ", ".join(self.providers)  # `anthropic/claude-3` went to Ollama: say why
            message = (
                f"{error.message}; {route.unknown_prefix!r} is not a configured provider"
                f" (known: {known}), so the whole name went to Ollama as a model name"
            )
            raise error.evolve(message=message, param="model", cache=cache) from error
        except errors.GatewayError as error:
            raise error.evolve(cache=cache) from error
        return attrs.evolve(answered, ended_at=self.clock(), cache=cache)

    def _chat_plan(
        self, route: Route, request: ChatRequest, control: CacheControl
    ) -> read_through.Plan | None:
        opt_in = route.alias.cache if route.alias is not None else None
        return read_through.plan(
            self.cache,
            control,
            chat_cacheable(request, opt_in, control.opt_in),
            ChatKeys(control.namespace, request),
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
        plan = self._chat_plan(route, request, control)
        return await self._answer(
            route,
            operations.Chat(Prepared(request)),
            plan,
            lambda e: read_through.chat_hit(e, self.wall_clock()),
        )

    async def chat_stream(
        self,
        request: ChatRequest,
        control: CacheControl = NO_DIRECTIVES,
        route: Route | None = None,
    ) -> Answered[AnswerStream]:
        """Walk the chain until one attempt commits (a buffered alias: until one answers in
        full); the winner, given its policy, owns the upstream. A cache hit is replayed as a
        stream; a cacheable answer is stored once it completes. `ended_at` is when the stream
        committed (its first token)."""
        route = route or self.resolve(request.model)
        deadline = self.clock() + self.settings.request_timeout_s  # the walk included
        plan = self._chat_plan(route, request, control)
        if plan is not None:
            entry = await plan.lookup(self._walker.first_candidate(route.targets))
            if entry is not None:
                target = read_through.target_of(entry)
                hit = read_through.stream_hit(entry, self.wall_clock())
                replayed = CommittedStream.replay(target, hit)
                return Answered(replayed, target, (), cached=True, cache=plan.result)
        policy = StreamPolicy(self.settings.stream_idle_timeout_s, deadline)
        prepared = Prepared(request)
        default_s = self.settings.first_token_timeout_s
        first_token_s = partial(route.first_token_timeout_s, default_s=default_s)
        if route.alias is not None and route.alias.buffer:
            whole = operations.Buffered(prepared, first_token_s, policy)
            answered = await self._walk(route, whole, plan, route.attempt_timeout_s, "answer")
        else:
            stream = operations.Stream(prepared)
            answered = await self._walk(route, stream, plan, first_token_s, "first token")
        recorder = None if plan is None else plan.recorder(self.settings.cache_max_entry_bytes)
        deployment = answered.deployment or answered.target.provider
        governed = answered.result.governed(policy)
        winner = LiveAnswer(governed, self._walker, deployment, plan, recorder)
        return answered.carrying(winner)

    async def embed(
        self,
        request: EmbeddingRequest,
        control: CacheControl = NO_DIRECTIVES,
        route: Route | None = None,
    ) -> Answered[EmbeddingResponse]:
        route = route or self.resolve(request.model)
        plan = read_through.plan(
            self.cache,
            control,
            True,  # an embedding is deterministic
            EmbeddingKeys(control.namespace, request),
            _embeddings_valid,
        )
        return await self._answer(
            route, operations.Embed(request), plan, read_through.embedding_hit
        )

    def configured(self) -> list[Provider]:
        return [p for p in self.providers.values() if p.configured]

    async def list_models(self) -> list[ModelInfo]:
        """Every configured provider's models, each listed once however many of its
        deployments serve it: every deployment asked concurrently, each under a short
        deadline; one that fails or is slow is left out, not fatal."""
        found: dict[str, tuple[ModelInfo, ...]] = {}

        async def collect(key: str, provider: Provider) -> None:
            with trio.move_on_after(self.settings.models_timeout_s):
                try:
                    found[key] = await provider.list_models()
                except errors.ProviderError as error:
                    log.warning("model list from %s failed: %s", key, error.message)
                return
            log.warning("model list from %s timed out", key)

        asked: dict[str, list[str]] = {}  # provider -> the keys its lists came under
        async with trio.open_nursery() as nursery:
            for provider in self.configured():
                places = self.balancer.deployments(provider.name) if self.balancer else ()
                clients = {d.name: d.provider for d in places} or {provider.name: provider}
                asked[provider.name] = list(clients)
                for key, client in clients.items():
                    nursery.start_soon(collect, key, client)
        models: dict[str, ModelInfo] = {m.id: m for m in self._alias_models().values()}
        for provider in self.configured():
            for key in asked[provider.name]:
                for model in found.get(key, ()):
                    models.setdefault(model.id, model)
        return list(models.values())

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
        """Every provider's health as operators see it (health/providers.py formats it), with
        its deployments: healthy while any of them is."""
        now, wall = self.clock(), self.wall_clock()
        out = []
        for name, provider in self.providers.items():
            if not provider.configured:
                out.append(ProviderStatus(name, "unconfigured", missing=provider.key_env))
                continue
            places = []
            for d in self.balancer.deployments(name) if self.balancer else ():
                at = None if d.inventory_at is None else round(wall - (now - d.inventory_at), 3)
                places.append(
                    DeploymentStatus(
                        self.health.status(d.name, now, wall),
                        d.base_url,
                        d.in_flight,
                        None if d.installed is None else tuple(sorted(d.installed)),
                        tuple(sorted(d.loaded)) if d.installed is not None else None,
                        at,
                    )
                )
            out.append(self.health.combined(name, places))
        return out

    def cache_status(self) -> dict[str, object]:
        if self.cache is None:
            return {"backend": None, "state": "off"}
        return self.cache.statistics()


def _embeddings_valid(payload: dict[str, object]) -> bool:
    return isinstance(payload.get("data"), list)
