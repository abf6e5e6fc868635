"""Frozen value objects that cross the layers.

Requests are parsed once at the edge into typed fields (which the Ollama translator reads) and
keep the caller's JSON object as `body` so OpenAI-compatible upstreams receive every field,
including ones this gateway does not know yet. Responses and stream chunks carry the
OpenAI-shaped `payload` the caller will receive (built by the provider that answered, with
`model` already set to the resolved `provider/model`) plus the facts the gateway acts on:
whether a chunk commits a stream, the finish reason, the usage.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, Literal, Protocol, TypeVar

import attrs

from mana_llm.errors import AttemptRecord

JSON = dict[str, Any]
# the reason a request's work is cancelled with when its client goes away (trio's
# `Cancelled.reason`: the traces tell a client gone from a deadline or a lost race by it)
CLIENT_GONE = "client disconnected"
T = TypeVar("T")
U = TypeVar("U")


@attrs.frozen
class Target:
    """One concrete `provider/model` a request can be sent to."""

    provider: str
    model: str
    resolved: str = attrs.field(init=False)

    @resolved.default
    def _resolved(self) -> str:
        return f"{self.provider}/{self.model}"


@attrs.frozen
class ToolCall:
    id: str
    name: str
    arguments: str  # the JSON text, as OpenAI sends it


@attrs.frozen
class Image:
    """One image part: inline base64 data (no `data:` prefix), or an http(s) URL to fetch."""

    where: str  # the request field it came from, for errors: messages[0].content[1]
    data: str | None = None
    url: str | None = None


@attrs.frozen
class Message:
    role: str  # system | developer | user | assistant | tool | function
    content: str | None
    name: str | None = None
    images: tuple[Image, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    reasoning: str | None = None
    unsupported: tuple[str, ...] = ()  # parts Ollama cannot take (audio, files), by field


@attrs.frozen
class CacheControl:
    """The caller's say over the response cache, read at the edge from its headers."""

    lookup: bool = True  # False: `Cache-Control: no-cache` (or no-store): do not answer from it
    store: bool = True  # False: `Cache-Control: no-store`: do not keep this answer either
    opt_in: bool = False  # `X-Mana-LLM-Cache: on`: a sampled answer may be cached too
    namespace: str = "public"  # the caller's API key, hashed, when gateway keys are in use


@attrs.frozen
class ChatRequest:
    model: str
    messages: tuple[Message, ...]
    stream: bool = False
    include_usage: bool = False
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None  # max_completion_tokens, else max_tokens
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    n: int | None = None
    tools: tuple[Mapping[str, Any], ...] = ()
    tool_choice: str | Mapping[str, Any] | None = None
    response_format: Mapping[str, Any] | None = None
    reasoning_effort: str | None = None
    options: Mapping[str, Any] = attrs.field(factory=dict)  # Ollama options, per request
    keep_alive: str | float | None = None  # Ollama, per request
    body: Mapping[str, Any] = attrs.field(factory=dict, repr=False)


@attrs.frozen
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_json(self) -> JSON:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@attrs.frozen
class ChatResponse:
    payload: JSON = attrs.field(repr=False)  # a full `chat.completion` object
    finish_reason: str
    usage: Usage | None


@attrs.frozen
class StreamChunk:
    payload: JSON = attrs.field(repr=False)  # a full `chat.completion.chunk` object
    commits: bool = False  # carries content, reasoning or a tool call
    finish_reason: str | None = None
    usage: Usage | None = None

    @property
    def usage_only(self) -> bool:
        """The `include_usage` chunk: empty choices, usage set."""
        return self.usage is not None and not self.payload.get("choices")


@attrs.frozen
class EmbeddingRequest:
    model: str
    inputs: tuple[str, ...]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    truncate: bool | None = None  # Ollama: False refuses inputs longer than the context
    tokens: bool = False  # the input is token arrays (clouds only)
    keep_alive: str | float | None = None
    body: Mapping[str, Any] = attrs.field(factory=dict, repr=False)


@attrs.frozen
class EmbeddingResponse:
    payload: JSON = attrs.field(repr=False)  # a full embeddings `list` object
    usage: Usage | None


