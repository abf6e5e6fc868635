"""The path of one streamed chat request through the gateway's own modules.

    python bench/research/path.py [--tokens 2]

One stream through the gateway's ASGI app in memory (app_cost.py's harness: no sockets),
traced with sys.setprofile. It prints:
- the gateway's modules in the order the request first enters them, with how many calls
  enter each from another module (fresh calls: a coroutine resuming is not counted; a
  per-chunk loop enters its modules once per chunk);
- every call into a module the caller does not import, other than down a protocol to a lower
  layer (a function handed to it: a callback), by caller -> callee function, with its count.
  The one the stream path needs is the relay's `emit` (routing -> api), which writes to the
  client. `--cacheable` sends temperature 0, so the answer is recorded and stored too.
"""

from __future__ import annotations

import argparse
import ast
import collections
import dis
import json
import os
import pathlib
import sys
import types
from typing import Any

import trio

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # app_cost.py, beside it

import app_cost  # noqa: E402

from mana_llm.cache.memory import MemoryBackend  # noqa: E402
from mana_llm.cache.store import ResponseCache  # noqa: E402

# Layers, low to high (docs/ARCHITECTURE.md section 2); a module's layer is its longest prefix.
RANKS = {
    "mana_llm.errors": 0,
    "mana_llm.domain": 0,
    "mana_llm.codec": 0,
    "mana_llm.logs": 0,
    "mana_llm.settings": 0,
    "mana_llm.lifecycle": 0,
    "mana_llm.readiness": 0,
    "mana_llm.metric_declarations": 0,
    "mana_llm.breaker": 1,
    "mana_llm.health": 1,
    "mana_llm.providers": 1,
    "mana_llm.cache": 2,
    "mana_llm.metrics": 2,
    "mana_llm.routing": 2,
    "mana_llm.read_through": 3,
    "mana_llm.live_answer": 3,
    "mana_llm.gateway": 3,
    "mana_llm.api": 4,
    "mana_llm.service": 5,
}


def rank(module: str) -> int:
    best = max((p for p in RANKS if module == p or module.startswith(p + ".")), key=len)
    return RANKS[best]


def imported(module: str, known: dict[str, set[str]] = {}) -> set[str]:  # noqa: B006
    """The gateway's modules `module` names in its imports (a package's submodules too)."""
    if module not in known:
        found: set[str] = set()
        source = sys.modules[module].__file__
        assert source is not None
        for node in ast.walk(ast.parse(pathlib.Path(source).read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        known[module] = {m for m in found if m.startswith("mana_llm")}
    return known[module]


def package(module: str) -> str:
    return ".".join(module.split(".")[:2])  # mana_llm.api, mana_llm.gateway, ...


def handed_down(caller: str, callee: str) -> bool:
    """A call across layers into a module the caller does not import, other than down a
    protocol to a lower layer: a function that was handed to it (a callback)."""
    if not caller.startswith("mana_llm") or package(caller) == package(callee):
        return False
    return callee not in imported(caller) and rank(callee) >= rank(caller)


def first_resume(code: types.CodeType, known: dict[types.CodeType, int] = {}) -> int:  # noqa: B006
    """The offset of a code's first RESUME: a profile "call" event there is a fresh call, any
    later one a coroutine resuming (CPython 3.11+)."""
    if code not in known:
        known[code] = next(i.offset for i in dis.get_instructions(code) if i.opname == "RESUME")
    return known[code]


class Tracer:
    def __init__(self) -> None:
        self.order: list[str] = []
        self.entries: collections.Counter[str] = collections.Counter()
        self.upward: collections.Counter[str] = collections.Counter()

    def __call__(self, frame: types.FrameType, event: str, arg: Any) -> None:
        if event != "call" or frame.f_lasti > first_resume(frame.f_code):
            return  # a coroutine resuming is not an entry
        module = frame.f_globals.get("__name__", "")
        if not module.startswith("mana_llm"):
            return
        caller = frame.f_back.f_globals.get("__name__", "") if frame.f_back else ""
        if caller == module:
            return
        if module not in self.order:
            self.order.append(module)
        self.entries[module] += 1
        if handed_down(caller, module):
            self.upward[f"{caller} -> {module}.{frame.f_code.co_qualname}"] += 1


async def trace(tokens: int, cacheable: bool) -> Tracer:
    async with trio.open_nursery() as nursery:
        tracer = await traced(tokens, cacheable, nursery)
        nursery.cancel_scope.cancel()
    return tracer


async def traced(tokens: int, cacheable: bool, nursery: trio.Nursery) -> Tracer:
    upstream = app_cost.MemoryUpstream(tokens)
    cache = None
    if cacheable:  # the harness's gateway, with an in-memory response cache
        cache = ResponseCache(MemoryBackend(100, 1 << 24), 60.0, 1.0, 1 << 20)
        await nursery.start(cache.run_writer)  # stores streamed answers off the client's path
    app = await app_cost.gateway_app(upstream, cache)
    request: dict[str, Any] = {"model": "groq/bench", "stream": True}
    request["messages"] = [{"role": "user", "content": "hi"}]
    if cacheable:  # a miss stored as it completes: the recorder and the store run too
        request["temperature"] = 0
    body = json.dumps(request).encode()
    scope = app_cost.http_scope(body)
    warm = json.dumps(dict(request, messages=[{"role": "user", "content": "warm"}])).encode()
    await app_cost.one_stream(app, warm, app_cost.http_scope(warm))  # first-time imports
    tracer = Tracer()
    sys.setprofile(tracer)
    try:
        await app_cost.one_stream(app, body, scope)
        await trio.sleep(0.1)  # a write-behind store, if any, runs now
    finally:
        sys.setprofile(None)
    return tracer


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=2, help="content chunks in the stream")
    parser.add_argument("--cacheable", action="store_true", help="temperature 0: stored")
    args = parser.parse_args()
    tracer = trio.run(trace, args.tokens, args.cacheable)
    print(f"modules a streamed request enters ({args.tokens} content chunks), in order:")
    for index, module in enumerate(tracer.order, 1):
        print(f"  {index:2d}. {module:40s} entered {tracer.entries[module]}x")
    print("calls into a module the caller does not import (callbacks), by site:")
    for site, count in sorted(tracer.upward.items()):
        print(f"  {count:4d}x {site}")
    print(f"  {len(tracer.upward)} distinct sites")


if __name__ == "__main__":
    main()
