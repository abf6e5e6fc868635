"""OpenAI-shaped JSON out: bodies, error objects and their headers."""

from __future__ import annotations

import math
from typing import Any

from mana_llm.errors import GatewayError


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
        body["attempts"] = [{"model": a.model, "reason": a.reason} for a in error.attempts]
    return {"error": body}


def error_headers(error: GatewayError) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if not error.transient:
        headers["x-should-retry"] = "false"  # SDKs otherwise re-send every 5xx twice
    if error.retry_after_s:
        headers["retry-after"] = str(max(1, math.ceil(error.retry_after_s)))
    if error.attempts:
        headers["x-mana-llm-attempts"] = str(len(error.attempts))
    return headers
