"""What one attempt does, by use case: a value the walk calls for each chain entry it tries
(routing's own code, not a callback from the layer above). Each is the whole attempt: prepare
the request for the provider once (`Prepared`), then ask; a stream attempt opens the committed
stream and nothing else (what happens after the commit point is decided for the winner alone,
after the walk)."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from mana_llm.domain import ChatResponse, EmbeddingRequest, EmbeddingResponse, Target
from mana_llm.providers.protocol import Provider
from mana_llm.routing.commit import CommittedStream, StreamPolicy, open_committed, read_buffered
from mana_llm.routing.route import Prepared


@attrs.frozen
class Chat:
    prepared: Prepared

    async def __call__(self, provider: Provider, target: Target) -> ChatResponse:
        return await provider.chat(target, await self.prepared.for_provider(provider))


@attrs.frozen
class Stream:
    """Open the upstream and read to the commit point, under the entry's first-token
    deadline (the walk's)."""

    prepared: Prepared

    async def __call__(self, provider: Provider, target: Target) -> CommittedStream:
        return await open_committed(provider, target, await self.prepared.for_provider(provider))


@attrs.frozen
class Buffered:
    """A buffered alias's stream: its first content within the first-token deadline, then the
    whole answer under `policy`, replayed (the walk bounds it by the attempt deadline)."""

    prepared: Prepared
    first_token_s: Callable[[Provider], float]
    policy: StreamPolicy

    async def __call__(self, provider: Provider, target: Target) -> CommittedStream:
        first_token_s = self.first_token_s(provider)
        return await read_buffered(provider, target, self.prepared, first_token_s, self.policy)


@attrs.frozen
class Embed:
    request: EmbeddingRequest

    async def __call__(self, provider: Provider, target: Target) -> EmbeddingResponse:
        return await provider.embed(target, self.request)
