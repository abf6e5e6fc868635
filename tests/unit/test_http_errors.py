"""Upstream status -> taxonomy: status, type, code, and whether a chain may continue."""

from __future__ import annotations

import http.server

import httpx
import pytest

from mana_llm import errors
from mana_llm.providers.http_errors import (
    Redactor,
    error_from_exception,
    error_from_status,
    retry_after_s,
)

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


def openrouter(code: int, message: str, **extra: object) -> dict[str, object]:
    return {"error": {"code": code, "message": message, **extra}, "user_id": "u1"}


def openai_like(
    message: str, code: str | None = None, type_: str = "invalid_request_error"
) -> dict[str, object]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


# provider, status, body, (HTTP status to the caller, type, code, may the chain continue)
PROVIDER_TABLE = [
    (
        "openrouter",
        400,
        openrouter(400, "meta-llama/x is not a valid model ID"),
        (400, "invalid_request_error", "invalid_request", False),
    ),
    (
        "openrouter",
        400,
        openrouter(400, "This endpoint's maximum context length is 8192 tokens"),
        (400, "invalid_request_error", "context_length_exceeded", True),
    ),
    (
        "openrouter",
        401,
        openrouter(401, "No auth credentials found"),
        (502, "api_error", "upstream_auth_failed", True),
    ),
    (
        "openrouter",
        402,
        openrouter(402, "Insufficient credits", metadata={"limit_source": "key"}),
        (502, "api_error", "upstream_auth_failed", True),
    ),
    (
        "openrouter",
        403,
        openrouter(403, "flagged", metadata={"reasons": ["violence"], "flagged_input": "x"}),
        (400, "invalid_request_error", "content_policy_violation", False),
    ),
    (
        "openrouter",
        408,
        openrouter(408, "Request timed out"),
        (504, "api_error", "upstream_timeout", True),
    ),
    (
        "openrouter",
        429,
        openrouter(429, "Rate limited"),
        (429, "rate_limit_error", "rate_limit_exceeded", True),
    ),
    (
        "openrouter",
        502,
        openrouter(502, "Provider returned error", metadata={"provider_name": "x", "raw": "boom"}),
        (502, "api_error", "upstream_error", True),
    ),
    (
        "openrouter",
        503,
        openrouter(503, "No available provider"),
        (502, "api_error", "upstream_error", True),
    ),
    (
        "groq",
        400,
        openai_like(
            "Please reduce the length of the messages or completion.", "context_length_exceeded"
        ),
        (400, "invalid_request_error", "context_length_exceeded", True),
    ),
    (
        "groq",
        400,
        openai_like("The model `x` has been decommissioned", "model_decommissioned"),
        (404, "invalid_request_error", "model_not_found", True),
    ),
    (
        "groq",
        400,
        openai_like("property 'store' is unsupported"),
        (400, "invalid_request_error", "invalid_request", False),
    ),
    (
        "groq",
        401,
        openai_like("Invalid API Key", "invalid_api_key"),
        (502, "api_error", "upstream_auth_failed", True),
    ),
    (
        "groq",
        403,
        openai_like("Organization restricted"),
        (502, "api_error", "upstream_auth_failed", True),
    ),
    (
        "groq",
        404,
        openai_like(
            "The model `x` does not exist or you do not have access to it.", "model_not_found"
        ),
        (404, "invalid_request_error", "model_not_found", True),
    ),
    (
        "groq",
        413,
        openai_like("Request Entity Too Large"),
        (413, "invalid_request_error", "invalid_request", False),
    ),
    (
        "groq",
        422,
        openai_like("Unprocessable"),
        (422, "invalid_request_error", "invalid_request", False),
    ),
    (
        "groq",
        429,
        openai_like("Rate limit reached for model: TPM", "rate_limit_exceeded"),
        (429, "rate_limit_error", "rate_limit_exceeded", True),
    ),
    (
        "groq",
        498,
        openai_like("Flex Tier Capacity Exceeded"),
        (429, "rate_limit_error", "rate_limit_exceeded", True),
    ),
    (
        "groq",
        500,
        openai_like("Internal Server Error", type_="server_error"),
        (502, "api_error", "upstream_error", True),
    ),
    (
        "groq",
        503,
        openai_like("Service Unavailable", type_="server_error"),
        (502, "api_error", "upstream_error", True),
    ),
    (
        "together",
        400,
        {"id": "x", **openai_like("model not available", "model_not_available")},
        (404, "invalid_request_error", "model_not_found", True),
    ),
    (
        "together",
        401,
        {"id": "x", **openai_like("Invalid API key")},
        (502, "api_error", "upstream_auth_failed", True),
    ),
    (
        "together",
        402,
        {"id": "x", **openai_like("Monthly spend limit reached")},
        (502, "api_error", "upstream_auth_failed", True),
    ),
    (
        "together",
        403,
        {
            "id": "x",
            **openai_like(
                "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 8193. Given: 9000; the input token count + max_tokens must be less than the context length"
            ),
        },
        (400, "invalid_request_error", "context_length_exceeded", True),
    ),
    (
        "together",
        404,
        {"id": "x", **openai_like("Unable to access model x")},
        (404, "invalid_request_error", "model_not_found", True),
    ),
    (
        "together",
        429,
        {"id": "x", **openai_like("rate limit")},
        (429, "rate_limit_error", "rate_limit_exceeded", True),
    ),
    (
        "together",
        500,
        {"id": "x", **openai_like("server error")},
        (502, "api_error", "upstream_error", True),
    ),
    (
        "together",
        503,
        {"id": "x", **openai_like("Engine overloaded")},
        (502, "api_error", "upstream_error", True),
    ),
    ("together", 504, b"gateway timeout", (504, "api_error", "upstream_timeout", True)),
    ("together", 520, b"<html>520</html>", (502, "api_error", "upstream_error", True)),
    ("together", 524, b"<html>524</html>", (504, "api_error", "upstream_timeout", True)),
    (
        "together",
        529,
        {"id": "x", **openai_like("overloaded")},
        (502, "api_error", "upstream_error", True),
    ),
    (
        "ollama",
        400,
        {"error": "registry.ollama.ai/library/gemma:2b does not support tools"},
        (400, "invalid_request_error", "unsupported_capability", True),
    ),
    # Ollama's capability refusals, texts from its source (server/routes.go, server/images.go,
    # model/model.go): model-scoped, whatever the status, never the provider's fault
    (
        "ollama",
        500,
        {"error": "this model is missing data required for image input"},
        (400, "invalid_request_error", "unsupported_capability", True),
    ),
    (
        "ollama",
        400,
        {"error": "this model is missing data required for image input"},
        (400, "invalid_request_error", "unsupported_capability", True),
    ),
    (
        "ollama",
        400,
        {"error": '"llama3.2:1b" does not support thinking'},
        (400, "invalid_request_error", "unsupported_capability", True),
    ),
    (
        "ollama",
        400,
        {"error": '"nomic-embed-text" does not support chat'},
        (400, "invalid_request_error", "unsupported_capability", True),
    ),
    (
        "ollama",
        400,
        {"error": '"nomic-embed-text" does not support generate'},
        (400, "invalid_request_error", "unsupported_capability", True),
    ),
    (
        "ollama",
        400,
        {"error": "registry.ollama.ai/library/gemma3:4b does not support embedding"},
        (400, "invalid_request_error", "unsupported_capability", True),
    ),
    (
        "ollama",
        400,
        {"error": "the input length exceeds the context length"},
        (400, "invalid_request_error", "context_length_exceeded", True),
    ),
    (
        "ollama",
        400,
        {"error": "invalid think value"},
        (400, "invalid_request_error", "invalid_request", False),
    ),
    (
        "ollama",
        404,
        {"error": "model 'x' not found, try pulling it first"},
        (404, "invalid_request_error", "model_not_found", True),
    ),
    (
        "ollama",
        500,
        {"error": "llama runner process has terminated"},
        (502, "api_error", "upstream_error", True),
    ),
    (
        "ollama",
        503,
        {"error": "server busy, please try again.  maximum pending requests exceeded"},
        (502, "api_error", "upstream_error", True),
    ),
]


