"""One request's use of the response cache, all of it: look up before the walk, replay a hit,
record a streamed answer as it is relayed, store a clean answer. Part of the gateway's use
cases; the api and routing/ never see the cache.

The lookup asks for the answer of the target the walk would try first now (the first entry
whose provider is configured, whose circuit is not open and whose model is not known missing);
an answer is stored under the target that gave it. So a hit is what the chain would answer now,
a fallback's answer serves while the entries before it are down, and the entry the chain
prefers is asked again once it is back. A request whose lookup failed does not store either: a
cache in trouble costs at most one command deadline per request. A streamed answer is stored
once, after the client has its last event, by the cache's writer (off the client's path,
bounded by CACHE_TIMEOUT): `Plan.store_streamed`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

import attrs

from mana_llm.cache.entries import (
    Entry,
    completion_from_chunks,
    decode,
    fresh_completion,
    replay_chunks,
    usage_of,
)
from mana_llm.cache.store import Lookup, ResponseCache
from mana_llm.domain import (
    JSON,
    CacheControl,
    ChatResponse,
    EmbeddingResponse,
    StreamChunk,
    Target,
)

Emit = Callable[[list[StreamChunk]], Awaitable[None]]

log = logging.getLogger(__name__)


def plan(
    cache: ResponseCache | None,
    control: CacheControl,
    cacheable: bool,
    key_of: Callable[[Target], str],
    valid: Callable[[JSON], bool],
) -> Plan | None:
    """None when there is no cache; a plan that neither looks up nor stores (outcome BYPASS)
    when this request is not cacheable or the caller said no-store."""
    if cache is None:
        return None
    enabled = cacheable and control.store
    return Plan(cache, key_of, valid, control, enabled, None if enabled else Lookup.BYPASS)


@attrs.define(eq=False)
class Plan:
    cache: ResponseCache
    key_of: Callable[[Target], str]
    valid: Callable[[JSON], bool]  # a storable answer; also what a readable entry holds
    control: CacheControl
    enabled: bool = True
    outcome: Lookup | None = None  # what the lookup did, once it ran
    _keys: dict[Target, str] = attrs.field(factory=dict)  # each target's key, hashed once

    def key(self, target: Target) -> str:
        """The key for `target`: looked up and stored under the same one, computed once."""
        found = self._keys.get(target)
        if found is None:
            found = self._keys[target] = self.key_of(target)
        return found

    @property
    def result(self) -> str | None:
        """The outcome as the `result` label and X-Mana-LLM-Cache know it."""
        return None if self.outcome is None else self.outcome.value

    async def lookup(self, target: Target) -> Entry | None:
        if not self.enabled:
            return None
        if not self.control.lookup:
            self.outcome = Lookup.BYPASS
            return None
        outcome, data = await self.cache.get(self.key(target))
        entry = decode(data) if data is not None else None
        if entry is not None and not self.valid(entry.payload):
            entry = None
        if outcome is Lookup.HIT and entry is None:
            outcome = Lookup.MISS  # not an entry this version can read: answer anew
        self.outcome = outcome
        return entry

    async def save(self, target: Target, payload: JSON) -> None:
        """Store the answer `target` gave, if it is a storable one (never after a failed
        lookup: a cache in trouble costs at most one command deadline per request)."""
        if self.enabled and self.outcome is not Lookup.ERROR and self.valid(payload):
            await self.cache.put(self.key(target), Entry(target.resolved, payload).encode())

    def recorder(self, max_bytes: int) -> Recorder | None:
        """What keeps a streamed answer for this plan; None when nothing will be stored."""
        return Recorder(max_bytes) if self.enabled else None

    def store_streamed(self, target: Target, recorder: Recorder) -> None:
        """Hand a complete streamed answer to the cache's writer, which stores it off the
        client's path; once per answer (the caller's to say). Never the caller's failure."""
        payloads = recorder.payloads
        if payloads is None or not self.enabled or self.outcome is Lookup.ERROR:
            return
        try:
            completion = completion_from_chunks(payloads)
        except Exception:  # a bug in assembling must not turn a complete answer into an error
            log.exception("could not assemble a streamed answer for the cache")
            return
        if completion is not None and self.valid(completion):
            entry = Entry(target.resolved, completion).encode()
            self.cache.put_later(self.key(target), entry)


@attrs.define(eq=False)
class Recorder:
    """Keeps a stream's payloads for the cache while they stay under `max_bytes` (estimated
    from the text they carry); past the bound it lets go of them: that answer is relayed but
    not stored. It sees the chunks on their way to the client (`recording`)."""

    max_bytes: int
    _payloads: list[JSON] | None = attrs.field(factory=list)
    _size: int = 0

    @property
    def payloads(self) -> list[JSON] | None:
        return self._payloads

    def keep(self, chunks: list[StreamChunk]) -> None:
        if self._payloads is None:
            return
        for chunk in chunks:
            self._size += _estimate(chunk.payload)
            self._payloads.append(chunk.payload)
        if self._size > self.max_bytes:
            self._payloads = None

    def recording(self, emit: Emit) -> Emit:
        """`emit`, keeping what passes through it."""
        keep = self.keep

        async def emit_and_keep(chunks: list[StreamChunk]) -> None:
            keep(chunks)
            await emit(chunks)

        return emit_and_keep


def _estimate(payload: JSON) -> int:
    """About what a chunk adds to the stored answer: its text, and room for its frame."""
    size = 64
    for choice in payload.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict):
            size += sum(len(v) if isinstance(v, str) else 256 for v in delta.values())
    return size


def target_of(entry: Entry) -> Target:
    provider, _, model = entry.resolved.partition("/")
    return Target(provider, model)


def _fresh_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def chat_hit(entry: Entry, now: float) -> ChatResponse:
    """The stored completion with a fresh id and `created`."""
    payload = fresh_completion(entry.payload, _fresh_id(), int(now))
    return ChatResponse(
        payload, payload["choices"][0]["finish_reason"], usage_of(payload.get("usage"))
    )


def stream_hit(entry: Entry, now: float) -> list[StreamChunk]:
    """The stored completion as the chunks of a stream, with a fresh id and `created`."""
    return replay_chunks(entry.payload, _fresh_id(), int(now))


def embedding_hit(entry: Entry) -> EmbeddingResponse:
    return EmbeddingResponse(entry.payload, usage_of(entry.payload.get("usage")))
