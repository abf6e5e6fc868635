"""The HTTP surface: thin routes over the Gateway, OpenAI-shaped errors for everything."""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

import trio
from prometheus_client.exposition import choose_encoder
from quart import Response, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from mana_llm import errors
from mana_llm.api import wire
from mana_llm.api.render import error_headers, error_object
from mana_llm.api.request_scope import add_cleanup, request_nursery, request_trace
from mana_llm.api.sse import PendingSSEBody, SSEBody
from mana_llm.codec import dumps
from mana_llm.domain import CacheControl, ChatRequest
from mana_llm.gateway import Gateway
from mana_llm.lifecycle import Lifecycle
from mana_llm.metrics import Metrics, RequestTrace
from mana_llm.settings import Settings

log = logging.getLogger(__name__)

RESOLVED = "x-mana-llm-resolved"
ATTEMPTS = "x-mana-llm-attempts"
CACHE = "x-mana-llm-cache"
CACHE_HEADER = {"hit": "HIT", "miss": "MISS", "bypass": "BYPASS", "error": "BYPASS"}
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
EXPOSED = "X-Mana-LLM-Resolved, X-Mana-LLM-Attempts, X-Mana-LLM-Cache, X-Request-Id"

_HTTP_ERRORS: dict[int, type[errors.GatewayError]] = {
    400: errors.InvalidRequest,
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    413: errors.PayloadTooLarge,
}


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(dumps(payload), status=status, headers=headers, content_type="application/json")


def error_response(error: errors.GatewayError) -> Response:
    return Response(dumps(error_object(error)), status=error.status, headers=error_headers(error))


