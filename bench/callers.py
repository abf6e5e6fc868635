"""What callers cost: the same requests through a gateway with a keys file (every limit set,
the ledger on) and through one without (no keys file, no ledger), side by side in one run.

    python bench/callers.py [--seconds 1] [--conc 1,64] [--reps 4] [--pairs 3] [--aa]

`--pairs` pairs of gateways run side by side, the two of a pair with the same hash seed (two
processes with different random seeds differ by up to 5% in CPU per request with the same
code: measured with `--aa`), each pair with its own. For each workload (a non-streaming and a
streaming chat to a fast fake upstream) and each concurrency, the gateways are loaded in turn
for `--seconds`, `--reps` times each, the order reversed every round (the machine is shared
and noisy: interleaved slices see the same noise): CPU per request (summed over the slices of
every pair; the pairs' own ratios beside it) and p50 latency, and the ratios keys/none (the
target: CPU per request at most +10%). `--aa` runs no keys file on either side: the bench's
own error. Everything runs on 127.0.0.1 and stops by itself.
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
    """Short runs against each gateway in turn, `slices` times, the order reversed every other
    time (the one loaded first does not always follow the same one): all see the same machine."""
    totals: dict[str, dict[str, Any]] = {
        name: {"cpu": 0.0, "n": 0, "lat": [], "errors": 0} for name in ports
    }
    for name in ports:
        asyncio.run(closed_loop(ports[name], body, conc, 0.5))  # warm-up
    order = list(ports)
    for _ in range(slices):
        for name in order:
            before = cpu_s(pids[name])
            result = asyncio.run(closed_loop(ports[name], body, conc, slice_s))
            totals[name]["cpu"] += cpu_s(pids[name]) - before
            totals[name]["n"] += result["n"]
            totals[name]["lat"] += result["lat"]
            totals[name]["errors"] += result["errors"]
        order.reverse()
    return totals


def summed(runs: dict[str, dict[str, Any]], mode: str) -> dict[str, Any]:
    """The runs of every gateway of `mode` (named `mode/pair`) as one."""
    parts = [r for name, r in runs.items() if name.partition("/")[0] == mode]
    return {
        "cpu": sum(r["cpu"] for r in parts),
        "n": sum(r["n"] for r in parts),
        "lat": [x for r in parts for x in r["lat"]],
    }


def cpu_ms(run: dict[str, Any]) -> float:
    return float(run["cpu"]) * 1000 / max(1, int(run["n"]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=1.0, help="one slice against one gateway")
    parser.add_argument("--conc", default="1,64")
    parser.add_argument("--reps", type=int, default=4, help="slices against each gateway")
    parser.add_argument("--pairs", type=int, default=3, help="gateway pairs, one hash seed each")
    parser.add_argument(
        "--aa",
        action="store_true",
        help="no keys file on either side: the difference the bench itself reads between two"
        " equal gateways (its error)",
    )
    args = parser.parse_args()
    up_port, upstream = fake_upstream()
    scratch = tempfile.mkdtemp(prefix="mana-bench-callers-")
    base = base_env(up_port, scratch)
    names = [f"{mode}/{pair}" for pair in range(1, args.pairs + 1) for mode in ("none", "keys")]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    gateways: dict[str, subprocess.Popen[bytes]] = {}
    try:
        asyncio.run(wait_port(up_port))
        for name, port in ports.items():
            mode, _, pair = name.partition("/")
            # a pair shares its hash seed: between two processes with random seeds alone,
            # CPU per request differs by up to 5% (dict and set layouts)
            seeded = base | {"PYTHONHASHSEED": pair}
            env = gateway_env(seeded, "none" if args.aa else mode, port, scratch)
            gateways[name] = subprocess.Popen([sys.executable, "-m", "mana_llm"], cwd=ROOT, env=env)
        for port in ports.values():
            asyncio.run(wait_port(port))
        pids = {name: gateway.pid for name, gateway in gateways.items()}
        print(
            f"{'workload':<12} {'cpu ms/req none/keys':>22} {'ratio':>6} {'pairs':>12}"
            f" {'p50 ms none/keys':>18} {'ratio':>6}"
        )
        for workload, body in WORKLOADS.items():
            for conc in (int(c) for c in args.conc.split(",")):
                runs = interleaved(ports, pids, body, conc, args.reps, args.seconds)
                assert all(r["errors"] == 0 for r in runs.values()), runs
                pairs = [
                    cpu_ms(runs[f"keys/{p}"]) / cpu_ms(runs[f"none/{p}"])
                    for p in range(1, args.pairs + 1)
                ]
                none, keys = summed(runs, "none"), summed(runs, "keys")
                ratio = cpu_ms(keys) / cpu_ms(none)
                p50 = pct(none["lat"], 0.5), pct(keys["lat"], 0.5)
                print(
                    f"{workload + f' c={conc}':<12} {cpu_ms(none):>10.3f}/{cpu_ms(keys):<11.3f}"
                    f" {ratio:>6.3f} {min(pairs):>5.3f}-{max(pairs):<6.3f}"
                    f" {p50[0]:>8.2f}/{p50[1]:<9.2f} {p50[1] / p50[0]:>6.3f}"
                )
    finally:
        for gateway in gateways.values():
            gateway.terminate()
            gateway.wait(30)
        upstream.terminate()
        upstream.wait(10)


if __name__ == "__main__":
    main()
