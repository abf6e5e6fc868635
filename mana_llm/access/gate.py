"""The admission step: who is calling (`identify`), whether this request may go now
(`admit`: the model allow-list, then the limits on the shared counters), and what it cost once
it ended (`charge`: the ledger row; `settle`: the counters). The request pipeline
(`api/request_scope.py`) enters it once per request; the gateway's use cases know nothing of
it.

Reservations (`admit`): the prompt's estimate (`prompt_estimate`: characters / 4, and a fixed
count per message and image) plus `max_completion_tokens`/`max_tokens`, or
`COMPLETION_ESTIMATE` when the request sets neither; its cost at the dearest price among the
models the request may reach. Charges (`charge`): the provider's usage when it gave one; else
(a stream cut or refused part-way, an upstream that does not count) the prompt's estimate and
one token per content chunk relayed, and the row says estimated. A cache hit charges nothing."""

from __future__ import annotations

import functools
import itertools
import math
import os
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import attrs

from mana_llm.access.keys import Caller, KeyStore, Limits
from mana_llm.access.ledger import Ledger, UsageRow
from mana_llm.access.limits import (
    Ask,
    Counts,
    LimitStore,
    Verdict,
    period_bounds,
    too_large,
)
from mana_llm.access.prices import Prices
from mana_llm.access.refusals import ModelNotAllowed, QuotaExceeded, RateLimited, RequestTooLarge
from mana_llm.domain import ChatRequest, EmbeddingRequest, Usage

ANONYMOUS = "anonymous"
PROCESS = f"{os.getpid()}-{secrets.token_hex(6)}"  # this process, among hosts and restarts
_TICKETS = itertools.count()  # a MANA_LLM_API_KEYS key, or no key at all
COMPLETION_ESTIMATE = 1024  # reserved for a request that sets no max_tokens
PER_MESSAGE = 4
PER_IMAGE = 765  # OpenAI's count for one 1024x1024 image at high detail


def prompt_estimate(request: ChatRequest | EmbeddingRequest) -> int:
    if isinstance(request, EmbeddingRequest):
        return sum(map(len, request.inputs)) // 4 + len(request.inputs)
    chars = images = 0
    for m in request.messages:
        chars += len(m.content or "") + len(m.reasoning or "")
        images += len(m.images)
    if request.tools:
        chars += sum(len(str(tool)) for tool in request.tools)
    return chars // 4 + PER_MESSAGE * len(request.messages) + PER_IMAGE * images


class Charge(NamedTuple):
    """What a request used, as the ledger and the counters see it."""

    prompt_tokens: int
    completion_tokens: int
    estimated: bool
    cost_usd: float

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


NOTHING = Charge(0, 0, False, 0.0)


@attrs.define(eq=False)
class Admission:
    """One admitted request: who, what it reserved, the counters as it found them."""

    caller: Caller
    prompt_estimate: int
    ask: Ask | None = None  # None: the caller has no limits, nothing counted
    verdict: Verdict | None = None
    charge: Charge | None = None  # once it ended
    settled: bool = False

    def headers(self) -> list[tuple[bytes, bytes]]:
        """OpenAI's x-ratelimit-* for the limits the caller has."""
        verdict, limits = self.verdict, self.caller.limits
        if verdict is None:
            return []
        out: list[tuple[bytes, bytes]] = []
        counts = verdict.counts
        if limits.rpm is not None:
            out += _trio(
                REQUESTS, limits.rpm, limits.rpm - counts.requests, verdict.reset_requests_s
            )
        if limits.tpm is not None:
            out += _trio(TOKENS, limits.tpm, limits.tpm - counts.tokens, verdict.reset_tokens_s)
        return out


REQUESTS, TOKENS = (
    tuple(f"x-ratelimit-{what}-{kind}".encode() for what in ("limit", "remaining", "reset"))
    for kind in ("requests", "tokens")
)


def _trio(
    names: tuple[bytes, ...], limit: int, remaining: int, reset_s: float
) -> list[tuple[bytes, bytes]]:
    return [
        (names[0], b"%d" % limit),
        (names[1], b"%d" % remaining if remaining > 0 else b"0"),
        (names[2], _duration(int(reset_s * 1000 + 0.5)) if reset_s > 0 else b"0ms"),
    ]


