"""The composition root: builds every concrete part and owns the root nursery.

trio.run(service.run, settings)
└── root nursery
    ├── hypercorn.trio.serve(app, config, shutdown_trigger=shutdown.wait)
    └── run_signal_listener(...)   SIGTERM/SIGINT -> shutdown.set(); SIGHUP -> reload
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from functools import partial

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from prometheus_client import CollectorRegistry, disable_created_metrics

from mana_llm import telemetry
from mana_llm.access.assemble import Hooks, open_gate, reload_callers, reload_keys
from mana_llm.access.gate import budget_left
from mana_llm.access.keys import Caller
from mana_llm.access.limits import Verdict
from mana_llm.api.app import create_app
from mana_llm.api.request_scope import ASGIApp
from mana_llm.assembly import Fleet, http_transport, image_fetcher, open_cache, open_fleet
from mana_llm.gateway import Gateway
from mana_llm.health.providers import BreakerPolicy, CircuitState, ProviderHealthCache, Transition
from mana_llm.lifecycle import Lifecycle
from mana_llm.metrics import Metrics
from mana_llm.readiness import WorkerMarkers
from mana_llm.routing.aliases import AliasFileError, AliasStore, run_alias_watch
from mana_llm.routing.balance import Balancer
from mana_llm.routing.probe import ProbeTargets, run_probe_loop
from mana_llm.server_config import hypercorn_config
from mana_llm.settings import Settings, SettingsError, StartupError
from mana_llm.signals import run_signal_listener
from mana_llm.telemetry.setup import open_tracing

log = logging.getLogger(__name__)


async def run(
    settings: Settings,
    *,
    config_path: str | None = None,
    registry: CollectorRegistry | None = None,
    shutdown: trio.Event | None = None,
    handle_signals: bool = True,
    reread: Callable[[], Settings] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """`reread`: the settings read again (on SIGHUP and the file watch: the deployments).
    Serve until `shutdown` is set (by a signal or the caller), then drain and return:
    /readyz turns 503 at once, new requests are still taken for DRAIN_DELAY, then the listener
    closes and in-flight work has up to GRACEFUL_TIMEOUT."""
    try:
        await _run(settings, config_path, registry, shutdown, handle_signals, reread, task_status)
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
    reread: Callable[[], Settings] | None,
    task_status: trio.TaskStatus[list[str]],
) -> None:
    stop = trio.Event() if shutdown is None else shutdown
    config = hypercorn_config(settings, config_path)
    # no `*_created` series: noise beside every counter and histogram
    disable_created_metrics()  # type: ignore[no-untyped-call]
    metrics = Metrics(registry or CollectorRegistry(), settings.metrics_dir)
    aliases = load_aliases(settings)
    # every worker reloads, the first alone counts it: the counter is summed over workers
    counts_reloads = settings.worker in (None, 1)
    aliases.on_reload = partial(_aliases_reloaded, metrics, aliases, counts_reloads)
    _aliases_reloaded(metrics, aliases, counts_reloads, None)
    policy = BreakerPolicy(
        settings.breaker_failures, settings.breaker_backoff_s, settings.breaker_max_backoff_s
    )
    health = ProviderHealthCache(policy)
    lifecycle, started = _lifecycle(settings)
    for warning in settings.warnings():
        log.warning("%s", warning)
    async with (
        open_tracing(settings, metrics, lifecycle) as tracing,
        http_transport(settings.image_fetch_concurrency) as image_transport,
        open_fleet(
            settings, image_fetcher(settings, image_transport, tracing), tracing is not None
        ) as fleet,
        open_cache(settings, metrics) as cache,
        open_gate(settings, _alias_targets(aliases), _hooks(metrics)) as gate,
    ):
        groups = fleet.groups
        providers = {name: group.deployments[0].provider for name, group in groups.items()}
        round_robin = settings.balance == "round_robin"
        balancer = Balancer(groups, health, round_robin=round_robin, on_in_flight=metrics.in_flight)
        health.add_listener(partial(_export_health, metrics, balancer))
        configured = [p for p in providers.values() if p.configured]
        owners = {d.name: name for name, group in groups.items() for d in group.deployments}
        metrics.start_providers([p.name for p in configured], owners)
        attempt_spans, server_spans = telemetry.hooks(tracing)
        gateway = Gateway(settings, providers, health, aliases, cache=cache, balancer=balancer,
                          attempts=attempt_spans)  # fmt: skip
        app = create_app(gateway, settings, metrics, lifecycle, gate, server_spans)
        serving = trio.Event()  # set after the drain delay: hypercorn closes its listener
        targets = ProbeTargets(fleet.probed())
        redeploy = partial(_reload_deployments, fleet, reread, metrics, targets)

        def reload() -> None:  # SIGHUP: the alias table, the deployments, the callers
            aliases.reload()
            redeploy()
            if gate is not None:
                reload_callers(gate, settings)

        async with trio.open_nursery() as nursery:
            if handle_signals:
                await nursery.start(run_signal_listener, stop, nursery.cancel_scope.cancel, reload)
            watch_s = settings.aliases_watch_interval_s
            if watch_s:
                await nursery.start(run_alias_watch, aliases, watch_s)
                if settings.providers_path:
                    await nursery.start(_watch_file, settings.providers_path, watch_s, redeploy)
            if cache is not None:  # stores streamed answers off the clients' path
                await nursery.start(cache.run_writer)
            if gate is not None and gate.ledger is not None:  # the ledger's rows, in batches
                await nursery.start(gate.ledger.run_writer)
            if gate is not None and gate.store is not None:  # the limits' settlements
                await nursery.start(gate.store.run)
            if watch_s and gate is not None and gate.keys is not None:
                keys = gate.keys
                await nursery.start(_watch_file, keys.path, watch_s, partial(reload_keys, keys))
            nursery.start_soon(_drain_after, stop, lifecycle, settings, serving)
            # listening first: a taken port is the one line start-up says, before any probe
            binds: list[str] = await nursery.start(_serve, app, config, serving, nursery)
            log.info("mana-llm listening on %s", ", ".join(binds))
            probes = (settings.probe_interval_s, settings.probe_timeout_s, trio.current_time)
            await nursery.start(
                partial(
                    run_probe_loop,
                    targets,
                    health,
                    *probes,
                    partial(_probed, metrics),
                    started,
                    open_interval_s=settings.probe_interval_open_s,
                    on_inventory=balancer.probed,
                    describe=balancer.describe,
                )
            )
            task_status.started(binds)


def _hooks(metrics: Metrics) -> Hooks:
    shown: dict[str, float] = {}  # caller -> when its budget gauges were last set

    def admitted(caller: Caller, verdict: Verdict) -> None:  # the budget gauges
        now = time.monotonic()  # at most 4 times a second per caller, and at every refusal
        if caller.limits.budget is not None and (
            verdict.refused is not None or now - shown.get(caller.name, -1.0) >= 0.25
        ):
            shown[caller.name] = now
            left = budget_left(caller.limits.budget, verdict.counts)
            for unit in ("tokens", "usd"):
                if unit in left:
                    metrics.budget_remaining(caller.name, unit, left[unit]["remaining"])

    return Hooks(
        callers=lambda table: metrics.know_callers(table.callers),
        store_failure=lambda store: metrics.limits_store_failures.labels(store).inc(),
        admitted=admitted,
    )


def _alias_targets(aliases: AliasStore) -> dict[str, list[str]]:
    return {a.name: [t.resolved for t in a.chain] for a in aliases.table.aliases.values()}


def _reload_deployments(
    fleet: Fleet, reread: Callable[[], Settings] | None, metrics: Metrics, targets: ProbeTargets
) -> None:
    """SIGHUP or the file watch: the providers file read again (with the environment the
    gateway started with) and its deployments reconciled; a bad file keeps them as they are."""
    if reread is None:
        return
    try:
        new = reread()
        changes = fleet.reconcile(new)
    except SettingsError as exc:
        log.error("deployments not reloaded, keeping them as they are: %s", exc)
        return
    except Exception:  # the root of a reload: a bug must not take the gateway down
        log.exception("deployments not reloaded, keeping them as they are")
        return
    for change in changes:
        log.info("deployments: %s", change)
    owners = {d.name: name for name, group in fleet.groups.items() for d in group.deployments}
    metrics.know_deployments(owners)
    targets.update(fleet.probed())


async def _watch_file(
    path: str,
    interval_s: float,
    changed: Callable[[], None],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Every interval, `path`'s content; `changed` when it differs (the providers file, with
    ALIASES_WATCH_INTERVAL: a mounted ConfigMap changes with nobody to send SIGHUP)."""
    task_status.started()
    last = _digest(path)
    while True:
        await trio.sleep(interval_s)
        now = _digest(path)
        if now != last:
            last = now
            changed()