@attrs.frozen
class ModelInfo:
    id: str  # provider/model, or an alias (mana/<name>)
    created: int
    owned_by: str
    description: str | None = None  # an alias: what it is for...
    chain: tuple[str, ...] | None = None  # ...and the provider/models it walks

    def to_json(self) -> JSON:
        out: JSON = {
            "id": self.id,
            "object": "model",
            "created": self.created,
            "owned_by": self.owned_by,
        }
        if self.chain is not None:  # the OpenAI model object allows extra fields
            out["description"] = self.description
            out["chain"] = list(self.chain)
        return out


@attrs.frozen
class Inventory:
    """What a local model server holds, as its probe read it: the models installed (Ollama's
    /api/tags) and those loaded in memory now (/api/ps). None where it could not be read."""

    installed: frozenset[str] | None = None
    loaded: frozenset[str] | None = None


@attrs.frozen
class Answered(Generic[T]):
    """What the gateway did for a request that got an answer, handed to the api, which turns it
    into headers, metrics and the log line: the answer, the target that gave it, the chain
    entries tried or skipped before it, when the answering attempt began and when it ended (a
    stream: when it committed), and what the response cache did."""

    result: T
    target: Target
    failed: tuple[AttemptRecord, ...]  # the entries tried or skipped before the one that answered
    started_at: float = 0.0  # when the answering attempt began
    ended_at: float | None = None  # a whole answer: when it arrived; a stream: when it committed
    cached: bool = False  # a cache hit: no attempt was made
    cache: str | None = None  # hit | miss | bypass | error; None: the cache is off
    hedge: str | None = None  # won | lost | budget_exhausted; None: no hedge was considered
    deployment: str | None = None  # which of the provider's deployments answered

    @property
    def attempts(self) -> int:
        return 0 if self.cached else len(self.failed) + 1

    def carrying(self, result: U) -> Answered[U]:
        """The same outcome with another result (a stream's winner, given its policy)."""
        return Answered(
            result,
            self.target,
            self.failed,
            self.started_at,
            self.ended_at,
            self.cached,
            self.cache,
            self.hedge,
            self.deployment,
        )


class AnswerStream(Protocol):
    """A committed answer, relayed chunk by chunk (live, or replayed from the cache).
    `receive` returns the next chunks, [] once the answer is complete, and raises GatewayError
    when it fails after commit; `relay` pushes every chunk to `emit` the same way (and raises
    RequestTimeout when `emit` held the stream past the idle timeout); `usage` is known once
    the upstream sent it, `finish_reason` once it said why it stopped."""

    @property
    def usage(self) -> Usage | None: ...

    @property
    def finish_reason(self) -> str | None: ...

    async def receive(self) -> list[StreamChunk]: ...

    async def relay(self, emit: Callable[[list[StreamChunk]], Awaitable[None]]) -> None: ...

    async def aclose(self) -> None: ...


@attrs.frozen
class ProviderStatus:
    """One provider's health as operators read it (GET /health, /v1/health); times are unix
    seconds. `state`: closed, open, half_open, unknown (nobody has checked it yet) or
    unconfigured (`missing` names the variable to set)."""

    name: str
    state: str
    missing: str | None = None
    consecutive_failures: int = 0
    last_error: str | None = None
    last_failure_at: float | None = None
    last_success_at: float | None = None
    opened_at: float | None = None
    opened_because: str | None = None
    reopens_at: float | None = None
    last_probe_at: float | None = None
    last_probe_ok: bool | None = None
    failing: bool = False  # the most recent probe or request failed, no success since
    deployments: tuple[DeploymentStatus, ...] = ()  # where it is served from

    @property
    def summary(self) -> str:
        """healthy, failing (circuit closed, but its most recent probe or request failed),
        unhealthy (circuit open or half-open), unknown or unconfigured, for GET /health."""
        if self.state in ("unconfigured", "unknown"):
            return self.state
        if self.state != "closed":
            return "unhealthy"
        return "failing" if self.failing else "healthy"


@attrs.frozen
class DeploymentStatus:
    """One deployment of a provider as operators read it (/v1/health)."""

    health: ProviderStatus  # its own circuit and probes (named by the deployment)
    base_url: str  # without credentials
    in_flight: int
    installed: tuple[str, ...] | None = None  # a local server's models, as its probe read them
    loaded: tuple[str, ...] | None = None
    inventory_at: float | None = None  # unix seconds