def create_app(
    gateway: Gateway, settings: Settings, metrics: Metrics, lifecycle: Lifecycle
) -> QuartTrio:
    app = QuartTrio("mana_llm")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.config["RESPONSE_TIMEOUT"] = None  # our own deadlines bound every stream
    # each gateway key with its cache namespace (the key hashed), computed once
    api_keys = tuple(
        (key.encode(), hashlib.sha256(key.encode()).hexdigest()[:32]) for key in settings.api_keys
    )
    origins = frozenset(settings.cors_origins)

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

    async def read_json() -> dict[str, Any]:
        with trio.move_on_after(settings.body_timeout_s):
            raw = await request.get_data(cache=False, as_text=False, parse_form_data=False)
            return wire.parse_json_object(raw)
        raise errors.RequestTimeout(
            f"the request body did not arrive within {settings.body_timeout_s:g}s"
        )

    @app.before_request
    async def authenticate() -> None:
        if not api_keys or request.method == "OPTIONS" or not request.path.startswith("/v1/"):
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip().encode()
        namespace = next((ns for key, ns in api_keys if hmac.compare_digest(given, key)), None)
        if scheme.lower() != "bearer" or namespace is None:
            raise errors.Unauthorized("a valid API key is required: Authorization: Bearer <key>")
        g.cache_namespace = namespace

    if origins:

        @app.after_request
        async def cors(response: Response) -> Response:
            origin = request.headers.get("origin")
            if origin and ("*" in origins or origin in origins):
                response.headers["access-control-allow-origin"] = "*" if "*" in origins else origin
                response.headers["vary"] = "Origin"
                response.headers["access-control-allow-headers"] = (
                    "Authorization, Content-Type, X-Request-Id, Cache-Control, X-Mana-LLM-Cache"
                )
                response.headers["access-control-allow-methods"] = "GET, POST, OPTIONS"
                response.headers["access-control-expose-headers"] = EXPOSED
            return response

    def begin(endpoint: str, stream: bool = False) -> RequestTrace:
        trace = request_trace(request.scope)
        trace.endpoint, trace.stream = endpoint, stream
        metrics.begin(trace)
        return trace

    @app.post("/v1/chat/completions")
    async def chat_completions() -> Response:
        request_trace(request.scope).endpoint = "chat"  # counted as a chat even if unparsable
        chat = wire.parse_chat_request(await read_json())
        trace = begin("chat", chat.stream)
        if chat.stream and settings.stream_keepalive_s:
            return stream_with_keepalives(chat, trace)
        if chat.stream:
            stream = await gateway.chat_stream(chat, trace, cache_control())
            add_cleanup(request.scope, stream.aclose)
            headers = {
                RESOLVED: stream.target.resolved,
                ATTEMPTS: str(stream.attempts),
                **SSE_HEADERS,
            }
            response = Response(
                SSEBody(stream, chat.include_usage, trace),
                headers=headers,
                content_type="text/event-stream",
            )
            response.timeout = None
            return response
        answered = await gateway.chat(chat, trace, cache_control())
        headers = {RESOLVED: answered.target.resolved, ATTEMPTS: str(answered.attempts)}
        return json_response(answered.result.payload, headers=headers)

    def stream_with_keepalives(chat: ChatRequest, trace: RequestTrace) -> Response:
        """Headers go out at once and SSE comments keep idle proxies from closing the
        connection while the walk looks for a first token; the walk runs beside the body in
        the request's nursery. The answering model is then only in each chunk's `model`."""
        body = PendingSSEBody(chat.include_usage, settings.stream_keepalive_s, trace)
        scope = request.scope
        control = cache_control()

        async def walk() -> None:
            try:
                stream = await gateway.chat_stream(chat, trace, control)
            except errors.GatewayError as error:
                body.resolve(error)
                return
            except Exception:  # the root of this task: a bug is logged and reported
                log.exception("stream walk failed")
                body.resolve(errors.InternalError("internal gateway error"))
                return
            add_cleanup(scope, stream.aclose)
            body.resolve(stream)

        request_nursery(scope).start_soon(walk)
        response = Response(body, headers=SSE_HEADERS, content_type="text/event-stream")
        response.timeout = None
        return response

    @app.post("/v1/embeddings")
    async def embeddings() -> Response:
        trace = begin("embeddings")
        embedding = wire.parse_embedding_request(await read_json(), settings.max_embedding_inputs)
        answered = await gateway.embed(embedding, trace, cache_control())
        headers = {RESOLVED: answered.target.resolved, ATTEMPTS: str(answered.attempts)}
        return json_response(answered.result.payload, headers=headers)

    @app.get("/v1/models")
    async def list_models() -> Response:
        begin("models")
        models = await gateway.list_models()
        return json_response({"object": "list", "data": [m.to_json() for m in models]})

    @app.get("/v1/models/<path:model_id>")
    async def get_model(model_id: str) -> Response:
        begin("models")
        return json_response((await gateway.get_model(model_id)).to_json())

    @app.get("/health")
    async def health() -> Response:
        """ok: every configured provider healthy; down (503): every one unhealthy;
        degraded otherwise (some unhealthy, or not checked yet)."""
        providers = gateway.health_summary()
        states = [s for s in providers.values() if s != "unconfigured"]
        status = "ok" if all(s == "healthy" for s in states) else "degraded"
        if states and all(s == "unhealthy" for s in states):
            status = "down"
        body = {"status": status, "providers": providers}
        return json_response(body, 503 if status == "down" else 200)

    @app.get("/livez")
    async def livez() -> Response:
        return json_response({"status": "alive"})

    @app.get("/readyz")
    async def readyz() -> Response:
        if lifecycle.ready:
            return json_response({"status": "ready"})
        status = "draining" if lifecycle.draining else "starting"
        return json_response({"status": status}, 503)

    @app.get("/v1/health")
    async def health_details() -> Response:
        return json_response(
            {"providers": gateway.health_details(), "cache": gateway.cache_details()}
        )

    @app.get("/v1/aliases")
    async def aliases() -> Response:
        table = gateway.aliases.table
        return json_response(
            {
                "object": "list",
                "data": [alias.to_json() for alias in table.aliases.values()],
                "loaded_at": table.loaded_at,
                "hash": table.content_hash,
                "source": table.source,
                "last_reload_error": gateway.aliases.last_error,
            }
        )

    @app.get("/metrics")
    async def metrics_page() -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(metrics.registry), content_type=content_type)

    @app.after_request
    async def record_status(response: Response) -> Response:
        trace = request_trace(request.scope)
        if trace.status is None and response.mimetype != "text/event-stream":
            trace.status = response.status_code  # a stream's outcome is known at its end
        if trace.cache is not None and response.status_code < 400:
            response.headers[CACHE] = CACHE_HEADER[trace.cache]
        return response

    def failed(error: errors.GatewayError) -> Response:
        request_trace(request.scope).fail(error)
        return error_response(error)

    @app.errorhandler(errors.GatewayError)
    async def gateway_error(error: errors.GatewayError) -> Response:
        return failed(error)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        kind = _HTTP_ERRORS.get(status)
        if status == 404:
            message = f"no route {request.method} {request.path}"
        elif status == 405:
            message = f"method {request.method} is not allowed on {request.path}"
        elif status == 413:
            message = f"the request body is larger than {settings.max_request_bytes} bytes"
        else:
            message = error.description or error.name
        gateway_error = (kind or errors.GatewayError)(message, status=None if kind else status)
        response = failed(gateway_error)
        if status == 405 and error.get_headers():
            response.headers.update({k: v for k, v in error.get_headers() if k.lower() == "allow"})
        return response

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.path, exc_info=error)
        return failed(errors.InternalError("internal gateway error"))

    return app
