"""What a keys file costs, in instructions: the gateway without a keys file and with one (every
limit set, the ledger on, as `bench/callers.py` runs them), each under valgrind's callgrind, the
same non-streaming requests one at a time over one connection, counted around the load only.
Where `bench/callers.py`'s CPU times move by 10% between runs on a shared machine, these counts
repeat within about 0.5%; `--top` lists the C functions where the two differ.

    python bench/research/callers_instructions.py [--requests 60] [--reps 2] [--top 0]

Needs valgrind (`apt-get install -y valgrind`); about two minutes. Everything runs on
127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
sys.path.insert(0, HERE)

import callers  # noqa: E402
import instructions  # noqa: E402
from run import free_ports, wait_port  # noqa: E402

BODY = json.dumps({"model": "groq/bench", "messages": [{"role": "user", "content": "hi"}]}).encode()
REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
    b"authorization: Bearer bench\r\ncontent-length: %d\r\n\r\n" % len(BODY)
) + BODY


async def load(port: int, count: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(count):
        writer.write(REQUEST)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"not answered: {head[:80]!r}")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
    writer.close()


def measure(mode: str, requests: int, reps: int, workdir: str) -> tuple[list[float], Any]:
    """Instructions per request of each rep, and the last rep's costs by C function."""
    up_port, port = free_ports(2)
    scratch = tempfile.mkdtemp(prefix="mana-bench-instr-")
    base = callers.base_env(up_port, scratch) | {"PYTHONHASHSEED": "0"}
    env = callers.gateway_env(base, mode, port, scratch)
    return measure_env(mode, env, ROOT, up_port, requests, reps, workdir)


def measure_env(
    name: str,
    env: dict[str, str],
    cwd: str,
    up_port: int,
    requests: int,
    reps: int,
    workdir: str,
    args: Sequence[str] = ("-m", "mana_llm"),
) -> tuple[list[float], Any]:
    """`measure` for a gateway with environment `env` run from `cwd` as `python *args`
    (listening on env PORT, its upstream the fake on `up_port`)."""
    port = int(env["PORT"])
    out = os.path.join(workdir, name)
    grind = ["valgrind", "--tool=callgrind", "--dump-instr=no", "-q"]
    grind.append(f"--callgrind-out-file={out}.%p")
    fake = os.path.join(BENCH, "fake_upstream.py")
    upstream = subprocess.Popen([sys.executable, fake, str(up_port), "20", "5"])
    proc = subprocess.Popen([*grind, sys.executable, *args], cwd=cwd, env=env)
    try:
        asyncio.run(wait_port(up_port))
        asyncio.run(wait_port(port, 300))
        asyncio.run(load(port, 20))  # warm-up
        per_request, costs = [], None
        for _ in range(reps):
            instructions.control(proc.pid, env, "--zero")
            asyncio.run(load(port, requests))
            instructions.control(proc.pid, env, "--dump")
            dump = max(glob.glob(f"{out}.{proc.pid}.*"), key=os.path.getmtime)
            costs = instructions.self_costs(dump)
            per_request.append(instructions.totals(costs)[0] / requests)
        return per_request, costs
    finally:
        for p in (proc, upstream):
            p.terminate()
            p.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--top", type=int, default=0, help="C functions that differ most")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="mana-bench-instr-out-")
    runs = {mode: measure(mode, args.requests, args.reps, workdir) for mode in ("none", "keys")}
    none, keys = (min(runs[m][0]) for m in ("none", "keys"))  # the first rep runs colder
    print(f"instructions per request: none {none / 1e6:.3f}M, keys {keys / 1e6:.3f}M,"
          f" ratio {keys / none:.3f}")  # fmt: skip
    if args.top:
        a, b = runs["none"][1], runs["keys"][1]
        delta = {f: (b.get(f, [0])[0] - a.get(f, [0])[0]) / args.requests for f in {*a, *b}}
        for name, d in sorted(delta.items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"{d:10.0f}  {name[:100]}")


if __name__ == "__main__":
    main()
