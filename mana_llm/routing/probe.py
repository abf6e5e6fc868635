"""run_probe_loop: at start-up and then every interval (while a provider's circuit is open,
every open interval), probe every configured provider, each under its own deadline, with cheap
requests only (the model list: Ollama's /api/tags, the clouds' /models), so probes never spend
tokens. A probe judges reachability and authorisation (a 2xx), never the body's shape. Results
feed the same health cache as requests, as weaker evidence (see health.py): a probe never
closes a circuit that real requests opened."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection

import trio

from mana_llm import errors
from mana_llm.health.providers import CircuitState, ProviderHealthCache, Transition
from mana_llm.providers.protocol import Provider

log = logging.getLogger(__name__)


ProbeListener = Callable[[str, bool], None]


async def probe_once(
    provider: Provider,
    health: ProviderHealthCache,
    timeout_s: float,
    clock: Callable[[], float] = trio.current_time,
    on_probe: ProbeListener = lambda provider, ok: None,
) -> None:
    reason: str | None = None
    try:
        with trio.move_on_after(timeout_s) as scope:
            await provider.probe()
        if scope.cancelled_caught:
            reason = f"probe: no answer within {timeout_s:g}s"
    except errors.ProviderError as error:
        reason = f"probe: {error.message}"
    except Exception:  # the root of one probe: a bug in one must not sink the loop
        log.exception("probe of %s failed unexpectedly", provider.name)
        reason = "probe: internal error"
    on_probe(provider.name, reason is None)
    if reason is None:
        health.record_probe_success(provider.name, clock())
    else:
        log.warning("probe of %s failed: %s", provider.name, reason)
        health.record_failure(provider.name, clock(), reason, probe=True)


async def run_probe_loop(
    providers: Collection[Provider],
    health: ProviderHealthCache,
    interval_s: float,
    timeout_s: float,
    clock: Callable[[], float] = trio.current_time,
    on_probe: ProbeListener = lambda provider, ok: None,
    on_first_round: Callable[[], None] = lambda: None,
    *,
    open_interval_s: float | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The first round starts at once (`on_first_round` is called when every provider's first
    probe is over), then each provider on its own fixed cadence: every interval_s while its
    circuit is closed or half-open, every open_interval_s (default: interval_s) while it is
    open, starting the moment it opens. Probes are free, so an open circuit is looked at often:
    a failing probe holds it open, a succeeding one lets it recover (health.py)."""
    configured = [p for p in providers if p.configured]
    wakes = {p.name: trio.Event() for p in configured}

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

    if not configured:
        on_first_round()
    async with trio.open_nursery() as nursery:
        for provider in configured:
            nursery.start_soon(
                _run_one,
                provider,
                health,
                (interval_s, open_interval_s or interval_s, timeout_s),
                clock,
                on_probe,
                wakes,
                first_done,
            )
        task_status.started()


async def _run_one(
    provider: Provider,
    health: ProviderHealthCache,
    times: tuple[float, float, float],
    clock: Callable[[], float],
    on_probe: ProbeListener,
    wakes: dict[str, trio.Event],
    first_done: Callable[[], None],
) -> None:
    """One provider's probes: on the closed cadence (fixed, from start-up), or while its
    circuit is open every `open_s` from the last probe; a circuit that opens between two
    probes wakes it at once."""
    interval_s, open_s, timeout_s = times
    next_at = clock()
    first = True
    while True:
        await probe_once(provider, health, timeout_s, clock, on_probe)
        wakes[provider.name] = trio.Event()  # an opening from here on wakes the wait below
        if first:
            first = False
            first_done()
        now = clock()
        while next_at <= now:
            next_at += interval_s
        at = next_at
        if health.state(provider.name, now) is CircuitState.OPEN:
            at = min(at, now + open_s)
        with trio.move_on_at(at):
            await wakes[provider.name].wait()
