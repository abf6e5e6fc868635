"""providers/pool.Pool against a real HTTP/1.1 server on 127.0.0.1: the first shard with room
takes a request, a closed response gives its slot back (once), a quiet pool reuses its first
connections, and the cap holds (issue 13: httpcore's pool scans every connection it holds)."""

from __future__ import annotations

import httpx
import pytest
import trio
import trio.testing

from mana_llm.providers.pool import Pool
from tests.fakes.server import FakeServer, Reply, Request, WaitFor

pytestmark = pytest.mark.trio


def pool(max_connections: int, shard_size: int) -> Pool:
    return Pool(max_connections, httpx.create_ssl_context(), shard_size)


async def get(transport: Pool, server: FakeServer) -> httpx.Response:
    return await transport.handle_async_request(httpx.Request("GET", server.url + "/x"))


async def test_requests_fill_the_first_shard_then_the_next_and_closing_frees_a_slot(
    nursery: trio.Nursery,
) -> None:
    server: FakeServer = await nursery.start(FakeServer(lambda r: Reply.json({})).serve)
    with trio.fail_after(10):
        async with pool(16, 2) as transport:
            held = [await get(transport, server) for _ in range(3)]
            assert transport.in_flight == [2, 1] + [0] * 6
            await held[0].aclose()
            await held[0].aclose()  # a second close gives nothing back twice
            assert transport.in_flight == [1, 1] + [0] * 6
            again = await get(transport, server)  # the first shard has room again
            assert transport.in_flight == [2, 1] + [0] * 6
            for response in [*held[1:], again]:
                await response.aread()
                await response.aclose()
            assert transport.in_flight == [0] * 8


async def test_a_quiet_pool_reuses_the_first_shards_connection(nursery: trio.Nursery) -> None:
    server: FakeServer = await nursery.start(FakeServer(lambda r: Reply.json({})).serve)
    with trio.fail_after(10):
        async with pool(256, 8) as transport:
            for _ in range(20):
                response = await get(transport, server)
                await response.aread()
                await response.aclose()
    assert server.connections == 1


async def test_a_failed_request_gives_its_slot_back() -> None:
    with trio.fail_after(10):
        async with pool(8, 8) as transport:
            request = httpx.Request("GET", "http://127.0.0.1:1/x")  # nothing listens there
            with pytest.raises(httpx.ConnectError):
                await transport.handle_async_request(request)
            assert transport.in_flight == [0]


async def test_the_cap_holds_when_every_shard_is_full(nursery: trio.Nursery) -> None:
    release = trio.Event()

    def handler(request: Request) -> Reply:
        return Reply(parts=[WaitFor(release), b"{}"], chunked=True)

    server: FakeServer = await nursery.start(FakeServer(handler).serve)
    done: list[int] = []

    async def one(transport: Pool) -> None:
        response = await get(transport, server)
        await response.aread()
        await response.aclose()
        done.append(1)

    with trio.fail_after(10):
        async with pool(4, 2) as transport, trio.open_nursery() as requests:
            for _ in range(6):
                requests.start_soon(one, transport)
            await server.wait_requests(4)
            await trio.testing.wait_all_tasks_blocked()
            assert len(server.requests) == 4 and server.connections == 4  # two wait their turn
            release.set()
    assert len(done) == 6 and server.connections == 4
