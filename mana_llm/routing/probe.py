"""run_probe_loop: at start-up and then every interval (while a provider's circuit is open,
every open interval), probe every configured provider, each under its own deadline, with cheap
requests only (the model list: Ollama's /api/tags, the clouds' /models), so probes never spend
tokens. A probe judges reachability and authorisation (a 2xx), never the body's shape. Results
feed the same health cache as requests, as weaker evidence (see health/providers.py): a probe never
closes a circuit that real requests opened."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from functools import partial

import attrs
import trio

from mana_llm import errors
from mana_llm.domain import Inventory
from mana_llm.health.providers import CircuitState, ProviderHealthCache, Transition
from mana_llm.providers.protocol import Provider

log = logging.getLogger(__name__)


ProbeListener = Callable[[str, bool], None]


InventoryListener = Callable[[str, Inventory | None, float], None]


async def probe_once(
    provider: Provider,
    health: ProviderHealthCache,
    timeout_s: float,
    clock: Callable[[], float] = trio.current_time,
    on_probe: ProbeListener = lambda provider, ok: None,
    key: str | None = None,
    on_inventory: InventoryListener = lambda key, inventory, now: None,
    describe: Callable[[str], str] = lambda key: key,
) -> None:
    """Probe one deployment (`key`, its health key; the provider's name when it is its one
    deployment): its outcome to health, what it holds to `on_inventory`."""
    key = key or provider.name
    reason: str | None = None
    inventory: Inventory | None = None
    try:
        with trio.move_on_after(timeout_s) as scope:
            inventory = await provider.probe()
        if scope.cancelled_caught:
            reason = f"probe: no answer within {timeout_s:g}s"
    except errors.ProviderError as error:
        reason = f"probe: {error.message}"
    except Exception:  # the root of one probe: a bug in one must not sink the loop
        log.exception("probe of %s failed unexpectedly", provider.name)
        reason = "probe: internal error"
    on_probe(provider.name, reason is None)
    if reason is None:
        health.record_probe_success(key, clock())
        on_inventory(key, inventory, clock())
    else:
        log.warning("probe of %s failed: %s", describe(key), reason)
        health.record_failure(key, clock(), reason, probe=True)


async def run_probe_loop(
    providers: Collection[Provider] | Mapping[str, Provider] | ProbeTargets,
    health: ProviderHealthCache,
    interval_s: float,
    timeout_s: float,
    clock: Callable[[], float] = trio.current_time,
    on_probe: ProbeListener = lambda provider, ok: None,
    on_first_round: Callable[[], None] = lambda: None,
    *,
    open_interval_s: float | None = None,
    on_inventory: InventoryListener = lambda key, inventory, now: None,
    describe: Callable[[str], str] = lambda key: key,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The first round starts at once (`on_first_round` is called when every provider's first
    probe is over), then each provider on its own fixed cadence: every interval_s while its
    circuit is closed or half-open, every open_interval_s (default: interval_s) while it is
    open, starting the moment it opens. Probes are free, so an open circuit is looked at often:
    a failing probe holds it open, a succeeding one lets it recover (health/providers.py)."""
    if isinstance(providers, ProbeTargets):
        targets = providers
    else:
        keyed = providers if isinstance(providers, Mapping) else {p.name: p for p in providers}
        targets = ProbeTargets(dict(keyed))
    configured = {key: p for key, p in targets.current.items() if p.configured}
    wakes: dict[str, trio.Event] = {key: trio.Event() for key in configured}
    loops: dict[str, tuple[trio.CancelScope, Provider]] = {}  # each with the client it probes

    def wake_on_open(transition: Transition) -> None:
        wake = wakes.get(transition.provider)
        if wake is not None and transition.new is CircuitState.OPEN:
            wake.set()

    health.add_listener(wake_on_open)
    pending = len(configured)

    def first_done() -> None:
        nonlocal pending
        pending -= 1
        if pending == 0:
            on_first_round()

    async def probe_loop(
        key: str, provider: Provider, scope: trio.CancelScope, done: Callable[[], None]
    ) -> None:
        probe = partial(
            probe_once, provider, health, timeout_s, clock, on_probe, key, on_inventory, describe
        )
        times = (interval_s, open_interval_s or interval_s)
        with scope:
            await _run_one(key, probe, health, times, clock, wakes, done)

    if not configured:
        on_first_round()
    async with trio.open_nursery() as nursery:

        def launch(key: str, provider: Provider, done: Callable[[], None]) -> None:
            loops[key] = (scope := trio.CancelScope(), provider)
            wakes.setdefault(key, trio.Event())
            nursery.start_soon(probe_loop, key, provider, scope, done)

        for key, provider in configured.items():
            launch(key, provider, first_done)
        task_status.started()
        while True:  # a reload changed the deployments: their probes follow
            await targets.changed.wait()
            targets.changed = trio.Event()
            now = {key: p for key, p in targets.current.items() if p.configured}
            for key in [k for k, (_, client) in loops.items() if now.get(k) is not client]:
                loops.pop(key)[0].cancel()  # gone, or rebuilt (a new URL or key)
                wakes.pop(key, None)
            for key, provider in now.items():
                if key not in loops:
                    launch(key, provider, lambda: None)


@attrs.define(eq=False)
class ProbeTargets:
    """What the probe loop probes, by health key; `update` (after a reload) starts the probes
    of new deployments and stops those of deployments that are gone."""

    current: dict[str, Provider]
    changed: trio.Event = attrs.field(factory=trio.Event)

    def update(self, targets: Mapping[str, Provider]) -> None:
        self.current = dict(targets)
        self.changed.set()


async def _run_one(
    key: str,
    probe: Callable[[], Awaitable[None]],
    health: ProviderHealthCache,
    times: tuple[float, float],
    clock: Callable[[], float],
    wakes: dict[str, trio.Event],
    first_done: Callable[[], None],
) -> None:
    """One deployment's probes: on the closed cadence (fixed, from start-up), or while its
    circuit is open every `open_s` from the last probe; a circuit that opens between two
    probes wakes it at once."""
    interval_s, open_s = times
    next_at = clock()
    first = True
    while True:
        await probe()
        wakes[key] = trio.Event()  # an opening from here on wakes the wait below
        if first:
            first = False
            first_done()
        now = clock()
        while next_at <= now:
            next_at += interval_s
        at = next_at
        if health.state(key, now) is CircuitState.OPEN:
            at = min(at, now + open_s)
        with trio.move_on_at(at):
            await wakes[key].wait()
