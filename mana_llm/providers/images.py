"""Fetching http(s) image URLs for Ollama, which takes only inline base64 images.

Guarded: the host is resolved first and every address it resolves to must be public: private,
loopback, link-local, reserved and multicast addresses are refused, and so is any IPv6 address
that carries such an IPv4 address inside it (NAT64, 6to4, Teredo, IPv4-mapped and -compatible:
Python 3.11's `is_global` calls some of those global), unless a configured network allows it.
The connection then goes to the address that was checked, so a second DNS answer cannot
redirect it. Redirects are not followed; the body is capped in size and time and must be an
image. Fetches have their own connection pool and a limit on how many run at once; a request
names at most `max_count` URLs. Any failure is the caller's: a 400 naming the message part.
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
from mana_llm.providers.upstream import Transport

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Refused whatever `is_global` says: the one deny list.
DENIED_NETWORKS: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network"
        "100.64.0.0/10",  # carrier-grade NAT
        "::/96",  # IPv4-compatible (deprecated): ::127.0.0.1
        "::ffff:0:0/96",  # IPv4-mapped
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215)
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
    )
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries, if it is of a kind that carries one."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client's address
    if address in NAT64 or address in IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


@attrs.define(eq=False)
class ImageFetcher:
    transport: Transport  # its own pool: fetches never take providers' slots
    max_bytes: int = 10 * 1024 * 1024
    timeout_s: float = 10.0
    allow_networks: Sequence[str] = ()
    max_count: int = 16  # URLs one request may name
    concurrency: int = 8  # fetches running at once, over all requests
    _allowed: tuple[Network, ...] = attrs.field(init=False)
    _limiter: trio.CapacityLimiter = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._allowed = tuple(ipaddress.ip_network(n, strict=False) for n in self.allow_networks)
        self._limiter = trio.CapacityLimiter(self.concurrency)

    def refused(self, address: Address) -> bool:
        if any(address in network for network in self._allowed):
            return False
        if isinstance(address, ipaddress.IPv6Address):
            inner = embedded_ipv4(address)
            if inner is not None and self.refused(inner):
                return True
        if any(address in network for network in DENIED_NETWORKS):
            return True
        return not address.is_global or address.is_multicast

    async def fetch_all(self, images: Sequence[Image]) -> dict[str, str]:
        """Every URL image's base64 data, by the part it came from, fetched concurrently."""
        if len(images) > self.max_count:
            where = images[self.max_count].where
            raise errors.InvalidRequest(
                f"at most {self.max_count} image URLs per request (IMAGE_FETCH_MAX_COUNT)",
                param=where,
            )
        found: dict[str, str] = {}

        async def one(image: Image) -> None:
            async with self._limiter:
                found[image.where] = await self.fetch(image)

        async with trio.open_nursery() as nursery:
            for image in images:
                nursery.start_soon(one, image)
        return found

    async def fetch(self, image: Image) -> str:
        assert image.url is not None
        try:
            url = httpx.URL(image.url)
            if url.scheme not in ("http", "https") or not url.host:
                raise ValueError("not an http(s) URL with a host")
        except (httpx.InvalidURL, ValueError, UnicodeError) as exc:
            raise errors.InvalidRequest(
                f"{image.where}: the image URL is malformed ({exc})", param=image.where
            ) from None
        with trio.move_on_after(self.timeout_s):
            return await self._fetch(image.where, url)
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
            addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        except (OSError, UnicodeError, ValueError):
            raise bad("does not resolve") from None
        if not addresses or any(self.refused(a) for a in addresses):
            raise bad("resolves to a private, loopback or link-local address (refused)")
        try:
            target = url.copy_with(host=str(addresses[0]))
            request = httpx.Request(
                "GET",
                target,
                headers={"host": url.netloc.decode("ascii"), "accept": "image/*"},
                extensions={"sni_hostname": url.host, "timeout": {"connect": self.timeout_s}},
            )
        except (httpx.InvalidURL, ValueError, UnicodeError):
            raise bad("is malformed") from None
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
