"""Every failure as `{"error": {"message", "type", "param", "code"}}`, and each response's
status and cache header on the trace."""

from __future__ import annotations

import logging

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from mana_llm import errors
from mana_llm.api.render import error_response
from mana_llm.api.request_scope import request_trace
from mana_llm.metrics import RequestTrace
from mana_llm.settings import Settings

log = logging.getLogger(__name__)

CACHE = "x-mana-llm-cache"
CACHE_HEADER = {"hit": "HIT", "miss": "MISS", "bypass": "BYPASS", "error": "BYPASS"}
_HTTP_ERRORS: dict[int, type[errors.GatewayError]] = {
    400: errors.InvalidRequest,
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    413: errors.PayloadTooLarge,
}


def note_answer(trace: RequestTrace, status: int, stream: bool) -> str | None:
    """What an answer's head tells its trace (a stream's outcome is known only at its end),
    and the cache header it carries, if any (Quart's routes and the plain ASGI ones)."""
    if trace.status is None and not stream:
        trace.status = status
    if trace.cache is not None and status < 400:
        return CACHE_HEADER[trace.cache]
    return None


def register_failures(app: QuartTrio, settings: Settings) -> None:
    @app.after_request
    async def record_status(response: Response) -> Response:
        stream = response.mimetype == "text/event-stream"
        cache = note_answer(request_trace(request.scope), response.status_code, stream)
        if cache is not None:
            response.headers[CACHE] = cache
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
