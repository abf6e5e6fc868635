"""The composition root: builds every concrete part and owns the root nursery.

trio.run(service.run, settings)
└── root nursery
    ├── hypercorn.trio.serve(app, config, shutdown_trigger=shutdown.wait)
    └── run_signal_listener(...)   SIGTERM/SIGINT -> shutdown.set(); SIGHUP -> reload
"""

from __future__ import annotations

import difflib
import logging
import os
import socket
import time
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import trio
from hypercorn.config import Config, Sockets
from hypercorn.trio import serve
from prometheus_client import CollectorRegistry, disable_created_metrics

from mana_llm.api.app import create_app
from mana_llm.api.request_scope import with_request_scope
from mana_llm.cache.memory import MemoryBackend
from mana_llm.cache.protocol import CacheBackend
from mana_llm.cache.store import ResponseCache
from mana_llm.gateway import Gateway
from mana_llm.lifecycle import Lifecycle
from mana_llm.metrics import Metrics
from mana_llm.providers.images import ImageFetcher
from mana_llm.providers.ollama import OllamaProvider
from mana_llm.providers.openai_compat import OpenAICompatProvider
from mana_llm.providers.protocol import Provider
from mana_llm.providers.upstream import Upstream
from mana_llm.routing.aliases import AliasFileError, AliasStore
from mana_llm.routing.health import BreakerPolicy, CircuitState, ProviderHealthCache, Transition
from mana_llm.routing.probe import run_probe_loop
from mana_llm.settings import Settings
from mana_llm.signals import run_signal_listener

log = logging.getLogger(__name__)

# A client that stops reading must not pin a stream forever (hypercorn shields its sends).
CLIENT_SEND_TIMEOUT_MS = 30_000


class _Config(Config):
    def create_sockets(self) -> Sockets:
        try:
            sockets = super().create_sockets()
        except OSError as exc:  # e.g. the port is taken: one line, exit 2
            raise StartupError(
                f"cannot listen on {', '.join(self.bind)}: {exc.strerror or exc}"
            ) from None
        for sock in sockets.insecure_sockets:
            if sock.family in (socket.AF_INET, socket.AF_INET6) and hasattr(
                socket, "TCP_USER_TIMEOUT"
            ):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, CLIENT_SEND_TIMEOUT_MS)
        return sockets


_LOGGING = "LOG_LEVEL and LOG_FORMAT (the gateway logs one line per request itself)"
# hypercorn.toml keys the gateway sets itself, with the setting to use instead
GATEWAY_OWNED = {
    "bind": "HOST and PORT (or --host/--port)",
    "insecure_bind": "HOST and PORT (or --host/--port)",
    "quic_bind": "HOST and PORT (or --host/--port)",
    "graceful_timeout": "GRACEFUL_TIMEOUT",
    "accesslog": _LOGGING,
    "access_log_format": _LOGGING,
    "errorlog": _LOGGING,
    "loglevel": _LOGGING,
    "logconfig": _LOGGING,
    "logconfig_dict": _LOGGING,
    "logger_class": _LOGGING,
    "workers": "one gateway process per instance: run more instances behind a load balancer",
    "max_requests": "nothing: it would stop the gateway after that many requests",
    "max_requests_jitter": "nothing: it would stop the gateway after that many requests",
}
# keys only the hypercorn command line reads; mana-llm runs its own process
CLI_ONLY = frozenset(
    {"application_path", "daemon", "group", "pid_path", "umask", "use_reloader", "user"}
    | {"worker_class", "debug"}
)