def _digest(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).digest()
    except OSError:
        return None


def _lifecycle(settings: Settings) -> tuple[Lifecycle, Callable[[], None]]:
    """The process's lifecycle and what marks it started; a worker of several also leaves its
    readiness marker then, and is ready only once every worker of its instance has."""
    lifecycle = Lifecycle()
    if settings.worker is None or settings.metrics_dir is None:
        return lifecycle, lifecycle.mark_started
    markers = WorkerMarkers(settings.metrics_dir, settings.worker, settings.instance_workers)
    lifecycle.peers_ready = markers.all_ready

    def started() -> None:
        markers.mark_ready()
        lifecycle.mark_started()

    return lifecycle, started


async def _drain_after(
    stop: trio.Event, lifecycle: Lifecycle, settings: Settings, serving: trio.Event
) -> None:
    """Once stop is asked for: not ready at once, still accepting for DRAIN_DELAY, then
    `serving` tells hypercorn to close its listener and drain. At GRACEFUL_TIMEOUT every
    exchange still open is cut and told so (a stream's final error event); hypercorn's own
    deadline comes `server_config.CUT_GRACE_S` later, so those last words reach the clients."""
    await stop.wait()
    lifecycle.begin_drain(
        trio.current_time() + settings.drain_delay_s + settings.graceful_timeout_s
    )
    if settings.drain_delay_s:
        log.info("draining: accepting for %gs more (DRAIN_DELAY)", settings.drain_delay_s)
        await trio.sleep(settings.drain_delay_s)
    serving.set()
    await trio.sleep(settings.graceful_timeout_s)
    cut = lifecycle.cut_open_exchanges()
    if cut:
        log.warning("drain deadline (GRACEFUL_TIMEOUT) passed: %d open request(s) cut", cut)


