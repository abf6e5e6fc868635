"""An exchange's objects are freed by reference counting the moment it ends, never left to the
cycle collector: its context, trace and admission were held in a reference cycle through the
ASGI scope, and a collection every few requests walked them (on a busy gateway, several
percent of the CPU: bench/callers.py measured it). The ways an exchange ends on a busy gateway
are covered: answered, streamed, refused by a limit, refused a key, a Quart route. (A path no
route has is left out: Quart keeps its routing exception on the request, a cycle of its own.)"""

from __future__ import annotations

import gc
import pathlib
from collections.abc import Iterator
from contextlib import contextmanager

import trio

from tests.e2e.stack import GATEWAY_KEY
from tests.e2e.test_callers import APP_KEY, CHAT, bearer, callers_stack


@contextmanager
def cyclic_garbage() -> Iterator[list[str]]:
    """The gateway's own objects (types of mana_llm) that only the cycle collector freed
    while the block ran."""
    found: list[str] = []
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield found
        gc.collect()
    finally:
        gc.set_debug(0)
        found += sorted(
            {type(o).__qualname__ for o in gc.garbage if type(o).__module__.startswith("mana_llm")}
        )
        gc.garbage.clear()


async def test_an_ended_exchange_leaves_no_cycle_behind(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    stack = await callers_stack(nursery, tmp_path, "rpm: 3\ntpm: 100000")
    with trio.fail_after(20):
        async with stack.client() as client:
            await client.post("/v1/chat/completions", json=CHAT, headers=bearer(APP_KEY))
            with cyclic_garbage() as garbage:
                statuses = []
                for headers in (bearer(APP_KEY), bearer(GATEWAY_KEY)):
                    for body in (CHAT, {**CHAT, "stream": True}):
                        answer = await client.post(
                            "/v1/chat/completions", json=body, headers=headers
                        )
                        statuses.append(answer.status_code)
                for path, headers in (
                    ("/v1/chat/completions", bearer(APP_KEY)),  # the rpm is spent: 429
                    ("/v1/chat/completions", bearer("sk-nobody")),  # 401
                ):
                    answer = await client.post(path, json=CHAT, headers=headers)
                    statuses.append(answer.status_code)
                for path in ("/v1/models", "/v1/usage"):  # Quart's routes
                    answer = await client.get(path, headers=bearer(APP_KEY))
                    statuses.append(answer.status_code)
    assert statuses == [200, 200, 200, 200, 429, 401, 200, 200]
    assert garbage == []