@functools.lru_cache(maxsize=256)  # an admitted request's reset is always the window's
def _duration(ms: int) -> bytes:
    """`duration` from whole milliseconds, in integers only (no float formatting: this is on
    every answer to a limited caller)."""
    if ms < 1000:
        return b"%dms" % ms
    minutes, rest = divmod(ms, 60_000)
    whole, frac = divmod(rest, 1000)
    text = b"%d.%03d" % (whole, frac) if frac else b"%d" % whole
    text = text.rstrip(b"0") if frac else text
    return b"%dm%ss" % (minutes, text) if minutes else text + b"s"


def duration(seconds: float) -> str:
    """As OpenAI writes them: `17ms`, `1s`, `8.64s`, `6m0s`."""
    return _duration(max(0, int(seconds * 1000 + 0.5))).decode()


@attrs.define(eq=False)
class Gate:
    keys: KeyStore | None  # None: no KEYS_PATH
    store: LimitStore | None  # the counters (None: no KEYS_PATH)
    prices: Prices
    ledger: Ledger | None  # None: USAGE_DB=off
    lease_s: float  # an open request's slot outlives a dead worker at most this long
    wall: Callable[[], float] = time.time
    on_admitted: Callable[[Caller, Verdict], None] | None = None  # the budget gauges
    _periods: dict[str, tuple[float, float]] = attrs.field(init=False, factory=dict)  # current

    def identify(self, token: str) -> Caller | None:
        if self.keys is None:
            return None
        return self.keys.table.find(token)

    async def admit(
        self,
        caller: Caller,
        requested: str,
        reachable: Iterable[str],
        prompt: int,
        most: int | None,
    ) -> Admission:
        """Admitted, or a refusal (403, 429) to answer with."""
        if not caller.allows(requested):
            raise ModelNotAllowed(
                f"the caller {caller.name!r} may not use the model {requested[:200]!r}",
                param="model",
                limit="model",
            )
        admission = Admission(caller, prompt)
        if self.store is None or not caller.limits.any:
            return admission
        completion = most if most is not None else COMPLETION_ESTIMATE
        tokens = prompt + completion
        usd = self.prices.dearest(reachable, prompt, completion)
        ticket = f"{PROCESS}-{next(_TICKETS)}"  # unique: no system call per request
        now, limits = self.wall(), caller.limits
        period = self._period(limits, now)
        ask = Ask(caller.name, limits, ticket, now, tokens, usd, self.lease_s, period)
        budget = caller.limits.budget
        large = tokens > caller.limits.smallest or (
            budget is not None and budget.usd is not None and usd > budget.usd
        )
        for limit in ("tpm", "budget") if large else ():
            if too_large(ask, limit):
                raise RequestTooLarge(
                    f"this request may use {tokens} tokens (its prompt's estimate and its"
                    f" max_tokens), more than the caller's {limit} allows in all; send a"
                    " shorter prompt or a lower max_tokens",
                    limit=limit,
                    param="max_tokens",
                )
        verdict = self.store.admit_at_once(ask) or await self.store.admit(ask)
        admission.ask, admission.verdict = ask, verdict
        if self.on_admitted is not None:
            self.on_admitted(caller, verdict)
        if verdict.refused is not None:
            raise _refusal(caller, ask, verdict, admission.headers())
        return admission

    def _period(self, limits: Limits, now: float) -> tuple[float, float]:
        """`period_of`, worked out once per period, not per request."""
        kind = limits.budget.period if limits.budget is not None else "month"
        bounds = self._periods.get(kind)
        if bounds is None or not bounds[0] <= now < bounds[1]:
            bounds = self._periods[kind] = period_bounds(now, kind)
        return bounds

    def charge(
        self,
        admission: Admission | None,
        resolved: str | None,
        usage: Usage | None,
        relayed: int,
        cache_hit: bool,
        answered: bool,
    ) -> Charge:
        """What the request used: the provider's count, or the estimate (nothing for a cache
        hit or a request nothing answered)."""
        if cache_hit or resolved is None or (usage is None and not relayed and not answered):
            charge = NOTHING
        elif usage is not None:
            cost = self.prices.cost(resolved, usage.prompt_tokens, usage.completion_tokens)
            charge = Charge(usage.prompt_tokens, usage.completion_tokens, False, cost)
        else:
            prompt = admission.prompt_estimate if admission is not None else 0
            charge = Charge(prompt, relayed, True, self.prices.cost(resolved, prompt, relayed))
        if admission is not None:
            admission.charge = charge
        return charge

    def record(self, row: UsageRow) -> None:
        if self.ledger is not None:
            self.ledger.record(row)

    def settle_later(self, admission: Admission) -> bool:
        """Settled without waiting (SQLite: applied, or queued for the next transaction);
        False: `settle` must be awaited (Redis)."""
        if admission.ask is None or admission.settled or self.store is None:
            return True
        charge = admission.charge or NOTHING
        if self.store.settle_later(admission.ask, charge.tokens, charge.cost_usd):
            admission.settled = True
            return True
        return False

    async def settle(self, admission: Admission) -> None:
        """The reservation replaced by what was used (once; the request's slot freed)."""
        if self.settle_later(admission):
            return
        assert admission.ask is not None and self.store is not None
        admission.settled = True
        charge = admission.charge or NOTHING
        await self.store.settle(admission.ask, charge.tokens, charge.cost_usd)

    async def usage(self, caller: Caller) -> dict[str, Any]:
        """GET /v1/usage: the caller's totals this period and what its limits leave."""
        limits, budget = caller.limits, caller.limits.budget
        period = budget.period if budget is not None else "month"
        now = self.wall()
        counts = (
            Counts() if self.store is None else await self.store.spent(caller.name, period, now)
        )
        start, end = period_bounds(now, period)
        out: dict[str, Any] = {
            "object": "usage",
            "caller": caller.name,
            "period": {"unit": period, "start": start, "end": end},
            "requests": counts.spent_requests,
            "tokens": counts.spent_tokens,
            "cost_usd": round(counts.spent_usd, 6),
            "in_flight": counts.open,
            "limits": {},
        }
        if limits.rpm is not None:
            out["limits"]["rpm"] = {
                "limit": limits.rpm,
                "remaining": max(0, limits.rpm - counts.requests),
            }
        if limits.tpm is not None:
            out["limits"]["tpm"] = {
                "limit": limits.tpm,
                "remaining": max(0, limits.tpm - counts.tokens),
            }
        if limits.max_parallel is not None:
            out["limits"]["max_parallel"] = {
                "limit": limits.max_parallel,
                "remaining": max(0, limits.max_parallel - counts.open),
            }
        if budget is not None:
            out["limits"]["budget"] = budget_left(budget, counts)
        return out


