"""The answers that refuse a caller, in OpenAI's shapes (as its API sends them, e.g.
`{"error": {"message": "Rate limit reached for gpt-3.5-turbo in organization ... on requests
per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s. ...", "type":
"requests", "param": null, "code": "rate_limit_exceeded"}}` and `{"error": {"message": "You
exceeded your current quota, please check your plan and billing details. ...", "type":
"insufficient_quota", "param": null, "code": "insufficient_quota"}}`, seen in
openai/openai-python and many issue threads). The `openai` SDK retries a 429 unless the answer
says `x-should-retry: false`: a spent budget says so, a rate limit does not (with
`Retry-After`, the SDK waits that long)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from mana_llm.errors import GatewayError


class CallerRefused(GatewayError):
    """Refused before any upstream is asked; `headers` go on the answer (x-ratelimit-*)."""

    def __init__(
        self,
        message: str,
        *,
        limit: str = "",
        headers: Mapping[str, str] | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(message, contacted=False, **fields)
        self.limit = limit  # rpm | tpm | max_parallel | budget | model (a metrics label)
        self.headers = dict(headers or {})


class RateLimited(CallerRefused):
    """429: rpm, tpm or max_parallel; `Retry-After` says when (a request larger than the
    caller's tpm alone is never admitted: not transient)."""

    error_type: ClassVar[str] = "rate_limit_exceeded"
    status = 429
    type: ClassVar[str] = "requests"
    default_code: ClassVar[str | None] = "rate_limit_exceeded"
    transient: ClassVar[bool] = True


class RequestTooLarge(RateLimited):
    type: ClassVar[str] = "tokens"
    transient: ClassVar[bool] = False


class QuotaExceeded(CallerRefused):
    """429 insufficient_quota: the caller's budget for this period is spent."""

    error_type: ClassVar[str] = "insufficient_quota"
    status = 429
    type: ClassVar[str] = "insufficient_quota"
    default_code: ClassVar[str | None] = "insufficient_quota"
    transient: ClassVar[bool] = False


class ModelNotAllowed(CallerRefused):
    """403: the model is not on the caller's allow-list."""

    error_type: ClassVar[str] = "model_not_allowed"
    status = 403
    type: ClassVar[str] = "invalid_request_error"
    default_code: ClassVar[str | None] = "model_not_allowed"


class OperatorOnly(CallerRefused):
    """403: an operators' endpoint asked by a caller that is not one."""

    error_type: ClassVar[str] = "forbidden"
    status = 403
    type: ClassVar[str] = "permission_error"
    default_code: ClassVar[str | None] = "operator_only"


class LimitsUnavailable(GatewayError):
    """503: the limits store is unreachable and LIMITS_ON_STORE_FAILURE=deny."""

    error_type: ClassVar[str] = "limits_unavailable"
    status = 503
    type: ClassVar[str] = "api_error"
    default_code: ClassVar[str | None] = "limits_unavailable"
    transient: ClassVar[bool] = True
