"""One HTTP upstream: base URL, fixed headers, JSON in and out, error mapping at the boundary.

Requests go straight to a transport (the provider's `pool.Pool`: httpcore's pools, TLS and
errors underneath) rather than through `AsyncClient`, whose per-request layers (request
merging, auth and redirect flows, cookie extraction) cost a fifth of the gateway's CPU per
request and serve nothing here. URLs and headers are built once. Deadlines are not set here:
the walk puts a trio cancel scope around every call (httpx's read timeout is per read, not per
response); only the connect timeout rides on each request.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any, Protocol, cast

import attrs
import httpx
import trio

from mana_llm import codec, errors
from mana_llm.domain import StreamChunk
from mana_llm.providers.http_errors import (
    MAX_ERROR_BODY_BYTES,
    Redactor,
    error_from_exception,
    error_from_status,
    read_bounded,
)
from mana_llm.settings import ProviderSettings

CLEANUP_S = 1.0
# After an end marker ([DONE]) the body should end at once; read that far (bounded) so the
# connection goes back to the pool instead of being closed mid-response.
DRAIN_S = 0.25
DRAIN_MAX_BYTES = 64 * 1024
# A probe reads this much of a model list (OpenRouter's is over a megabyte), then lets go.
CHECK_MAX_BYTES = 8 * 1024 * 1024


class Transport(Protocol):
    """`httpx.AsyncHTTPTransport`, or a `pool.Pool` of them."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response: ...


