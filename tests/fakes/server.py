"""A scriptable HTTP/1.1 server on 127.0.0.1:0, written on raw trio sockets so that it can do
what real upstreams do when they fail: reset, cut a body short, stall, send garbage.

A handler maps each request to a Reply: status, headers and a body made of parts. A part is
bytes (one chunk on the wire), or one of the actions below. Every connection's close is
recorded, so tests can assert the gateway released its upstream connection.
"""

from __future__ import annotations

import json
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
import trio


@attrs.frozen
class Stall:
    """Stop sending and wait until the peer closes the connection."""


@attrs.frozen
class Cut:
    """Close the connection mid-body (no terminating chunk)."""


@attrs.frozen
class Reset:
    """Abort the connection with a TCP reset."""


@attrs.frozen
class WaitFor:
    """Hold the body until the test sets this event."""

    event: trio.Event


@attrs.frozen
class Delay:
    """Hold the body this long (a model loading before its first token)."""

    seconds: float


Part = bytes | Stall | Cut | Reset | WaitFor | Delay


@attrs.define
class Reply:
    status: int = 200
    parts: list[Part] = attrs.field(factory=list)
    headers: dict[str, str] = attrs.field(factory=dict)
    chunked: bool = False  # stream the parts; otherwise send them with a content-length
    # a server that runs only so many requests at once (Ollama's OLLAMA_NUM_PARALLEL): the
    # rest wait for a slot before their first byte
    slots: trio.CapacityLimiter | None = None

    @classmethod
    def json(cls, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
        return cls(
            status,
            [json.dumps(payload).encode()],
            {"content-type": "application/json", **(headers or {})},
        )


@attrs.define
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    closed: trio.Event = attrs.field(factory=trio.Event)  # the gateway closed this connection
    connection: int = 0  # which connection it came on (1, 2, ...): reuse is visible

    def json(self) -> Any:
        return json.loads(self.body)


Handler = Callable[[Request], Reply]

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
}


@attrs.define(eq=False)
class FakeServer:
    handler: Handler
    requests: list[Request] = attrs.field(factory=list)
    scripts: dict[str, deque[Reply]] = attrs.field(factory=dict)
    port: int = 0
    connections: int = 0  # accepted so far
    _arrival: trio.Event = attrs.field(factory=trio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_requests(self, count: int = 1) -> None:
        """Until at least `count` requests have arrived."""
        while len(self.requests) < count:
            await self._arrival.wait()

    def script(self, path: str, *replies: Reply) -> None:
        """The next requests to `path` get these replies, in order, before the handler's."""
        self.scripts.setdefault(path, deque()).extend(replies)

    async def serve(
        self, *, task_status: trio.TaskStatus[FakeServer] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._connection, listeners)
            task_status.started(self)

    async def _connection(self, stream: trio.SocketStream) -> None:
        buffer = b""
        current: Request | None = None
        self.connections += 1
        number = self.connections
        try:
            while True:
                request, buffer = await _read_request(stream, buffer)
                if request is None:
                    return
                request.connection = number
                current = request
                self.requests.append(request)
                self._arrival.set()
                self._arrival = trio.Event()
                queue = self.scripts.get(request.path)
                reply = queue.popleft() if queue else self.handler(request)
                if reply.slots is None:
                    sent = await _send(stream, reply)
                else:
                    async with reply.slots:
                        sent = await _send(stream, reply)
                if not sent:
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            return
        finally:
            if current is not None:
                current.closed.set()
            with trio.CancelScope(shield=True):
                await stream.aclose()


async def _read_request(stream: trio.SocketStream, buffer: bytes) -> tuple[Request | None, bytes]:
    while b"\r\n\r\n" not in buffer:
        data = await stream.receive_some(65536)
        if not data:
            return None, buffer
        buffer += data
    head, _, rest = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        data = await stream.receive_some(65536)
        if not data:
            return None, b""
        rest += data
    return Request(method, target.split("?", 1)[0], headers, rest[:length]), rest[length:]


async def _send(stream: trio.SocketStream, reply: Reply) -> bool:
    """Write one response; False when the connection must end (cut, reset, stall, peer gone).
    An action as the first part happens before the status line: a reset or a stall before
    any headers."""
    if reply.parts and isinstance(reply.parts[0], Stall | Cut | Reset):
        return await _act(stream, reply.parts[0])
    headers = {"content-type": "application/json", **reply.headers}
    if reply.chunked:
        headers["transfer-encoding"] = "chunked"
    else:
        body = b"".join(p for p in reply.parts if isinstance(p, bytes))
        headers["content-length"] = str(len(body))
    head = f"HTTP/1.1 {reply.status} {REASONS.get(reply.status, 'Status')}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    await stream.send_all(head.encode())
    if not reply.chunked and all(isinstance(p, bytes | Delay) for p in reply.parts):
        for part in reply.parts:
            if isinstance(part, Delay):
                await trio.sleep(part.seconds)
        await stream.send_all(body)
        return True
    for part in reply.parts:
        if isinstance(part, bytes):
            if part:
                await stream.send_all(
                    b"%x\r\n%b\r\n" % (len(part), part) if reply.chunked else part
                )
        elif isinstance(part, WaitFor):
            await part.event.wait()
        elif isinstance(part, Delay):
            await trio.sleep(part.seconds)
        else:
            return await _act(stream, part)
    if reply.chunked:
        await stream.send_all(b"0\r\n\r\n")
    return True


async def _act(stream: trio.SocketStream, action: Stall | Cut | Reset) -> bool:
    if isinstance(action, Stall):
        while await stream.receive_some(65536):
            pass
    elif isinstance(action, Reset):
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return False
