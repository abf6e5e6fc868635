"""What traces cost: the same requests through gateways side by side in one run:

- `off`: no OTEL_* variable;
- `on`: every request sampled, its spans exported to an in-process sink (`sink_gateway.py`:
  the provider, the batch processor and its thread as configured, an exporter that keeps
  nothing): what traces cost the gateway itself;
- `otlp`: the same, exported by the OTLP/HTTP exporter to a collector in this bench's process
  (a thread that takes every export): the above plus the exporter's protobuf encoding;
- with `--before REV`, `before`: the code of that revision (a git worktree, before traces
  existed), to show what `off` costs.

    python bench/traces.py [--seconds 1] [--conc 1] [--reps 8] [--before REV]

For each workload (a non-streaming and a streaming chat to a fast fake upstream) and each
concurrency, the gateways are loaded in turn for `--seconds`, `--reps` times each
(interleaved slices see the same noisy machine): the gateway's CPU per request (every thread
of it) and its p50 latency, and the ratios to `off` (the targets: `on` at most +15% at c=1,
`off` at most +2% over `before`). Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import callers  # noqa: E402
from run import free_ports, pct, wait_port  # noqa: E402


class _Sink(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver that takes every export and keeps nothing."""

    exports = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        _Sink.exports += 1
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def sink() -> Iterator[str]:
    """The sink's traces URL, served from a thread of this process."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    finally:
        server.shutdown()


@contextlib.contextmanager
def worktree(rev: str | None) -> Iterator[str | None]:
    """A checkout of `rev` to run the gateway from (None: no third gateway)."""
    if rev is None:
        yield None
        return
    path = tempfile.mkdtemp(prefix="mana-bench-before-")
    os.rmdir(path)
    subprocess.run(["git", "worktree", "add", "--detach", "-q", path, rev], cwd=ROOT, check=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", path], cwd=ROOT, check=False)
        shutil.rmtree(path, ignore_errors=True)


GATEWAY = [sys.executable, "-m", "mana_llm"]
SINK_GATEWAY = [sys.executable, os.path.join(HERE, "sink_gateway.py")]
Run = tuple[dict[str, str], str, list[str]]  # environment, directory, command


def environments(
    base: dict[str, str], scratch: str, traces_url: str, before: str | None
) -> dict[str, Run]:
    """Each gateway's environment, the directory it runs from and its command."""
    ports = free_ports(4)
    traced = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": traces_url, "OTEL_TRACES_SAMPLER": "always_on"}
    runs = {
        "off": (callers.gateway_env(base, "none", ports[0], scratch), ROOT, GATEWAY),
        "on": (callers.gateway_env(base, "none", ports[1], scratch) | traced, ROOT, SINK_GATEWAY),
        "otlp": (callers.gateway_env(base, "none", ports[2], scratch) | traced, ROOT, GATEWAY),
    }
    if before is not None:  # `python -m` finds the package in the directory it runs from
        runs["before"] = (callers.gateway_env(base, "none", ports[3], scratch), before, GATEWAY)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=1.0, help="one slice against one gateway")
    parser.add_argument("--conc", default="1")
    parser.add_argument("--reps", type=int, default=8, help="slices against each gateway")
    parser.add_argument("--before", default=None, help="a git revision to run a third gateway from")
    args = parser.parse_args()
    up_port, upstream = callers.fake_upstream()
    scratch = tempfile.mkdtemp(prefix="mana-bench-traces-")
    workloads = callers.WORKLOADS
    with sink() as traces_url, worktree(args.before) as before:
        runs = environments(callers.base_env(up_port, scratch), scratch, traces_url, before)
        gateways = {
            mode: subprocess.Popen(command, cwd=cwd, env=env)
            for mode, (env, cwd, command) in runs.items()
        }
        try:
            asyncio.run(wait_port(up_port))
            ports = {mode: int(env["PORT"]) for mode, (env, _, _) in runs.items()}
            for port in ports.values():
                asyncio.run(wait_port(port))
            pids = {mode: gateway.pid for mode, gateway in gateways.items()}
            print(f"{'workload':<12} " + " ".join(f"{m + ' ms/req':>14}" for m in ports)
                  + f" {'on/off':>7} {'otlp/off':>8} {'off/before':>10}"
                  + f" {'p50 ms off/on/otlp':>20}")  # fmt: skip
            for name, body in workloads.items():
                for conc in (int(c) for c in args.conc.split(",")):
                    totals = callers.interleaved(ports, pids, body, conc, args.reps, args.seconds)
                    assert all(r["errors"] == 0 for r in totals.values()), totals
                    cpu = {m: r["cpu"] * 1000 / max(1, r["n"]) for m, r in totals.items()}
                    p50 = {m: pct(r["lat"], 0.5) for m, r in totals.items()}
                    off_before = f"{cpu['off'] / cpu['before']:.3f}" if "before" in cpu else "-"
                    print(f"{name + f' c={conc}':<12} "
                          + " ".join(f"{cpu[m]:>14.3f}" for m in ports)
                          + f" {cpu['on'] / cpu['off']:>7.3f} {cpu['otlp'] / cpu['off']:>8.3f}"
                          + f" {off_before:>10}"
                          + f" {p50['off']:>6.2f}/{p50['on']:.2f}/{p50['otlp']:.2f}")  # fmt: skip
            print(f"the sink took {_Sink.exports} exports")
        finally:
            for gateway in gateways.values():
                gateway.terminate()
                gateway.wait(30)
            upstream.terminate()
            upstream.wait(10)


if __name__ == "__main__":
    main()