@attrs.define(eq=False)
class Upstream:
    settings: ProviderSettings
    transport: Transport
    connect_timeout_s: float = 5.0
    max_response_bytes: int = 64 * 1024 * 1024
    wall_clock: Callable[[], float] = time.time  # reads a Retry-After given as a date
    _headers: httpx.Headers = attrs.field(init=False)
    _json_headers: httpx.Headers = attrs.field(init=False)
    _extensions: dict[str, Any] = attrs.field(init=False)
    _urls: dict[str, httpx.URL] = attrs.field(init=False, factory=dict)
    redact: Redactor = attrs.field(init=False)
    where: str = attrs.field(init=False)  # `OLLAMA_URL=http://...`: what an operator checks

    def __attrs_post_init__(self) -> None:
        parsed = httpx.URL(self.settings.base_url)
        host = parsed.netloc.decode("ascii")
        headers = [("host", host), ("accept", "application/json"), ("user-agent", "mana-llm")]
        if self.settings.api_key:
            headers.append(("authorization", f"Bearer {self.settings.api_key}"))
        headers.extend((k.lower(), v) for k, v in self.settings.headers.items())
        self._headers = httpx.Headers(headers)
        self._json_headers = httpx.Headers([*headers, ("content-type", "application/json")])
        timeout = {"connect": self.connect_timeout_s, "read": None, "write": None, "pool": None}
        self._extensions = {"timeout": timeout}
        self.redact = Redactor(self.settings.api_key)
        self.where = where_set(self.settings)

    @property
    def name(self) -> str:
        return self.settings.name

    def url(self, path: str) -> httpx.URL:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(self.settings.base_url + path)
        return url

    def _request(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> httpx.Request:
        if body is None:
            return httpx.Request(
                method, self.url(path), headers=self._headers, extensions=self._extensions
            )
        content = codec.dumps(body)
        headers = httpx.Headers(self._json_headers)  # a copy of the list, nothing re-checked
        headers["content-length"] = str(len(content))
        # `stream=`: httpx adds no headers of its own (they are all here) and reads nothing
        return httpx.Request(
            method,
            self.url(path),
            headers=headers,
            stream=httpx.ByteStream(content),
            extensions=self._extensions,
        )

    def failed(self, exc: httpx.HTTPError) -> errors.ProviderError:
        return error_from_exception(self.name, exc, self.where)

    async def _send(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self.transport.handle_async_request(request)
        except httpx.HTTPError as exc:
            raise self.failed(exc) from None

    async def _read(self, request: httpx.Request) -> tuple[httpx.Response, bytes]:
        """The response and its whole body, at most max_response_bytes of it."""
        response = await self._send(request)
        parts: list[bytes] = []
        size = 0
        # decoded when encoded (a zip bomb is bounded too); else the transport's own reads
        reads = response.aiter_bytes() if "content-encoding" in response.headers else None
        try:
            async for part in reads or cast(httpx.AsyncByteStream, response.stream):
                size += len(part)
                if size > self.max_response_bytes:
                    raise errors.UpstreamProtocolError(
                        f"{self.name} sent an answer larger than {self.max_response_bytes}"
                        " bytes (MAX_UPSTREAM_RESPONSE_BYTES)",
                        provider=self.name,
                    )
                parts.append(part)
        except httpx.HTTPError as exc:
            raise self.failed(exc) from None
        finally:
            await aclose_response(response)
        return response, b"".join(parts)

    def error(
        self,
        status: int,
        body: bytes | Mapping[str, Any],
        headers: Mapping[str, str],
        model: Any = None,
    ) -> errors.ProviderError:
        """`model`: the upstream model the request named, for errors scoped to it."""
        target = f"{self.name}/{model}" if isinstance(model, str) else None
        return error_from_status(
            self.name, status, body, headers, self.redact, target, self.wall_clock()
        )

    def json_object(self, frame: bytes, what: str) -> dict[str, Any]:
        """One streamed frame as a JSON object, or the protocol error naming `what`."""
        try:
            data = codec.loads(frame)
        except ValueError:
            raise self.protocol_error(f"a {what} that is not JSON") from None
        if not isinstance(data, dict):
            raise self.protocol_error(f"a {what} that is not an object")
        return data

    def protocol_error(self, what: str) -> errors.UpstreamProtocolError:
        return errors.UpstreamProtocolError(
            self.redact(f"{self.name} sent {what}"), provider=self.name
        )

    async def post_json(self, path: str, body: Mapping[str, Any]) -> Any:
        response, content = await self._read(self._request("POST", path, body))
        return self._decode(response, content, body.get("model"))

    async def get_json(self, path: str) -> Any:
        return self._decode(*await self._read(self._request("GET", path)))

    async def check(self, path: str) -> None:
        """GET `path` and judge the status alone: a 2xx returns, anything else raises. The
        body is read (bounded) and ignored, so the connection goes back to the pool."""
        response = await self._send(self._request("GET", path))
        try:
            try:
                ok = 200 <= response.status_code < 300
                raw = await read_bounded(response, CHECK_MAX_BYTES if ok else MAX_ERROR_BODY_BYTES)
            except httpx.HTTPError as exc:
                raise self.failed(exc) from None
            if not ok:
                raise self.error(response.status_code, raw, response.headers)
        finally:
            await aclose_response(response)

    def _decode(self, response: httpx.Response, content: bytes, model: Any = None) -> Any:
        if response.status_code != 200:
            raise self.error(response.status_code, content, response.headers, model)
        try:
            return codec.loads(content)
        except ValueError:
            raise self.protocol_error("a body that is not JSON") from None

    async def open_stream(self, path: str, body: Mapping[str, Any]) -> httpx.Response:
        """Send a streaming request; return the open response once its status is 200."""
        response = await self._send(self._request("POST", path, body))
        if response.status_code == 200:
            return response
        try:
            raw = await read_bounded(response)
        except httpx.HTTPError:
            raw = b""
        finally:
            await aclose_response(response)
        raise self.error(response.status_code, raw, response.headers, body.get("model"))


def where_set(settings: ProviderSettings) -> str:
    """Where a provider's URL came from, for errors that say where to look: the variable (or
    the providers file entry) and the URL, without any credentials in it."""
    return f"{settings.url_env or 'base_url'}={shown_url(settings.base_url)}"


def shown_url(base_url: str) -> str:
    """A base URL as operators may see it: without credentials."""
    url = httpx.URL(base_url)
    return str(url.copy_with(username=None, password=None)) if url.userinfo else str(url)


async def aclose_response(response: httpx.Response) -> None:
    # bounded, shielded cleanup: the upstream connection must be released even when cancelled
    with trio.move_on_after(CLEANUP_S, shield=True):
        await response.aclose()


class FrameDecoder(Protocol):
    def feed(self, chunk: bytes) -> list[bytes]: ...

    def close(self) -> list[bytes]: ...


# A frame's chunks, or None when the frame says the upstream is done (SSE's [DONE]).
FrameParser = Callable[[bytes], list[StreamChunk] | None]


@attrs.define(eq=False)
class FramedChunkStream:
    """A ChunkStream over an open response in any framing: reads (one network read at a
    time, straight from the transport's byte stream: no decoding is negotiated) until a read
    yields chunks, or the end."""

    upstream: Upstream
    response: httpx.Response
    decoder: FrameDecoder
    parse: FrameParser
    _reads: AsyncGenerator[bytes, None] = attrs.field(init=False)
    _ended: bool = False
    _closed: bool = False

    def __attrs_post_init__(self) -> None:
        stream = cast(httpx.AsyncByteStream, self.response.stream)
        self._reads = cast(AsyncGenerator[bytes, None], stream.__aiter__())

    async def receive(self) -> list[StreamChunk]:
        while not self._ended:
            try:
                data = await anext(self._reads)
            except StopAsyncIteration:
                data = b""
            except httpx.HTTPError as exc:
                raise self.upstream.failed(exc) from None
            try:
                if data:
                    frames = self.decoder.feed(data)
                else:
                    frames = self.decoder.close()
                    self._ended = True
            except ValueError as exc:  # FrameTooLong: not the framing it should speak
                raise self.upstream.protocol_error(str(exc)) from None
            chunks: list[StreamChunk] = []
            for frame in frames:
                parsed = self.parse(frame)
                if parsed is None:
                    self._ended = True
                    await self._drain()
                    break
                if chunks:
                    chunks.extend(parsed)
                else:
                    chunks = parsed  # the common read, one event: its own fresh list
            if chunks:
                return chunks
        return []

    async def _drain(self) -> None:
        """Read to the end of the body, ignoring what comes; a body that does not end within
        DRAIN_S or DRAIN_MAX_BYTES is left to `aclose`, which closes the connection."""
        total = 0
        with trio.move_on_after(DRAIN_S):
            while total <= DRAIN_MAX_BYTES:
                try:
                    total += len(await anext(self._reads))
                except (StopAsyncIteration, httpx.HTTPError):
                    return

    async def aclose(self) -> None:
        """Bounded, shielded cleanup of the byte stream and the upstream connection; once."""
        if self._closed:
            return
        self._closed = True
        with trio.move_on_after(CLEANUP_S, shield=True):
            try:
                await self._reads.aclose()
            finally:
                await self.response.aclose()
