"""The settings read from the environment, in groups: each returns the Settings fields it
reads, by name. Every variable the gateway reads is named here or in settings.py."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

from mana_llm.env_reader import EnvReader, SettingsError

MIB = 1024 * 1024


def server(read: EnvReader, env: Mapping[str, str]) -> dict[str, Any]:
    """Where to listen, logging, callers (keys, CORS), the alias file, the processes."""
    worker = env.get("MANA_LLM_WORKER", "").strip()
    of = env.get("MANA_LLM_WORKERS", "").strip()
    return {
        "workers": read.workers("WORKERS"),
        "worker": int(worker) if worker.isdigit() else None,
        "instance_workers": int(of) if of.isdigit() else 1,
        "metrics_dir": env.get("PROMETHEUS_MULTIPROC_DIR", "").strip() or None,
        "aliases_watch_interval_s": read.seconds_or_off("ALIASES_WATCH_INTERVAL"),
        "host": env.get("HOST", "0.0.0.0").strip() or "0.0.0.0",
        "port": read.integer("PORT", 3025, low=0, high=65535),
        "log_level": read.choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
        "log_format": read.choice("LOG_FORMAT", "TEXT", ("TEXT", "JSON")).lower(),
        "ollama_default_model": env.get("OLLAMA_DEFAULT_MODEL", "").strip() or "gemma3:4b",
        "cors_origins": read.csv("CORS_ORIGINS"),
        "api_keys": read.csv("MANA_LLM_API_KEYS"),
        "aliases_path": env.get("ALIASES_PATH", "").strip() or "aliases.yaml",
        "aliases_required": bool(env.get("ALIASES_PATH", "").strip()),
    }


def limits_and_timeouts(read: EnvReader) -> dict[str, Any]:
    """Request limits, deadlines and the drain."""
    return {
        "max_request_bytes": read.integer("MAX_REQUEST_BYTES", 20 * MIB, low=1024),
        "body_timeout_s": read.seconds("REQUEST_BODY_TIMEOUT", 30.0),
        "max_embedding_inputs": read.integer("MAX_EMBEDDING_INPUTS", 2048, low=1),
        "max_upstream_response_bytes": read.integer(
            "MAX_UPSTREAM_RESPONSE_BYTES", 64 * MIB, low=1024
        ),
        "connect_timeout_s": read.seconds("CONNECT_TIMEOUT", 5.0),
        "first_token_timeout_s": read.seconds("FIRST_TOKEN_TIMEOUT", 60.0),
        "stream_idle_timeout_s": read.seconds("STREAM_IDLE_TIMEOUT", 60.0),
        "request_timeout_s": read.seconds("REQUEST_TIMEOUT", 600.0),
        "models_timeout_s": read.seconds("MODELS_TIMEOUT", 5.0),
        "graceful_timeout_s": read.seconds("GRACEFUL_TIMEOUT", 30.0),
        "drain_delay_s": read.seconds_or_off("DRAIN_DELAY"),
        "max_connections": read.integer("MAX_UPSTREAM_CONNECTIONS", 256, low=1),
        "stream_keepalive_s": read.seconds_or_off("STREAM_KEEPALIVE"),
    }


def health_and_images(read: EnvReader) -> dict[str, Any]:
    """Probes, the circuit breaker, image fetching."""
    return {
        "probe_interval_s": read.seconds("PROBE_INTERVAL", 30.0),
        "probe_interval_open_s": read.seconds("PROBE_INTERVAL_OPEN", 2.0),
        "probe_timeout_s": read.seconds("PROBE_TIMEOUT", 3.0),
        "breaker_failures": read.integer("BREAKER_FAILURES", 2, low=1),
        "breaker_backoff_s": read.seconds("BREAKER_BACKOFF", 5.0),
        "breaker_max_backoff_s": read.seconds("BREAKER_MAX_BACKOFF", 5.0),
        "image_fetch_max_bytes": read.integer("IMAGE_FETCH_MAX_BYTES", 10 * MIB, low=1024),
        "image_fetch_timeout_s": read.seconds("IMAGE_FETCH_TIMEOUT", 10.0),
        "image_fetch_max_count": read.integer("IMAGE_FETCH_MAX_COUNT", 16, low=1),
        "image_fetch_concurrency": read.integer("IMAGE_FETCH_CONCURRENCY", 8, low=1),
    }


def resilience(read: EnvReader) -> dict[str, Any]:
    """Same-target retries and hedges, and their budgets."""
    return {
        "retries": read.integer("RETRIES", 1, low=0, high=10),
        "retry_base_delay_s": read.seconds("RETRY_BASE_DELAY", 0.2),
        "retry_max_wait_s": read.seconds("RETRY_MAX_WAIT", 5.0),
        "retry_budget": read.ratio("RETRY_BUDGET", 0.2),
        "balance": read.choice("BALANCE", "LEAST_BUSY", ("LEAST_BUSY", "ROUND_ROBIN")).lower(),
        "hedge_budget": read.ratio("HEDGE_BUDGET", 0.1),
    }


def cache(read: EnvReader) -> dict[str, Any]:
    """The response cache."""
    return {
        "cache_enabled": read.flag("CACHE_ENABLED", True),
        "redis_url": read.redis_url("REDIS_URL"),
        "cache_ttl_s": read.seconds("CACHE_TTL", 3600.0),
        "cache_max_entries": read.integer("CACHE_MAX_ENTRIES", 10_000, low=1),
        "cache_max_bytes": read.integer("CACHE_MAX_BYTES", 64 * MIB, low=1024),
        "cache_max_entry_bytes": read.integer("CACHE_MAX_ENTRY_BYTES", 8 * MIB, low=1024),
        "cache_timeout_s": read.seconds("CACHE_TIMEOUT", 0.05),
        "cache_breaker_failures": read.integer("CACHE_BREAKER_FAILURES", 3, low=1),
        "cache_breaker_cooldown_s": read.seconds("CACHE_BREAKER_COOLDOWN", 30.0),
    }


def callers(read: EnvReader, env: Mapping[str, str]) -> dict[str, Any]:
    """The keys file, the limits' shared counters, the usage ledger."""
    usage_db = env.get("USAGE_DB", "").strip() or "./mana-llm-usage.sqlite"
    limits_redis = env.get("LIMITS_REDIS_URL", "").strip()
    return {
        "keys_path": env.get("KEYS_PATH", "").strip() or None,
        "usage_db": None if usage_db.lower() == "off" else usage_db,
        "limits_db": env.get("LIMITS_DB", "").strip() or "./mana-llm-limits.sqlite",
        "limits_redis_url": None
        if limits_redis.lower() == "off"
        else (read.redis_url("LIMITS_REDIS_URL") or read.redis_url("REDIS_URL")),
        "limits_on_store_failure": read.choice(
            "LIMITS_ON_STORE_FAILURE", "LOCAL", ("LOCAL", "DENY")
        ).lower(),
        "limits_timeout_s": read.seconds("LIMITS_TIMEOUT", 0.5),
    }


