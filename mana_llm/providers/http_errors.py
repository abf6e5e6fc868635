"""The httpx boundary: upstream HTTP statuses, error bodies and httpx exceptions become
ProviderError subclasses here, once, by status code, structured error code and exception type.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from mana_llm import codec, errors

MAX_ERROR_BODY_BYTES = 64 * 1024
MAX_MESSAGE_CHARS = 500
MAX_TEXT_BODY_CHARS = 200  # a body that is not JSON (an HTML error page): one short line
# 5xx that resending will not mend; the rest (500, 502, 503, 504, 529, 520-523) are transient
_FINAL_5XX = frozenset({501, 505, 506, 507, 508, 510, 511})
_MARKUP = re.compile(r"<(head|script|style)\b.*?</\1\s*>|<!--.*?-->|<[^>]*>", re.I | re.S)
_SPACE = re.compile(r"\s+")

_MODEL_CODES = frozenset({"model_not_found", "model_decommissioned", "model_not_available"})
_CONTEXT_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
_POLICY_CODES = frozenset({"content_filter", "content_policy_violation", "moderation_blocked"})

# Some upstreams say these only in text: Together's 403 and OpenRouter's
# 400 for context length, Ollama's embed "input length exceeds the context length". Read only
# on 4xx bodies without a decisive code.
_CONTEXT_TEXT = re.compile(
    r"context[ _-]?(length|window)|maximum context|too many tokens|reduce the length", re.I
)
_TEXT_STATUSES = frozenset({400, 403, 413, 422})
# A model that cannot do what the request asks. Ollama's own texts (server/routes.go,
# server/images.go, model/model.go): 400 `"gemma3:4b" does not support thinking|chat|generate`,
# 400 `registry.ollama.ai/library/gemma3:4b does not support tools|vision|embedding|insert`
# (CheckCapabilities), and `this model is missing data required for image input`
# (ErrNoVisionModel), which reaches the client as a 500 (or a 400). Model-scoped: read on 4xx
# and on 500, never counted against the provider.
_CAPABILITY_TEXT = re.compile(
    r"does not support (tools|vision|images?|audio|thinking|chat|generate|completion|insert"
    r"|embeddings?)\b|missing data required for image input",
    re.I,
)
_CAPABILITY_STATUSES = frozenset({400, 403, 422, 500})


class Redactor:
    """Removes a provider's secret from any text that may reach a caller or a log: the key
    itself in any case, and any token that shows its distinctive head or tail, as upstreams
    echo keys masked (`Incorrect API key provided: sk-proj-abc1****************wxyz`)."""

    HEAD = 8  # a key's first characters that identify it (past the `sk-` style prefix)
    TAIL = 4

    def __init__(self, secret: str | None) -> None:
        self._pattern: re.Pattern[str] | None = None
        if secret:
            parts = [re.escape(secret)]
            if len(secret) >= 16:  # short keys have no distinctive head or tail
                head, tail = re.escape(secret[: self.HEAD]), re.escape(secret[-self.TAIL :])
                parts += [rf"\S*{head}\S*", rf"\S*[*.…x]{{3,}}\S*{tail}\b"]
            self._pattern = re.compile("|".join(parts), re.IGNORECASE)

    def __call__(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub("***", text)
        return text[:MAX_MESSAGE_CHARS]


def parse_error_body(body: bytes | Mapping[str, Any]) -> tuple[str, str | None, Mapping[str, Any]]:
    """(message, code, the error object) from an OpenAI-, OpenRouter- or Ollama-style body."""
    data: Any = body
    if isinstance(body, bytes):
        try:
            data = codec.loads(body)
        except ValueError:
            return one_line(body.decode("utf-8", "replace")), None, {}
    if not isinstance(data, Mapping):
        return str(data), None, {}
    err = data.get("error", data)
    if isinstance(err, str):  # Ollama: {"error": "..."}
        return err, None, {}
    if not isinstance(err, Mapping):
        return codec.dumps(data).decode()[:MAX_MESSAGE_CHARS], None, {}
    message = err.get("message") or err.get("detail") or codec.dumps(err).decode()
    code = err.get("code")
    # OpenRouter sends the HTTP status as a numeric code; only string codes carry meaning.
    return str(message), code if isinstance(code, str) else None, err


def one_line(text: str) -> str:
    """A body that is not JSON, as one short line: markup stripped, entities decoded, white
    space folded, at most MAX_TEXT_BODY_CHARS (an HTML error page says what it says in its
    first words)."""
    text = _SPACE.sub(" ", html.unescape(_MARKUP.sub(" ", text))).strip()
    if len(text) > MAX_TEXT_BODY_CHARS:
        text = text[: MAX_TEXT_BODY_CHARS - 1].rstrip() + "…"
    return text or "(an empty body)"


def retry_after_s(headers: Mapping[str, str], now: float) -> float | None:
    """The wait an upstream asks for: `retry-after-ms`, or `Retry-After` as seconds or as an
    HTTP date (against `now`, wall-clock seconds)."""
    raw = headers.get("retry-after-ms")
    if raw is not None:
        try:
            value = float(raw) / 1000.0
        except ValueError:
            return None
        return value if value >= 0 else None
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            value = parsedate_to_datetime(raw).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        return max(0.0, value)
    return value if value >= 0 else None


def error_from_status(
    provider: str,
    status: int,
    body: bytes | Mapping[str, Any],
    headers: Mapping[str, str],
    redact: Redactor,
    target: str | None = None,
    now: float = 0.0,
) -> errors.ProviderError:
    """Classify an upstream error response (docs/ARCHITECTURE.md section 5). `target`: the
    `provider/model` the request named, which a model-scoped error names; `now`, wall-clock
    seconds, reads a Retry-After given as a date."""
    message, code, err = parse_error_body(body)
    text = redact(f"{provider} answered {status}: {message}")
    kind = _classify(status, code, err)
    vague = kind in (errors.UpstreamBadRequest, errors.UpstreamAuthFailed)
    if vague and status in _TEXT_STATUSES and _CONTEXT_TEXT.search(message):
        kind = errors.ContextLengthExceeded
    elif (
        (vague or kind is errors.UpstreamUnavailable)
        and status in _CAPABILITY_STATUSES
        and _CAPABILITY_TEXT.search(message)
    ):
        kind = errors.UnsupportedCapability
        if target is not None:
            text = redact(f"{provider} answered {status}: {message} (model {target})")
    says_when = kind is errors.UpstreamRateLimited or status == 503
    retry_after = retry_after_s(headers, now) if says_when else None
    keep_status = status if kind is errors.UpstreamBadRequest and status in (413, 422) else None
    return kind(text, provider=provider, retry_after_s=retry_after, status=keep_status)


def _classify(status: int, code: str | None, err: Mapping[str, Any]) -> type[errors.ProviderError]:
    if code in _CONTEXT_CODES:
        return errors.ContextLengthExceeded
    if code in _MODEL_CODES or status == 404:
        return errors.UpstreamModelNotFound
    if code in _POLICY_CODES:
        return errors.ContentPolicy
    if status in (429, 498):
        return errors.UpstreamRateLimited
    if status in (408, 504, 524):
        return errors.UpstreamTimeout
    if status == 403 and isinstance(err.get("metadata"), Mapping) and "reasons" in err["metadata"]:
        return errors.ContentPolicy  # OpenRouter's moderation flag
    if status in (401, 402, 403):
        return errors.UpstreamAuthFailed
    if status in _FINAL_5XX:
        return errors.UpstreamBroken
    if status >= 500 or status == 499:
        return errors.UpstreamUnavailable
    if 400 <= status < 500:
        return errors.UpstreamBadRequest
    return errors.UpstreamProtocolError  # 1xx/3xx where a final answer was due


def error_from_exception(
    provider: str, exc: httpx.HTTPError, where: str = ""
) -> errors.ProviderError:
    """Classify an httpx exception by its type; the message never carries request headers.
    `where` (`OLLAMA_URL=http://localhost:11434`) tells the operator what to check."""
    check = f"; check {where}" if where else ""
    if isinstance(exc, httpx.TimeoutException):
        return errors.UpstreamTimeout(
            f"{provider} timed out ({type(exc).__name__}{check})", provider=provider
        )
    if isinstance(exc, httpx.DecodingError):
        return errors.UpstreamProtocolError(
            f"{provider} sent an undecodable body", provider=provider
        )
    if isinstance(exc, httpx.ConnectError):
        return errors.UpstreamUnavailable(
            f"{provider} is unreachable (connect failed{check})", provider=provider
        )
    if isinstance(exc, httpx.RemoteProtocolError):
        return errors.UpstreamUnavailable(
            f"{provider} closed the connection mid-response", provider=provider
        )
    return errors.UpstreamUnavailable(
        f"{provider} connection failed ({type(exc).__name__}{check})", provider=provider
    )


async def read_bounded(response: httpx.Response, limit: int = MAX_ERROR_BODY_BYTES) -> bytes:
    """Read at most `limit` bytes of a streamed response (an error's body, a probe's)."""
    parts: list[bytes] = []
    size = 0
    async for part in response.aiter_bytes():
        parts.append(part)
        size += len(part)
        if size >= limit:
            break
    return b"".join(parts)[:limit]
