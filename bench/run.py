"""Gateway overhead benchmark: the same requests straight to a fast fake upstream and through
mana-llm, side by side in one run. Prints added latency (p50, p99), requests per second, the
gateway's CPU time per request and per streamed chunk, and its peak memory, for non-streaming
and streaming chat at concurrency 1 and 32. Everything runs on 127.0.0.1 and stops by itself.

    python bench/run.py [--seconds 4] [--tokens 20] [--delay-ms 5] [--conc 1,32]
    python bench/run.py --workers [--seconds 4] [--conc 1,32]   # WORKERS=1 against WORKERS=2

CPU per streamed chunk = (CPU per stream - CPU per non-streaming request) / chunks per stream.
Figures are for comparison within one run; the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CLK = os.sysconf("SC_CLK_TCK")


def free_ports(count: int) -> list[int]:
    """Distinct free ports: every socket stays bound until all are chosen."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def cpu_s(pid: int) -> float:
    """CPU seconds of a process, all its threads: from the scheduler's nanosecond counters
    (`/proc/PID/task/*/schedstat`) where the kernel keeps them, else from /proc/PID/stat,
    whose 10 ms ticks are too coarse for a run of a few seconds at low load."""
    try:
        total_ns = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total_ns += int(f.read().split()[0])
        return total_ns / 1e9
    except (OSError, ValueError):
        pass
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def wait_port(port: int, deadline_s: float = 15.0) -> None:
    end = time.monotonic() + deadline_s
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.05)


async def read_response(reader: asyncio.StreamReader, t0: float) -> tuple[int, float, int, bool]:
    """(status, time to first content or to the body, content events, server closes);
    consumes one response."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    lower = head.lower()
    closes = b"connection: close" in lower  # hypercorn recycles a connection every 1000 requests
    if b"transfer-encoding: chunked" not in lower:
        length = int(re.search(rb"content-length: *(\d+)", lower).group(1))  # type: ignore[union-attr]
        await reader.readexactly(length)
        return status, time.perf_counter() - t0, 0, closes
    first, events = 0.0, 0
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        data = await reader.readexactly(size + 2)
        if size == 0:
            return status, first, events, closes
        for part in data.split(b"\n\n"):
            if b"tok " in part:  # a content chunk (the role chunk has empty content)
                events += 1
                if not first:
                    first = time.perf_counter() - t0


async def closed_loop(port: int, body: bytes, conc: int, seconds: float) -> dict[str, Any]:
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        b"content-type: application/json\r\n"
        b"authorization: Bearer bench\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)
    )
    latencies: list[float] = []
    firsts: list[float] = []
    counts = {"events": 0, "errors": 0}
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                writer.write(request)
                status, first, events, closes = await asyncio.wait_for(
                    read_response(reader, t0), 30
                )
                if closes:
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                if status != 200:
                    counts["errors"] += 1
                    continue
                latencies.append(time.perf_counter() - t0)
                firsts.append(first)
                counts["events"] += events
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    elapsed = time.perf_counter() - started
    return {
        "n": len(latencies),
        "rps": len(latencies) / elapsed,
        "lat": latencies,
        "first": firsts,
        **counts,
    }


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def run(port: int, pid: int | None, body: bytes, conc: int, seconds: float) -> dict[str, Any]:
    asyncio.run(closed_loop(port, body, conc, 0.5))  # warm-up
    before = cpu_s(pid) if pid else 0.0
    result = asyncio.run(closed_loop(port, body, conc, seconds))
    if pid:
        result["cpu_ms"] = (cpu_s(pid) - before) * 1000 / max(1, result["n"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--delay-ms", type=float, default=5.0)
    parser.add_argument("--conc", default="1,32")
    parser.add_argument("--reps", type=int, default=3, help="with --workers: interleaved reps")
    parser.add_argument(
        "--workers",
        action="store_true",
        help="instead: the same load against WORKERS=1 and WORKERS=2, one after the other",
    )
    args = parser.parse_args()
    up_port, gw_port = free_ports(2)
    print(f"fake upstream :{up_port}, gateway :{gw_port}")
    upstream = subprocess.Popen(
        [
            sys.executable,
            os.path.join(HERE, "fake_upstream.py"),
            str(up_port),
            str(args.tokens),
            str(args.delay_ms),
        ]
    )
    aliases = os.path.join(tempfile.mkdtemp(prefix="mana-bench-"), "aliases.yaml")
    with open(aliases, "w") as f:
        f.write(ALIASES)
    env = {
        **os.environ,
        "ALIASES_PATH": aliases,
        "OPENROUTER_API_KEY": "bench",
        "OPENROUTER_BASE_URL": f"http://127.0.0.1:{up_port}/v1",
        "HOST": "127.0.0.1",
        "PORT": str(gw_port),
        "LOG_LEVEL": "WARNING",
        "PROBE_INTERVAL": "86400",  # one probe round at start-up only, off the measured path
        "GROQ_API_KEY": "bench",
        "GROQ_BASE_URL": f"http://127.0.0.1:{up_port}/v1",
        "OLLAMA_URL": f"http://127.0.0.1:{up_port}",
    }
    if args.workers:
        try:
            asyncio.run(wait_port(up_port))
            compare_workers(args, env, gw_port, upstream.pid)
        finally:
            upstream.terminate()
            upstream.wait(10)
        return
    gateway = subprocess.Popen([sys.executable, "-m", "mana_llm"], cwd=ROOT, env=env)
    try:
        asyncio.run(wait_port(up_port))
        asyncio.run(wait_port(gw_port))
        report(args, up_port, gw_port, gateway.pid)
        resilience(args, gw_port, gateway.pid)
        print(f"\ngateway peak RSS: {peak_rss_mb(gateway.pid):.1f} MB")
    finally:
        for proc in (gateway, upstream):
            proc.terminate()
            proc.wait(10)


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its children (a supervisor and its workers)."""
    total = cpu_s(pid)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    total += cpu_s(int(entry))
            except OSError:
                continue
    return total


