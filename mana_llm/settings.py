"""Frozen settings read once from the environment; every knob carries its unit."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import attrs

ProviderKind = Literal["ollama", "openai"]

MIB = 1024 * 1024


class SettingsError(ValueError):
    """A malformed setting; the message names the variable and what is wrong."""


@attrs.frozen
class ProviderSettings:
    """One upstream: its wire protocol, where it lives and how long it may take."""

    name: str
    kind: ProviderKind
    base_url: str
    api_key: str | None = attrs.field(default=None, repr=False)
    key_env: str | None = None  # the variable that holds the key, for "not configured" errors
    timeout_s: float = 120.0

    @property
    def configured(self) -> bool:
        return self.kind == "ollama" or bool(self.api_key)


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
    log_level: str = "INFO"
    log_format: str = "text"  # text | json
    providers: tuple[ProviderSettings, ...] = ()
    ollama_default_model: str = "gemma3:4b"
    cors_origins: tuple[str, ...] = ()
    api_keys: tuple[str, ...] = attrs.field(default=(), repr=False)
    max_request_bytes: int = 20 * MIB
    connect_timeout_s: float = 5.0
    first_token_timeout_s: float = 60.0
    stream_idle_timeout_s: float = 60.0
    request_timeout_s: float = 600.0
    models_timeout_s: float = 5.0
    graceful_timeout_s: float = 30.0
    max_connections: int = 256
    aliases_path: str = "aliases.yaml"
    aliases_required: bool = False  # ALIASES_PATH was set: a missing file is an error
    probe_interval_s: float = 30.0
    probe_timeout_s: float = 3.0
    breaker_failures: int = 2
    breaker_backoff_s: float = 60.0
    breaker_max_backoff_s: float = 600.0
    stream_keepalive_s: float = 0.0  # 0: off; else SSE comments while waiting for a first token

    def provider(self, name: str) -> ProviderSettings | None:
        for p in self.providers:
            if p.name == name:
                return p
        return None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Build settings from an environment mapping; raise SettingsError on the first bad one."""
        read = _Reader(env)
        providers = [
            ProviderSettings(
                name="ollama",
                kind="ollama",
                base_url=read.url("OLLAMA_URL", "http://localhost:11434"),
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
                    timeout_s=cloud_timeout_s,
                )
            )
        return cls(
            host=env.get("HOST", "0.0.0.0").strip() or "0.0.0.0",
            port=read.integer("PORT", 3025, low=0, high=65535),
            log_level=read.choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
            log_format=read.choice("LOG_FORMAT", "TEXT", ("TEXT", "JSON")).lower(),
            providers=tuple(providers),
            ollama_default_model=env.get("OLLAMA_DEFAULT_MODEL", "").strip() or "gemma3:4b",
            cors_origins=read.csv("CORS_ORIGINS"),
            api_keys=read.csv("MANA_LLM_API_KEYS"),
            max_request_bytes=read.integer("MAX_REQUEST_BYTES", 20 * MIB, low=1024),
            connect_timeout_s=read.seconds("CONNECT_TIMEOUT", 5.0),
            first_token_timeout_s=read.seconds("FIRST_TOKEN_TIMEOUT", 60.0),
            stream_idle_timeout_s=read.seconds("STREAM_IDLE_TIMEOUT", 60.0),
            request_timeout_s=read.seconds("REQUEST_TIMEOUT", 600.0),
            models_timeout_s=read.seconds("MODELS_TIMEOUT", 5.0),
            graceful_timeout_s=read.seconds("GRACEFUL_TIMEOUT", 30.0),
            max_connections=read.integer("MAX_UPSTREAM_CONNECTIONS", 256, low=1),
            aliases_path=env.get("ALIASES_PATH", "").strip() or "aliases.yaml",
            aliases_required=bool(env.get("ALIASES_PATH", "").strip()),
            probe_interval_s=read.seconds("PROBE_INTERVAL", 30.0),
            probe_timeout_s=read.seconds("PROBE_TIMEOUT", 3.0),
            breaker_failures=read.integer("BREAKER_FAILURES", 2, low=1),
            breaker_backoff_s=read.seconds("BREAKER_BACKOFF", 60.0),
            breaker_max_backoff_s=read.seconds("BREAKER_MAX_BACKOFF", 600.0),
            stream_keepalive_s=read.seconds_or_off("STREAM_KEEPALIVE"),
        )


@attrs.frozen
class _Reader:
    env: Mapping[str, str]

    def _raw(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None

    def integer(self, name: str, default: int, *, low: int, high: int | None = None) -> int:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"between {low} and {high}"
            raise SettingsError(f"{name}={raw!r} must be {bounds}")
        return value

    def seconds(self, name: str, default: float) -> float:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not a number of seconds") from None
        if not value > 0 or value == float("inf"):
            raise SettingsError(f"{name}={raw!r} must be a positive number of seconds")
        return value

    def seconds_or_off(self, name: str) -> float:
        """0 (or unset) means off."""
        if self._raw(name) in (None, "0"):
            return 0.0
        return self.seconds(name, 0.0)

    def url(self, name: str, default: str) -> str:
        raw = self._raw(name) or default
        if not raw.startswith(("http://", "https://")) or len(raw.split("://", 1)[1]) == 0:
            raise SettingsError(f"{name}={raw!r} must be an http:// or https:// URL")
        return raw.rstrip("/")

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        raw = (self._raw(name) or default).upper()
        if raw not in allowed:
            raise SettingsError(f"{name}={raw!r} must be one of {', '.join(allowed)}")
        return raw

    def csv(self, name: str) -> tuple[str, ...]:
        raw = self._raw(name) or ""
        return tuple(part.strip() for part in raw.split(",") if part.strip())
