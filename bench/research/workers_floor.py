"""The floor for `run.py --workers`: how far one to two processes can scale on this machine
when nothing of the gateway runs, only the same stack doing the same hop (hypercorn + trio, a
raw ASGI app relaying each request to the same fake upstream with httpx), one and two
SO_REUSEPORT processes under the same closed-loop load.

    python bench/research/workers_floor.py [--seconds 4] [--conc 32]

If this minimal relay scales no better than the gateway, the ceiling is the machine (two cores
shared with the load generator and the fake upstream), not the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)  # bench/: run.py and the support modules
sys.path.insert(0, BENCH)

from run import closed_loop, free_ports, pct, tree_cpu_s, wait_port  # noqa: E402

RELAY = r"""
import os, socket, sys, httpx, trio
from hypercorn.config import Config
from hypercorn.trio import serve
sys.path.insert(0, sys.argv[3])
from floor_relays import request_body

UP = httpx.URL(f"http://127.0.0.1:{sys.argv[2]}/v1/chat/completions")

async def main():
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    transport = httpx.AsyncHTTPTransport(limits=limits)

    async def app(scope, receive, send):
        body = await request_body(scope, receive, send)
        if body is None:
            return
        headers = {"content-type": "application/json"}
        request = httpx.Request("POST", UP, content=body, headers=headers)
        response = await transport.handle_async_request(request)
        kind = response.headers.get("content-type", "application/json").encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", kind)]})
        async for part in response.aiter_raw():  # relayed as it comes: SSE chunk by chunk
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await response.aclose()
        await send({"type": "http.response.body", "body": b""})

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", int(sys.argv[1])))
    sock.setblocking(False)
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.errorlog = None
    await serve(app, config)

trio.run(main)
"""


def measure(
    processes: int, port: int, up_port: int, conc: int, seconds: float, stream: bool
) -> dict[str, Any]:
    message = {"model": "bench", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    body = json.dumps(message).encode()
    procs = [
        subprocess.Popen([sys.executable, "-c", RELAY, str(port), str(up_port), BENCH])
        for _ in range(processes)
    ]
    try:
        asyncio.run(wait_port(port))
        time.sleep(1.0)
        asyncio.run(closed_loop(port, body, conc, 0.5))
        before = sum(tree_cpu_s(p.pid) for p in procs)
        result = asyncio.run(closed_loop(port, body, conc, seconds))
        result["cpu_ms"] = (sum(tree_cpu_s(p.pid) for p in procs) - before) * 1000 / result["n"]
        return result
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--conc", type=int, default=32)
    args = parser.parse_args()
    up_port, port = free_ports(2)
    upstream = subprocess.Popen(
        [sys.executable, os.path.join(BENCH, "fake_upstream.py"), str(up_port), "20", "5"]
    )
    try:
        asyncio.run(wait_port(up_port))
        for stream in (False, True):
            one = measure(1, port, up_port, args.conc, args.seconds, stream)
            two = measure(2, port, up_port, args.conc, args.seconds, stream)
            what = "stream" if stream else "non-stream"
            print(
                f"minimal relay, {what} c={args.conc}: 1 process {one['rps']:.0f}/s"
                f" ({one['cpu_ms']:.3f} ms CPU each, p50 {pct(one['lat'], 0.5):.2f} ms);"
                f" 2 processes {two['rps']:.0f}/s"
                f" ({two['cpu_ms']:.3f} ms CPU each, p50 {pct(two['lat'], 0.5):.2f} ms);"
                f" x{two['rps'] / one['rps']:.2f}",
                flush=True,
            )
    finally:
        upstream.terminate()
        upstream.wait(10)


if __name__ == "__main__":
    socket.setdefaulttimeout(30)
    main()
