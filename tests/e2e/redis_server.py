"""A real redis-server on a free loopback port, owned by one test: started, killed, stopped and
restarted on the same port as the test says. Readiness is read from the server's own log."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator

import attrs
import pytest
import trio

READY = b"Ready to accept connections"


def redis_server_or_skip() -> str:
    """The redis-server binary. CI installs it and sets MANA_LLM_REQUIRE_REDIS=1, so there a
    missing server fails the run instead of skipping these tests."""
    path = shutil.which("redis-server")
    if path is None:
        if os.environ.get("MANA_LLM_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is not installed (apt-get install -y redis-server)")
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@attrs.define(eq=False)
class RedisServer:
    binary: str
    port: int = attrs.field(factory=free_port)
    process: trio.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Start it and return once it accepts connections (an empty cache: no persistence)."""
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--loglevel", "notice"]
        process = await trio.lowlevel.open_process(args, stdout=subprocess.PIPE)
        self.process = process
        assert process.stdout is not None
        seen = b""
        with trio.fail_after(10):
            while READY not in seen:
                data = await process.stdout.receive_some()
                if not data:
                    raise RuntimeError(f"redis-server exited: {seen.decode(errors='replace')}")
                seen = seen[-200:] + data

    async def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        with trio.fail_after(10):
            await self.process.wait()
        if self.process.stdout is not None:
            await self.process.stdout.aclose()
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers (a hung server)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


@pytest.fixture
def redis_binary() -> str:
    """Outside trio: a skip raised inside pytest-trio's fixture runner loses its reason."""
    return redis_server_or_skip()


@pytest.fixture
async def redis(redis_binary: str) -> AsyncIterator[RedisServer]:
    server = RedisServer(redis_binary)
    await server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.resume()
            await server.kill()