def budget_left(budget: Any, counts: Counts) -> dict[str, Any]:
    out: dict[str, Any] = {"period": budget.period}
    if budget.tokens is not None:
        used = counts.spent_tokens + counts.reserved_tokens
        out["tokens"] = {"limit": budget.tokens, "remaining": max(0, budget.tokens - used)}
    if budget.usd is not None:
        used_usd = counts.spent_usd + counts.reserved_usd
        out["usd"] = {"limit": budget.usd, "remaining": round(max(0.0, budget.usd - used_usd), 6)}
    return out


def _refusal(
    caller: Caller, ask: Ask, verdict: Verdict, headers: list[tuple[bytes, bytes]]
) -> Exception:
    wait = max(verdict.retry_after_s, 0.001)
    named = {k.decode(): v.decode() for k, v in headers}
    limits = caller.limits
    if verdict.refused == "budget":
        assert limits.budget is not None
        return QuotaExceeded(
            f"the caller {caller.name!r} has spent its {limits.budget.period}ly budget; it"
            f" renews in {duration(wait)} (UTC)",
            limit="budget",
            headers=named,
        )
    used = {
        "rpm": (limits.rpm, verdict.counts.requests, 1, "requests per min (RPM)"),
        "tpm": (limits.tpm, verdict.counts.tokens, ask.tokens, "tokens per min (TPM)"),
        "max_parallel": (limits.max_parallel, verdict.counts.open, 1, "requests at once"),
    }[verdict.refused or "rpm"]
    limit, current, requested, what = used
    return RateLimited(
        f"Rate limit reached for the caller {caller.name!r} on {what}: Limit {limit}, Used"
        f" {current}, Requested {requested}. Please try again in {duration(wait)}.",
        limit=verdict.refused or "rpm",
        retry_after_s=math.ceil(wait) if wait >= 1 else 1,
        headers=named,
    )
