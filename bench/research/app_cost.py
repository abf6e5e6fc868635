"""The app layer's own CPU per stream, without sockets: the gateway's ASGI app and the floor's
raw ASGI app (`floor_relays.asgi_app`) each called in a loop, one stream at a time, against an
in-memory upstream that replays the fake upstream's SSE answer read by read, with an ASGI
`send` that only counts events. No hypercorn, no h11, no httpcore, no sockets: what is left is
what each app does per request and per chunk (for the gateway: parsing, the walk, the commit
rule, the relay, metrics, the request scope).

    python bench/research/app_cost.py [--reps 7] [--streams 1000]

Prints, from runs at 2 and 200 tokens (minimum CPU of `--reps` batches, alternating the two
apps), each app's fixed CPU per stream and CPU per content chunk, and the gateway's extra.
The full-stack comparison (`floor.py`) moves by 10% between runs on a shared machine; this
one by 2-3%, so it shows what a change to the gateway's own code saves. It does not show what
the stack underneath costs: that is `floor.py`'s job.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import trio
from prometheus_client import CollectorRegistry

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)  # bench/: the support modules run.py uses too
sys.path.insert(0, BENCH)
sys.path.insert(0, os.path.dirname(BENCH))

import floor_relays  # noqa: E402
from fake_upstream import chunk  # noqa: E402

from mana_llm import assembly, service  # noqa: E402
from mana_llm.api.app import create_app  # noqa: E402
from mana_llm.api.request_scope import ASGIApp  # noqa: E402
from mana_llm.cache.store import ResponseCache  # noqa: E402
from mana_llm.gateway import Gateway  # noqa: E402
from mana_llm.health.breaker import BreakerPolicy  # noqa: E402
from mana_llm.health.providers import ProviderHealthCache  # noqa: E402
from mana_llm.lifecycle import Lifecycle  # noqa: E402
from mana_llm.metrics import Metrics  # noqa: E402
from mana_llm.routing.balance import Balancer  # noqa: E402
from mana_llm.settings import Settings  # noqa: E402

UPSTREAM = "http://127.0.0.1:9"  # never dialled: the transport below answers in memory


def unchunked(framed: bytes) -> bytes:
    """One event of `fake_upstream.chunk` without its HTTP chunked framing."""
    return framed.split(b"\r\n", 1)[1][:-2]


def upstream_reads(tokens: int) -> list[bytes]:
    """The fake upstream's answer, one item per write it makes (each becomes one read)."""
    usage = {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": 5 + tokens}
    last = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1}
    last |= {"model": "bench", "choices": [], "usage": usage}
    return [
        unchunked(chunk({"role": "assistant", "content": ""})),
        *[unchunked(chunk({"content": "tok "}))] * tokens,
        unchunked(chunk({}, "stop"))
        + b"data: "
        + json.dumps(last).encode()
        + b"\n\ndata: [DONE]\n\n",
    ]


class Replay(httpx.AsyncByteStream):
    def __init__(self, reads: list[bytes]) -> None:
        self.reads = reads

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for read in self.reads:
            await trio.lowlevel.checkpoint()  # a read waits for the network
            yield read


class MemoryUpstream:
    """An httpx transport that answers every request with the same SSE stream."""

    def __init__(self, tokens: int) -> None:
        self.reads = upstream_reads(tokens)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await trio.lowlevel.checkpoint()
        headers = [(b"content-type", b"text/event-stream")]
        return httpx.Response(200, headers=headers, stream=Replay(self.reads))

    async def aclose(self) -> None:
        pass


def http_scope(body: bytes) -> dict[str, Any]:
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
    ]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "headers": headers,
    }