def compare_workers(args: argparse.Namespace, env: dict[str, str], port: int, up_pid: int) -> None:
    """The same closed loops against WORKERS=1 and WORKERS=2, both running (on two ports) and
    measured in turn, `--reps` times each, so both see the same noisy machine: requests per
    second (median of the reps), their ratio, p50 latency, and the share of CPU the load
    generator itself took (it runs on the same cores)."""
    messages = [{"role": "user", "content": "hi"}]
    loads = {
        "non-stream": json.dumps({"model": "groq/bench", "messages": messages}).encode(),
        "stream": json.dumps(
            {"model": "groq/bench", "messages": messages, "stream": True}
        ).encode(),
    }
    ports = {1: port, 2: free_ports(1)[0]}
    gateways = {
        workers: subprocess.Popen(
            [sys.executable, "-m", "mana_llm"],
            cwd=ROOT,
            env={**env, "WORKERS": str(workers), "PORT": str(ports[workers])},
        )
        for workers in (1, 2)
    }
    results: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    try:
        for p in ports.values():
            asyncio.run(wait_port(p))
        time.sleep(1.5)  # every worker listening
        for _ in range(args.reps):
            for name, body in loads.items():
                for conc in (int(c) for c in args.conc.split(",")):
                    for workers, gateway in gateways.items():
                        result = measure_loop(
                            ports[workers], gateway.pid, up_pid, body, conc, args.seconds
                        )
                        results.setdefault((name, conc, workers), []).append(result)
    finally:
        for gateway in gateways.values():
            gateway.terminate()
            gateway.wait(30)
    head = f"{'rps 1w':>8} {'rps 2w':>8} {'x':>6} {'p50 1w/2w ms':>16}"
    head += "  cores gw/load/upstream 1w | 2w"
    print(f"{'workload':<18} {head}   (median of {args.reps} interleaved reps)")
    for (name, conc, workers), twos in results.items():
        if workers != 2:
            continue
        ones = results[(name, conc, 1)]
        one, two = median_run(ones), median_run(twos)
        ratio = statistics.median(b["rps"] / a["rps"] for a, b in zip(ones, twos, strict=True))
        p50 = f"{pct(one['lat'], 0.5):7.2f}/{pct(two['lat'], 0.5):<8.2f}"
        cores = " | ".join("/".join(f"{c:.2f}" for c in run["cores"]) for run in (one, two))
        rps = f"{one['rps']:8.0f} {two['rps']:8.0f} {ratio:6.2f}"
        print(f"{name + f' c={conc}':<18} {rps} {p50}  {cores}")


def measure_loop(
    port: int, pid: int, up_pid: int, body: bytes, conc: int, seconds: float
) -> dict[str, Any]:
    """One closed loop, and where the machine's CPU went meanwhile: the gateway (all its
    processes), the load generator (this process), the fake upstream, in cores."""
    asyncio.run(closed_loop(port, body, conc, 0.5))  # warm-up
    ours, gateway, upstream = os.times(), tree_cpu_s(pid), cpu_s(up_pid)
    started = time.perf_counter()
    result = asyncio.run(closed_loop(port, body, conc, seconds))
    elapsed = time.perf_counter() - started
    after = os.times()
    load = (after.user + after.system) - (ours.user + ours.system)
    result["cores"] = (
        (tree_cpu_s(pid) - gateway) / elapsed,
        load / elapsed,
        (cpu_s(up_pid) - upstream) / elapsed,
    )
    return result


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]


# Resilience rows: the same stream through a live alias, a buffered one (generated whole,
# then relayed) and a hedged one whose hedge time is never reached (the race's own cost).
ALIASES = """
aliases:
  mana/live:
    chain: [groq/bench, openrouter/bench]
  mana/buffered:
    buffer: true
    chain: [groq/bench, openrouter/bench]
  mana/hedged:
    hedge_after_s: 5
    chain: [groq/bench, openrouter/bench]
"""


