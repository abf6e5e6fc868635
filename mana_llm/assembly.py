"""Part of the composition root (with service.py): the providers as deployments, each with its
own client on its own connections, and the image fetcher Ollama's clients share."""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import httpx

from mana_llm.cache.memory import MemoryBackend
from mana_llm.cache.protocol import CacheBackend
from mana_llm.cache.store import ResponseCache
from mana_llm.metrics import Metrics
from mana_llm.provider_settings import DeploymentSettings, ProviderSettings
from mana_llm.providers.images import ImageFetcher
from mana_llm.providers.ollama import OllamaProvider
from mana_llm.providers.openai_compat import OpenAICompatProvider
from mana_llm.providers.pool import Pool
from mana_llm.providers.protocol import Provider
from mana_llm.providers.upstream import Transport, Upstream, shown_url
from mana_llm.routing.balance import Deployment, Deployments
from mana_llm.settings import Settings
from mana_llm.telemetry.http import Propagating, Spanned
from mana_llm.telemetry.setup import Tracing

log = logging.getLogger("mana_llm.service")


def client(
    settings: Settings,
    provider: ProviderSettings,
    place: DeploymentSettings,
    pool: Transport,
    images: ImageFetcher,
) -> Deployment:
    """One deployment with its own client on its own connections (`pool`, traced or not):
    providers/ know one upstream each and nothing of balancing or traces."""
    upstream = Upstream(
        provider.at(place), pool, settings.connect_timeout_s, settings.max_upstream_response_bytes
    )
    protocol: Provider = (
        OllamaProvider(upstream, images)
        if provider.kind == "ollama"
        else OpenAICompatProvider(upstream)
    )
    shown = shown_url(place.base_url)
    return Deployment(place.name, protocol, place.weight, place.max_in_flight, shown)


def build_providers(
    settings: Settings, pools: dict[str, Pool], images: ImageFetcher
) -> dict[str, Deployments]:
    """Each provider's deployments, on the connections `pools` holds by deployment name."""
    return {
        ps.name: Deployments(
            ps.name,
            [client(settings, ps, place, pools[place.name], images) for place in ps.places()],
            ps.cold_load_s,
            ps.kind == "ollama",
        )
        for ps in settings.providers
    }


@attrs.define(eq=False)
class Fleet:
    """The providers' deployments with their clients and connections, kept across reloads.
    `reconcile` keeps a deployment whose name, URL and key are unchanged (the same object: its
    calls in flight and what it holds; its breaker is keyed by its name), takes a new weight or
    max_in_flight in place, builds one that is new or whose URL or key changed, and retires one
    that is gone (its calls finish; its connections close at exit). A new provider takes a
    restart (aliases and routes are checked against the providers at start-up)."""

    settings: Settings
    images: ImageFetcher
    traced: bool = False  # requests carry the attempt span's traceparent
    tls: ssl.SSLContext = attrs.field(factory=httpx.create_ssl_context)
    groups: dict[str, Deployments] = attrs.field(factory=dict)
    _pools: dict[str, Pool] = attrs.field(factory=dict)
    _built_from: dict[str, DeploymentSettings] = attrs.field(factory=dict)
    _retired: list[Pool] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        for ps in self.settings.providers:
            places = [self._build(ps, place) for place in ps.places()]
            self.groups[ps.name] = Deployments(ps.name, places, ps.cold_load_s, ps.kind == "ollama")

    def _build(self, provider: ProviderSettings, place: DeploymentSettings) -> Deployment:
        pool = self._pools[place.name] = Pool(self.settings.max_connections, self.tls)
        self._built_from[place.name] = place
        carrier = Propagating(pool) if self.traced else pool
        return client(self.settings, provider, place, carrier, self.images)

    def _retire(self, name: str) -> None:
        pool = self._pools.pop(name, None)
        if pool is not None:
            self._retired.append(pool)
        self._built_from.pop(name, None)

    def reconcile(self, new: Settings) -> list[str]:
        """Take the deployments `new` lists; says what changed, one line each."""
        changes: list[str] = []
        for ps in new.providers:
            group = self.groups.get(ps.name)
            if group is None:
                changes.append(f"provider {ps.name!r} is new: it takes a restart")
                continue
            kept: list[Deployment] = []
            for place in ps.places():
                old, was = group.named(place.name), self._built_from.get(place.name)
                if (
                    old is not None
                    and was is not None
                    and (was.base_url, was.api_key)
                    == (
                        place.base_url,
                        place.api_key,
                    )
                ):
                    old.weight, old.max_in_flight = place.weight, place.max_in_flight
                    self._built_from[place.name] = place
                    kept.append(old)
                    continue
                if old is not None:
                    self._retire(place.name)
                kept.append(self._build(ps, place))
                changes.append(f"{place.name} {'changed' if old else 'added'}")
            names = {d.name for d in kept}
            for gone in [d.name for d in group.deployments if d.name not in names]:
                self._retire(gone)
                changes.append(f"{gone} removed")
            group.deployments[:] = kept  # in place: the balancer holds this list
            group.cold_load_s = ps.cold_load_s
        return changes

    def probed(self) -> dict[str, Provider]:
        """Every deployment of a configured provider, by its health key."""
        return {
            d.name: d.provider
            for group in self.groups.values()
            for d in group.deployments
            if d.provider.configured
        }

    async def aclose(self) -> None:
        for pool in [*self._pools.values(), *self._retired]:
            await pool.aclose()


