"""The limits' counters in Redis, for several hosts: the rules of `limits.decide`, as one Lua
script per admission (atomic: no two admissions interleave) and one per settlement. Imported
only when LIMITS_REDIS_URL (or REDIS_URL) is set.

Per caller, under one hash tag (a cluster keeps them on one slot): `hits` (a sorted set of the
window's tickets by time), `tok` (each ticket's tokens: reserved, then used), `open` (open
tickets by lease expiry), `res` (what each open ticket reserved, "tokens usd"), and the
period's `spent` (a hash: tokens, usd).

`Fallback` wraps a store that can fail (Redis unreachable, or too slow: every call is under
`timeout_s`): LIMITS_ON_STORE_FAILURE=local admits on per-process counters meanwhile (logged,
counted), `deny` refuses with a 503. It never hangs a request and never admits silently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import attrs
import coredis
import trio
from coredis.retry import NoRetryPolicy

from mana_llm.access.limits import (
    WINDOW_S,
    Ask,
    Counts,
    LimitStore,
    Verdict,
    admitted,
    period_bounds,
)
from mana_llm.access.refusals import LimitsUnavailable

log = logging.getLogger(__name__)

ADMIT = """
local hits, tok, open, res, spent = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now, w, ticket = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local want, usd = tonumber(ARGV[4]), tonumber(ARGV[5])
local rpm, tpm, maxp = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local btok, busd = tonumber(ARGV[9]), tonumber(ARGV[10])
local lease, pend, ttl = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
for _, m in ipairs(redis.call('ZRANGEBYSCORE', hits, '-inf', w)) do
  if not redis.call('ZSCORE', open, m) then redis.call('HDEL', tok, m) end
end
redis.call('ZREMRANGEBYSCORE', hits, '-inf', w)
for _, m in ipairs(redis.call('ZRANGEBYSCORE', open, '-inf', now)) do
  redis.call('HDEL', res, m)
  if not redis.call('ZSCORE', hits, m) then redis.call('HDEL', tok, m) end