async def one_stream(app: ASGIApp, body: bytes, scope: dict[str, Any]) -> int:
    """One exchange as hypercorn drives it; returns the `data:` events the client got."""
    received = False
    ended = trio.Event()
    events = 0

    async def receive() -> dict[str, Any]:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        await ended.wait()  # hypercorn: http.disconnect once the response has ended
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal events
        if message["type"] == "http.response.body":
            events += message["body"].count(b"data: ")
            if not message.get("more_body"):
                ended.set()
        await trio.lowlevel.checkpoint()  # a send writes to the socket

    await app(dict(scope, headers=list(scope["headers"])), receive, send)
    return events


async def gateway_app(upstream: MemoryUpstream, cache: ResponseCache | None = None) -> ASGIApp:
    env = {
        "GROQ_API_KEY": "bench",
        "GROQ_BASE_URL": f"{UPSTREAM}/v1",
        "LOG_LEVEL": "WARNING",
        "PROBE_INTERVAL": "86400",
    }
    settings = Settings.from_env(env)
    metrics = Metrics(CollectorRegistry())
    policy = BreakerPolicy(
        settings.breaker_failures, settings.breaker_backoff_s, settings.breaker_max_backoff_s
    )
    health = ProviderHealthCache(policy)
    pools: dict[str, Any] = {d.name: upstream for ps in settings.providers for d in ps.places()}
    images = assembly.image_fetcher(settings, assembly.http_transport(1))
    groups = assembly.build_providers(settings, pools, images)
    providers = {name: group.deployments[0].provider for name, group in groups.items()}
    metrics.start_providers([p.name for p in providers.values() if p.configured])
    balancer = Balancer(groups, health)
    aliases = service.load_aliases(settings)
    gateway = Gateway(settings, providers, health, aliases, cache=cache, balancer=balancer)
    return create_app(gateway, settings, metrics, Lifecycle())


def floor_app(upstream: MemoryUpstream) -> ASGIApp:
    relay_upstream = floor_relays.Upstream(9)
    relay_upstream.transport = upstream  # type: ignore[assignment]
    app: ASGIApp = floor_relays.asgi_app(relay_upstream)
    return app


async def measure(tokens: int, streams: int, reps: int) -> dict[str, float]:
    """The lowest CPU per stream (us) of each app over `reps` alternating batches."""
    upstream = MemoryUpstream(tokens)
    apps = {"gateway": await gateway_app(upstream), "floor": floor_app(upstream)}
    body = json.dumps(
        {
            "model": "groq/bench",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "max_tokens": tokens,
        }
    ).encode()
    scope = http_scope(body)
    expected = tokens + 3  # role, tokens, finish, [DONE] (the floor relays the usage chunk too)
    best = {name: float("inf") for name in apps}
    for app in apps.values():  # warm-up
        for _ in range(max(50, streams // 10)):
            await one_stream(app, body, scope)
    for _ in range(reps):
        for name, app in apps.items():
            started = time.process_time()
            for _ in range(streams):
                if await one_stream(app, body, scope) < expected:
                    raise SystemExit(f"{name}: a stream came back short")
            best[name] = min(best[name], (time.process_time() - started) * 1e6 / streams)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--streams", type=int, default=1000, help="per batch at 2 tokens")
    args = parser.parse_args()
    short, long = 2, 200
    few = trio.run(measure, short, args.streams, args.reps)
    many = trio.run(measure, long, max(20, args.streams // 10), args.reps)
    print("us CPU, app layer only (lowest of", args.reps, "batches)")
    print(f"{'':10} {'per stream':>11} {'per chunk':>10}")
    per_chunk, fixed = {}, {}
    for name in ("gateway", "floor"):
        per_chunk[name] = (many[name] - few[name]) / (long - short)
        fixed[name] = few[name] - short * per_chunk[name]
        print(f"{name:10} {fixed[name]:11.1f} {per_chunk[name]:10.2f}")
    print(
        f"{'extra':10} {fixed['gateway'] - fixed['floor']:11.1f}"
        f" {per_chunk['gateway'] - per_chunk['floor']:10.2f}"
    )


if __name__ == "__main__":
    main()
