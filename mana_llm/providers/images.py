"""Fetching http(s) image URLs for Ollama, which takes only inline base64 images.

Guarded: the host is resolved first and every address it resolves to must be public (private,
loopback, link-local, reserved and multicast addresses are refused unless a configured network
allows them); the connection then goes to the address that was checked, so a second DNS answer
cannot redirect it. Redirects are not followed; the body is capped in size and time and must
be an image. Any failure is the caller's: a 400 naming the message part.
"""

from __future__ import annotations

import base64
import ipaddress
import socket
from collections.abc import Sequence

import attrs
import httpx
import trio

from mana_llm import errors
from mana_llm.domain import Image

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@attrs.define(eq=False)
class ImageFetcher:
    transport: httpx.AsyncHTTPTransport
    max_bytes: int = 10 * 1024 * 1024
    timeout_s: float = 10.0
    allow_networks: Sequence[str] = ()
    _allowed: tuple[Network, ...] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._allowed = tuple(ipaddress.ip_network(n, strict=False) for n in self.allow_networks)

    def _refused(self, address: Address) -> bool:
        if any(address in network for network in self._allowed):
            return False
        return not address.is_global or address.is_multicast

    async def fetch_all(self, images: Sequence[Image]) -> dict[str, str]:
        """Every URL image's base64 data, by the part it came from, fetched concurrently."""
        found: dict[str, str] = {}

        async def one(image: Image) -> None:
            found[image.where] = await self.fetch(image)

        async with trio.open_nursery() as nursery:
            for image in images:
                nursery.start_soon(one, image)
        return found

    async def fetch(self, image: Image) -> str:
        assert image.url is not None
        with trio.move_on_after(self.timeout_s):
            return await self._fetch(image.where, httpx.URL(image.url))
        raise errors.InvalidRequest(
            f"{image.where}: the image URL did not answer within {self.timeout_s:g}s",
            param=image.where,
        )

    async def _fetch(self, where: str, url: httpx.URL) -> str:
        def bad(why: str) -> errors.InvalidRequest:
            return errors.InvalidRequest(f"{where}: the image URL {why}", param=where)

        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            infos = await trio.socket.getaddrinfo(url.host, port, type=socket.SOCK_STREAM)
        except OSError:
            raise bad("does not resolve") from None
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        if not addresses or any(self._refused(a) for a in addresses):
            raise bad("resolves to a private, loopback or link-local address (refused)")
        target = url.copy_with(host=str(addresses[0]))
        request = httpx.Request(
            "GET",
            target,
            headers={"host": url.netloc.decode("ascii"), "accept": "image/*"},
            extensions={"sni_hostname": url.host, "timeout": {"connect": self.timeout_s}},
        )
        try:
            response = await self.transport.handle_async_request(request)
            try:
                if response.status_code != 200:
                    raise bad(f"answered {response.status_code} (redirects are not followed)")
                kind = response.headers.get("content-type", "")
                if not kind.startswith("image/"):
                    raise bad(f"is not an image ({kind or 'no content type'})")
                body = bytearray()
                async for part in response.aiter_raw():
                    body.extend(part)
                    if len(body) > self.max_bytes:
                        raise bad(f"is larger than {self.max_bytes} bytes")
            finally:
                with trio.move_on_after(1.0, shield=True):  # the fetch's connection
                    await response.aclose()
        except httpx.HTTPError as exc:
            raise bad(f"could not be fetched ({type(exc).__name__})") from None
        return base64.b64encode(bytes(body)).decode("ascii")
