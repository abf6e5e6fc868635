"""The embedded default backend: a bounded LRU with a TTL per entry, in this process's memory.

Bounded twice: by the number of entries and by their bytes together; the least recently used
entries go first. Expired entries are dropped when met (and by LRU eviction otherwise).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import attrs
import trio


@attrs.define(eq=False)
class MemoryBackend:
    max_entries: int
    max_bytes: int
    clock: Callable[[], float] = trio.current_time
    _entries: OrderedDict[str, tuple[float, bytes]] = attrs.field(init=False, factory=OrderedDict)
    _bytes: int = attrs.field(init=False, default=0)

    @property
    def name(self) -> str:
        return "memory"

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    async def get(self, key: str) -> bytes | None:
        item = self._entries.get(key)
        if item is None:
            return None
        expires_at, value = item
        if self.clock() >= expires_at:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        if key in self._entries:
            self._drop(key)
        if len(value) > self.max_bytes:
            return
        self._entries[key] = (self.clock() + ttl_s, value)
        self._bytes += len(value)
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self._bytes -= len(value)
