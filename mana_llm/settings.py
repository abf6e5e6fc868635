"""Frozen settings read once from the environment; every knob carries its unit."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping

import attrs

from mana_llm import settings_groups as groups
from mana_llm.env_reader import EnvReader, SettingsError
from mana_llm.provider_settings import (
    ProviderSettings,
    apply_providers_file,
    env_providers,
)
from mana_llm.settings_groups import MIB

__all__ = ["ProviderSettings", "Settings", "SettingsError", "StartupError"]


class StartupError(Exception):
    """Configuration found at start-up that the service cannot run with (exit code 2)."""


@attrs.frozen
class Settings:
    host: str = "0.0.0.0"
    port: int = 3025
    workers: int = 1  # processes serving the port (a supervisor starts them when more than 1)
    worker: int | None = None  # this process's number under a supervisor (it binds SO_REUSEPORT)
    instance_workers: int = 1  # MANA_LLM_WORKERS: a worker's instance runs this many
    metrics_dir: str | None = None  # PROMETHEUS_MULTIPROC_DIR: metrics summed over the workers
    aliases_watch_interval_s: float = 0.0  # 0: off; else reload aliases.yaml when it changes
    log_level: str = "INFO"
    log_format: str = "text"  # text | json
    providers: tuple[ProviderSettings, ...] = ()
    ollama_default_model: str = "gemma3:4b"
    cors_origins: tuple[str, ...] = ()
    api_keys: tuple[str, ...] = attrs.field(default=(), repr=False)
    max_request_bytes: int = 20 * MIB
    body_timeout_s: float = 30.0  # a request body that takes longer to arrive is a 408
    max_embedding_inputs: int = 2048  # OpenAI's own limit per embeddings request
    max_upstream_response_bytes: int = 64 * MIB  # an answer read whole; larger is a 502
    connect_timeout_s: float = 5.0
    first_token_timeout_s: float = 60.0
    stream_idle_timeout_s: float = 60.0
    request_timeout_s: float = 600.0
    models_timeout_s: float = 5.0
    graceful_timeout_s: float = 30.0
    drain_delay_s: float = 0.0  # after SIGTERM: keep accepting with /readyz at 503, then drain
    max_connections: int = 256
    aliases_path: str = "aliases.yaml"
    providers_path: str | None = None  # PROVIDERS_PATH, read again on SIGHUP (deployments)
    aliases_required: bool = False  # ALIASES_PATH was set: a missing file is an error
    probe_interval_s: float = 30.0
    probe_interval_open_s: float = 2.0  # while a provider's circuit is open
    probe_timeout_s: float = 3.0
    retries: int = 1  # same-target retries per chain entry (an alias may set its own)
    retry_base_delay_s: float = 0.2  # full-jitter exponential backoff from this
    retry_max_wait_s: float = 5.0  # a longer Retry-After moves on instead of waiting
    retry_budget: float = 0.2  # retries add at most this fraction on top of first attempts
    hedge_budget: float = 0.1  # hedges likewise
    balance: str = "least_busy"  # or round_robin: the choice among a provider's deployments
    breaker_failures: int = 2
    breaker_backoff_s: float = 5.0  # open this long, then one trial (docs/ARCHITECTURE.md, 6)
    breaker_max_backoff_s: float = 5.0  # a failed trial doubles the backoff up to this
    stream_keepalive_s: float = 0.0  # 0: off; else SSE comments while waiting for a first token
    image_fetch_max_bytes: int = 10 * MIB
    image_fetch_timeout_s: float = 10.0
    image_fetch_max_count: int = 16  # image URLs one request may name
    image_fetch_concurrency: int = 8  # fetches at once, over all requests (their own pool)
    image_fetch_allow_networks: tuple[str, ...] = ()  # CIDRs let through the private-address guard
    cache_enabled: bool = True
    redis_url: str | None = attrs.field(default=None, repr=False)  # None: the in-memory cache
    cache_ttl_s: float = 3600.0
    cache_max_entries: int = 10_000  # in-memory backend
    cache_max_bytes: int = 64 * MIB  # in-memory backend, all entries together
    cache_max_entry_bytes: int = 8 * MIB  # larger answers are served, not stored
    cache_timeout_s: float = 0.05  # every cache command (Redis round trip) under this deadline
    cache_breaker_failures: int = 3  # consecutive command failures that switch the cache off...
    cache_breaker_cooldown_s: float = 30.0  # ...for this long, then one trial command
    keys_path: str | None = None  # KEYS_PATH: callers, their keys and limits (None: off)
    usage_db: str | None = "./mana-llm-usage.sqlite"  # the usage ledger (None: USAGE_DB=off)
    limits_db: str = "./mana-llm-limits.sqlite"  # the limits' counters, shared by the workers
    limits_redis_url: str | None = attrs.field(default=None, repr=False)  # counters in Redis
    limits_on_store_failure: str = "local"  # Redis unreachable: local counters, or deny (503)
    limits_timeout_s: float = 0.5  # every call to the limits' Redis under this deadline
    traces_exporter: str = "none"  # none | otlp | console (OTEL_TRACES_EXPORTER)
    traces_endpoint: str = "http://localhost:4318/v1/traces"  # OTLP over HTTP/protobuf
    service_name: str = "mana-llm"  # OTEL_SERVICE_NAME
    resource_attributes: tuple[tuple[str, str], ...] = ()  # OTEL_RESOURCE_ATTRIBUTES
    traces_sampler: str = "parentbased_always_on"  # OTEL_TRACES_SAMPLER
    traces_sampler_arg: float = 1.0  # OTEL_TRACES_SAMPLER_ARG: the ratio of the ratio samplers
    capture_message_content: bool = False  # prompts and answers on attempt spans (opt-in)
    env: Mapping[str, str] = attrs.field(factory=dict, repr=False, eq=False)  # for key_env

    def warnings(self) -> list[str]:
        """Settings that are valid but almost certainly not what was meant: said at start-up."""
        found: list[str] = []
        ollama = self.provider("ollama")
        for place in ollama.places() if ollama is not None else ():
            for suffix in ("/v1", "/api"):
                if place.base_url.endswith(suffix):
                    root = place.base_url.removesuffix(suffix)
                    found.append(
                        f"OLLAMA_URL={place.base_url} ends in {suffix}: the gateway speaks "
                        f"Ollama's native API under it itself; set OLLAMA_URL={root}"
                    )
        if not _is_loopback(self.host) and not self.api_keys:
            found.append(
                f"listening on {self.host} without MANA_LLM_API_KEYS: anyone who can reach "
                "this port can spend the configured cloud keys"
            )
        return found

    def provider(self, name: str) -> ProviderSettings | None:
        for p in self.providers:
            if p.name == name:
                return p
        return None

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], read_text: Callable[[str], str] | None = None
    ) -> Settings:
        """Build settings from an environment mapping (and the providers file it names);
        raise SettingsError on the first bad value."""
        read = EnvReader(env)
        providers = env_providers(read, env)
        providers_path = env.get("PROVIDERS_PATH", "").strip()
        if providers_path:
            providers = apply_providers_file(providers, providers_path, env, read_text)
        networks = read.csv("IMAGE_FETCH_ALLOW_NETWORKS")
        for network in networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise SettingsError(
                    f"IMAGE_FETCH_ALLOW_NETWORKS: {network!r} is not a CIDR"
                ) from None
        return cls(
            env=dict(env),
            providers=tuple(providers),
            providers_path=providers_path or None,
            image_fetch_allow_networks=networks,
            **groups.server(read, env),
            **groups.limits_and_timeouts(read),
            **groups.health_and_images(read),
            **groups.cache(read),
            **groups.resilience(read),
            **groups.callers(read, env),
            **groups.traces(read, env),
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