def read_hypercorn_toml(path: str) -> dict[str, Any]:
    """The file's settings, each checked: unknown keys (a typo such as `keep_alive_timout`),
    keys the gateway sets itself and values of the wrong type stop start-up by name."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise StartupError(f"--config {path}: cannot read it ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise StartupError(f"--config {path}: not valid TOML ({exc})") from None
    known = sorted(
        name
        for name in dir(Config)
        if not name.startswith("_") and not callable(getattr(Config, name, None))
    )
    for key, value in data.items():
        if key in GATEWAY_OWNED:
            instead = GATEWAY_OWNED[key]
            raise StartupError(f"--config {path}: {key} is set by the gateway; use {instead}")
        if key in CLI_ONLY:
            raise StartupError(
                f"--config {path}: {key} is read only by the hypercorn command line, "
                "which mana-llm does not use"
            )
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise StartupError(f"--config {path}: unknown key {key!r}{hint}")
        default = getattr(Config, key)
        if isinstance(default, bool | int | float | str) and not _same_kind(default, value):
            kind = (
                "true or false"
                if isinstance(default, bool)
                else "a string"
                if isinstance(default, str)
                else "a number"
            )
            raise StartupError(f"--config {path}: {key} must be {kind}, not {value!r}")
    return data


def _same_kind(default: object, value: object) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, int | float):
        return isinstance(value, int | float)
    return isinstance(value, type(default))


def hypercorn_config(settings: Settings, config_path: str | None = None) -> Config:
    config = _Config.from_mapping(read_hypercorn_toml(config_path) if config_path else {})
    config.bind = [
        f"[{settings.host}]:{settings.port}"
        if ":" in settings.host
        else f"{settings.host}:{settings.port}"
    ]
    config.graceful_timeout = settings.graceful_timeout_s
    config.accesslog = None
    # hypercorn's own lines go through the root handler (text or JSON, like every other line)
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


def build_providers(
    settings: Settings, transport: httpx.AsyncHTTPTransport, images: ImageFetcher
) -> dict[str, Provider]:
    providers: dict[str, Provider] = {}
    for ps in settings.providers:
        upstream = Upstream(
            ps, transport, settings.connect_timeout_s, settings.max_upstream_response_bytes
        )
        if ps.kind == "ollama":
            providers[ps.name] = OllamaProvider(upstream, images)
        else:
            providers[ps.name] = OpenAICompatProvider(upstream)
    return providers


def http_transport(connections: int) -> httpx.AsyncHTTPTransport:
    """A connection pool: one shared by every provider, one for image fetches."""
    limits = httpx.Limits(
        max_connections=connections,
        max_keepalive_connections=connections,  # else httpcore evicts and reopens
    )
    return httpx.AsyncHTTPTransport(limits=limits, retries=0)


def image_fetcher(settings: Settings, transport: httpx.AsyncHTTPTransport) -> ImageFetcher:
    return ImageFetcher(
        transport,
        settings.image_fetch_max_bytes,
        settings.image_fetch_timeout_s,
        settings.image_fetch_allow_networks,
        settings.image_fetch_max_count,
        settings.image_fetch_concurrency,
    )


async def run(
    settings: Settings,
    *,
    config_path: str | None = None,
    registry: CollectorRegistry | None = None,
    shutdown: trio.Event | None = None,
    handle_signals: bool = True,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until `shutdown` is set (by a signal or the caller), then drain and return:
    /readyz turns 503 at once, new requests are still taken for DRAIN_DELAY, then the listener
    closes and in-flight work has up to GRACEFUL_TIMEOUT."""
    try:
        await _run(settings, config_path, registry, shutdown, handle_signals, task_status)
    except BaseExceptionGroup as group:
        startup, _ = group.split(StartupError)
        if startup is None:
            raise
        raise _first(startup) from None


def _first(group: BaseExceptionGroup[StartupError]) -> StartupError:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    assert isinstance(error, StartupError)
    return error


