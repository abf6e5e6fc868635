"""Upstream status -> taxonomy: status, type, code, and whether a chain may continue."""

from __future__ import annotations

import httpx
import pytest

from mana_llm import errors
from mana_llm.providers.http_errors import Redactor, error_from_exception, error_from_status

SECRET = "sk-very-secret"


def classify(status: int, body: object, **headers: str) -> errors.ProviderError:
    raw = body if isinstance(body, bytes) else __import__("json").dumps(body).encode()
    return error_from_status("p", status, raw, headers, Redactor(SECRET))


@pytest.mark.parametrize(
    ("status", "body", "kind", "http", "retryable", "counts"),
    [
        (
            400,
            {"error": {"message": "bad", "type": "invalid_request_error"}},
            errors.UpstreamBadRequest,
            400,
            False,
            False,
        ),
        (
            400,
            {"error": {"message": "x", "code": "context_length_exceeded"}},
            errors.ContextLengthExceeded,
            400,
            True,
            False,
        ),
        (
            400,
            {"error": {"message": "x", "code": "model_decommissioned"}},
            errors.UpstreamModelNotFound,
            404,
            True,
            False,
        ),
        (401, {"error": {"message": "bad key"}}, errors.UpstreamAuthFailed, 502, True, True),
        (
            402,
            {"error": {"code": 402, "message": "no credits"}},
            errors.UpstreamAuthFailed,
            502,
            True,
            True,
        ),
        (
            403,
            {"error": {"code": 403, "message": "flagged", "metadata": {"reasons": ["x"]}}},
            errors.ContentPolicy,
            400,
            False,
            False,
        ),
        (404, {"error": "model 'x' not found"}, errors.UpstreamModelNotFound, 404, True, False),
        (408, {"error": {"message": "timeout"}}, errors.UpstreamTimeout, 504, True, True),
        (413, {"error": {"message": "too big"}}, errors.UpstreamBadRequest, 413, False, False),
        (422, {"error": {"message": "semantic"}}, errors.UpstreamBadRequest, 422, False, False),
        (429, {"error": {"message": "slow"}}, errors.UpstreamRateLimited, 429, True, True),
        (498, {"error": {"message": "flex capacity"}}, errors.UpstreamRateLimited, 429, True, True),
        (500, {"error": "boom"}, errors.UpstreamUnavailable, 502, True, True),
        (503, b"server busy", errors.UpstreamUnavailable, 502, True, True),
        (524, b"<html>", errors.UpstreamTimeout, 504, True, True),
        (529, {"error": {"message": "overloaded"}}, errors.UpstreamUnavailable, 502, True, True),
    ],
)
def test_status_classification(
    status: int,
    body: object,
    kind: type[errors.ProviderError],
    http: int,
    retryable: bool,
    counts: bool,
) -> None:
    error = classify(status, body)
    assert type(error) is kind
    assert error.status == http
    assert error.retryable is retryable
    assert error.counts_against_provider is counts
    assert error.provider == "p"


def test_retry_after_is_kept_and_secrets_redacted() -> None:
    error = classify(
        429, {"error": {"message": f"key {SECRET} is limited"}}, **{"retry-after": "12"}
    )
    assert error.retry_after_s == 12
    assert SECRET not in error.message and "***" in error.message
    assert classify(429, b"", **{"retry-after-ms": "1500"}).retry_after_s == 1.5


def test_exceptions_by_type() -> None:
    request = httpx.Request("POST", "http://x")
    assert isinstance(
        error_from_exception("p", httpx.ConnectError("no", request=request)),
        errors.UpstreamUnavailable,
    )
    assert isinstance(
        error_from_exception("p", httpx.ReadTimeout("slow", request=request)),
        errors.UpstreamTimeout,
    )
    assert isinstance(
        error_from_exception("p", httpx.RemoteProtocolError("cut", request=request)),
        errors.UpstreamUnavailable,
    )