SAMPLERS = (
    "ALWAYS_ON",
    "ALWAYS_OFF",
    "TRACEIDRATIO",
    "PARENTBASED_ALWAYS_ON",
    "PARENTBASED_ALWAYS_OFF",
    "PARENTBASED_TRACEIDRATIO",
)


def traces(read: EnvReader, env: Mapping[str, str]) -> dict[str, Any]:
    """OpenTelemetry traces, from the standard OTEL_* variables (the OTel SDK configuration
    spec's names and defaults); off unless an exporter or an OTLP endpoint is named."""
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if endpoint:
        endpoint = read.check_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint)
    elif env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():  # the spec: base + /v1/traces
        endpoint = read.url("OTEL_EXPORTER_OTLP_ENDPOINT", "") + "/v1/traces"
    exporter = read.choice("OTEL_TRACES_EXPORTER", "OTLP" if endpoint else "NONE",
                           ("NONE", "OTLP", "CONSOLE")).lower()  # fmt: skip
    return {
        "traces_exporter": exporter,
        "traces_endpoint": endpoint or "http://localhost:4318/v1/traces",
        "service_name": env.get("OTEL_SERVICE_NAME", "").strip() or "mana-llm",
        "resource_attributes": _resource_attributes(env.get("OTEL_RESOURCE_ATTRIBUTES", "")),
        "traces_sampler": read.choice(
            "OTEL_TRACES_SAMPLER", "PARENTBASED_ALWAYS_ON", SAMPLERS
        ).lower(),
        "traces_sampler_arg": _sampler_arg(read),
        "capture_message_content": read.flag(
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", False
        ),
    }


def _sampler_arg(read: EnvReader) -> float:
    value = read.ratio("OTEL_TRACES_SAMPLER_ARG", 1.0)
    if value > 1:
        raise SettingsError(f"OTEL_TRACES_SAMPLER_ARG={value:g} must be a ratio from 0 to 1")
    return value


def _resource_attributes(raw: str) -> tuple[tuple[str, str], ...]:
    """`key1=value1,key2=value2` (values percent-encoded), as the OTel spec writes them."""
    pairs: list[tuple[str, str]] = []
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not key.strip().isprintable():
            raise SettingsError(
                f"OTEL_RESOURCE_ATTRIBUTES: {item.strip()!r} is not key=value"
                " (pairs separated by commas)"
            )
        pairs.append((key.strip(), urllib.parse.unquote(value.strip())))
    return tuple(pairs)
