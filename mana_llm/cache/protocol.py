"""What the response cache needs from a storage backend: bytes in, bytes out, with a TTL.

A backend may fail in any way (raise, hang); `ResponseCache` bounds and absorbs that, so a
backend stays a thin adapter.
"""

from __future__ import annotations

from typing import Protocol


class CacheBackend(Protocol):
    @property
    def name(self) -> str:
        """`memory` or `redis`: the `backend` label of the cache error counter."""
        ...

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...