@pytest.mark.parametrize(("provider", "status", "body", "expected"), PROVIDER_TABLE)
def test_every_documented_status_of_every_provider(
    provider: str, status: int, body: object, expected: tuple[int, str, str, bool]
) -> None:
    raw = body if isinstance(body, bytes) else __import__("json").dumps(body).encode()
    error = error_from_status(provider, status, raw, {}, Redactor(None))
    assert (error.status, error.type, error.code, error.retryable) == expected
    assert error.message.startswith(f"{provider} answered {status}")


def test_a_capability_error_names_the_model_and_never_counts_against_the_provider() -> None:
    body = b'{"error": "this model is missing data required for image input"}'
    error = error_from_status("ollama", 500, body, {}, Redactor(None), "ollama/gemma3:1b")
    assert isinstance(error, errors.UnsupportedCapability)
    assert error.message == (
        "ollama answered 500: this model is missing data required for image input"
        " (model ollama/gemma3:1b)"
    )
    assert not error.counts_against_provider and error.retryable


def test_a_plain_500_still_counts_against_the_provider() -> None:
    body = b'{"error": "model runner has unexpectedly stopped"}'
    error = error_from_status("ollama", 500, body, {}, Redactor(None), "ollama/gemma3:1b")
    assert isinstance(error, errors.UpstreamUnavailable) and error.counts_against_provider


