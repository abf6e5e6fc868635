"""What callers cost: the same requests through a gateway with a keys file (every limit set,
the ledger on) and through one without (no keys file, no ledger), side by side in one run.

    python bench/callers.py [--seconds 1] [--conc 1,64] [--reps 8]

Both gateways run side by side. For each workload (a non-streaming and a streaming chat to a
fast fake upstream) and each concurrency, they are loaded in turn for `--seconds`, `--reps`
times each (the machine is shared and noisy: interleaved slices see the same noise): the
gateway's CPU per request (summed over its slices) and its p50 latency. It prints both and the
ratios keys/none (the target: CPU per request at most +10%). Everything runs on 127.0.0.1 and
stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from run import closed_loop, cpu_s, free_ports, pct, wait_port  # noqa: E402

KEYS = """keys:
  bench:
    key_sha256: {digest}
    models: ["groq/*", "mana/*"]
    rpm: 100000000
    tpm: 10000000000
    max_parallel: 10000
    budget: {{tokens: 100000000000, usd: 1000000, period: month}}
"""
PRICES = 'prices:\n  "groq/bench": {input_per_mtok: 0.05, output_per_mtok: 0.08}\n'


def base_env(up_port: int, scratch: str) -> dict[str, str]:
    """What both gateways share: the fake upstream as groq, the prices file in `scratch`."""
    with open(os.path.join(scratch, "providers.yaml"), "w") as f:
        f.write(PRICES)
    return {
        **os.environ,
        "HOST": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
        "PROBE_INTERVAL": "86400",
        "GROQ_API_KEY": "bench",
        "GROQ_BASE_URL": f"http://127.0.0.1:{up_port}/v1",
        "OLLAMA_URL": f"http://127.0.0.1:{up_port}",
        "PROVIDERS_PATH": os.path.join(scratch, "providers.yaml"),
        "CACHE_ENABLED": "0",
    }


def gateway_env(base: dict[str, str], mode: str, port: int, scratch: str) -> dict[str, str]:
    env = {**base, "PORT": str(port), "USAGE_DB": "off"}
    if mode == "keys":
        keys = os.path.join(scratch, "keys.yaml")
        with open(keys, "w") as f:
            f.write(KEYS.format(digest=hashlib.sha256(b"bench").hexdigest()))
        env |= {
            "KEYS_PATH": keys,
            "USAGE_DB": os.path.join(scratch, f"usage-{port}.sqlite"),
            "LIMITS_DB": os.path.join(scratch, f"limits-{port}.sqlite"),
        }
    return env


_MESSAGES = [{"role": "user", "content": "hi"}]
WORKLOADS = {  # a non-streaming and a streaming chat (20 chunks from the fake upstream)
    "chat": json.dumps({"model": "groq/bench", "messages": _MESSAGES}).encode(),
    "stream": json.dumps({"model": "groq/bench", "messages": _MESSAGES, "stream": True}).encode(),
}


def fake_upstream() -> tuple[int, subprocess.Popen[bytes]]:
    """The fast fake upstream on a free port (20 chunks, 5 ms apart), and its process."""
    port = free_ports(1)[0]
    command = [sys.executable, os.path.join(HERE, "fake_upstream.py"), str(port), "20", "5"]
    return port, subprocess.Popen(command)


def interleaved(
    ports: dict[str, int], pids: dict[str, int], body: bytes, conc: int, slices: int, slice_s: float
) -> dict[str, dict[str, Any]]:
    """Short runs against each gateway in turn, `slices` times: both see the same machine."""
    totals: dict[str, dict[str, Any]] = {
        mode: {"cpu": 0.0, "n": 0, "lat": [], "errors": 0} for mode in ports
    }
    for mode in ports:
        asyncio.run(closed_loop(ports[mode], body, conc, 0.5))  # warm-up
    for _ in range(slices):
        for mode in ports:
            before = cpu_s(pids[mode])
            result = asyncio.run(closed_loop(ports[mode], body, conc, slice_s))
            totals[mode]["cpu"] += cpu_s(pids[mode]) - before
            totals[mode]["n"] += result["n"]
            totals[mode]["lat"] += result["lat"]
            totals[mode]["errors"] += result["errors"]
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=1.0, help="one slice against one gateway")
    parser.add_argument("--conc", default="1,64")
    parser.add_argument("--reps", type=int, default=8, help="slices against each gateway")
    args = parser.parse_args()
    up_port, upstream = fake_upstream()
    scratch = tempfile.mkdtemp(prefix="mana-bench-callers-")
    base = base_env(up_port, scratch)
    workloads = WORKLOADS
    try:
        asyncio.run(wait_port(up_port))
        print(
            f"{'workload':<12} {'cpu ms/req none/keys':>22} {'ratio':>6}"
            f" {'p50 ms none/keys':>18} {'ratio':>6}"
        )
        ports = {"none": free_ports(1)[0], "keys": free_ports(1)[0]}
        gateways = {
            mode: subprocess.Popen(
                [sys.executable, "-m", "mana_llm"],
                cwd=ROOT,
                env=gateway_env(base, mode, ports[mode], scratch),
            )
            for mode in ports
        }
        try:
            for port in ports.values():
                asyncio.run(wait_port(port))
            pids = {mode: gateway.pid for mode, gateway in gateways.items()}
            for name, body in workloads.items():
                for conc in (int(c) for c in args.conc.split(",")):
                    runs = interleaved(ports, pids, body, conc, args.reps, args.seconds)
                    assert all(r["errors"] == 0 for r in runs.values()), runs
                    cpu = {m: r["cpu"] * 1000 / max(1, r["n"]) for m, r in runs.items()}
                    p50 = {m: pct(r["lat"], 0.5) for m, r in runs.items()}
                    label = f"{name} c={conc}"
                    ratios = cpu["keys"] / cpu["none"], p50["keys"] / p50["none"]
                    print(
                        f"{label:<12} {cpu['none']:>10.3f}/{cpu['keys']:<11.3f} {ratios[0]:>6.3f}"
                        f" {p50['none']:>8.2f}/{p50['keys']:<9.2f} {ratios[1]:>6.3f}"
                    )
        finally:
            for gateway in gateways.values():
                gateway.terminate()
                gateway.wait(30)
    finally:
        upstream.terminate()
        upstream.wait(10)


if __name__ == "__main__":
    main()
