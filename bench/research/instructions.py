"""The gateway's streaming relay next to its floor (`floor_relays.py asgi`), counted in
instructions: each relay runs under valgrind's callgrind, the same bounded SSE load goes
through it, and the counters are read around the load only. At c=1 the counts repeat within
0.5%, where `floor.py`'s CPU times move by 10-30% on a shared machine: this is the measurement
a small change can be judged by, and `--top` names the C functions (the interpreter's,
libc's, orjson's) where the two relays differ. At c=16 they move by up to 4% between runs (how
many streams the run loop finds ready at each wake-up depends on timing): compare the relays
within one run there.

    python bench/research/instructions.py [--conc 1,16] [--tokens 50] [--streams 8] [--top 0]

For each concurrency, each relay gets `--streams` streams of 2 tokens, then of `--tokens`
tokens; the difference gives the instructions per token (one content chunk, relayed) and the
fixed instructions per stream, from which the ratio at 20 and 200 tokens follows. Cycles are
estimated from callgrind's cache simulation (an L1 miss 10 cycles, a last-level miss 100): a
guide to what the caches add, not a measurement. The fake upstream spaces its chunks 50 ms per
concurrent stream, so that the relays, 50 times slower under callgrind, still get one event
per read, as they do at full speed. One thing does change with that pace: the gateway moves
its idle deadline at most once a second (a few microseconds each time), which at full speed
is once in 200 chunks and here once in 20 (c=1) or every other chunk (c=16), so its figures
per token are high by up to that much at c=16. Needs valgrind (`apt-get install -y
valgrind`); about twelve minutes for the defaults. Everything runs on 127.0.0.1 and stops by
itself.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)  # bench/: run.py and the support modules
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)

from run import free_ports, wait_port  # noqa: E402

RELAYS = ("gateway", "asgi")
EVENTS = ("Ir", "Dr", "Dw", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw")
Costs = dict[str, list[int]]  # a function's events, in EVENTS' order
NAME = re.compile(r"^(c?(?:fn|ob|fl|fi|fe))=\((\d+)\)(?: (.*))?$")


def body(tokens: int) -> bytes:
    message = {
        "model": "groq/bench",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "max_tokens": tokens,
    }
    return json.dumps(message).encode()


async def one_stream(port: int, payload: bytes) -> bool:
    """One streamed chat over its own connection; whether it ended with [DONE]."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: bench\r\n"
        b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(payload)
    )
    writer.write(head + payload)
    data = b""
    while not data.endswith(b"\r\n0\r\n\r\n"):  # the chunked body's end
        part = await reader.read(65536)
        if not part:
            break
        data += part
    writer.close()
    return b"data: [DONE]" in data


async def load(port: int, tokens: int, conc: int, streams: int) -> None:
    payload = body(tokens)
    left = streams

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            if not await asyncio.wait_for(one_stream(port, payload), 900):
                raise SystemExit(f"port {port}: a stream ended without [DONE]")

    await asyncio.gather(*[worker() for _ in range(conc)])


def control(pid: int, env: dict[str, str], *command: str) -> None:
    """Zero or dump the relay's counters. vgdb wakes a process that waits in a system call
    (ptrace), so nothing else runs in it meanwhile. callgrind_control must see the relay's
    environment: vgdb names its pipe after $HOST, which the relay's HOST changes."""
    subprocess.run(
        ["callgrind_control", *command, str(pid)],
        env=env,
        stdout=subprocess.DEVNULL,
        check=True,
        timeout=60,
    )


def self_costs(path: str) -> Costs:
    """Each function's own events in a callgrind dump (calls' inclusive costs left out)."""
    names: dict[str, str] = {}
    costs: Costs = collections.defaultdict(lambda: [0] * len(EVENTS))
    fn, call_cost_next = "", False
    with open(path) as dump:
        for line in dump:
            match = NAME.match(line.rstrip("\n"))
            if match:
                kind, index, name = match.groups()
                if kind in ("fn", "cfn"):
                    if name is not None:
                        names[index] = name
                    if kind == "fn":
                        fn = names.get(index, index).split("'")[0]  # recursion depth dropped
            elif line.startswith("calls="):
                call_cost_next = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                if call_cost_next:
                    call_cost_next = False
                    continue
                for i, value in enumerate(line.split()[1:]):
                    costs[fn][i] += int(value)
    return costs


def totals(costs: Mapping[str, Sequence[float]]) -> list[float]:
    return [sum(c[i] for c in costs.values()) for i in range(len(EVENTS))]


def cycles(events: list[float]) -> float:
    e = dict(zip(EVENTS, events, strict=True))
    l1 = e["I1mr"] + e["D1mr"] + e["D1mw"]
    ll = e["ILmr"] + e["DLmr"] + e["DLmw"]
    return e["Ir"] + 10 * l1 + 100 * ll


