"""The real service under hypercorn on 127.0.0.1:0, in front of a fake Ollama and a fake
OpenAI-compatible cloud (configured as both `groq` and `openrouter`)."""

from __future__ import annotations

import pathlib
import socket
from collections.abc import Callable
from functools import partial
from typing import Any

import attrs
import httpx
import openai
import trio
from prometheus_client import CollectorRegistry

from mana_llm import service
from mana_llm.settings import Settings
from tests.fakes.server import FakeServer
from tests.fakes.upstreams import FakeOllama, FakeOpenAI

GATEWAY_KEY = "gw-test-key"
UPSTREAM_KEY = "sk-upstream-secret"


@attrs.define
class Stack:
    ollama: FakeServer
    cloud: FakeServer
    base_url: str
    settings: Settings
    registry: CollectorRegistry
    shutdown: trio.Event

    async def wait_ready(self) -> None:
        """Until /readyz says 200: the first probe round is over, so its requests to the fakes
        are done before a test scripts them."""
        with trio.fail_after(10):
            async with self.client() as client:
                # a poll of the real endpoint over HTTP, as an orchestrator does; bounded above
                while (await client.get("/readyz")).status_code != 200:  # noqa: ASYNC110
                    await trio.sleep(0.01)

    def client(self, **kwargs: object) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=10, **kwargs)  # type: ignore[arg-type]

    async def chat(
        self, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """POST one chat completion body through a fresh client."""
        async with self.client() as client:
            return await client.post("/v1/chat/completions", json=body, headers=headers)

    def cloud_calls(self, path: str = "/v1/chat/completions") -> int:
        """How many requests to `path` reached the fake cloud."""
        return sum(1 for r in self.cloud.requests if r.path == path)

    def metric(self, name: str, **labels: str) -> float:
        """One sample's value from this gateway's registry; 0 when it was never set."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def sdk(self, key: str = "unused") -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.base_url + "/v1",
            api_key=key,
            max_retries=0,
            timeout=10,
        )


def stack_env(ollama: FakeServer, cloud: FakeServer, **overrides: str) -> dict[str, str]:
    env = {
        "HOST": "127.0.0.1",
        "PORT": "0",
        "OLLAMA_URL": ollama.url,
        "GROQ_API_KEY": UPSTREAM_KEY,
        "GROQ_BASE_URL": cloud.url + "/v1",
        "OPENROUTER_API_KEY": UPSTREAM_KEY,
        "OPENROUTER_BASE_URL": cloud.url + "/v1",
        "TOGETHER_BASE_URL": cloud.url + "/v1",  # no key: "not configured"
        "FIRST_TOKEN_TIMEOUT": "2",
        "STREAM_IDLE_TIMEOUT": "1",
        "MODELS_TIMEOUT": "1",
        "GRACEFUL_TIMEOUT": "2",
        "RETRIES": "0",  # fallback without same-target retries; retry tests set their own
        "USAGE_DB": "off",  # the ledger's tests give it a file
    }
    env.update(overrides)
    return env


def closed_port_url() -> str:
    """A loopback URL nothing listens on (the port was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def aliases_file(directory: pathlib.Path, text: str) -> str:
    """An aliases.yaml with `text` in `directory`, for ALIASES_PATH."""
    path = directory / "aliases.yaml"
    path.write_text(text)
    return str(path)


async def start_stack(nursery: trio.Nursery, **overrides: str) -> Stack:
    """The stack, ready (/readyz says 200), with the fakes' request logs emptied after the
    start-up probes: tests count what their own requests caused."""
    return await open_stack(nursery, overrides)


async def open_stack(
    nursery: trio.Nursery,
    overrides: dict[str, str],
    *,
    prepare: Callable[[FakeServer, FakeServer], None] = lambda ollama, cloud: None,
    ready: bool = True,
) -> Stack:
    """`prepare` scripts the fakes before the gateway starts (its start-up probes see them);
    `ready=False` returns as soon as it listens."""
    ollama: FakeServer = await nursery.start(FakeServer(FakeOllama()).serve)
    cloud: FakeServer = await nursery.start(FakeServer(FakeOpenAI(key=UPSTREAM_KEY)).serve)
    prepare(ollama, cloud)
    env = stack_env(ollama, cloud, **overrides)
    settings = Settings.from_env(env)
    registry = CollectorRegistry()
    shutdown = trio.Event()
    run = partial(
        service.run,
        settings,
        registry=registry,
        shutdown=shutdown,
        handle_signals=False,
        reread=partial(Settings.from_env, env),  # as __main__ passes it
    )
    binds: list[str] = await nursery.start(run)
    stack = Stack(ollama, cloud, binds[0], settings, registry, shutdown)
    if ready:
        await stack.wait_ready()
        ollama.requests.clear()
        cloud.requests.clear()
    return stack