def test_connection_errors_name_the_url_and_its_variable() -> None:
    error = error_from_exception(
        "ollama", httpx.ConnectError("refused"), "OLLAMA_URL=http://localhost:11434"
    )
    assert error.message == (
        "ollama is unreachable (connect failed; check OLLAMA_URL=http://localhost:11434)"
    )


def test_every_error_class_has_a_metrics_label_exported_from_start_up() -> None:
    from mana_llm.metrics import ERROR_TYPES

    def subclasses(cls: type[errors.GatewayError]) -> list[type[errors.GatewayError]]:
        return [cls, *(s for sub in cls.__subclasses__() for s in subclasses(sub))]

    found = {cls.__name__: cls.error_type for cls in subclasses(errors.GatewayError)}
    assert set(found.values()) <= set(ERROR_TYPES)
    assert found["RequestTimeout"] == "invalid_request"
    assert found["UpstreamModelNotFound"] == "not_found"
    assert found["ContentPolicy"] == "invalid_request"
    assert found["CircuitOpen"] == "upstream_error"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # the precise one wins
        ({"retry-after": "Wed, 26 Nov 2026 10:00:07 GMT"}, 7.0),  # an HTTP date, from now
        ({"retry-after": "Wed, 26 Nov 2026 09:59:00 GMT"}, 0.0),  # in the past: at once
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-3"}, None),
        ({}, None),
    ],
)
def test_retry_after_in_every_form(headers: dict[str, str], expected: float | None) -> None:
    now = 1_795_687_200.0  # 2026-11-26 10:00:00 UTC
    assert retry_after_s(headers, now) == expected
    error = error_from_status("p", 429, b"{}", headers, Redactor(None), now=now)
    assert error.retry_after_s == expected


def test_a_503_keeps_its_retry_after_and_a_500_has_none() -> None:
    headers = {"retry-after": "3"}
    assert error_from_status("p", 503, b"{}", headers, Redactor(None)).retry_after_s == 3.0
    assert error_from_status("p", 500, b"{}", headers, Redactor(None)).retry_after_s is None


# Python's http.server answers every method it lacks with this page (Lib/http/server.py,
# BaseHTTPRequestHandler.error_message_format): what an OLLAMA_URL pointed at the wrong
# server sends back.
HTTP_SERVER_PAGE = http.server.BaseHTTPRequestHandler.error_message_format % {
    "code": 501,
    "message": "Unsupported method ('POST')",
    "explain": "Server does not support this operation",
}


def test_a_body_that_is_not_json_is_one_short_line() -> None:
    error = classify(501, HTTP_SERVER_PAGE.encode())
    assert error.message == (
        "p answered 501: Error response Error code: 501 Message: Unsupported method ('POST')."
        " Error code explanation: 501 - Server does not support this operation."
    )
    long_page = b"<html><body><p>" + b"word " * 200 + b"</p><script>x()</script></body></html>"
    message = classify(500, long_page).message
    assert "<" not in message and "\n" not in message and "x()" not in message
    assert len(message) == len("p answered 500: ") + 200 and message.endswith("word…")
    assert classify(502, b"").message == "p answered 502: (an empty body)"
    assert classify(503, b"  server\n\n busy ").message == "p answered 503: server busy"


@pytest.mark.parametrize("status", [501, 505, 507, 511])
def test_a_5xx_that_resending_will_not_mend_is_never_retried_on_the_same_entry(
    status: int,
) -> None:
    error = classify(status, {"error": {"message": "not implemented"}})
    assert type(error) is errors.UpstreamBroken
    assert error.retryable and not error.retry_same_target  # the next entry may serve
    assert error.counts_against_provider and not error.transient
    for transient in (500, 502, 503, 504, 529):
        assert classify(transient, {"error": "x"}).retry_same_target
