"""The shared backend: Redis through coredis (trio-capable; redis-py's async client is not).

Imported only when REDIS_URL is set. The client's connection pool lives inside `open()`, which
the composition root enters in the root task for the service's whole life. No retries here:
`ResponseCache` puts every command under its short deadline and its own breaker, and a retry
would only spend that deadline on a Redis that is already in trouble.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import coredis
import trio
from coredis.retry import NoRetryPolicy

log = logging.getLogger(__name__)


class RedisBackend:
    def __init__(self, url: str, *, connect_timeout_s: float, max_connections: int) -> None:
        self._client: coredis.Redis[bytes] = coredis.Redis.from_url(
            url,
            retry_policy=NoRetryPolicy(),
            connect_timeout=connect_timeout_s,
            max_connections=max_connections,
            client_name="mana-llm",
        )

    @property
    def name(self) -> str:
        return "redis"

    @asynccontextmanager
    async def open(self, warm_up_s: float = 1.0) -> AsyncIterator[RedisBackend]:
        """The pool's lifetime. One PING first, so the first requests do not pay for the
        connection handshake inside their short command deadline; a Redis that is down at
        start-up costs cache misses, not the start-up."""
        async with self._client:
            with trio.move_on_after(warm_up_s):
                try:
                    await self._client.ping()
                except Exception as exc:  # down or refusing: the cache will say so per command
                    log.warning("redis is not answering at start-up: %s", exc)
            yield self

    async def get(self, key: str) -> bytes | None:
        return await self._client.get(key)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._client.set(key, value, px=max(1, int(ttl_s * 1000)))
