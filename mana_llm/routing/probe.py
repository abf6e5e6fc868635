"""run_probe_loop: at start-up and then every interval, probe every configured provider
concurrently, each under its own deadline, with cheap requests only (the model list: Ollama's
/api/tags, the clouds' /models), so probes never spend tokens. A probe judges reachability and
authorisation (a 2xx), never the body's shape. Results feed the same health cache as requests,
as weaker evidence (see health.py): a probe never closes a circuit that real requests opened."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection

import trio

from mana_llm import errors
from mana_llm.providers.protocol import Provider
from mana_llm.routing.health import ProviderHealthCache

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
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The first round starts at once (`on_first_round` is called when it is over), then one
    every interval_s on a fixed cadence."""
    task_status.started()
    configured = [p for p in providers if p.configured]
    next_at = clock()
    first = True
    while True:
        async with trio.open_nursery() as nursery:
            for provider in configured:
                nursery.start_soon(probe_once, provider, health, timeout_s, clock, on_probe)
        if first:
            first = False
            on_first_round()
        next_at += interval_s
        await trio.sleep_until(max(next_at, clock()))
