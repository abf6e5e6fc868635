"""One request's use of the response cache: look up before the walk, store after a clean
answer. Part of the gateway's use cases; the api never sees the cache.

The lookup asks for the answer of the target the walk would try first now (the first entry
whose provider is configured and whose circuit is not open); an answer is stored under the
target that gave it. So a hit is what the chain would answer now, a fallback's answer serves
while the entries before it are down, and the entry the chain prefers is asked again once it
is back. A request whose lookup failed does not store either: a cache in trouble costs at
most one command deadline per request.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

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
from mana_llm.domain import JSON, CacheControl, ChatResponse, EmbeddingResponse, Target
from mana_llm.routing.commit import CommittedStream

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

    async def save_stream(self, target: Target, payloads: list[JSON]) -> None:
        """Runs as the stream ends: a failure here is logged, never the caller's failure."""
        try:
            completion = completion_from_chunks(payloads)
        except Exception:  # a bug in assembling must not turn a complete answer into an error
            log.exception("could not assemble a streamed answer for the cache")
            return
        if completion is not None:
            await self.save(target, completion)


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


def stream_hit(entry: Entry, now: float) -> CommittedStream:
    """The stored completion replayed as a stream, with a fresh id and `created`."""
    return CommittedStream.replay(
        target_of(entry), replay_chunks(entry.payload, _fresh_id(), int(now))
    )


def embedding_hit(entry: Entry) -> EmbeddingResponse:
    return EmbeddingResponse(entry.payload, usage_of(entry.payload.get("usage")))
