"""The GatewayError tree: each class declares its HTTP status, OpenAI error type and code,
its metrics label (`error_type`), whether a fallback chain may continue after it (retryable),
whether it counts against the provider, and whether resending could help (transient).

GatewayError (500 internal_error)
├── InvalidRequest        400 the caller's request is malformed; `param` names the field
├── Unauthorized          401 no or a wrong gateway key
├── NotFound              404 no such route or model
│   └── ModelNotFound         an unknown alias or model
├── MethodNotAllowed      405
├── RequestTimeout        408 the client was too slow: its body, or reading a stream
├── PayloadTooLarge       413
├── ProviderNotConfigured 503 the provider has no key here (a chain skips it)
├── AllProvidersFailed    503 every chain entry failed or was skipped; `attempts` lists them
├── ServerShuttingDown    503 the drain deadline cut the request (a stream: its final event)
├── InternalError         500 a bug
└── ProviderError         502 talking to an upstream failed (retryable, counts)
    ├── UpstreamUnavailable   refused, reset, 5xx, in-band error, empty answer
    │   ├── UpstreamBroken    a 5xx that resending will not mend (501, 505-511)
    │   └── CircuitOpen       503 skipped without contact: the circuit is open
    ├── UpstreamTimeout       504 no answer within a deadline (ours, 408, 504, 524)
    │   └── FirstTokenTimeout     a buffered stream's first content did not come in time
    ├── UpstreamRateLimited   429 (+ Retry-After)
    ├── UpstreamAuthFailed    502 the provider refused our key or has no credits
    ├── UpstreamProtocolError 502 an answer that is not the provider's wire format
    ├── ModelScopedError      the provider is fine, this model cannot (never counts)
    │   ├── UpstreamModelNotFound 404
    │   ├── UnsupportedCapability 400 images, tools, thinking the model cannot take
    │   └── ContextLengthExceeded 400
    └── UpstreamBadRequest    400/413/422 the caller's request, refused upstream (final)
        └── ContentPolicy         a refusal on policy grounds (never shopped around)

No framework imports: providers raise these, the gateway walks on them, the api renders them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Self

import attrs


@attrs.frozen
class AttemptRecord:
    """What one chain entry did: the `provider/model` it named and why it did not answer."""

    model: str
    reason: str
    kind: str = ""  # a short label: the error class, `cache-unhealthy` or `unconfigured`
    retry: str | None = None  # tried again: the same entry (`sent`), another of its deployments
    #                            (`deployment`), or the budget said no (`budget_exhausted`)
    after_content: bool = False  # a buffered stream that broke after its first content
    deployment: str | None = None  # which of the provider's deployments failed


class GatewayError(Exception):
    error_type: ClassVar[str] = "internal"  # the metrics label
    status: int = 500  # a class default; an instance may carry the upstream's own 4xx
    type: ClassVar[str] = "api_error"
    default_code: ClassVar[str | None] = None
    # May the walk go on to the next entry of a chain after this failure?
    retryable: ClassVar[bool] = False
    # Does this failure say something about the provider's health (key, reachability, load)?
    counts_against_provider: ClassVar[bool] = False
    # Would resending the same request to the gateway soon plausibly succeed? (x-should-retry)
    transient: ClassVar[bool] = False
    # May the same chain entry be tried again at once (a transient failure before content)?
    retry_same_target: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        provider: str | None = None,
        retry_after_s: float | None = None,
        attempts: Sequence[AttemptRecord] = (),
        status: int | None = None,
        contacted: bool = True,
        cache: str | None = None,
        retried: bool = False,
        after_content: bool = False,
    ) -> None:
        super().__init__(message)
        # False: refused before any upstream contact (a translation the provider cannot
        # express), so it says nothing about the provider's health either way
        self.contacted = contacted
        if status is not None:
            self.status = status
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.provider = provider
        self.retry_after_s = retry_after_s
        self.attempts = tuple(attempts)
        self.cache = cache  # what the response cache's lookup did, if it ran
        self.retried = retried  # the gateway already retried: callers should not multiply it
        self.after_content = after_content  # a buffered stream failed after its first content

    def evolve(self, **changes: Any) -> Self:
        """This error again, built whole with some fields changed (an error is never changed
        after it was raised): the walk gives it its attempts, the gateway what the cache did.
        Raise it `from` the original."""
        fields: dict[str, Any] = {
            "param": self.param,
            "code": self.code,
            "provider": self.provider,
            "retry_after_s": self.retry_after_s,
            "attempts": self.attempts,
            "status": self.status,
            "contacted": self.contacted,
            "cache": self.cache,
            "retried": self.retried,
            "after_content": self.after_content,
        }
        return type(self)(changes.pop("message", self.message), **(fields | changes))

    label: ClassVar[str | None] = None  # the attempt kind when not the class name

    @property
    def reason(self) -> str:
        """A short, secret-free label for attempt lists and logs."""
        return f"{type(self).__name__}: {self.message}"

    @property
    def kind(self) -> str:
        return self.label or type(self).__name__


# --- the caller's own faults -------------------------------------------------------------


class InvalidRequest(GatewayError):
    error_type = "invalid_request"
    status = 400
    type = "invalid_request_error"
    default_code = "invalid_request"


class Unauthorized(GatewayError):
    error_type = "unauthorized"
    status = 401
    type = "authentication_error"
    default_code = "invalid_api_key"


class NotFound(GatewayError):
    error_type = "not_found"
    status = 404
    type = "invalid_request_error"
    default_code = "not_found"


class ModelNotFound(NotFound):
    default_code = "model_not_found"


class MethodNotAllowed(GatewayError):
    error_type = "invalid_request"
    status = 405
    type = "invalid_request_error"
    default_code = "method_not_allowed"


class RequestTimeout(GatewayError):
    """The client was too slow: its request body did not arrive in time, or it read nothing
    of a stream for the idle timeout."""

    error_type = "invalid_request"

    status = 408
    type = "invalid_request_error"
    default_code = "request_timeout"


class PayloadTooLarge(GatewayError):
    error_type = "payload_too_large"
    status = 413
    type = "invalid_request_error"
    default_code = "payload_too_large"


# --- the gateway's own state -----------------------------------------------------------


class ProviderNotConfigured(GatewayError):
    """The named provider has no API key on this gateway; another chain entry may serve."""

    error_type = "provider_not_configured"

    label = "unconfigured"
    status = 503
    type = "server_error"
    default_code = "provider_not_configured"
    retryable = True


class AllProvidersFailed(GatewayError):
    error_type = "all_providers_failed"
    status = 503
    type = "server_error"
    default_code = "all_providers_failed"


class ServerShuttingDown(GatewayError):
    """The drain deadline (GRACEFUL_TIMEOUT) cut this request: the gateway's own doing, not
    the client's, not the upstream's. Resending to a gateway that is up will work."""

    error_type = "server_shutting_down"
    status = 503
    type = "server_error"
    default_code = "server_shutting_down"
    transient = True


class InternalError(GatewayError):
    status = 500
    type = "server_error"
    default_code = "internal_error"


# --- upstream failures -----------------------------------------------------------------


class ProviderError(GatewayError):
    """A failure reported by, or in talking to, an upstream provider."""

    error_type = "upstream_error"

    status = 502
    type = "api_error"
    default_code = "upstream_error"
    retryable = True
    counts_against_provider = True
    transient = True


class UpstreamUnavailable(ProviderError):
    """Connection refused or reset, 5xx, an in-band error before content, an empty answer."""

    retry_same_target = True


class UpstreamBroken(UpstreamUnavailable):
    """A 5xx that resending will not mend (501 Not Implemented, 505-511): the next entry of a
    chain may serve, the same one will not, so it is never retried on the same entry."""

    retry_same_target = False
    transient = False


class CircuitOpen(UpstreamUnavailable):
    """Skipped: the provider's circuit is open after recent failures. Refused at once, without
    contact; resending before `retry_after_s` cannot help, so SDKs are told not to."""

    label = "cache-unhealthy"
    retry_same_target = False
    status = 503
    type = "server_error"
    default_code = "provider_unavailable"
    transient = False


class UpstreamTimeout(ProviderError):
    error_type = "upstream_timeout"
    retry_same_target = True  # the upstream's 408/504 or a connect timeout; never our deadline
    status = 504
    default_code = "upstream_timeout"


class FirstTokenTimeout(UpstreamTimeout):
    """Our first-token deadline passed while a buffered stream waited for its first content:
    the entry is over, as when a live stream's first token does not come (never retried)."""

    label = "UpstreamTimeout"
    retry_same_target = False