async def _run(
    settings: Settings,
    config_path: str | None,
    registry: CollectorRegistry | None,
    shutdown: trio.Event | None,
    handle_signals: bool,
    task_status: trio.TaskStatus[list[str]],
) -> None:
    stop = trio.Event() if shutdown is None else shutdown
    config = hypercorn_config(settings, config_path)
    # no `*_created` series: noise beside every counter and histogram
    disable_created_metrics()  # type: ignore[no-untyped-call]
    metrics = Metrics(registry or CollectorRegistry())
    aliases = load_aliases(settings)
    aliases.on_reload = partial(_aliases_reloaded, metrics, aliases)
    _aliases_reloaded(metrics, aliases, None)
    policy = BreakerPolicy(
        settings.breaker_failures, settings.breaker_backoff_s, settings.breaker_max_backoff_s
    )
    health = ProviderHealthCache(policy)
    health.add_listener(partial(_export_health, metrics))
    lifecycle = Lifecycle()
    for warning in settings.warnings():
        log.warning("%s", warning)
    async with (
        http_transport(settings.max_connections) as transport,
        http_transport(settings.image_fetch_concurrency) as image_transport,
        open_cache(settings, metrics) as cache,
    ):
        images = image_fetcher(settings, image_transport)
        providers = build_providers(settings, transport, images)
        configured = [p for p in providers.values() if p.configured]
        metrics.start_providers([p.name for p in configured])
        gateway = Gateway(settings, providers, health, aliases, cache=cache)
        app = with_request_scope(create_app(gateway, settings, metrics, lifecycle), metrics)
        serving = trio.Event()  # set after the drain delay: hypercorn closes its listener
        async with trio.open_nursery() as nursery:
            if handle_signals:
                await nursery.start(
                    run_signal_listener, stop, nursery.cancel_scope.cancel, aliases.reload
                )
            await nursery.start(
                run_probe_loop,
                configured,
                health,
                settings.probe_interval_s,
                settings.probe_timeout_s,
                trio.current_time,
                partial(_probed, metrics),
                lifecycle.mark_started,
            )

            async def drain_after_stop() -> None:
                await stop.wait()
                lifecycle.begin_drain()
                delay = settings.drain_delay_s
                if delay:
                    log.info("draining: accepting for %gs more (DRAIN_DELAY)", delay)
                    await trio.sleep(delay)
                serving.set()

            async def serve_then_stop(*, task_status: trio.TaskStatus[list[str]]) -> None:
                # serve() returns once `serving` is set and in-flight requests have drained
                # (up to graceful_timeout); then the rest of the root nursery goes too.
                await serve(
                    app,
                    config,
                    shutdown_trigger=serving.wait,
                    task_status=task_status,
                    mode="asgi",
                )
                nursery.cancel_scope.cancel()

            nursery.start_soon(drain_after_stop)
            binds: list[str] = await nursery.start(serve_then_stop)
            log.info("mana-llm listening on %s", ", ".join(binds))
            task_status.started(binds)


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


def _aliases_reloaded(metrics: Metrics, aliases: AliasStore, result: str | None) -> None:
    """Count the reload; alias names and their targets may appear as model labels."""
    if result is not None:
        metrics.alias_reloads.labels(result).inc()
    for alias in aliases.table.aliases.values():
        metrics.know_models([alias.name, *(t.resolved for t in alias.chain)])


def _probed(metrics: Metrics, provider: str, ok: bool) -> None:
    metrics.probes.labels(provider, "success" if ok else "failure").inc()


def _export_health(metrics: Metrics, transition: Transition) -> None:
    log.warning(
        "circuit of %s: %s -> %s", transition.provider, transition.old.value, transition.new.value
    )
    metrics.provider_healthy.labels(transition.provider).set(
        1 if transition.new is CircuitState.CLOSED else 0
    )


class StartupError(Exception):
    """Configuration found at start-up that the service cannot run with (exit code 2)."""


def load_aliases(settings: Settings) -> AliasStore:
    """The first alias table. Unlike a reload, a bad file here stops start-up: there is no
    previous table to keep. A missing default file starts with no aliases."""
    names = [p.name for p in settings.providers]
    store = AliasStore(settings.aliases_path, names, time.time, _read_text)
    if not os.path.exists(settings.aliases_path) and not settings.aliases_required:
        log.warning("no %s: starting without aliases", settings.aliases_path)
        return store
    try:
        store.load()
    except (OSError, UnicodeDecodeError, AliasFileError) as exc:
        raise StartupError(f"aliases: {exc}") from None
    return store


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()
