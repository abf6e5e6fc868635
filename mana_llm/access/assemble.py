"""The admission step built for the service's life (the composition root calls `open_gate`):
the keys file (a bad one stops start-up), the prices, the ledger, and the limits' counters in
SQLite (one file for the host's workers) or Redis (many hosts, with its fallback)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

import attrs

from mana_llm.access.gate import Gate
from mana_llm.access.keys import Caller, KeysFileError, KeyStore, KeyTable
from mana_llm.access.ledger import Ledger, LedgerError, open_db
from mana_llm.access.limits import LimitStore, Verdict
from mana_llm.access.prices import PricesError, reachable, read_prices
from mana_llm.access.sql_limits import SqlLimits
from mana_llm.settings import Settings, StartupError

log = logging.getLogger("mana_llm.access")


@attrs.frozen
class Hooks:
    """What the service wants told: the callers known (for their metrics), a failing store,
    each admission's counters (the budget gauges)."""

    callers: Callable[[KeyTable], None]
    store_failure: Callable[[str], None]
    admitted: Callable[[Caller, Verdict], None]


@asynccontextmanager
async def open_gate(
    settings: Settings, aliases: Mapping[str, Sequence[str]], hooks: Hooks
) -> AsyncIterator[Gate | None]:
    """The gate, or None when there is neither a keys file nor a ledger."""
    keys = _keys(settings, hooks)
    try:
        prices = read_prices(settings.providers_path)
    except PricesError as exc:
        raise StartupError(str(exc)) from None
    if keys is not None:
        for caller in keys.table.callers.values():
            for model in prices.unpriced(caller, reachable(caller, aliases)):
                log.warning(
                    "caller %r has a usd budget and may reach %s, which has no price"
                    " (prices: in PROVIDERS_PATH): its requests there cost 0",
                    caller.name,
                    model,
                )
    ledger = None
    if settings.usage_db is not None:
        ledger = Ledger(settings.usage_db)
        try:
            ledger.open()
        except LedgerError as exc:
            raise StartupError(f"USAGE_DB: {exc}") from None
    if keys is None and ledger is None:
        yield None
        return
    async with AsyncExitStack() as stack:
        store = None if keys is None else await stack.enter_async_context(_store(settings, hooks))
        lease_s = settings.request_timeout_s + 60.0
        yield Gate(keys, store, prices, ledger, lease_s, time.time, hooks.admitted)


def preflight(settings: Settings) -> None:
    """What would stop every worker (the keys file, the prices, the ledger's file), checked
    once by the supervisor before it starts them: one line, exit 2."""
    _keys(settings, Hooks(lambda table: None, lambda store: None, lambda caller, verdict: None))
    try:
        read_prices(settings.providers_path)
    except PricesError as exc:
        raise StartupError(str(exc)) from None
    if settings.usage_db is not None:
        try:
            open_db(settings.usage_db).close()
        except LedgerError as exc:
            raise StartupError(f"USAGE_DB: {exc}") from None


def _keys(settings: Settings, hooks: Hooks) -> KeyStore | None:
    if settings.keys_path is None:
        return None
    keys = KeyStore(settings.keys_path, settings.env, time.time, _read_text)
    keys.on_reload = hooks.callers
    try:
        keys.load()
    except (OSError, KeysFileError) as exc:
        raise StartupError(f"KEYS_PATH={settings.keys_path!r}: {exc}") from None
    log.info("callers: %d from %s", len(keys.table.callers), settings.keys_path)
    return keys


@asynccontextmanager
async def _store(settings: Settings, hooks: Hooks) -> AsyncIterator[LimitStore]:
    if settings.limits_redis_url is None:
        shared = settings.worker is not None  # one of WORKERS > 1: the file is the count
        sql = SqlLimits(settings.limits_db, shared=shared)
        log.info(
            "limits: counters %s, spend in %s",
            "shared by this host's workers" if shared else "in this process",
            settings.limits_db,
        )
        try:
            yield sql
        finally:
            await sql.aclose()
        return
    from mana_llm.access.redis_limits import Fallback, RedisLimits  # coredis: only when used

    redis = RedisLimits(settings.limits_redis_url, connect_timeout_s=settings.limits_timeout_s)
    local = SqlLimits(":memory:")
    store = Fallback(
        redis,
        local,
        settings.limits_on_store_failure,
        settings.limits_timeout_s,
        hooks.store_failure,
    )
    async with redis.client:
        log.info("limits: counters in redis (on failure: %s)", settings.limits_on_store_failure)
        try:
            yield store
        finally:
            await store.aclose()


def reload_callers(gate: Gate, settings: Settings) -> None:
    """SIGHUP: the keys file read again (a bad one keeps the last good table), the prices
    (likewise), and the ledger's buffered rows written."""
    if gate.keys is not None:
        reload_keys(gate.keys)
    try:
        gate.prices = read_prices(settings.providers_path)
    except PricesError as exc:
        log.error("prices not reloaded, keeping them: %s", exc)
    if gate.ledger is not None:
        gate.ledger.flush_soon()


def reload_keys(keys: KeyStore) -> None:
    """SIGHUP or the file watch: the keys file again; a revoked key is refused from now on."""
    if keys.reload():
        log.info("callers: %d from %s (reloaded)", len(keys.table.callers), keys.path)
    else:
        log.error("keys not reloaded, keeping them as they are: %s", keys.last_error)


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()
