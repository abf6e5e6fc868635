"""HTTP/1.1 on a raw socket: answers sent before the request body arrived close the connection
instead of leaving it hanging, a body that never finishes is a 408, keep-alive still works."""

from __future__ import annotations

import contextlib

import trio

from tests.e2e.stack import Stack, start_stack


async def connect(stack: Stack) -> trio.SocketStream:
    host, port = stack.base_url.removeprefix("http://").rsplit(":", 1)
    return await trio.open_tcp_stream(host, int(port))


async def read_response(stream: trio.SocketStream) -> bytes:
    """One whole response (a content-length body), or what came before the peer closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


async def closed_by_peer(stream: trio.SocketStream) -> bool:
    try:
        return await stream.receive_some(65536) == b""
    except trio.BrokenResourceError:
        return True


EARLY = [
    b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n",  # 404
    b"PUT /health HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n",  # 405
    b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n",  # 401 (keys on)
]


async def test_an_answer_before_the_body_closes_the_connection(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery, MANA_LLM_API_KEYS="gw-key")
    for request, status in zip(EARLY, (b" 404 ", b" 405 ", b" 401 "), strict=True):
        with trio.fail_after(5):
            stream = await connect(stack)
            await stream.send_all(request)
            response = await read_response(stream)
            assert status in response.split(b"\r\n", 1)[0]
            assert b"\r\nconnection: close\r\n" in response.lower()
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(b"{}")  # the body arrives after the answer
            assert await closed_by_peer(stream)  # closed, not left waiting
            await stream.aclose()
    with trio.fail_after(5):  # and the gateway serves on
        async with stack.client() as client:
            assert (await client.get("/livez")).status_code == 200


async def test_keep_alive_serves_request_after_request(nursery: trio.Nursery) -> None:
    stack = await start_stack(nursery)
    body = b'{"model": "gemma3:4b", "input": "a"}'
    post = b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    post += b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
    with trio.fail_after(5):
        stream = await connect(stack)
        for request in (post, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", post):
            await stream.send_all(request)
            response = await read_response(stream)
            assert response.startswith(b"HTTP/1.1 200")
            assert b"connection: close" not in response.lower()
        await stream.aclose()


async def test_a_body_that_never_finishes_is_a_408_and_a_closed_connection(
    nursery: trio.Nursery,
) -> None:
    stack = await start_stack(nursery, REQUEST_BODY_TIMEOUT="0.5")
    with trio.fail_after(5):
        stream = await connect(stack)
        await stream.send_all(
            b'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"mo'
        )
        started = trio.current_time()
        response = await read_response(stream)
        waited = trio.current_time() - started
        assert response.startswith(b"HTTP/1.1 408")
        assert b'"code":"request_timeout"' in response
        assert b"connection: close" in response.lower()
        assert await closed_by_peer(stream)
    assert 0.4 < waited < 2.0
