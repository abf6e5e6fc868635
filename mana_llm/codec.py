"""JSON in and out, in one place. orjson is several times faster than the standard library on
the per-chunk hot path of streams; what orjson refuses but JSON allows (integers beyond 64
bits) falls back to the standard library, so no valid document is rejected or lost."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson


def dumps(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError:  # e.g. an integer beyond 64 bits, or an upstream's lone surrogate
        # ASCII-escaped, so a lone surrogate stays the \udXXX escape it came in as
        return json.dumps(obj, separators=(",", ":")).encode()


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
        return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def loads_strict(data: bytes) -> tuple[Any, bool]:
    """JSON as RFC 8259 defines it, for what callers send: NaN and Infinity are refused
    (ValueError), integers beyond 64 bits kept. Also says whether the fast parser refused it:
    only then can the document hold a lone surrogate (`"\ud800"`), which the caller must find
    and refuse, since no UTF-8 encoder can send it on."""
    try:
        return orjson.loads(data), False
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(data, parse_constant=_refuse_constant, parse_float=_finite), True
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:20]} is out of range")
    return value