def resilience(args: argparse.Namespace, gw_port: int, pid: int) -> None:
    messages = [{"role": "user", "content": "hi"}]
    print(
        f"\n{'stream via alias':<22} {'ttft p50/p99 ms':>18} {'total p50/p99 ms':>18} {'cpu ms':>8}"
    )
    for conc in (int(c) for c in args.conc.split(",")):
        for alias in ("mana/live", "mana/buffered", "mana/hedged"):
            body = json.dumps({"model": alias, "messages": messages, "stream": True}).encode()
            r = run(gw_port, pid, body, conc, args.seconds)
            first = f"{pct(r['first'], 0.5):8.2f}/{pct(r['first'], 0.99):<9.2f}"
            total = f"{pct(r['lat'], 0.5):8.2f}/{pct(r['lat'], 0.99):<9.2f}"
            errors = f"  errors {r['errors']}" if r["errors"] else ""
            print(f"{alias + f' c={conc}':<22} {first} {total} {r['cpu_ms']:8.3f}{errors}")


def report(args: argparse.Namespace, up_port: int, gw_port: int, pid: int) -> None:
    messages = [{"role": "user", "content": "hi"}]
    plain = json.dumps({"model": "groq/bench", "messages": messages}).encode()
    stream = json.dumps({"model": "groq/bench", "messages": messages, "stream": True}).encode()
    # temperature 0 is cacheable: after the first request every one is a cache hit
    cached = json.dumps({"model": "groq/bench", "messages": messages, "temperature": 0}).encode()
    columns = ("direct p50/p99 ms", "gateway p50/p99 ms", "added p50/p99", "rps d/gw")
    widths = (18, 19, 14, 13)
    header = " ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True))
    print(f"{'workload':<18} {header} {'gw cpu ms/req':>13} {'ms/chunk':>9}")
    floor_port = free_ports(1)[0]
    relays = os.path.join(HERE, "floor_relays.py")
    floor = subprocess.Popen([sys.executable, relays, "asgi", str(floor_port), str(up_port)])
    try:
        asyncio.run(wait_port(floor_port))
        rows(args, up_port, gw_port, pid, floor_port, floor.pid, (plain, cached, stream))
    finally:
        floor.terminate()
        floor.wait(10)


def rows(
    args: argparse.Namespace,
    up_port: int,
    gw_port: int,
    pid: int,
    floor_port: int,
    floor_pid: int,
    bodies: tuple[bytes, bytes, bytes],
) -> None:
    plain, cached, stream = bodies
    for conc in (int(c) for c in args.conc.split(",")):
        direct = run(up_port, None, plain, conc, args.seconds)
        ours = run(gw_port, pid, plain, conc, args.seconds)
        line(f"non-stream c={conc}", direct["lat"], ours["lat"], direct, ours, ours["cpu_ms"], None)
        hits = run(gw_port, pid, cached, conc, args.seconds)
        line(f"cache hit c={conc}", direct["lat"], hits["lat"], direct, hits, hits["cpu_ms"], None)
        direct_s = run(up_port, None, stream, conc, args.seconds)
        ours_s = run(gw_port, pid, stream, conc, args.seconds)
        chunks = ours_s["events"] / max(1, ours_s["n"])
        per_chunk = (ours_s["cpu_ms"] - ours["cpu_ms"]) / chunks if chunks else float("nan")
        line(
            f"stream c={conc} ttft",
            direct_s["first"],
            ours_s["first"],
            direct_s,
            ours_s,
            ours_s["cpu_ms"],
            per_chunk,
        )
        # the floor (bench/floor.py): the same streams through a minimal relay on the same stack;
        # CPU per content chunk with the per-stream work included, for both
        floor_s = run(floor_port, floor_pid, stream, conc, args.seconds)
        gw_chunk = ours_s["cpu_ms"] * ours_s["n"] / max(1, ours_s["events"])
        floor_chunk = floor_s["cpu_ms"] * floor_s["n"] / max(1, floor_s["events"])
        print(
            f"{f'  floor c={conc}':<18} hypercorn + raw ASGI + httpx: {floor_chunk:.3f} ms/chunk,"
            f" gateway {gw_chunk:.3f} (x{gw_chunk / floor_chunk:.2f}; bench/floor.py for more)"
        )


def line(
    name: str,
    direct: list[float],
    ours: list[float],
    d: dict[str, Any],
    o: dict[str, Any],
    cpu: float,
    per_chunk: float | None,
) -> None:
    dp50, dp99, op50, op99 = pct(direct, 0.5), pct(direct, 0.99), pct(ours, 0.5), pct(ours, 0.99)
    chunk = f"{per_chunk:9.3f}" if per_chunk is not None else f"{'':>9}"
    errors = f"  errors d/gw {d['errors']}/{o['errors']}" if d["errors"] or o["errors"] else ""
    latency = f"{dp50:8.2f}/{dp99:<9.2f} {op50:9.2f}/{op99:<9.2f}"
    added = f"{op50 - dp50:6.2f}/{op99 - dp99:<7.2f}"
    print(
        f"{name:<18} {latency} {added} {d['rps']:6.0f}/{o['rps']:<6.0f} {cpu:13.3f} {chunk}{errors}"
    )


if __name__ == "__main__":
    main()
