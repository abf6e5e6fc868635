"""Part of the composition root (with service.py): the providers as deployments, each with its
own client on its own connections, and the image fetcher Ollama's clients share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from mana_llm.providers.images import ImageFetcher
from mana_llm.providers.ollama import OllamaProvider
from mana_llm.providers.openai_compat import OpenAICompatProvider
from mana_llm.providers.pool import Pool
from mana_llm.providers.protocol import Provider
from mana_llm.providers.upstream import Upstream, shown_url
from mana_llm.routing.balance import Deployment, Deployments
from mana_llm.settings import Settings


def build_providers(
    settings: Settings, pools: dict[str, Pool], images: ImageFetcher
) -> dict[str, Deployments]:
    """Each provider's deployments, each with its own client on its own connections (`pools`,
    by deployment name): providers/ know one upstream each and nothing of balancing."""
    groups: dict[str, Deployments] = {}
    for ps in settings.providers:
        deployments = []
        for place in ps.places():
            upstream = Upstream(
                ps.at(place),
                pools[place.name],
                settings.connect_timeout_s,
                settings.max_upstream_response_bytes,
            )
            client: Provider = (
                OllamaProvider(upstream, images)
                if ps.kind == "ollama"
                else OpenAICompatProvider(upstream)
            )
            shown = shown_url(place.base_url)
            deployments.append(
                Deployment(place.name, client, place.weight, place.max_in_flight, shown)
            )
        groups[ps.name] = Deployments(ps.name, deployments, ps.cold_load_s, ps.kind == "ollama")
    return groups


def http_transport(connections: int) -> httpx.AsyncHTTPTransport:
    """The image fetches' own connection pool."""
    limits = httpx.Limits(
        max_connections=connections,
        max_keepalive_connections=connections,  # else httpcore evicts and reopens
    )
    return httpx.AsyncHTTPTransport(limits=limits, retries=0)


@asynccontextmanager
async def provider_pools(settings: Settings) -> AsyncIterator[dict[str, Pool]]:
    """Each deployment its own connections (`MAX_UPSTREAM_CONNECTIONS` each): one's load never
    makes another's requests wait or scan its pool."""
    tls = httpx.create_ssl_context()
    pools = {
        place.name: Pool(settings.max_connections, tls)
        for ps in settings.providers
        for place in ps.places()
    }
    try:
        yield pools
    finally:
        for pool in pools.values():
            await pool.aclose()


def image_fetcher(settings: Settings, transport: httpx.AsyncHTTPTransport) -> ImageFetcher:
    return ImageFetcher(
        transport,
        settings.image_fetch_max_bytes,
        settings.image_fetch_timeout_s,
        settings.image_fetch_allow_networks,
        settings.image_fetch_max_count,
        settings.image_fetch_concurrency,
    )