def http_transport(connections: int) -> httpx.AsyncHTTPTransport:
    """The image fetches' own connection pool."""
    limits = httpx.Limits(
        max_connections=connections,
        max_keepalive_connections=connections,  # else httpcore evicts and reopens
    )
    return httpx.AsyncHTTPTransport(limits=limits, retries=0)


def image_fetcher(
    settings: Settings, transport: httpx.AsyncHTTPTransport, tracing: Tracing | None = None
) -> ImageFetcher:
    """Ollama's image fetches (each its own span when traces are on)."""
    return ImageFetcher(
        transport if tracing is None else Spanned(transport, tracing.tracer),
        settings.image_fetch_max_bytes,
        settings.image_fetch_timeout_s,
        settings.image_fetch_allow_networks,
        settings.image_fetch_max_count,
        settings.image_fetch_concurrency,
    )


@asynccontextmanager
async def open_fleet(
    settings: Settings, images: ImageFetcher, traced: bool = False
) -> AsyncIterator[Fleet]:
    """The fleet for the service's life; every connection it opened closed at the end."""
    fleet = Fleet(settings, images, traced)
    try:
        yield fleet
    finally:
        await fleet.aclose()


REDIS_MAX_CONNECTIONS = 64


@asynccontextmanager
async def open_cache(settings: Settings, metrics: Metrics) -> AsyncIterator[ResponseCache | None]:
    """The response cache for the service's life: Redis when REDIS_URL is set (its connection
    pool entered here, in the root task), else the in-memory LRU; None when CACHE_ENABLED=0."""
    if not settings.cache_enabled:
        log.info("response cache: off")
        yield None
        return

    def guarded(backend: CacheBackend) -> ResponseCache:
        metrics.cache_errors.labels(backend.name)
        return ResponseCache(
            backend,
            ttl_s=settings.cache_ttl_s,
            timeout_s=settings.cache_timeout_s,
            max_entry_bytes=settings.cache_max_entry_bytes,
            failure_threshold=settings.cache_breaker_failures,
            cooldown_s=settings.cache_breaker_cooldown_s,
            on_error=lambda name: metrics.cache_errors.labels(name).inc(),
        )

    if settings.redis_url is None:
        log.info("response cache: in memory")
        yield guarded(MemoryBackend(settings.cache_max_entries, settings.cache_max_bytes))
        return
    from mana_llm.cache.redis import RedisBackend  # coredis is loaded only when it is used

    backend = RedisBackend(
        settings.redis_url,
        connect_timeout_s=settings.cache_timeout_s,
        max_connections=REDIS_MAX_CONNECTIONS,
    )
    async with backend.open():
        log.info("response cache: redis")
        yield guarded(backend)
