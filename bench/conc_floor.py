"""Non-streaming CPU per request at low and high concurrency, the gateway beside its floor:
the same requests through mana-llm and through `floor_relays.py json` (hypercorn + a raw ASGI
app + the gateway's own connection pool, the whole answer relayed with `model` rewritten,
nothing else), measured in turn within each rep, the relays pinned to one CPU and the load
and the fake upstream to the others.

    python bench/conc_floor.py [--reps 5] [--seconds 3] [--conc 1,64]

Prints the median CPU per request of each at each concurrency and how much more a request
costs at the highest than at the lowest. When the floor grows as much as the gateway, the
growth is the stack's (trio's scheduler, the sockets, hypercorn's per-connection work), not
the gateway's. Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from run import closed_loop, cpu_s, free_ports, wait_port  # noqa: E402

TARGETS = ("gateway", "floor")


def cpu_per_request(port: int, pid: int, body: bytes, conc: int, seconds: float) -> float:
    asyncio.run(closed_loop(port, body, conc, 0.5))  # warm-up: connections, pools
    before = cpu_s(pid)
    result = asyncio.run(closed_loop(port, body, conc, seconds))
    if result["errors"] or not result["n"]:
        raise SystemExit(f"port {port}: {result['errors']} errors, {result['n']} answers")
    return (cpu_s(pid) - before) * 1000 / float(result["n"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--conc", default="1,64")
    args = parser.parse_args()
    levels = [int(c) for c in args.conc.split(",")]
    up_port, gw_port, floor_port = free_ports(3)
    env = {
        **os.environ,
        "GROQ_API_KEY": "bench",
        "GROQ_BASE_URL": f"http://127.0.0.1:{up_port}/v1",
        "OLLAMA_URL": f"http://127.0.0.1:{up_port}",
        "HOST": "127.0.0.1",
        "PORT": str(gw_port),
        "LOG_LEVEL": "WARNING",
        "PROBE_INTERVAL": "86400",
    }
    relays = os.path.join(HERE, "floor_relays.py")
    procs = {
        "upstream": subprocess.Popen(
            [sys.executable, os.path.join(HERE, "fake_upstream.py"), str(up_port), "20", "5"]
        ),
        "gateway": subprocess.Popen([sys.executable, "-m", "mana_llm"], cwd=ROOT, env=env),
        "floor": subprocess.Popen([sys.executable, relays, "json", str(floor_port), str(up_port)]),
    }
    ports = {"gateway": gw_port, "floor": floor_port}
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        for name, proc in procs.items():
            os.sched_setaffinity(proc.pid, cpus[:-1] if name == "upstream" else cpus[-1:])
        os.sched_setaffinity(0, cpus[:-1])
    body = json.dumps({"model": "groq/bench", "messages": [{"role": "user", "content": "hi"}]})
    try:
        for port in (up_port, *ports.values()):
            asyncio.run(wait_port(port))
        time.sleep(1.0)
        seen: dict[tuple[str, int], list[float]] = {(t, c): [] for t in TARGETS for c in levels}
        for rep in range(args.reps):
            for conc in levels:
                for target in TARGETS if rep % 2 == 0 else TARGETS[::-1]:
                    pid = procs[target].pid
                    seen[target, conc].append(
                        cpu_per_request(ports[target], pid, body.encode(), conc, args.seconds)
                    )
        print("ms CPU per request, median of", args.reps, "interleaved reps")
        print(f"{'':8} " + " ".join(f"{'c=' + str(c):>8}" for c in levels) + "  highest/lowest")
        for target in TARGETS:
            got = [statistics.median(seen[target, c]) for c in levels]
            print(
                f"{target:8} " + " ".join(f"{g:8.3f}" for g in got) + f"  {got[-1] / got[0]:8.2f}"
            )
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
