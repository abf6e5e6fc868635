"""Frozen settings read once from the environment; every knob carries its unit."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs
import yaml

from mana_llm import settings_groups as groups
from mana_llm.env_reader import EnvReader, SettingsError
from mana_llm.settings_groups import MIB

__all__ = ["ProviderSettings", "Settings", "SettingsError", "StartupError"]

ProviderKind = Literal["ollama", "openai"]


class StartupError(Exception):
    """Configuration found at start-up that the service cannot run with (exit code 2)."""


@attrs.frozen
class ProviderSettings:
    """One upstream: its wire protocol, where it lives and how long it may take."""

    name: str
    kind: ProviderKind
    base_url: str
    api_key: str | None = attrs.field(default=None, repr=False)
    key_env: str | None = None  # the variable that holds the key; None: keyless (local servers)
    url_env: str | None = None  # where base_url was set (a variable, or the providers file)
    timeout_s: float = 120.0
    headers: Mapping[str, str] = attrs.field(factory=dict)  # e.g. OpenRouter's X-Title
    models: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)  # Ollama per-model

    @property
    def configured(self) -> bool:
        return self.kind == "ollama" or self.key_env is None or bool(self.api_key)


# The built-in OpenAI-compatible clouds: name -> (official base URL, key variable, URL variable).
CLOUDS: tuple[tuple[str, str, str, str], ...] = (
    ("openrouter", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY", "OPENROUTER_BASE_URL"),
    ("groq", "https://api.groq.com/openai/v1", "GROQ_API_KEY", "GROQ_BASE_URL"),
    ("together", "https://api.together.xyz/v1", "TOGETHER_API_KEY", "TOGETHER_BASE_URL"),
)


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
    aliases_required: bool = False  # ALIASES_PATH was set: a missing file is an error
    probe_interval_s: float = 30.0
    probe_interval_open_s: float = 2.0  # while a provider's circuit is open
    probe_timeout_s: float = 3.0
    retries: int = 1  # same-target retries per chain entry (an alias may set its own)
    retry_base_delay_s: float = 0.2  # full-jitter exponential backoff from this
    retry_max_wait_s: float = 5.0  # a longer Retry-After moves on instead of waiting
    retry_budget: float = 0.2  # retries add at most this fraction on top of first attempts
    hedge_budget: float = 0.1  # hedges likewise
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

    def warnings(self) -> list[str]:
        """Settings that are valid but almost certainly not what was meant: said at start-up."""
        found: list[str] = []
        ollama = self.provider("ollama")
        if ollama is not None:
            for suffix in ("/v1", "/api"):
                if ollama.base_url.endswith(suffix):
                    root = ollama.base_url.removesuffix(suffix)
                    found.append(
                        f"OLLAMA_URL={ollama.base_url} ends in {suffix}: the gateway speaks "
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
        providers = _providers(read, env)
        providers_path = env.get("PROVIDERS_PATH", "").strip()
        if providers_path:
            providers = _apply_providers_file(providers, providers_path, env, read_text or _read)
        networks = read.csv("IMAGE_FETCH_ALLOW_NETWORKS")
        for network in networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise SettingsError(
                    f"IMAGE_FETCH_ALLOW_NETWORKS: {network!r} is not a CIDR"
                ) from None
        return cls(
            providers=tuple(providers),
            image_fetch_allow_networks=networks,
            **groups.server(read, env),
            **groups.limits_and_timeouts(read),
            **groups.health_and_images(read),
            **groups.cache(read),
            **groups.resilience(read),
        )


def _providers(read: EnvReader, env: Mapping[str, str]) -> list[ProviderSettings]:
    """Ollama and the built-in clouds, from their variables."""
    providers = [
        ProviderSettings(
            name="ollama",
            kind="ollama",
            base_url=read.url("OLLAMA_URL", "http://localhost:11434"),
            url_env="OLLAMA_URL",
            timeout_s=read.seconds("OLLAMA_TIMEOUT", 120.0),
        )
    ]
    cloud_timeout_s = read.seconds("CLOUD_TIMEOUT", 120.0)
    for name, url, key_env, url_env in CLOUDS:
        providers.append(
            ProviderSettings(
                name=name,
                kind="openai",
                base_url=read.url(url_env, url),
                api_key=env.get(key_env, "").strip() or None,
                key_env=key_env,
                url_env=url_env,
                timeout_s=cloud_timeout_s,
            )
        )
    return providers


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_PROVIDER_KEYS = frozenset({"base_url", "api_key_env", "timeout_s", "headers"})


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _apply_providers_file(
    providers: list[ProviderSettings],
    path: str,
    env: Mapping[str, str],
    read_text: Callable[[str], str],
) -> list[ProviderSettings]:
    """PROVIDERS_PATH: extra OpenAI-compatible providers, extra headers and timeouts for the
    built-ins, and per-model Ollama defaults (num_ctx, keep_alive). See README.md."""

    def bad(message: str) -> SettingsError:
        return SettingsError(f"PROVIDERS_PATH={path!r}: {message}")

    try:
        data = yaml.safe_load(read_text(path)) or {}
    except (OSError, UnicodeDecodeError) as exc:
        raise bad(f"cannot read it ({exc})") from None
    except yaml.YAMLError as exc:
        raise bad(f"not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or set(data) - {"providers", "ollama"}:
        raise bad("the top level takes 'providers' and 'ollama' only")
    by_name = {p.name: p for p in providers}
    for name, spec in (data.get("providers") or {}).items():
        by_name[name] = _file_provider(name, spec, by_name.get(name), env, bad)
    models = (data.get("ollama") or {}).get("models") or {}
    if not isinstance(models, dict) or not all(isinstance(m, dict) for m in models.values()):
        raise bad("ollama.models must map model names to their options")
    by_name["ollama"] = attrs.evolve(
        by_name["ollama"], models={str(k): v for k, v in models.items()}
    )
    return list(by_name.values())


def _file_provider(
    name: str,
    spec: Any,
    old: ProviderSettings | None,
    env: Mapping[str, str],
    bad: Callable[[str], SettingsError],
) -> ProviderSettings:
    """One entry of the providers file: a new OpenAI-compatible provider, or extra headers and
    a timeout for a built-in one (`old`)."""
    if not isinstance(spec, dict) or set(spec) - _PROVIDER_KEYS:
        raise bad(f"provider {name!r} takes {', '.join(sorted(_PROVIDER_KEYS))}")
    headers = spec.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise bad(f"the headers of {name!r} must map names to strings")
    timeout = spec.get("timeout_s")
    if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
        raise bad(f"the timeout_s of {name!r} must be a positive number")
    if old is not None:  # a built-in: its URL and key stay in the environment
        if "base_url" in spec or "api_key_env" in spec:
            raise bad(f"{name!r} is built in: set its URL and key in the environment")
        return attrs.evolve(
            old, headers={**old.headers, **headers}, timeout_s=timeout or old.timeout_s
        )
    url = spec.get("base_url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise bad(f"provider {name!r} needs a base_url (http:// or https://)")
    if "/" in name or name == "mana":
        raise bad(f"provider name {name!r} cannot contain '/' or be 'mana'")
    key_env = spec.get("api_key_env")
    return ProviderSettings(
        name=name,
        kind="openai",
        base_url=url.rstrip("/"),
        api_key=(env.get(key_env, "").strip() or None) if isinstance(key_env, str) else None,
        key_env=key_env if isinstance(key_env, str) else None,
        url_env=f"providers.{name}.base_url in PROVIDERS_PATH",
        timeout_s=float(timeout or 120.0),
        headers=headers,
    )
