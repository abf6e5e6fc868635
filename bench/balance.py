"""Balancing across two Ollama hosts: the gateway's selection against plain round-robin.

    python bench/balance.py [--seconds 60] [--clients 6]

Two fake Ollama hosts (tests/fakes: each holds one model in memory, loads another in
`--cold-load` seconds, evicting the one it had, and runs two requests at once: the rest
queue), behind one gateway with `max_in_flight: 2` and `cold_load_s` set to the same cold load.
A closed loop of `--clients` streaming requests, each for one of two models at random, runs for
`--seconds` against the gateway as it chooses (`BALANCE=least_busy`), then again against fresh
hosts with `BALANCE=round_robin`. It prints, for each, the requests answered per second, the
mean and p95 time to first token, and the cold loads the hosts made; then the ratios. Bounded
in time, on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
from functools import partial
from typing import Any

import httpx
import trio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from prometheus_client import CollectorRegistry  # noqa: E402

from mana_llm import service  # noqa: E402
from mana_llm.settings import Settings  # noqa: E402
from tests.fakes.server import FakeServer  # noqa: E402
from tests.fakes.upstreams import FakeOllama  # noqa: E402

MODELS = ("alpha:1b", "beta:1b")
PROVIDERS = """
providers:
  ollama:
    cold_load_s: {cold}
    deployments:
      - {{name: gpu-a, base_url: "{a}", max_in_flight: 2}}
      - {{name: gpu-b, base_url: "{b}", max_in_flight: 2}}
"""


async def one(client: httpx.AsyncClient, model: str, ttfts: list[float]) -> None:
    body = {"model": f"ollama/{model}", "stream": True}
    body["messages"] = [{"role": "user", "content": "hi"}]
    started = trio.current_time()
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        first = None
        async for line in response.aiter_lines():
            if first is None and line.startswith("data: {"):
                first = trio.current_time() - started
        if response.status_code == 200 and first is not None:
            ttfts.append(first)


async def run_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """One mode against fresh hosts: (requests/s, mean and p95 TTFT, cold loads)."""
    fakes = [
        FakeOllama(models=MODELS, max_loaded=1, load_s=args.cold_load, parallel=2) for _ in "ab"
    ]
    async with trio.open_nursery() as nursery:
        hosts = [await nursery.start(FakeServer(fake).serve) for fake in fakes]
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as providers:
            providers.write(PROVIDERS.format(cold=args.cold_load, a=hosts[0].url, b=hosts[1].url))
        env = {
            "HOST": "127.0.0.1",
            "PORT": "0",
            "PROVIDERS_PATH": providers.name,
            "BALANCE": mode,
            "LOG_LEVEL": "WARNING",
            "FIRST_TOKEN_TIMEOUT": "120",
            "CACHE_ENABLED": "0",
        }
        stop = trio.Event()
        run = partial(
            service.run,
            Settings.from_env(env),
            registry=CollectorRegistry(),
            shutdown=stop,
            handle_signals=False,
        )
        binds: list[str] = await nursery.start(run)
        ttfts: list[float] = []
        rng = random.Random(args.seed)
        limits = httpx.Limits(max_connections=args.clients)
        async with httpx.AsyncClient(base_url=binds[0], timeout=300, limits=limits) as client:

            async def loop(deadline: float) -> None:
                while trio.current_time() < deadline:
                    await one(client, rng.choice(MODELS), ttfts)

            deadline = trio.current_time() + args.seconds
            async with trio.open_nursery() as clients:
                for _ in range(args.clients):
                    clients.start_soon(loop, deadline)
            took = trio.current_time() - (deadline - args.seconds)
        stop.set()
        os.unlink(providers.name)
        nursery.cancel_scope.cancel()
    ttfts.sort()
    return {
        "rps": len(ttfts) / took,
        "mean": statistics.fmean(ttfts) if ttfts else float("nan"),
        "p95": ttfts[int(0.95 * (len(ttfts) - 1))] if ttfts else float("nan"),
        "loads": sum(fake.loads for fake in fakes),
        "answered": len(ttfts),
    }


async def main_async(args: argparse.Namespace) -> None:
    results = {mode: await run_mode(mode, args) for mode in ("least_busy", "round_robin")}
    print(
        f"two hosts, cold load {args.cold_load:g}s, 2 parallel, {args.clients} clients,"
        f" {args.seconds:g}s per mode"
    )
    print(
        f"{'mode':12s} {'answered':>8s} {'req/s':>7s} {'TTFT mean':>10s} {'p95':>7s} {'loads':>6s}"
    )
    for mode, r in results.items():
        print(
            f"{mode:12s} {r['answered']:8d} {r['rps']:7.2f} {r['mean']:9.2f}s"
            f" {r['p95']:6.2f}s {r['loads']:6d}"
        )
    ours, rr = results["least_busy"], results["round_robin"]
    print(
        f"cold loads: round-robin / ours = {rr['loads'] / max(ours['loads'], 1):.1f}x;"
        f" p95 TTFT ours / round-robin = {ours['p95'] / rr['p95']:.2f};"
        f" req/s ours / round-robin = {ours['rps'] / rr['rps']:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="per mode")
    parser.add_argument("--clients", type=int, default=6, help="closed-loop clients")
    parser.add_argument("--cold-load", type=float, default=3.0, help="seconds to load a model")
    parser.add_argument("--seed", type=int, default=1)
    trio.run(main_async, parser.parse_args())


if __name__ == "__main__":
    main()
