"""One HTTP upstream: base URL, fixed headers, JSON in and out, error mapping at the boundary.

Deadlines are not set here: the walk puts a trio cancel scope around every call (httpx's own
read timeout is per read, not per response). Only the connect timeout lives on the client.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping
from typing import Any, cast

import attrs
import httpx
import trio

from mana_llm import errors
from mana_llm.providers.http_errors import (
    Redactor,
    error_from_exception,
    error_from_status,
    read_error_body,
)
from mana_llm.settings import ProviderSettings

CLEANUP_S = 1.0


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


@attrs.define(eq=False)
class Upstream:
    settings: ProviderSettings
    client: httpx.AsyncClient
    _headers: dict[str, str] = attrs.field(init=False)
    redact: Redactor = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        headers = {"content-type": "application/json", "accept": "application/json"}
        if self.settings.api_key:
            headers["authorization"] = f"Bearer {self.settings.api_key}"
        self._headers = headers
        self.redact = Redactor(self.settings.api_key)

    @property
    def name(self) -> str:
        return self.settings.name

    def url(self, path: str) -> str:
        return self.settings.base_url + path

    def error(
        self, status: int, body: bytes | Mapping[str, Any], headers: Mapping[str, str]
    ) -> errors.ProviderError:
        return error_from_status(self.name, status, body, headers, self.redact)

    def protocol_error(self, what: str) -> errors.UpstreamProtocolError:
        return errors.UpstreamProtocolError(
            self.redact(f"{self.name} sent {what}"), provider=self.name
        )

    async def post_json(self, path: str, body: Mapping[str, Any]) -> Any:
        try:
            response = await self.client.post(
                self.url(path), content=dumps(body), headers=self._headers
            )
        except httpx.HTTPError as exc:
            raise error_from_exception(self.name, exc) from None
        return self._decode(response)

    async def get_json(self, path: str) -> Any:
        try:
            response = await self.client.get(self.url(path), headers=self._headers)
        except httpx.HTTPError as exc:
            raise error_from_exception(self.name, exc) from None
        return self._decode(response)

    def _decode(self, response: httpx.Response) -> Any:
        if response.status_code != 200:
            raise self.error(response.status_code, response.content, response.headers)
        try:
            return json.loads(response.content)
        except ValueError:
            raise self.protocol_error("a body that is not JSON") from None

    async def open_stream(self, path: str, body: Mapping[str, Any]) -> httpx.Response:
        """Send a streaming request; return the open response once its status is 200."""
        request = self.client.build_request(
            "POST", self.url(path), content=dumps(body), headers=self._headers
        )
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise error_from_exception(self.name, exc) from None
        if response.status_code == 200:
            return response
        try:
            raw = await read_error_body(response)
        except httpx.HTTPError:
            raw = b""
        finally:
            await aclose_response(response)
        raise self.error(response.status_code, raw, response.headers)


async def aclose_response(response: httpx.Response) -> None:
    # bounded, shielded cleanup: the upstream connection must be released even when cancelled
    with trio.move_on_after(CLEANUP_S, shield=True):
        await response.aclose()


@attrs.define(eq=False)
class RawStream:
    """The raw bytes of an open response, read one network read at a time."""

    upstream: Upstream
    response: httpx.Response
    _chunks: AsyncGenerator[bytes, None] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._chunks = cast(AsyncGenerator[bytes, None], self.response.aiter_raw())

    async def read(self) -> bytes:
        """The next bytes, or b"" at the end; transport failures raise ProviderError."""
        try:
            return await anext(self._chunks)
        except StopAsyncIteration:
            return b""
        except httpx.HTTPError as exc:
            raise error_from_exception(self.upstream.name, exc) from None

    async def aclose(self) -> None:
        # bounded, shielded cleanup: the byte iterator and the upstream connection
        with trio.move_on_after(CLEANUP_S, shield=True):
            try:
                await self._chunks.aclose()
            finally:
                await self.response.aclose()
