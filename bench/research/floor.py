"""The gateway's streaming relay next to its floor: the same streams (20 and 200 tokens, 5 ms
apart) through mana-llm and through the minimal relays of `floor_relays.py` (hypercorn + raw
ASGI + httpx; the same under quart-trio), measured in turn within each rep so that all see the
same noisy machine. Prints the median CPU per content chunk of each and the gateway's ratio to
the raw ASGI floor (issue 13's target: at most 1.10 at c=1 and c=16), then the same from the
lowest figure of each (noise only ever adds CPU).

    python bench/research/floor.py [--seconds 4] [--reps 5] [--conc 1,16] [--tokens 20,200]
        [--no-pin]

By default the relays share the last CPU and the load generator and the fake upstream the
others (less noise from the scheduler; absolute figures differ from unpinned runs). Each rep
measures the three in turn, in alternating order; the ratio of each rep's gateway and floor
figures (measured seconds apart) is printed too, with the middle half of those ratios: when
that spread is wide, the machine was too noisy for the run's length.

CPU per chunk = the relay's CPU time (from /proc) over the content chunks its clients
received, the per-stream work included. Everything runs on 127.0.0.1 and stops by itself.
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
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)  # bench/: run.py and the support modules
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)

from run import free_ports, run, wait_port  # noqa: E402

TARGETS = ("gateway", "asgi", "quart")


Procs = dict[str, "subprocess.Popen[bytes]"]


def start_stack(relays: dict[str, str], pin: bool = True) -> tuple[Procs, dict[str, int]]:
    """The fake upstream, the gateway and each named relay (`floor_relays.py` kind), each on
    a free port and ready; returns the processes and the ports of all but the upstream. Pinned:
    the gateway and the relays share the last CPU, the upstream and this process the others."""
    up_port, gw_port, *relay_ports = free_ports(2 + len(relays))
    env = {
        **os.environ,
        "GROQ_API_KEY": "bench",
        "GROQ_BASE_URL": f"http://127.0.0.1:{up_port}/v1",
        "OLLAMA_URL": f"http://127.0.0.1:{up_port}",
        "HOST": "127.0.0.1",
        "PORT": str(gw_port),
        "LOG_LEVEL": "WARNING",
        "PROBE_INTERVAL": "86400",  # one probe round at start-up only, off the measured path
    }
    script = os.path.join(BENCH, "floor_relays.py")
    upstream = [sys.executable, os.path.join(BENCH, "fake_upstream.py"), str(up_port), "20", "5"]
    procs: Procs = {
        "upstream": subprocess.Popen(upstream),
        "gateway": subprocess.Popen([sys.executable, "-m", "mana_llm"], cwd=ROOT, env=env),
    }
    ports = {"gateway": gw_port}
    for (name, kind), port in zip(relays.items(), relay_ports, strict=True):
        procs[name] = subprocess.Popen([sys.executable, script, kind, str(port), str(up_port)])
        ports[name] = port
    cpus = sorted(os.sched_getaffinity(0))
    if pin and len(cpus) > 1:
        for name, proc in procs.items():
            os.sched_setaffinity(proc.pid, cpus[:-1] if name == "upstream" else cpus[-1:])
        os.sched_setaffinity(0, cpus[:-1])
    try:
        for port in (up_port, *ports.values()):
            asyncio.run(wait_port(port))
    except BaseException:
        stop_stack(procs)
        raise
    time.sleep(1.0)
    return procs, ports


def stop_stack(procs: Procs) -> None:
    for proc in procs.values():
        proc.terminate()
        proc.wait(10)


def measured(port: int, pid: int, body: bytes, conc: int, seconds: float) -> dict[str, Any]:
    """`run.run` (a warm-up, then the closed loop with the process's CPU per request) that
    stops the benchmark when anything failed."""
    result = run(port, pid, body, conc, seconds)
    if result["errors"] or not result["n"]:
        raise SystemExit(f"port {port}: {result['errors']} errors, {result['n']} answers")
    return result


def cpu_per_chunk(port: int, pid: int, tokens: int, conc: int, seconds: float) -> float:
    message = {
        "model": "groq/bench",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "max_tokens": tokens,
    }
    result = measured(port, pid, json.dumps(message).encode(), conc, seconds)
    return float(result["cpu_ms"] * result["n"] / max(1, result["events"]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--conc", default="1,16")
    parser.add_argument("--tokens", default="20,200")
    parser.add_argument("--no-pin", action="store_true", help="let the scheduler place them")
    args = parser.parse_args()
    procs, ports = start_stack({"asgi": "asgi", "quart": "quart"}, pin=not args.no_pin)
    try:
        print("ms CPU per content chunk over", args.reps, "interleaved reps")
        print(f"{'tokens':>6} {'c':>3} " + " ".join(f"{t:>8}" for t in TARGETS) + "  gw/asgi")
        for tokens in (int(t) for t in args.tokens.split(",")):
            for conc in (int(c) for c in args.conc.split(",")):
                seen: dict[str, list[float]] = {t: [] for t in TARGETS}
                for rep in range(args.reps):
                    for target in TARGETS if rep % 2 == 0 else TARGETS[::-1]:
                        pid = procs[target].pid
                        seen[target].append(
                            cpu_per_chunk(ports[target], pid, tokens, conc, args.seconds)
                        )
                for how, pick in (("median", statistics.median), ("lowest", min)):
                    got: dict[str, Any] = {t: pick(v) for t, v in seen.items()}
                    print(
                        f"{tokens:>6} {conc:>3} "
                        + " ".join(f"{got[t]:8.4f}" for t in TARGETS)
                        + f"  {got['gateway'] / got['asgi']:7.2f}  ({how})",
                        flush=True,
                    )
                paired = sorted(g / a for g, a in zip(seen["gateway"], seen["asgi"], strict=True))
                quarter = len(paired) // 4
                print(
                    f"{'':>10} gateway/asgi rep by rep: median {statistics.median(paired):.2f},"
                    f" middle half {paired[quarter]:.2f}..{paired[-quarter - 1]:.2f}",
                    flush=True,
                )
    finally:
        stop_stack(procs)


if __name__ == "__main__":
    main()
