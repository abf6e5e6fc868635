"""The admission step as the api sees it (`access/gate.py` decides): who the request is from
(set by the pipeline with the key), its admission before the use case (`admit`, called once by
each inference view after parsing: the model and the reservation are in the body), its charge
when the exchange ends (`finish`: the trace's usage, the ledger row) and its settlement once
the upstream is closed (`settle`: the counters). Also GET /v1/usage (a caller's own totals) and
GET /v1/keys/status (operators)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs
import trio
from quart import Response, request
from quart_trio import QuartTrio

from mana_llm import errors
from mana_llm.access.gate import ANONYMOUS, Admission, Gate
from mana_llm.access.keys import Caller
from mana_llm.access.ledger import UsageRow
from mana_llm.access.refusals import CallerRefused, OperatorOnly
from mana_llm.api.render import json_response
from mana_llm.api.request_scope import RequestContext, context
from mana_llm.gateway import Route

SETTLE_S = 5.0  # a settlement that cannot reach the store in time is left to the lease


@attrs.define(eq=False)
class Access:
    gate: Gate

    def identify(self, token: str) -> Caller | None:
        return self.gate.identify(token)

    def namespace(self, caller: Caller) -> str:
        return caller.namespace

    async def admit(
        self, ctx: RequestContext, requested: str, route: Route, prompt: int, most: int | None
    ) -> None:
        """Before the use case: a refusal (403, 429) is raised and answered like any error."""
        caller = ctx.caller
        if caller is None:
            return
        reachable: Iterable[str] = (t.resolved for t in route.targets)
        try:
            ctx.admission = await self.gate.admit(caller, requested, reachable, prompt, most)
        except CallerRefused as refusal:
            ctx.trace.limit = refusal.limit
            raise

    def finish(self, ctx: RequestContext, now: float, wall: float) -> None:
        """The exchange ended (its trace is whole): its charge on the trace, its ledger row."""
        trace = ctx.trace
        if trace.endpoint not in ("chat", "embeddings") or trace.model is None:
            return
        admission = ctx.admission
        status = trace.status if trace.status is not None else 499
        charge = self.gate.charge(
            admission,
            trace.resolved if trace.error is None or trace.relayed else None,
            trace.usage,
            trace.relayed,
            trace.cache == "hit",
            status < 400,
        )
        trace.charged = (charge.prompt_tokens, charge.completion_tokens, charge.cost_usd)
        if self.gate.ledger is None:
            return
        ttft = trace.first_token_at
        self.gate.record(
            UsageRow(
                at=wall - (now - trace.started_at),
                caller=trace.caller or ANONYMOUS,
                requested=trace.model,
                resolved=trace.resolved,
                deployment=trace.deployment,
                endpoint=trace.endpoint,
                stream=trace.stream,
                prompt_tokens=charge.prompt_tokens,
                completion_tokens=charge.completion_tokens,
                estimated=charge.estimated,
                cost_usd=charge.cost_usd,
                cache_hit=trace.cache == "hit",
                status=status,
                error_type=trace.error if status >= 400 else None,
                duration_ms=(now - trace.started_at) * 1000,
                ttft_ms=None if ttft is None else (ttft - trace.started_at) * 1000,
                request_id=trace.request_id,
            )
        )

    def settle_later(self, ctx: RequestContext) -> bool:
        """Settled without waiting (nothing to settle, or SQLite); False: await `settle`."""
        admission = ctx.admission
        return admission is None or self.gate.settle_later(admission)

    async def settle(self, ctx: RequestContext) -> None:
        if self.settle_later(ctx):
            return
        with trio.move_on_after(SETTLE_S, shield=True):  # a store to wait for (Redis)
            await self.gate.settle(ctx.admission)


def limit_headers(ctx: RequestContext) -> list[tuple[bytes, bytes]]:
    admission: Admission | None = ctx.admission
    return [] if admission is None else admission.headers()


def register_callers(app: QuartTrio, access: Access | None) -> None:
    @app.get("/v1/usage")
    async def usage() -> Response:
        ctx = context(request.scope)
        if access is None or ctx.caller is None:
            raise errors.NotFound(
                "usage is kept per caller of the keys file (KEYS_PATH); this request has none"
            )
        return json_response(await access.gate.usage(ctx.caller))

    @app.get("/v1/keys/status")
    async def keys_status() -> Response:
        ctx = context(request.scope)
        if ctx.caller is not None and not ctx.caller.operator:
            raise OperatorOnly(
                "GET /v1/keys/status is for operators: a MANA_LLM_API_KEYS key or a caller"
                " with operator: true"
            )
        if access is None or access.gate.keys is None:
            return json_response({"path": None, "callers": [], "last_error": None})
        status: dict[str, Any] = access.gate.keys.status()
        return json_response(status)
