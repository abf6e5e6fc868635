"""One provider's upstream connections: httpcore's pool, split in shards of two connections.

httpcore's pool looks at every connection it holds each time a request starts and each time
a response closes: an idle one is checked for expiry with a poll() of its socket, and for
eviction by counting every connection again (httpcore 1.0.9, `AsyncConnectionPool.
_assign_requests_to_connections`; quadratic in the pool's size). At 64 requests in flight that
scan was a quarter of the gateway's CPU (issue 13); with shards of 8 connections it was still
7%, and CPU per request at 64 in flight fell with the shard size down to 2. A request goes to
the first shard with fewer than `shard_size` requests in flight, so the shards in use are as
many as the load needs, each scans at most `shard_size` connections, and a quiet gateway
reuses the first shard's connections. Public httpx API only: each shard is an
`AsyncHTTPTransport`. The fix upstream would be a pool that keeps its idle connections apart
from the busy ones and checks only the one it hands out.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from functools import partial

import httpx

SHARD_SIZE = 2  # measured at 64 requests in flight: 1, 2, 4 and 8 (issue 13's note)


class Pool:
    """Shards are made when first needed and share one TLS context (making one reads the
    system's certificates: tens of milliseconds)."""

    def __init__(
        self,
        max_connections: int,
        tls: ssl.SSLContext,
        shard_size: int = SHARD_SIZE,
        keepalive_expiry_s: float = 5.0,
    ) -> None:
        count = -(-max_connections // shard_size)  # whole shards: the cap is never below asked
        self._limits = httpx.Limits(
            max_connections=shard_size,
            max_keepalive_connections=shard_size,  # else httpcore evicts and reopens
            keepalive_expiry=keepalive_expiry_s,
        )
        self._tls = tls
        self._shards: list[httpx.AsyncHTTPTransport | None] = [None] * count
        self._in_flight = [0] * count
        self._shard_size = shard_size

    def _shard(self, index: int) -> httpx.AsyncHTTPTransport:
        shard = self._shards[index]
        if shard is None:
            shard = httpx.AsyncHTTPTransport(verify=self._tls, limits=self._limits, retries=0)
            self._shards[index] = shard
        return shard

    @property
    def in_flight(self) -> list[int]:
        """Requests in flight (sent, their response not yet closed), shard by shard."""
        return list(self._in_flight)

    def _pick(self) -> int:
        in_flight = self._in_flight
        for index, busy in enumerate(in_flight):
            if busy < self._shard_size:
                return index
        return in_flight.index(min(in_flight))  # all full: httpcore queues the request there

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        index = self._pick()
        self._in_flight[index] += 1
        response = None
        try:
            response = await self._shard(index).handle_async_request(request)
        finally:
            if response is None:  # failed or cancelled: its slot is free again
                self._in_flight[index] -= 1
        response.stream = Released(response.stream, partial(self._free, index))
        return response

    def _free(self, index: int) -> None:
        self._in_flight[index] -= 1

    async def aclose(self) -> None:
        for shard in self._shards:
            if shard is not None:
                await shard.aclose()

    async def __aenter__(self) -> Pool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Released(httpx.AsyncByteStream):
    """A response's body that calls `release` when it is closed (once): the pool gives its
    shard's slot back, a traced fetch ends its span. Iterating is the transport's own
    iterator: no layer on the per-read path."""

    def __init__(
        self, stream: httpx.AsyncByteStream | httpx.SyncByteStream, release: Callable[[], object]
    ) -> None:
        assert isinstance(stream, httpx.AsyncByteStream)
        self._stream = stream
        self._release: Callable[[], object] | None = release

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()
