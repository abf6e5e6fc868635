"""POST /v1/chat/completions, /v1/responses and /v1/embeddings, served as plain ASGI
(`api/plain.py`): parse at the edge, resolve, ask the gateway, send what it answered (body,
headers) and put what it did on the request's trace. A Responses request is translated into
the chat request it stands for (`responses_request.py`) and takes the chat path, once; only
its answer is framed differently (`responses_answer.py`, a stream by `responses_stream.py`)."""

from __future__ import annotations

import logging
from typing import Any

import attrs

from mana_llm import errors
from mana_llm.access.gate import prompt_estimate
from mana_llm.api import sse, wire
from mana_llm.api.callers import Access, limit_headers
from mana_llm.api.plain import Call, Header, View, serve
from mana_llm.api.request_scope import ASGIApp
from mana_llm.api.responses_answer import Answer, from_completion, new_id
from mana_llm.api.responses_request import parse_responses_request
from mana_llm.api.responses_stream import ResponsesFrames
from mana_llm.domain import Answered, CacheControl, ChatRequest
from mana_llm.gateway import Gateway, Route
from mana_llm.metrics import Metrics, RequestTrace
from mana_llm.settings import Settings

log = logging.getLogger(__name__)

RESOLVED = b"x-mana-llm-resolved"
ATTEMPTS = b"x-mana-llm-attempts"
DEPLOYMENT = b"x-mana-llm-deployment"
CHAT_PATH = "/v1/chat/completions"
RESPONSES_PATH = "/v1/responses"
EMBEDDINGS_PATH = "/v1/embeddings"


def answer_headers(answered: Answered[Any]) -> list[Header]:
    headers = [(RESOLVED, answered.target.resolved.encode()), (ATTEMPTS, b"%d" % answered.attempts)]
    if answered.deployment is not None and not answered.cached:
        headers.append((DEPLOYMENT, answered.deployment.encode()))
    return headers


def cache_control(call: Call) -> CacheControl:
    """`Cache-Control: no-cache` (answer anew, store), `no-store` (neither);
    `X-Mana-LLM-Cache: on` (cache a sampled answer too); the caller's namespace."""
    given = call.header(b"cache-control")
    directives = {part.split("=", 1)[0].strip().lower() for part in given.split(",")}
    no_store = "no-store" in directives
    return CacheControl(
        lookup=not no_store and "no-cache" not in directives,
        store=not no_store,
        opt_in=call.header(b"x-mana-llm-cache").strip().lower() == "on",
        namespace=call.context.namespace,
    )


@attrs.define(eq=False)
class InferenceRoutes:
    """The two POST routes; `asgi` answers them and hands everything else to `fallback`."""

    gateway: Gateway
    settings: Settings
    metrics: Metrics
    access: Access | None = None
    _views: dict[str, View] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._views = {
            CHAT_PATH: self.chat,
            RESPONSES_PATH: self.responses,
            EMBEDDINGS_PATH: self.embeddings,
        }

    def asgi(self, fallback: ASGIApp) -> ASGIApp:
        views = self._views

        async def app(scope: Any, receive: Any, send: Any) -> None:
            view = views.get(scope["path"]) if scope["type"] == "http" else None
            if view is not None and scope["method"] == "POST":
                await serve(view, scope, receive, send)
            else:
                await fallback(scope, receive, send)

        return app

    async def _read_json(self, call: Call) -> dict[str, Any]:
        settings = self.settings
        raw = await call.body(settings.max_request_bytes, settings.body_timeout_s)
        return wire.parse_json_object(raw)

    def _routed(self, trace: RequestTrace, model: str) -> Route:
        route = self.gateway.resolve(model)
        trace.route(model, route.label)
        return route

    async def chat(self, call: Call) -> None:
        call.context.trace.endpoint = "chat"  # counted as a chat even if unparsable
        await self._chat(call, wire.parse_chat_request(await self._read_json(call)))

    async def responses(self, call: Call) -> None:
        """The chat request a Responses request becomes, answered as a `response`."""
        call.context.trace.endpoint = "chat"  # metrics, limits and the ledger see a chat
        asked = parse_responses_request(await self._read_json(call))
        await self._chat(
            call, asked.chat, Answer(new_id("resp"), asked.echo, int(self.gateway.wall_clock()))
        )

    async def _chat(self, call: Call, chat: ChatRequest, answer: Answer | None = None) -> None:
        trace = call.context.begin(self.metrics, "chat", chat.stream)
        route = self._routed(trace, chat.model)
        if self.access is not None:  # the caller's admission, once, before the use case
            await self.access.admit(
                call.context, chat.model, route, prompt_estimate(chat), chat.max_tokens
            )
        limits = limit_headers(call.context)
        control = cache_control(call)
        keepalive_s = self.settings.stream_keepalive_s
        frames = ResponsesFrames(answer, chat.model) if answer is not None else None
        if chat.stream and keepalive_s:
            pending = self._walk_beside(call, chat, route, control)
            send = await call.start_stream(limits)
            await sse.relay_pending(send, pending, keepalive_s, chat.include_usage, trace, frames)
        elif chat.stream:
            streamed = await self.gateway.chat_stream(chat, control, route)
            trace.answered(streamed, stream=True)
            call.context.add_cleanup(streamed.result.aclose)  # closed even if never relayed
            send = await call.start_stream(answer_headers(streamed) + limits)
            await sse.relay(send, streamed.result, chat.include_usage, trace, frames=frames)
        else:
            answered = await self.gateway.chat(chat, control, route)
            trace.answered(answered, answered.result.usage)
            payload = answered.result.payload
            if answer is not None:
                payload = from_completion(answer, payload)
            await call.answer_json(payload, answer_headers(answered) + limits)

    def _walk_beside(
        self, call: Call, chat: ChatRequest, route: Route, control: CacheControl
    ) -> sse.Pending:
        """With keep-alives, headers go out at once and SSE comments keep idle proxies from
        closing the connection while the walk, in the request's nursery beside the body,
        looks for a first token. The answering model is then only in each chunk's `model`."""
        context, gateway = call.context, self.gateway
        pending = sse.Pending()

        async def walk() -> None:
            try:
                streamed = await gateway.chat_stream(chat, control, route)
            except errors.GatewayError as error:
                pending.resolve(error)
                return
            except Exception:  # the root of this task: a bug is logged and reported
                log.exception("stream walk failed")
                pending.resolve(errors.InternalError("internal gateway error"))
                return
            context.trace.answered(streamed, stream=True)
            context.add_cleanup(streamed.result.aclose)
            pending.resolve(streamed.result)

        context.nursery.start_soon(walk)
        return pending

    async def embeddings(self, call: Call) -> None:
        trace = call.context.begin(self.metrics, "embeddings")
        embedding = wire.parse_embedding_request(
            await self._read_json(call), self.settings.max_embedding_inputs
        )
        route = self._routed(trace, embedding.model)
        if self.access is not None:
            await self.access.admit(
                call.context, embedding.model, route, prompt_estimate(embedding), 0
            )
        answered = await self.gateway.embed(embedding, cache_control(call), route)
        trace.answered(answered, answered.result.usage)
        headers = answer_headers(answered) + limit_headers(call.context)
        await call.answer_json(answered.result.payload, headers)
