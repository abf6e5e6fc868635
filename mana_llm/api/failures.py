"""Every failure of a Quart route as `{"error": {"message", "type", "param", "code"}}`, on the
trace (Quart catches its views' exceptions itself: its error handlers are where they arrive; the
plain routes' failures arrive in `plain.serve`; both render with `render.py`)."""

from __future__ import annotations

import logging

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from mana_llm import errors
from mana_llm.api.render import error_response
from mana_llm.api.request_scope import context
from mana_llm.settings import Settings

log = logging.getLogger(__name__)

_HTTP_ERRORS: dict[int, type[errors.GatewayError]] = {
    400: errors.InvalidRequest,
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    413: errors.PayloadTooLarge,
}


def register_failures(app: QuartTrio, settings: Settings) -> None:
    def failed(error: errors.GatewayError) -> Response:
        context(request.scope).trace.fail(error)
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
