"""OpenAI-shaped JSON out: bodies, error objects and their headers, as Quart responses."""

from __future__ import annotations

import math
from typing import Any

from quart import Response

from mana_llm.codec import dumps
from mana_llm.errors import AttemptRecord, GatewayError


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(dumps(payload), status=status, headers=headers, content_type="application/json")


def error_response(error: GatewayError) -> Response:
    return Response(dumps(error_object(error)), status=error.status, headers=error_headers(error))


def error_object(error: GatewayError) -> dict[str, Any]:
    body: dict[str, Any] = {
        "message": error.message,
        "type": error.type,
        "param": error.param,
        "code": error.code,
    }
    if error.provider:
        body["provider"] = error.provider
    if error.attempts:
        body["attempts"] = [_attempt(a) for a in error.attempts]
    return {"error": body}


def error_headers(error: GatewayError) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if not error.transient or error.retried:
        headers["x-should-retry"] = "false"  # SDKs otherwise re-send every 5xx twice
    if error.retry_after_s:
        headers["retry-after"] = str(max(1, math.ceil(error.retry_after_s)))
    if error.attempts:
        headers["x-mana-llm-attempts"] = str(len(error.attempts))
    headers.update(getattr(error, "headers", ()))  # a caller's refusal: its x-ratelimit-*
    return headers


def _attempt(record: AttemptRecord) -> dict[str, str]:
    out = {"model": record.model, "reason": record.reason}
    if record.deployment is not None:
        out["deployment"] = record.deployment
    return out