class UpstreamRateLimited(ProviderError):
    error_type = "upstream_rate_limited"
    retry_same_target = True  # after its Retry-After, when that is short
    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class UpstreamAuthFailed(ProviderError):
    """The provider refused the gateway's own key or has no credits left (401/402/403)."""

    default_code = "upstream_auth_failed"
    transient = False


class UpstreamProtocolError(ProviderError):
    """The upstream answered with something that is not its documented wire format."""

    default_code = "upstream_protocol_error"


class ModelScopedError(ProviderError):
    """The provider is fine but this model cannot serve this request; a later entry may."""

    error_type = "invalid_request"

    counts_against_provider = False
    transient = False


class UpstreamModelNotFound(ModelScopedError):
    error_type = "not_found"
    status = 404
    type = "invalid_request_error"
    default_code = "model_not_found"


class UnsupportedCapability(ModelScopedError):
    status = 400
    type = "invalid_request_error"
    default_code = "unsupported_capability"


class ContextLengthExceeded(ModelScopedError):
    status = 400
    type = "invalid_request_error"
    default_code = "context_length_exceeded"


class UpstreamBadRequest(ProviderError):
    """The caller's request was refused by the upstream (400/413/422): not worth shopping around."""

    error_type = "invalid_request"

    status = 400
    type = "invalid_request_error"
    default_code = "invalid_request"
    retryable = False
    counts_against_provider = False
    transient = False


class ContentPolicy(UpstreamBadRequest):
    default_code = "content_policy_violation"


def is_caller_fixable(error: GatewayError) -> bool:
    """Failures the caller can fix by changing the request (reported with their 4xx status)."""
    return isinstance(error, ContextLengthExceeded | UnsupportedCapability | UpstreamBadRequest)