async def _serve(
    app: ASGIApp,
    config: Config,
    serving: trio.Event,
    root: trio.Nursery,
    *,
    task_status: trio.TaskStatus[list[str]],
) -> None:
    # serve() returns once `serving` is set and in-flight requests have drained (up to
    # graceful_timeout); then the rest of the root nursery goes too.
    await serve(app, config, shutdown_trigger=serving.wait, task_status=task_status, mode="asgi")
    root.cancel_scope.cancel()


def _aliases_reloaded(
    metrics: Metrics, aliases: AliasStore, counts: bool, result: str | None
) -> None:
    """Count the reload (`counts`: in one worker of an instance); alias names and their targets
    may appear as model labels."""
    if result is not None and counts:
        metrics.alias_reloads.labels(result).inc()
    for alias in aliases.table.aliases.values():
        metrics.know_models([alias.name, *(t.resolved for t in alias.chain)])


def _probed(metrics: Metrics, provider: str, ok: bool) -> None:
    metrics.probes.labels(provider, "success" if ok else "failure").inc()


def _export_health(metrics: Metrics, balancer: Balancer, transition: Transition) -> None:
    """A deployment's circuit moved: logged; its provider is healthy while any is closed."""
    old, new = transition.old.value, transition.new.value
    log.warning("circuit of %s: %s -> %s", balancer.describe(transition.provider), old, new)
    metrics.deployment_health(transition.provider, transition.new is CircuitState.CLOSED)
    provider = balancer.provider_of(transition.provider) or transition.provider
    closed = any(
        (
            transition.new
            if d.name == transition.provider
            else balancer.health.state(d.name, transition.at)
        )
        is CircuitState.CLOSED
        for d in balancer.deployments(provider)
    )
    metrics.provider_healthy.labels(provider).set(1 if closed else 0)


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