def measure(
    relay: str, conc: int, streams: int, tokens: int, repeat: int, workdir: str, ll_kb: int = 0
) -> list[tuple[Costs, Costs]]:
    """Callgrind's per-function costs of `streams` streams of 2, then of `tokens` tokens,
    `repeat` times, after a warm-up."""
    up_port, port = free_ports(2)
    delay_ms = 50 * conc
    env = {
        **os.environ,
        "GROQ_API_KEY": "bench",
        "GROQ_BASE_URL": f"http://127.0.0.1:{up_port}/v1",
        "OLLAMA_URL": f"http://127.0.0.1:{up_port}",  # as in floor.py
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_LEVEL": "WARNING",
        "PROBE_INTERVAL": "86400",
        "PYTHONHASHSEED": "0",
    }
    out = os.path.join(workdir, relay)
    grind = [
        "valgrind",
        "--tool=callgrind",
        "--cache-sim=yes",
        "--dump-instr=no",
        "-q",
        f"--callgrind-out-file={out}.%p",
        *([f"--LL={ll_kb * 1024},16,64"] if ll_kb else []),
    ]
    script = os.path.join(BENCH, "floor_relays.py")
    command = (
        [sys.executable, "-m", "mana_llm"]
        if relay == "gateway"
        else [sys.executable, script, relay, str(port), str(up_port)]
    )
    upstream = subprocess.Popen(
        [sys.executable, os.path.join(BENCH, "fake_upstream.py"), str(up_port), "20", str(delay_ms)]
    )
    proc = subprocess.Popen(grind + command, cwd=ROOT, env=env)
    try:
        asyncio.run(wait_port(up_port))
        asyncio.run(wait_port(port, 300))
        for count in (2, tokens):  # warm-up
            asyncio.run(load(port, count, conc, conc))
        dumps = []
        for count in (2, tokens) * (1 + repeat):
            control(proc.pid, env, "--zero")
            asyncio.run(load(port, count, conc, streams))
            control(proc.pid, env, "--dump")
            dumps.append(self_costs(max(glob.glob(f"{out}.{proc.pid}.*"), key=os.path.getmtime)))
        # The first measured pair is left out: its 2-token load runs 10-20 million
        # instructions more than any later one, in both relays and whatever the warm-up
        # (type-cache misses, more allocation; not the garbage collector).
        return list(zip(dumps[2::2], dumps[3::2], strict=True))
    finally:
        for p in (proc, upstream):
            p.terminate()
            p.wait(60)


def per_token(short: Costs, long: Costs, tokens: int, streams: int) -> dict[str, list[float]]:
    """Each function's events per token: the long load's less the short one's, over the
    tokens between them (a function seen in one load only counts too)."""
    n = streams * (tokens - 2)
    none = [0] * len(EVENTS)
    return {
        fn: [(b - a) / n for a, b in zip(short.get(fn, none), long.get(fn, none), strict=True)]
        for fn in short.keys() | long.keys()
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--conc", default="1,16")
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--streams", type=int, default=8, help="per load, at least 2 x conc")
    parser.add_argument("--top", type=int, default=0, help="C functions that differ most")
    parser.add_argument("--repeat", type=int, default=2, help="pairs of loads per relay")
    parser.add_argument(
        "--ll-kb", type=int, default=0, help="simulate this last-level cache (e.g. 1024: an L2)"
    )
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("needs valgrind: apt-get install -y valgrind")
    workdir = tempfile.mkdtemp(prefix="mana-instructions-")
    try:
        for conc in [int(c) for c in args.conc.split(",")]:
            streams = max(args.streams, 2 * conc)
            figures: dict[str, list[dict[str, Any]]] = {}
            for relay in RELAYS:
                figures[relay] = []
                pairs = measure(relay, conc, streams, args.tokens, args.repeat, workdir, args.ll_kb)
                for short, long in pairs:
                    token = per_token(short, long, args.tokens, streams)
                    stream = [t / streams for t in totals(short)]
                    token_total = totals(token)
                    fixed = [s - 2 * t for s, t in zip(stream, token_total, strict=True)]
                    figures[relay].append({"token": token_total, "fixed": fixed, "fns": token})
            report(conc, streams, args.tokens, figures, args.top)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def report(
    conc: int, streams: int, tokens: int, figures: dict[str, list[dict[str, Any]]], top: int
) -> None:
    """Each pair of loads on its own line (their spread is what one-off work, such as a
    full garbage collection, moves them by), then the ratios of the means."""
    print(f"\nc={conc}: {streams} streams of 2 and of {tokens} tokens per relay, per pair")
    print(f"{'':10} {'instr/token':>12} {'instr/stream':>13} {'cycles~/token':>14}")
    for relay in RELAYS:
        for f in figures[relay]:
            print(
                f"{relay:10} {f['token'][0]:12,.0f} {f['fixed'][0]:13,.0f}"
                f" {cycles(f['token']):14,.0f}"
            )
    mean = {relay: _mean(runs) for relay, runs in figures.items()}
    gw, floor = mean["gateway"], mean["asgi"]
    print(
        f"gateway/asgi per token: instructions {gw['token'][0] / floor['token'][0]:.3f},"
        f" cycles~ {cycles(gw['token']) / cycles(floor['token']):.3f}"
    )
    for count in (20, 200):
        ratio = (gw["fixed"][0] + count * gw["token"][0]) / (
            floor["fixed"][0] + count * floor["token"][0]
        )
        print(f"gateway/asgi per stream of {count} tokens: instructions {ratio:.3f}")
    if top:
        a, b = gw["fns"], floor["fns"]
        names = sorted(set(a) | set(b), key=lambda k: -abs(a.get(k, 0) - b.get(k, 0)))
        print(f"{'gateway':>9} {'asgi':>9} {'diff':>8}  instructions per token, by C function")
        for name in names[:top]:
            ga, fa = a.get(name, 0), b.get(name, 0)
            print(f"{ga:9,.0f} {fa:9,.0f} {ga - fa:8,.0f}  {name[:80]}")


def _mean(runs: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(runs)
    fns: dict[str, float] = collections.defaultdict(float)
    for run in runs:
        for name, events in run["fns"].items():
            fns[name] += events[0] / n
    return {
        "token": [sum(r["token"][i] for r in runs) / n for i in range(len(EVENTS))],
        "fixed": [sum(r["fixed"][i] for r in runs) / n for i in range(len(EVENTS))],
        "fns": fns,
    }


if __name__ == "__main__":
    main()
