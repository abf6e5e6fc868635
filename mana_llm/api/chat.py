"""POST /v1/chat/completions and /v1/embeddings: parse at the edge, resolve, ask the gateway,
render what it answered (body, headers) and put what it did on the request's trace."""

from __future__ import annotations

import logging
from typing import Any

import trio
from quart import Response, g, request
from quart_trio import QuartTrio

from mana_llm import errors
from mana_llm.api import wire
from mana_llm.api.render import json_response
from mana_llm.api.request_scope import add_cleanup, begin, request_nursery, request_trace
from mana_llm.api.sse import PendingSSEBody, SSEBody
from mana_llm.domain import Answered, CacheControl, ChatRequest
from mana_llm.gateway import Gateway, Route
from mana_llm.metrics import Metrics, RequestTrace
from mana_llm.settings import Settings

log = logging.getLogger(__name__)

RESOLVED = "x-mana-llm-resolved"
ATTEMPTS = "x-mana-llm-attempts"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def answer_headers(answered: Answered[Any]) -> dict[str, str]:
    return {RESOLVED: answered.target.resolved, ATTEMPTS: str(answered.attempts)}


def cache_control() -> CacheControl:
    """`Cache-Control: no-cache` (answer anew, store), `no-store` (neither);
    `X-Mana-LLM-Cache: on` (cache a sampled answer too); the caller's namespace."""
    directives = {
        part.split("=", 1)[0].strip().lower()
        for part in request.headers.get("cache-control", "").split(",")
    }
    no_store = "no-store" in directives
    return CacheControl(
        lookup=not no_store and "no-cache" not in directives,
        store=not no_store,
        opt_in=request.headers.get("x-mana-llm-cache", "").strip().lower() == "on",
        namespace=g.get("cache_namespace", "public"),  # set by `authenticate`
    )


def register_chat(app: QuartTrio, gateway: Gateway, settings: Settings, metrics: Metrics) -> None:
    async def read_json() -> dict[str, Any]:
        with trio.move_on_after(settings.body_timeout_s):
            raw = await request.get_data(cache=False, as_text=False, parse_form_data=False)
            return wire.parse_json_object(raw)
        raise errors.RequestTimeout(
            f"the request body did not arrive within {settings.body_timeout_s:g}s"
        )

    def routed(trace: RequestTrace, model: str) -> Route:
        route = gateway.resolve(model)
        trace.route(model, route.label)
        return route

    @app.post("/v1/chat/completions")
    async def chat_completions() -> Response:
        request_trace(request.scope).endpoint = "chat"  # counted as a chat even if unparsable
        chat = wire.parse_chat_request(await read_json())
        trace = begin(metrics, request.scope, "chat", chat.stream)
        route = routed(trace, chat.model)
        if chat.stream and settings.stream_keepalive_s:
            return stream_with_keepalives(gateway, settings, chat, route, trace)
        if chat.stream:
            streamed = await gateway.chat_stream(chat, cache_control(), route)
            trace.answered(streamed, stream=True)
            add_cleanup(request.scope, streamed.result.aclose)
            body = SSEBody(streamed.result, chat.include_usage, trace)
            return sse_response(body, {**answer_headers(streamed), **SSE_HEADERS})
        answered = await gateway.chat(chat, cache_control(), route)
        trace.answered(answered, answered.result.usage)
        return json_response(answered.result.payload, headers=answer_headers(answered))

    @app.post("/v1/embeddings")
    async def embeddings() -> Response:
        trace = begin(metrics, request.scope, "embeddings")
        embedding = wire.parse_embedding_request(await read_json(), settings.max_embedding_inputs)
        route = routed(trace, embedding.model)
        answered = await gateway.embed(embedding, cache_control(), route)
        trace.answered(answered, answered.result.usage)
        return json_response(answered.result.payload, headers=answer_headers(answered))


def stream_with_keepalives(
    gateway: Gateway, settings: Settings, chat: ChatRequest, route: Route, trace: RequestTrace
) -> Response:
    """Headers go out at once and SSE comments keep idle proxies from closing the connection
    while the walk looks for a first token; the walk runs beside the body in the request's
    nursery. The answering model is then only in each chunk's `model`."""
    body = PendingSSEBody(chat.include_usage, settings.stream_keepalive_s, trace)
    scope = request.scope
    control = cache_control()

    async def walk() -> None:
        try:
            streamed = await gateway.chat_stream(chat, control, route)
        except errors.GatewayError as error:
            body.resolve(error)
            return
        except Exception:  # the root of this task: a bug is logged and reported
            log.exception("stream walk failed")
            body.resolve(errors.InternalError("internal gateway error"))
            return
        trace.answered(streamed, stream=True)
        add_cleanup(scope, streamed.result.aclose)
        body.resolve(streamed.result)

    request_nursery(scope).start_soon(walk)
    return sse_response(body, SSE_HEADERS)


def sse_response(body: SSEBody | PendingSSEBody, headers: dict[str, str]) -> Response:
    response = Response(body, headers=headers, content_type="text/event-stream")
    response.timeout = None  # our own deadlines bound every stream
    return response