end
redis.call('ZREMRANGEBYSCORE', open, '-inf', now)
local window = redis.call('ZRANGE', hits, 0, -1, 'WITHSCORES')
local requests, tokens, newest, times = #window / 2, 0, -1, {}
for i = 1, #window, 2 do
  local n = tonumber(redis.call('HGET', tok, window[i])) or 0
  tokens = tokens + n
  times[#times + 1] = {tonumber(window[i + 1]), n}
  newest = tonumber(window[i + 1])
end
local inflight, rtok, rusd = redis.call('ZCARD', open), 0, 0
for _, v in ipairs(redis.call('HVALS', res)) do
  local a, b = string.match(v, '(%S+) (%S+)')
  rtok, rusd = rtok + tonumber(a), rusd + tonumber(b)
end
local sp = redis.call('HMGET', spent, 'tokens', 'usd')
local stok, susd = tonumber(sp[1]) or 0, tonumber(sp[2]) or 0
local refused, wait = '', 0
if rpm >= 0 and requests + 1 > rpm then
  refused = 'rpm'
  local need = requests + 1 - rpm
  wait = times[need][1] + 60 - now
elseif tpm >= 0 and tokens + want > tpm then
  refused, wait = 'tpm', 60
  local need, freed = tokens + want - tpm, 0
  for _, tn in ipairs(times) do
    freed = freed + tn[2]
    if freed >= need then wait = tn[1] + 60 - now break end
  end
elseif maxp >= 0 and inflight + 1 > maxp then
  refused, wait = 'max_parallel', 1
elseif (btok >= 0 and stok + rtok + want > btok)
    or (busd >= 0 and susd + rusd + usd > busd + 1e-12) then
  refused, wait = 'budget', pend - now
end
if refused == '' then
  redis.call('ZADD', hits, now, ticket)
  redis.call('HSET', tok, ticket, want)
  redis.call('ZADD', open, now + lease, ticket)
  redis.call('HSET', res, ticket, want .. ' ' .. string.format('%.17g', usd))
  for _, k in ipairs({hits, tok, open, res}) do redis.call('EXPIRE', k, ttl) end
end
return {refused, requests, tokens, tostring(newest), inflight, rtok, tostring(rusd), stok,
        tostring(susd), tostring(wait)}
"""

SETTLE = """
local hits, tok, open, res, spent = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local ticket, tokens, usd, ttl = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
if redis.call('ZSCORE', hits, ticket) then redis.call('HSET', tok, ticket, tokens) else
  redis.call('HDEL', tok, ticket) end
redis.call('ZREM', open, ticket)
redis.call('HDEL', res, ticket)
redis.call('HINCRBY', spent, 'tokens', tokens)
redis.call('HINCRBYFLOAT', spent, 'usd', usd)
redis.call('HINCRBY', spent, 'requests', 1)
redis.call('EXPIRE', spent, ttl)
return 1
"""

SPENT = """
local open, res, spent = KEYS[1], KEYS[2], KEYS[3]
local now = tonumber(ARGV[1])
local sp = redis.call('HMGET', spent, 'tokens', 'usd', 'requests')
local rtok, rusd, n = 0, 0, 0
for _, m in ipairs(redis.call('ZRANGEBYSCORE', open, '(' .. now, '+inf')) do
  local v = redis.call('HGET', res, m)
  if v then
    local a, b = string.match(v, '(%S+) (%S+)')
    rtok, rusd, n = rtok + tonumber(a), rusd + tonumber(b), n + 1
  end
end
return {tonumber(sp[1]) or 0, tostring(tonumber(sp[2]) or 0), n, rtok, tostring(rusd),
        tonumber(sp[3]) or 0}
"""


def _keys(caller: str, period_start: float) -> list[str]:
    base = f"mana:limits:{{{caller}}}"
    return [
        f"{base}:hits",
        f"{base}:tok",
        f"{base}:open",
        f"{base}:res",
        f"{base}:spent:{int(period_start)}",
    ]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _or_none(value: int | float | None) -> str:
    return "-1" if value is None else repr(value)


class RedisLimits:
    name = "redis"

    def __init__(self, url: str, *, connect_timeout_s: float) -> None:
        self._client: coredis.Redis[bytes] = coredis.Redis.from_url(
            url,
            retry_policy=NoRetryPolicy(),
            connect_timeout=connect_timeout_s,
            max_connections=64,
            client_name="mana-llm-limits",
        )
        self._admit = self._client.register_script(ADMIT)
        self._settle = self._client.register_script(SETTLE)
        self._spent = self._client.register_script(SPENT)

    @property
    def client(self) -> coredis.Redis[bytes]:
        return self._client

    async def admit(self, ask: Ask) -> Verdict:
        limits, budget = ask.limits, ask.limits.budget
        start, end = ask.period
        args = [
            repr(ask.now),
            repr(ask.now - WINDOW_S),
            ask.ticket,
            str(ask.tokens),
            repr(ask.usd),
            _or_none(limits.rpm),
            _or_none(limits.tpm),
            _or_none(limits.max_parallel),
            _or_none(budget.tokens if budget else None),
            _or_none(budget.usd if budget else None),
            repr(ask.lease_s),
            repr(end),
            str(int(max(ask.lease_s, WINDOW_S) + WINDOW_S)),
        ]
        raw: Any = await self._admit(keys=_keys(ask.caller, start), args=args)
        out = [_text(v) for v in raw]
        newest = float(out[3])
        counts = Counts(
            int(out[1]),
            int(out[2]),
            None if newest < 0 else newest,
            int(out[4]),
            int(out[5]),
            float(out[6]),
            int(out[7]),
            float(out[8]),
        )
        refused = out[0] or None
        if refused is not None:
            return Verdict(refused, float(out[9]), counts=counts, period_end=end)
        return admitted(counts, ask)

    def settle_later(self, ask: Ask, tokens: int, usd: float) -> bool:
        return False  # one script, awaited

    def admit_at_once(self, ask: Ask) -> Verdict | None:
        return None

    async def settle(self, ask: Ask, tokens: int, usd: float) -> None:
        start, end = ask.period
        ttl = str(int(end - start + 7 * 86400))  # the period, and a week to read it
        await self._settle(
            keys=_keys(ask.caller, start), args=[ask.ticket, str(tokens), repr(usd), ttl]
        )

    async def spent(self, caller: str, period: str, now: float) -> Counts:
        start, _ = period_bounds(now, period)
        keys = _keys(caller, start)
        raw: Any = await self._spent(keys=[keys[2], keys[3], keys[4]], args=[repr(now)])
        out = [_text(v) for v in raw]
        return Counts(
            open=int(out[2]),
            reserved_tokens=int(out[3]),
            reserved_usd=float(out[4]),
            spent_tokens=int(out[0]),
            spent_usd=float(out[1]),
            spent_requests=int(out[5]),
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()  # every call is its own script: nothing in the background

    async def aclose(self) -> None:
        pass


@attrs.define(eq=False)
class Fallback:
    """A shared store under a deadline; when it fails, per-process counters (`local`) or a
    503 (`deny`). Each admission says which store holds its ticket, and is settled there."""

    primary: LimitStore
    local: LimitStore
    mode: str  # local | deny
    timeout_s: float
    on_failure: Callable[[str], None]  # the store's name: a metric
    name: str = "redis"
    _failing: bool = False
    _local_tickets: set[str] = attrs.field(factory=set)

    async def admit(self, ask: Ask) -> Verdict:
        try:
            with trio.fail_after(self.timeout_s):
                verdict = await self.primary.admit(ask)
        except (trio.TooSlowError, coredis.exceptions.RedisError, OSError) as exc:
            self._failed(exc)
            if self.mode == "deny":
                raise LimitsUnavailable(
                    "the gateway cannot check this caller's limits now (its limits store is"
                    " unreachable); try again shortly"
                ) from None
            self._local_tickets.add(ask.ticket)
            return await self.local.admit(ask)
        if self._failing:
            self._failing = False
            log.warning("limits store %s answers again: shared counters resumed", self.primary.name)
        return verdict

    def _failed(self, exc: BaseException) -> None:
        self.on_failure(self.primary.name)
        if not self._failing:
            self._failing = True
            how = "per-process counters" if self.mode == "local" else "refusing limited callers"
            log.error(
                "limits store %s failed (%s): %s until it answers (LIMITS_ON_STORE_FAILURE=%s)",
                self.primary.name,
                type(exc).__name__,
                how,
                self.mode,
            )

    def admit_at_once(self, ask: Ask) -> Verdict | None:
        return None  # Redis first, always

    def settle_later(self, ask: Ask, tokens: int, usd: float) -> bool:
        if ask.ticket not in self._local_tickets:
            return False
        self._local_tickets.discard(ask.ticket)
        return self.local.settle_later(ask, tokens, usd)

    async def settle(self, ask: Ask, tokens: int, usd: float) -> None:
        if ask.ticket in self._local_tickets:
            self._local_tickets.discard(ask.ticket)
            await self.local.settle(ask, tokens, usd)
            return
        try:
            with trio.fail_after(self.timeout_s):
                await self.primary.settle(ask, tokens, usd)
        except (trio.TooSlowError, coredis.exceptions.RedisError, OSError) as exc:
            self._failed(exc)  # its lease frees its slot; its usage stays in the ledger

    async def spent(self, caller: str, period: str, now: float) -> Counts:
        try:
            with trio.fail_after(self.timeout_s):
                return await self.primary.spent(caller, period, now)
        except (trio.TooSlowError, coredis.exceptions.RedisError, OSError) as exc:
            self._failed(exc)
            return await self.local.spent(caller, period, now)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.local.run(task_status=task_status)

    async def aclose(self) -> None:
        await self.local.aclose()
