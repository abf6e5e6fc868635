"""JSON in and out, in one place. orjson is several times faster than the standard library on
the per-chunk hot path of streams; what orjson refuses but JSON allows (integers beyond 64
bits) falls back to the standard library, so no valid document is rejected or lost."""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError:  # e.g. an integer beyond 64 bits in a caller's passthrough body
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def loads(data: bytes | str) -> Any:
    """Raises ValueError when the data is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def canonical(obj: Any) -> bytes:
    """One byte string per JSON value: keys sorted, no whitespace (hashing, cache keys)."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()
