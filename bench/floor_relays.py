"""The floor the gateway's streaming relay is held against: minimal relays on the same stack,
doing the same hop and the same per-event work, nothing else.

    python bench/floor_relays.py asgi|quart|json PORT UPSTREAM_PORT

`asgi` and `quart` take an OpenAI chat request, send it to the upstream with `model` stripped
of its provider prefix and usage asked for, and relay the SSE stream event by event with
`model` rewritten (each event parsed and serialized again), `[DONE]` only after a finish, a
final error event otherwise. `asgi`: hypercorn + a raw ASGI app + httpx's transport, one cancel
scope with a moving idle deadline (the floor of issue 13). `quart`: the same under quart-trio's
request and response objects. `json`: a non-streaming chat, the whole answer relayed with
`model` rewritten, through the gateway's own connection pool (the floor of `conc_floor.py`).
No auth, no routing, no metrics, no disconnect watch, no fallback.
"""

from __future__ import annotations

import sys
from typing import Any, cast

import httpx
import orjson
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

DONE = b"data: [DONE]\n\n"
IDLE_S = 60.0


def upstream_body(raw: bytes) -> tuple[bytes, str]:
    request = orjson.loads(raw)
    resolved = request["model"]
    request["model"] = resolved.partition("/")[2] or resolved
    request["stream"] = True
    request["stream_options"] = {"include_usage": True}
    return orjson.dumps(request), resolved


def error_event(message: str) -> bytes:
    error = {"error": {"message": message, "type": "upstream_error"}}
    return b"data: " + orjson.dumps(error) + b"\n\n"


async def request_body(scope: Any, receive: Any, send: Any) -> bytes | None:
    """A raw ASGI app's plumbing: answers the lifespan protocol (then None), else returns the
    whole request body. Shared with `workers_floor.py`'s relay."""
    if scope["type"] == "lifespan":
        while True:
            kind = (await receive())["type"]  # lifespan.startup, then lifespan.shutdown
            await send({"type": kind + ".complete"})
            if kind == "lifespan.shutdown":
                return None
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body


class Relay:
    """SSE events in, in any split; events out with `model` rewritten."""

    def __init__(self, resolved: str) -> None:
        self.resolved = resolved
        self.tail = b""
        self.done = self.finished = False

    def feed(self, data: bytes) -> bytes:
        events = (self.tail + data if self.tail else data).replace(b"\r\n", b"\n").split(b"\n\n")
        self.tail = events.pop()
        out = []
        for event in events:
            if not event.startswith(b"data: "):
                continue
            if event == b"data: [DONE]":
                self.done = True
                continue
            chunk = orjson.loads(event[6:])
            if not isinstance(chunk, dict) or "error" in chunk:
                raise ValueError("in-band error")
            for choice in chunk.get("choices") or ():
                if choice.get("finish_reason"):
                    self.finished = True
            chunk["model"] = self.resolved
            out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
        return b"".join(out)


class Upstream:
    def __init__(self, port: int) -> None:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        self.transport = httpx.AsyncHTTPTransport(limits=limits, retries=0)
        self.url = httpx.URL(f"http://127.0.0.1:{port}/v1/chat/completions")
        self.headers = [("host", f"127.0.0.1:{port}"), ("content-type", "application/json")]
        self.extensions = {"timeout": {"connect": 5.0, "read": None, "write": None, "pool": None}}

    async def open(self, raw: bytes) -> tuple[httpx.Response, Relay]:
        payload, resolved = upstream_body(raw)
        request = httpx.Request(
            "POST", self.url, headers=self.headers, content=payload, extensions=self.extensions
        )
        return await self.transport.handle_async_request(request), Relay(resolved)


def asgi_app(upstream: Upstream) -> Any:
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = await request_body(scope, receive, send)
        if body is None:
            return
        response, sse = await upstream.open(body)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        try:
            with trio.CancelScope(deadline=trio.current_time() + IDLE_S) as idle:
                async for data in cast(httpx.AsyncByteStream, response.stream):
                    out = sse.feed(data)
                    if out:
                        await send({"type": "http.response.body", "body": out, "more_body": True})
                    idle.deadline = trio.current_time() + IDLE_S
            tail = DONE if sse.done and sse.finished else error_event("upstream broke the stream")
        except (ValueError, httpx.HTTPError):
            tail = error_event("upstream error")
        finally:
            with trio.CancelScope(shield=True):
                await response.aclose()
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    return app


def json_app(upstream: Upstream) -> Any:
    """Non-streaming chat: the upstream's whole answer, `model` rewritten, relayed through the
    gateway's own `providers.pool.Pool` (shards of two connections), so that what a floor run
    shows at high concurrency is the stack's cost, not httpcore's pool scan."""
    from mana_llm.providers.pool import Pool

    pool = Pool(100, httpx.create_ssl_context())
    url = upstream.url

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raw = await request_body(scope, receive, send)
        if raw is None:
            return
        request = orjson.loads(raw)
        resolved = request["model"]
        request["model"] = resolved.partition("/")[2] or resolved
        outgoing = httpx.Request(
            "POST",
            url,
            headers=upstream.headers,
            content=orjson.dumps(request),
            extensions=upstream.extensions,
        )
        response = await pool.handle_async_request(outgoing)
        try:
            parts = [part async for part in cast(httpx.AsyncByteStream, response.stream)]
        finally:
            with trio.CancelScope(shield=True):
                await response.aclose()
        answer = orjson.loads(b"".join(parts))
        answer["model"] = resolved
        content = orjson.dumps(answer)
        length = b"%d" % len(content)
        headers = [(b"content-type", b"application/json"), (b"content-length", length)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content, "more_body": False})

    return app


def quart_app(upstream: Upstream) -> Any:
    from quart import Response, request
    from quart_trio import QuartTrio

    app = QuartTrio("floor")
    app.config["RESPONSE_TIMEOUT"] = None

    class Body:
        def __init__(self, response: httpx.Response, sse: Relay) -> None:
            self.response, self.sse, self.over = response, sse, False
            self.parts = cast(httpx.AsyncByteStream, response.stream).__aiter__()

        def __aiter__(self) -> Body:
            return self

        async def __anext__(self) -> bytes:
            while not self.over:
                try:
                    with trio.CancelScope(deadline=trio.current_time() + IDLE_S):
                        data = await self.parts.__anext__()
                    out = self.sse.feed(data)
                except StopAsyncIteration:
                    self.over = True
                    ok = self.sse.done and self.sse.finished
                    return DONE if ok else error_event("upstream broke the stream")
                except (ValueError, httpx.HTTPError):
                    self.over = True
                    return error_event("upstream error")
                if out:
                    return out
            raise StopAsyncIteration

        async def aclose(self) -> None:
            with trio.CancelScope(shield=True):
                await self.response.aclose()

    @app.post("/v1/chat/completions")
    async def chat() -> Response:
        raw = await request.get_data(cache=False, as_text=False, parse_form_data=False)
        response = Response(Body(*await upstream.open(raw)), content_type="text/event-stream")
        response.headers["cache-control"] = "no-cache"
        response.timeout = None
        return response

    return app


async def main(kind: str, port: int, upstream_port: int) -> None:
    upstream = Upstream(upstream_port)
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    apps = {"asgi": asgi_app, "quart": quart_app, "json": json_app}
    app = apps[kind](upstream)
    async with upstream.transport:
        await serve(app, config, mode="asgi")


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
